"""Drift policy and retrain trigger: once per episode, cool-down, retried submissions, live skill."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import xarray as xr
from prometheus_client import REGISTRY, generate_latest

from auroraops.cli import main
from model_code.data.ingest import merge_sources, read_source
from model_code.errors import DataError
from monitoring.policy import (COOLDOWN, HANDLED, NO_DRIFT, PENDING, SUBMIT_FAILED, SUBMITTED, DriftPolicy,
                               PolicyState, decide)
from monitoring.summaries import summarise
from monitoring.live_skill import update
from monitoring.trigger import Retry, check

from conftest import ERA5_HOURLY, IFS_8_STEPS, SAMPLES as ROOT_SAMPLES

T0 = datetime(2024, 6, 5, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def windows(tmp_path_factory) -> dict[str, str]:
    """The real IFS sample, and the same fields 2 K warmer, as NetCDF windows."""
    d = tmp_path_factory.mktemp("windows")
    fields, _ = merge_sources([read_source(str(IFS_8_STEPS), IFS_8_STEPS)])
    ds = xr.Dataset({k: f.values() for k, f in fields.items()})
    ds.to_netcdf(d / "normal.nc")
    ds.assign(t=ds.t + 2.0).to_netcdf(d / "warm.nc")
    ref = summarise([str(IFS_8_STEPS)]).save(str(d / "train.summaries.json"))
    return {"normal": str(d / "normal.nc"), "warm": str(d / "warm.nc"), "reference": ref}


class Recorder:
    """A real submitter: writes the run request to a directory and returns its id; fails `failures` times."""

    def __init__(self, root: Path, failures: int = 0):
        self.root, self.failures, self.calls = root, failures, []

    def __call__(self, name: str, arguments) -> str:
        self.calls.append((name, dict(arguments)))
        if self.failures:
            self.failures -= 1
            raise ConnectionError("KFP API unreachable")
        run_id = f"run-{len(self.calls)}"
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / f"{run_id}.json").write_text(json.dumps({"pipeline": name, "arguments": dict(arguments)}))
        return run_id


def test_policy_fires_once_per_episode_and_honours_the_cooldown():
    state, policy = PolicyState("medium-range"), DriftPolicy(sustained_windows=2, cooldown=timedelta(hours=24))

    def step(hours, drifted, window):
        return decide(state, policy, drifted=drifted, window=window, evidence={"share": 0.5 if drifted else 0.0},
                      now=T0 + timedelta(hours=hours))

    assert step(0, False, "w0").action == NO_DRIFT
    assert step(6, True, "w1").action == PENDING
    assert step(7, True, "w1").action == PENDING  # the same window again is no new evidence
    fire = step(12, True, "w2")
    assert fire.action == "trigger"
    state.episodes[-1].handled, state.episodes[-1].run_id = True, "run-a"
    state.episodes[-1].triggered_at = fire.time
    assert step(18, True, "w3").action == HANDLED  # same episode, however long it lasts
    assert step(24, False, "w4").action == NO_DRIFT and state.episodes[-1].end is not None
    # A new episode 18 h after the run: sustained, but within the cool-down.
    assert step(26, True, "w5").action == PENDING
    cool = step(30, True, "w6")
    assert cool.action == COOLDOWN and "ends at 2024-06-06T12:00:00+00:00" in cool.reason
    assert step(36, True, "w7").action == "trigger"  # the cool-down has passed, the episode still runs
    assert len(state.episodes) == 2 and state.episodes[0].windows == ["w1", "w2", "w3"]
    with pytest.raises(DataError, match="sustained_windows must be at least 1"):
        DriftPolicy(sustained_windows=0)


def test_check_submits_the_retrain_pipeline_once_and_records_the_evidence(windows, tmp_path):
    state, runs = str(tmp_path / "state.json"), Recorder(tmp_path / "runs")
    kw = dict(state_uri=state, submitter=runs, out=str(tmp_path / "reports"), report_limit=2, retry=Retry(3, 0.0),
              policy=DriftPolicy(sustained_windows=1, cooldown=timedelta(hours=24)))
    quiet = check("medium-range", [windows["normal"]], [windows["reference"]], now=T0, **kw)
    assert quiet.decision.action == NO_DRIFT and runs.calls == []
    first = check("medium-range", [windows["warm"]], [windows["reference"]], now=T0 + timedelta(hours=6), **kw)
    assert first.decision.action == SUBMITTED and first.decision.run_id == "run-1"
    assert runs.calls == [("retrain", {"variant": "medium-range", "data": [windows["warm"]]})]
    again = check("medium-range", [windows["warm"]], [windows["reference"]], now=T0 + timedelta(days=3), **kw)
    assert again.decision.action == HANDLED and len(runs.calls) == 1  # same episode, past the cool-down

    doc = json.loads(Path(state).read_text())
    (episode,) = doc["episodes"]
    assert episode["handled"] and episode["run_id"] == "run-1" and episode["end"] is None
    evidence = episode["evidence"][0]
    assert evidence["drifted_variables"] == ["t"] and evidence["report"].endswith("drift.html")
    assert [d["action"] for d in doc["decisions"]] == [NO_DRIFT, SUBMITTED, HANDLED]
    assert all(d["evidence"]["n_columns"] == 840 for d in doc["decisions"])
    assert Path(evidence["report"]).exists()
    assert len(list((tmp_path / "reports" / "medium-range").iterdir())) == 2  # the drifted windows only
    exposed = generate_latest(REGISTRY).decode()
    assert 'aurora_drift_detected{variant="medium-range"} 1.0' in exposed
    assert 'aurora_retrain_submissions_total{outcome="submitted",variant="medium-range"}' in exposed


def test_a_failed_submission_is_retried_with_backoff_and_leaves_the_episode_unhandled(windows, tmp_path):
    state, runs, waits = str(tmp_path / "state.json"), Recorder(tmp_path / "runs", failures=5), []
    kw = dict(state_uri=state, submitter=runs, retry=Retry(attempts=3, backoff_s=10.0), sleep=waits.append,
              policy=DriftPolicy(sustained_windows=1, cooldown=timedelta(hours=24)))
    failed = check("wave", [windows["warm"]], [windows["reference"]], now=T0, **kw)
    assert failed.decision.action == SUBMIT_FAILED and "ConnectionError: KFP API unreachable" in failed.decision.reason
    assert len(runs.calls) == 3 and waits == [10.0, 20.0]
    (episode,) = json.loads(Path(state).read_text())["episodes"]
    assert not episode["handled"] and episode["run_id"] is None and len(episode["attempts"]) == 3
    # The next check tries again (no cool-down: nothing ran) and succeeds on its 3rd attempt.
    retried = check("wave", [windows["warm"]], [windows["reference"]], now=T0 + timedelta(hours=1), **kw)
    assert retried.decision.action == SUBMITTED and retried.decision.run_id == "run-6"
    (episode,) = json.loads(Path(state).read_text())["episodes"]
    assert episode["handled"] and len(episode["attempts"]) == 6


def test_bad_input_is_an_error_and_never_a_decision(windows, tmp_path):
    state, runs = tmp_path / "state.json", Recorder(tmp_path / "runs")
    with pytest.raises(DataError, match="missing reference"):
        check("medium-range", [windows["warm"]], [], state_uri=str(state), submitter=runs)
    with pytest.raises(DataError, match="mismatched grids"):
        check("medium-range", [str(ERA5_HOURLY)], [windows["reference"]], state_uri=str(state), submitter=runs)
    assert not state.exists() and runs.calls == []
    PolicyState("wave").save(str(state))
    with pytest.raises(DataError, match="belongs to variant 'wave', not 'medium-range'"):
        check("medium-range", [windows["warm"]], [windows["reference"]], state_uri=str(state), submitter=runs)


def test_monitor_check_cli_reports_the_decision_and_fails_when_submission_fails(windows, tmp_path, capsys):
    # No KFP API listens on this port: three attempts fail, exit status 1, episode unhandled.
    state = tmp_path / "state.json"
    argv = ["monitor", "check", "--variant", "medium-range", "--data", windows["warm"], "--reference",
            windows["reference"], "--state", str(state), "--out", str(tmp_path / "reports"), "--sustained", "1",
            "--host", "http://127.0.0.1:9", "--attempts", "2", "--backoff", "0", "--report-columns", "2"]
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "submit_failed" in out and "variables over their threshold: t" in out
    (episode,) = json.loads(state.read_text())["episodes"]
    assert not episode["handled"] and len(episode["attempts"]) == 2


def test_live_skill_of_a_served_forecast_once_truth_arrives(tmp_path, capsys):
    forecast = tmp_path / "forecast.nc"
    assert main(["forecast", "--variant", "medium-range", "--input", str(ERA5_HOURLY), "--steps", "2",
                 "--out", str(forecast), "--fill-missing", "zeros", "--init-time", "2018-01-02T12:00",
                 "--crop-to-patch"]) == 0
    store = tmp_path / "skill.jsonl"
    argv = ["monitor", "skill", "--forecast", str(forecast), "--truth", str(ERA5_HOURLY), "--store", str(store)]
    assert main(argv) == 0
    records = [json.loads(line) for line in store.read_text().splitlines()]
    assert sorted((r["variable"], r["lead_hours"]) for r in records) == [("u10", 6.0), ("u10", 12.0),
                                                                         ("v10", 6.0), ("v10", 12.0)]
    assert all(r["rmse"] >= r["mae"] > 0 for r in records)
    assert main(argv) == 0 and "nothing new to score" in capsys.readouterr().out  # scored once
    assert len(store.read_text().splitlines()) == 4
    exposed = generate_latest(REGISTRY).decode()
    rmse = next(r["rmse"] for r in records if r["variable"] == "u10" and r["lead_hours"] == 12.0)
    assert f'aurora_live_rmse{{lead_hours="12",level="",variable="u10",variant="medium-range"}} {rmse!r}' in exposed


def test_live_skill_reads_the_outputs_of_a_finished_forecast_job(tmp_path):
    """A job run by the predictor's own JobManager (tiny model), scored against the synthetic
    window it started from, extended by the truth of its two lead times."""
    import numpy as np

    from model_code.data.synthetic import synthetic_window
    from model_code.forecast import forecast_steps
    from model_code.variants import build_model, get_variant
    from serving.jobs import JobManager

    spec = get_variant("medium-range")
    h, w = spec.tiny_grid
    lat, lon = np.linspace(90, -90, h), np.linspace(0, 360, w, endpoint=False)
    times = np.datetime64("2024-06-01T06:00") + np.arange(4) * np.timedelta64(6, "h")
    window = synthetic_window(spec, lat, lon, times, seed=3).astype("float32")
    data = tmp_path / "analysis.nc"
    window.to_netcdf(data)
    model = build_model(spec, "tiny")
    jobs = JobManager(spec, str(tmp_path / "jobs"), lambda batch, steps: forecast_steps(model, batch, steps),
                      max_steps=4, model_uri="tiny")
    out = tmp_path / "job-1"
    state, _ = jobs.submit({"inputs": [str(data)], "output_uri": str(out), "steps": 2,
                            "init_time": "2024-06-01T12:00"})
    with pytest.raises(DataError, match="is queued, not succeeded"):
        update([str(out)], [str(data)])
    jobs.run(state)
    assert json.loads((out / "job.json").read_text())["status"] == "succeeded"

    records = update([str(out)], [str(data)], store=str(tmp_path / "skill.jsonl"), variables=["t2m", "t"])
    assert {(r.variable, r.lead_hours) for r in records} == {("t2m", 6.0), ("t2m", 12.0), ("t", 6.0), ("t", 12.0)}
    assert {r.level for r in records if r.variable == "t"} == {float(lv) for lv in window.level.values}
    assert all(r.forecast == str(out) and r.init_time == "2024-06-01T12:00:00" for r in records)
    assert all(np.isfinite(r.rmse) and r.rmse >= r.mae > 0 for r in records)


@pytest.mark.slow
def test_a_local_retrain_run_that_fails_is_a_failed_submission(windows, tmp_path):
    """The real KFP local runner: the retrain pipeline's validate step rejects the data."""
    from monitoring.trigger import local_submitter

    broken = str(ROOT_SAMPLES / "broken" / "fields_with_missing_values.grib")
    result = check("medium-range", [windows["warm"]], [windows["reference"]], state_uri=str(tmp_path / "state.json"),
                   submitter=local_submitter(str(tmp_path / "pipelines")), retry=Retry(attempts=1),
                   policy=DriftPolicy(sustained_windows=1), retrain_arguments={"data": [broken]})
    assert result.decision.action == SUBMIT_FAILED
    assert "local retrain run FAILED at validate" in result.decision.reason and "66.24% of values are NaN" in \
        result.decision.reason
    (episode,) = json.loads((tmp_path / "state.json").read_text())["episodes"]
    assert not episode["handled"]


def test_policy_state_lives_on_s3(bucket):
    uri = f"s3://{bucket}/monitoring/state-wave.json"
    state = PolicyState.load(uri, "wave")  # none yet: a fresh state
    assert state.episodes == [] and state.decisions == []
    decide(state, DriftPolicy(), drifted=True, window="w1", evidence={"share": 0.6}, now=T0)
    state.save(uri)
    back = PolicyState.load(uri, "wave")
    assert back.open_episode is not None and back.open_episode.windows == ["w1"]
    assert [d.action for d in back.decisions] == [PENDING] and back.decisions[0].evidence == {"share": 0.6}
