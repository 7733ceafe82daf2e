"""Retrain policy and trigger on the real March 2019 series: quiet over a month of ordinary
weather, once for a sustained fault or degraded skill; cool-down, retried submissions, live skill."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from prometheus_client import REGISTRY, generate_latest

from auroraops.cli import main
from model_code.data.ingest import merge_sources, read_source
from model_code.errors import DataError
from model_code.evaluation.metrics import mae, rmse
from monitoring.faults import frozen
from monitoring.live_skill import SkillRecord, SkillRule, append_store, judge, update
from monitoring.policy import (COOLDOWN, HANDLED, NO_DRIFT, PENDING, SUBMIT_FAILED, SUBMITTED, TRIGGER,
                               DriftPolicy, PolicyState, decide_window)
from monitoring.summaries import summarise
from monitoring.trigger import Retry, check

from conftest import BRITISH_ISLES, ERA5_HOURLY, SAMPLES as ROOT_SAMPLES

T0 = datetime(2024, 6, 5, 0, tzinfo=timezone.utc)
FROZEN_DAYS = (22, 23, 24)


@pytest.fixture(scope="module")
def march() -> xr.DataArray:
    fields, _ = merge_sources([read_source(str(BRITISH_ISLES), BRITISH_ISLES)])
    return fields["t2m"].values()


def _day(march: xr.DataArray, day: int) -> xr.DataArray:
    return march.sel(time=f"2019-03-{day:02d}")


@pytest.fixture(scope="module")
def windows(march, tmp_path_factory) -> dict:
    """Every day of March 2019 as its own file, the days of a frozen feed (each hour a copy of
    the day's first), and the stored summaries of the fortnights 1-14 and 18-31 March."""
    d = tmp_path_factory.mktemp("windows")

    def write(da: xr.DataArray, name: str) -> str:
        da.to_dataset(name="t2m").to_netcdf(d / name)
        return str(d / name)

    days = {day: write(_day(march, day), f"2019-03-{day:02d}.nc") for day in range(1, 32)}
    broken = [write(_day(march, day).copy(data=frozen(_day(march, day).values)), f"frozen-2019-03-{day:02d}.nc")
              for day in FROZEN_DAYS]
    first = summarise([days[day] for day in range(1, 15)]).save(str(d / "first.summaries.json"))
    second = summarise([days[day] for day in range(18, 32)]).save(str(d / "second.summaries.json"))
    return {"days": days, "frozen": broken, "first": first, "second": second}


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

    def step(hours, drifted, window, skill=False):
        return decide_window(state, policy, drifted=drifted, window=window, evidence={"drifted": drifted},
                      now=T0 + timedelta(hours=hours), skill_degraded=skill)

    assert step(0, False, "w0").action == NO_DRIFT
    assert step(6, True, "w1").action == PENDING
    assert step(7, True, "w1").action == PENDING  # the same window again is no new evidence
    fire = step(12, True, "w2")
    assert fire.action == TRIGGER and fire.reason == "feed shift sustained over 2 windows"
    state.episodes[-1].handled, state.episodes[-1].run_id = True, "run-a"
    state.episodes[-1].triggered_at = fire.time
    assert step(18, True, "w3").action == HANDLED  # same episode, however long it lasts
    assert step(24, False, "w4").action == NO_DRIFT and state.episodes[-1].end is not None
    # A new episode 18 h after the run: sustained, but within the cool-down.
    assert step(26, True, "w5").action == PENDING
    cool = step(30, True, "w6")
    assert cool.action == COOLDOWN and "ends at 2024-06-06T12:00:00+00:00" in cool.reason
    assert step(36, True, "w7").action == TRIGGER  # the cool-down has passed, the episode still runs
    assert len(state.episodes) == 2 and state.episodes[0].windows == ["w1", "w2", "w3"]
    # Degraded skill fires at once, without a feed shift and without waiting for a second window.
    state.episodes[-1].handled, state.episodes[-1].triggered_at = True, (T0 + timedelta(hours=36)).isoformat()
    assert step(40, False, "w8").action == NO_DRIFT
    skill = step(72, False, "w9", skill=True)
    assert skill.action == TRIGGER and skill.reason == "live skill degraded" and skill.skill_degraded
    with pytest.raises(DataError, match="sustained_windows must be at least 1"):
        DriftPolicy(sustained_windows=0)


def test_quiet_over_a_month_of_ordinary_weather_and_once_for_a_sustained_fault(windows, tmp_path):
    """Daily checks of every day of March against the fortnight that does not hold it, then a
    feed frozen for three days: one run, when the second frozen day confirms the first."""
    runs = Recorder(tmp_path / "runs")
    kw = dict(submitter=runs, out=str(tmp_path / "reports"), retry=Retry(3, 0.0))
    decisions = []
    for reference, days in ((windows["first"], range(15, 32)), (windows["second"], range(1, 18))):
        state = str(tmp_path / f"state-{len(decisions)}.json")
        for k, day in enumerate(days):
            result = check("medium-range", [windows["days"][day]], [reference], state_uri=state,
                           now=T0 + timedelta(hours=6 * k), **kw)
            decisions.append((day, result.decision.action, result.drift.columns[0].exceedance))
    assert len(decisions) == 34 and {a for _, a, _ in decisions} == {NO_DRIFT}, decisions
    assert runs.calls == [] and not (tmp_path / "reports").exists()

    state = str(tmp_path / "state-fault.json")
    broken = [check("medium-range", [path], [windows["first"]], state_uri=state, now=T0 + timedelta(days=k), **kw)
              for k, path in enumerate(windows["frozen"])]
    after = check("medium-range", [windows["days"][25]], [windows["first"]], state_uri=state,
                  now=T0 + timedelta(days=3), **kw)
    assert [r.decision.action for r in broken + [after]] == [PENDING, SUBMITTED, HANDLED, NO_DRIFT]
    assert all(r.drift.reasons[0].kind == "frozen" for r in broken)
    assert runs.calls == [("retrain", {"variant": "medium-range", "data": [windows["frozen"][1]]})]
    doc = json.loads(Path(state).read_text())
    (episode,) = doc["episodes"]
    assert episode["handled"] and episode["run_id"] == "run-1" and episode["end"] is not None
    assert len(episode["windows"]) == 3 and episode["evidence"][0]["reasons"][0].startswith("t2m: frozen")
    assert all(Path(e["report"]).exists() for e in episode["evidence"])
    assert len(list((tmp_path / "reports" / "medium-range").iterdir())) == 3  # the drifted windows only
    exposed = generate_latest(REGISTRY).decode()
    assert 'aurora_drift_detected{variant="medium-range"} 0.0' in exposed
    assert 'aurora_retrain_submissions_total{outcome="submitted",variant="medium-range"}' in exposed


def _persistence_records(march: xr.DataArray, broken_from: str | None = None) -> list[SkillRecord]:
    """Live skill of a real, simple forecaster: the field of 24 h before, every 6 hours; from
    `broken_from` on, its forecasts are 3 K too warm (a model gone wrong)."""
    records = []
    for valid in march.time.values[24::6]:
        forecast = march.sel(time=[valid - np.timedelta64(24, "h")]).assign_coords(time=[valid]).astype("float64")
        if broken_from is not None and valid >= np.datetime64(broken_from):
            forecast = forecast + 3.0
        truth = march.sel(time=[valid]).astype("float64")
        init = str(valid - np.timedelta64(24, "h"))[:19]
        records.append(SkillRecord("medium-range", f"persistence-{init}", init, str(valid)[:19], 24.0, "t2m", None,
                                   float(rmse(forecast, truth, time_dim="time")),
                                   float(mae(forecast, truth, time_dim="time")), "2019-04-01T00:00:00"))
    return records


def test_degraded_live_skill_fires_at_once_and_ordinary_skill_never(march, windows, tmp_path):
    ordinary = _persistence_records(march)
    for day in range(15, 32):  # every day with a week of scores, and a week of baseline before them
        verdict = judge(ordinary, "medium-range", f"2019-03-{day:02d}T23:00")
        assert verdict.ratios and not verdict.degraded, (day, verdict.detail)
    assert judge(ordinary, "medium-range", "2019-03-14T23:00").detail.startswith("no skill to judge")

    store = str(tmp_path / "skill.jsonl")
    append_store(store, _persistence_records(march, broken_from="2019-03-22"))
    state, runs = str(tmp_path / "state.json"), Recorder(tmp_path / "runs")
    kw = dict(state_uri=state, submitter=runs, skill_store=store, retry=Retry(3, 0.0))
    results = [check("medium-range", [windows["days"][day]], [windows["first"]], now=T0 + timedelta(days=k), **kw)
               for k, day in enumerate((21, 22, 23, 24))]
    assert [r.decision.action for r in results] == [NO_DRIFT, NO_DRIFT, SUBMITTED, HANDLED]
    assert not any(r.drift.drifted for r in results)  # the feed is fine: the model is not
    assert results[2].skill.degraded and "t2m +24 h" in results[2].skill.detail and len(runs.calls) == 1
    assert json.loads(Path(state).read_text())["decisions"][2]["evidence"]["skill"]["degraded"]
    with pytest.raises(DataError, match="skill tolerance must be positive"):
        SkillRule(tolerance=0)


def test_a_failed_submission_is_retried_with_backoff_and_leaves_the_episode_unhandled(windows, tmp_path):
    state, runs, waits = str(tmp_path / "state.json"), Recorder(tmp_path / "runs", failures=5), []
    kw = dict(state_uri=state, submitter=runs, retry=Retry(attempts=3, backoff_s=10.0), sleep=waits.append,
              policy=DriftPolicy(sustained_windows=1, cooldown=timedelta(hours=24)))
    broken = windows["frozen"][0]
    failed = check("wave", [broken], [windows["first"]], now=T0, **kw)
    assert failed.decision.action == SUBMIT_FAILED and "ConnectionError: KFP API unreachable" in failed.decision.reason
    assert len(runs.calls) == 3 and waits == [10.0, 20.0]
    (episode,) = json.loads(Path(state).read_text())["episodes"]
    assert not episode["handled"] and episode["run_id"] is None and len(episode["attempts"]) == 3
    # The next check tries again (no cool-down: nothing ran) and succeeds on its 3rd attempt.
    retried = check("wave", [broken], [windows["first"]], now=T0 + timedelta(hours=1), **kw)
    assert retried.decision.action == SUBMITTED and retried.decision.run_id == "run-6"
    (episode,) = json.loads(Path(state).read_text())["episodes"]
    assert episode["handled"] and len(episode["attempts"]) == 6


def test_bad_input_is_an_error_and_never_a_decision(windows, tmp_path):
    state, runs = tmp_path / "state.json", Recorder(tmp_path / "runs")
    with pytest.raises(DataError, match="missing reference"):
        check("medium-range", [windows["frozen"][0]], [], state_uri=str(state), submitter=runs)
    with pytest.raises(DataError, match="mismatched grids"):
        check("medium-range", [str(ERA5_HOURLY)], [windows["first"]], state_uri=str(state), submitter=runs)
    with pytest.raises(DataError, match="empty window: no data files"):
        check("medium-range", [], [windows["first"]], state_uri=str(state), submitter=runs)
    assert not state.exists() and runs.calls == []
    PolicyState("wave").save(str(state))
    with pytest.raises(DataError, match="belongs to variant 'wave', not 'medium-range'"):
        check("medium-range", [windows["frozen"][0]], [windows["first"]], state_uri=str(state), submitter=runs)


def test_monitor_check_cli_reports_the_decision_and_fails_when_submission_fails(windows, tmp_path, capsys):
    # No KFP API listens on this port: three attempts fail, exit status 1, episode unhandled.
    state = tmp_path / "state.json"
    argv = ["monitor", "check", "--variant", "medium-range", "--data", windows["frozen"][0], "--reference",
            windows["first"], "--state", str(state), "--out", str(tmp_path / "reports"), "--sustained", "1",
            "--host", "http://127.0.0.1:9", "--attempts", "2", "--backoff", "0", "--report-columns", "2",
            "--skill-store", str(tmp_path / "none-yet.jsonl")]
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "submit_failed" in out and "variables over their threshold: t2m" in out and "t2m: frozen" in out
    assert "live skill: not degraded: no skill to judge" in out
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
    from model_code.variants import build_model, get_variant
    from serving.jobs import JOB_STATE, JobManager
    from serving.served import Loaded, ServedModel

    spec = get_variant("medium-range")
    h, w = spec.tiny_grid
    lat, lon = np.linspace(90, -90, h), np.linspace(0, 360, w, endpoint=False)
    times = np.datetime64("2024-06-01T06:00") + np.arange(4) * np.timedelta64(6, "h")
    window = synthetic_window(spec, lat, lon, times, seed=3).astype("float32")
    data = tmp_path / "analysis.nc"
    window.to_netcdf(data)
    model = build_model(spec, "tiny")
    loaded = Loaded(model, ServedModel(uri="tiny", sha256="sha256:" + "0" * 64), spec)
    jobs = JobManager("medium-range", str(tmp_path / "jobs"), lambda: loaded, max_steps=4)
    out = tmp_path / "job-1"
    state, _ = jobs.submit({"inputs": [str(data)], "output_uri": str(out), "steps": 2,
                            "init_time": "2024-06-01T12:00"})
    with pytest.raises(DataError, match="is queued, not succeeded"):
        update([str(out)], [str(data)])
    jobs.run(state)
    assert json.loads((out / JOB_STATE).read_text())["status"] == "succeeded"

    records = update([str(out)], [str(data)], store=str(tmp_path / "skill.jsonl"), variables=["t2m", "t"])
    assert {(r.variable, r.lead_hours) for r in records} == {("t2m", 6.0), ("t2m", 12.0), ("t", 6.0), ("t", 12.0)}
    assert {r.level for r in records if r.variable == "t"} == {float(lv) for lv in window.level.values}
    assert all(r.forecast == str(out) and r.init_time == "2024-06-01T12:00:00" for r in records)
    assert all(np.isfinite(r.rmse) and r.rmse >= r.mae > 0 for r in records)


def test_live_skill_of_an_ensemble_is_the_error_of_its_mean(tmp_path):
    forecast = tmp_path / "ensemble.nc"
    assert main(["forecast", "--variant", "ensemble-v1.5", "--input", str(ERA5_HOURLY), "--steps", "1",
                 "--out", str(forecast), "--fill-missing", "synthetic", "--init-time", "2018-01-02T12:00",
                 "--crop-to-patch", "--members", "3", "--history", "1"]) == 0
    records = update([str(forecast)], [str(ERA5_HOURLY)], variables=["u10"])
    with xr.open_dataset(forecast) as ds, xr.open_dataset(ERA5_HOURLY) as truth:
        mean = ds.u10.mean("member").isel(time=0)
        truth = truth.assign_coords(longitude=truth.longitude % 360)
        observed = truth.u10.sel(time=ds.time.values[0]).sel(latitude=mean.latitude, longitude=mean.longitude,
                                                            method="nearest", tolerance=1e-3)
        weights = np.cos(np.deg2rad(mean.latitude))  # a regional box: rows weigh as their cells
    (record,) = records
    assert record.lead_hours == 6.0 and record.rmse > 0
    error = float(np.sqrt(((mean - observed) ** 2).weighted(weights).mean()))
    assert record.rmse == pytest.approx(error, rel=0.02)


@pytest.mark.slow
def test_a_local_retrain_run_that_fails_is_a_failed_submission(windows, tmp_path):
    """The real KFP local runner: the retrain pipeline's validate step rejects the data."""
    from monitoring.trigger import local_submitter

    broken = str(ROOT_SAMPLES / "broken" / "fields_with_missing_values.grib")
    result = check("medium-range", [windows["frozen"][0]], [windows["first"]], state_uri=str(tmp_path / "state.json"),
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
    decide_window(state, DriftPolicy(), drifted=True, window="w1", evidence={"share": 0.6}, now=T0)
    state.save(uri)
    back = PolicyState.load(uri, "wave")
    assert back.open_episode is not None and back.open_episode.windows == ["w1"]
    assert [d.action for d in back.decisions] == [PENDING] and back.decisions[0].evidence == {"share": 0.6}
