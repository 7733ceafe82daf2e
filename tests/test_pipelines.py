"""Whole pipelines with KFP's real local runner (subprocess tasks) and a real MLflow sqlite store.

The data is the real ERA5 hourly 2 m temperature over the British Isles (March 2019), the
config the demo's (`pipelines.demo`), trained for fewer steps. Two setups:

- the demo's split, shortened: 11-14 March train, 15-16 validate, 17-18 held out, so the evaluation has
  too little data before the held-out days for a climatology (fewer than 7 values of each
  hour) and says so; the gate is 2 m temperature at +12 h against persistence, which a model
  that has learnt the diurnal cycle beats by far (persistence is half a day out of phase).
  This gives the later tests a champion;
- a model two steps from its initial weights, on the demo's own split and gates, which is
  worse than persistence: registered, never promoted.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from auroraops.cli import main
from conftest import BRITISH_ISLES, BROKEN
from pipelines import demo
from adapters.registry import client, describe
from pipelines.runner import run_local

TEST_PERIOD = ["2019-03-17T00:00", "2019-03-18T23:00"]
CONFIG = {**demo.CONFIG,
          "data": {**demo.CONFIG["data"], "val_period": ["2019-03-15T00:00", "2019-03-17T00:00"]},
          "rollout": {"curriculum": [[0, 1], [20, 2]]}, "early_stopping": {"lead_steps": [1, 2]},
          "train": {**demo.CONFIG["train"], "max_steps": 40, "val_every": 10}}
GATES = {"gates": [{"metric": "rmse", "variable": "t2m", "lead_hours": [12]}]}


@pytest.fixture(scope="module")
def days(tmp_path_factory) -> str:
    """11-18 March: six days to learn from, two held out."""
    path = tmp_path_factory.mktemp("data") / "british_isles_11-18_march.nc"
    with xr.open_dataset(BRITISH_ISLES) as ds:
        ds.sel(time=slice("2019-03-11", "2019-03-18")).to_netcdf(path)
    return str(path)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """One sqlite registry (artifacts beside it) for the module: later tests find the champions
    the first one made."""
    root = tmp_path_factory.mktemp("registry")
    patch = pytest.MonkeyPatch()
    patch.chdir(root)
    patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlruns.db'}")
    yield root
    patch.undo()


def arguments(variant: str, data: str, **extra) -> dict:
    return {"variant": variant, "data": [data], "config": CONFIG, "check_contract": False, "n_trials": 0,
            "gates": GATES, "eval_steps": 2, "max_inits": 8, "test_period": TEST_PERIOD, **extra}


@pytest.fixture(scope="module")
def first_run(store, days):
    """The training pipeline into an empty registry, with the config's own hyperparameters."""
    return run_local("training", arguments("medium-range", days), workdir=store / "runs", quiet=True)


@pytest.mark.slow
def test_the_training_pipeline_promotes_a_first_model_that_beats_the_baselines(first_run, days):
    import mlflow

    summary = first_run
    assert summary.state == "SUCCEEDED", summary.describe()
    assert summary.registered_version == "1" and summary.promoted, summary.describe()
    assert [task for task, _, _ in summary.steps][:7] == ["validate", "prepare", "tune", "train", "compress",
                                                         "evaluate", "register"]
    assert "Executing task" in Path(summary.log).read_text()  # the tasks' own logs, kept out of the terminal
    scores = json.loads((Path(summary.reports["evaluate.scores"]) / "scores.json").read_text())
    assert scores["subject"]["champion"] is None and scores["subject"]["inits"]["first"] >= TEST_PERIOD[0]
    assert any(n.startswith("climatology: left out: the data before the first initialisation") for n in scores["notes"])
    rmse = demo.held_out_rmse(Path(summary.reports["evaluate.scores"]) / "scores.json")
    assert rmse["model"][12.0] < rmse["persistence"][12.0]
    verdict = json.loads((Path(summary.reports["evaluate.scores"]) / "gates.json").read_text())
    assert verdict["passed"] and "no climatology to compare with" in json.dumps(verdict["comparisons"])
    held_out = xr.open_dataset(Path(summary.run_dir) / "prepare" / "train_data" / "train.nc")
    assert held_out.time.values.max() < np.datetime64(TEST_PERIOD[0])  # training never saw the verified days

    model = mlflow.pyfunc.load_model("models:/aurora-medium-range@champion")
    forecast = model.predict(days, params={"steps": 2, "crop": True})  # filled as the checkpoint was trained
    assert forecast.sizes["time"] == 2 and bool(forecast.t2m.notnull().all())


@pytest.mark.slow
def test_the_registered_version_reproduces_its_scores_through_auroraops_forecast(first_run, days, tmp_path):
    """Every number in the registry can be recomputed from the files: the version's checkpoint,
    run through `auroraops forecast` from the evaluation's initialisation times, scored by
    `auroraops evaluate`, gives the registered RMSE."""
    champion = describe("medium-range")["champion"]
    inits = champion["subject"]["inits"]["times"]
    assert len(inits) == 8 and all(TEST_PERIOD[0] <= t <= TEST_PERIOD[1] for t in inits)
    files = []
    for init in inits:
        out = tmp_path / f"fc_{init[:13]}.nc"
        assert main(["forecast", "--variant", "medium-range", "--checkpoint", "models:/aurora-medium-range/1",
                     "--input", days, "--init-time", init[:16], "--steps", "2", "--crop-to-patch",
                     "--out", str(out)]) == 0
        files.append(str(out))
    report = tmp_path / "report"
    assert main(["evaluate", "--variant", "medium-range", "--forecast", *files, "--truth", days, "--metrics", "rmse",
                 "--out", str(report)]) == 0
    recomputed = demo.held_out_rmse(report / "metrics.json")
    registered = {(r["lead_hours"], f): r[f] for r in champion["scores"] for f in ("model", "persistence")
                  if r["variable"] == "t2m" and r["metric"] == "rmse"}
    for lead in (6.0, 12.0):
        assert registered[(lead, "model")] == pytest.approx(recomputed["model"][lead], rel=1e-5)
        assert registered[(lead, "persistence")] == pytest.approx(recomputed["persistence"][lead], rel=1e-6)


@pytest.mark.slow
def test_the_promoted_version_is_what_a_following_server_answers_with_and_what_a_rollout_pins(
        first_run, store, days, tmp_path, capsys):
    """The pipeline's champion, end to end: a server following the alias answers with version 1's
    own forecast (the file's missing inputs filled by the server as training filled them, its
    five input times), every answer names version 1, and the InferenceService `rollout render`
    writes points at version 1's artifact and digest."""
    import yaml

    from serving.process import ServerProcess

    assert first_run.promoted
    local = tmp_path / "local.nc"
    assert main(["forecast", "--variant", "medium-range", "--checkpoint", "models:/aurora-medium-range/1",
                 "--input", days, "--init-time", "2019-03-17T00:00", "--steps", "2", "--out", str(local)]) == 0
    server = ServerProcess("medium-range", "models:/aurora-medium-range@champion", tmp_path / "server",
                           args=["--follow", "5"]).start(timeout=300)
    try:
        served = tmp_path / "served.nc"
        assert main(["predict", "--url", server.grpc, "--variant", "medium-range", "--input", days,
                     "--init-time", "2019-03-17T00:00", "--history", "5", "--steps", "2", "--out", str(served)]) == 0
        assert "model version 1" in capsys.readouterr().out
    finally:
        server.stop()
    with xr.open_dataset(served) as got, xr.open_dataset(local) as want:
        assert got.attrs["aurora_model_version"] == "1" and list(got.level.values) == [500.0, 850.0]
        np.testing.assert_allclose(got.t2m.values, want.t2m.values, rtol=1e-6, atol=1e-4)

    out = tmp_path / "isvc.yaml"
    assert main(["rollout", "render", "--variant", "medium-range", "--model", "models:/aurora-medium-range@champion",
                 "--out", str(out)]) == 0
    env = {e["name"]: e.get("value") for e in yaml.safe_load(out.read_text())["spec"]["predictor"]["containers"][0]["env"]}
    champion = describe("medium-range")["champion"]
    assert env["AURORA_MODEL_URI"] == champion["checkpoint_uri"]
    assert env["AURORA_MODEL_SHA256"] == champion["checkpoint_sha256"]


@pytest.mark.slow
def test_the_ensemble_variant_is_trained_verified_on_its_members_and_gated_on_crps(days, tmp_path, monkeypatch):
    """Aurora 1.5's ensemble through the whole pipeline: members in the evaluation, CRPS gates."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlruns.db'}")
    gates = {"gates": [{"metric": "crps", "variable": "t2m", "lead_hours": [12]}]}
    summary = run_local("training", arguments("ensemble-v1.5", days, gates=gates, max_inits=4), workdir=tmp_path / "runs",
                        quiet=True)
    assert summary.state == "SUCCEEDED", summary.describe()
    assert summary.registered_version == "1"
    evaluation = Path(summary.reports["evaluate.scores"])
    records = json.loads((evaluation / "scores.json").read_text())["records"]
    crps = {r["forecast"] for r in records if r["metric"] == "crps" and r["variable"] == "t2m"}
    assert crps == {"model", "persistence"}  # a point forecast's CRPS is its MAE
    ranks = {r["rank"] for r in records if r["metric"] == "rank_histogram" and r["forecast"] == "model"}
    assert ranks == set(range(5))  # 4 members: ranks 0..4
    verdict = json.loads((evaluation / "gates.json").read_text())
    assert {c["gate"].split()[0] for c in verdict["comparisons"]} == {"crps"}
    assert sorted(p.name for p in (evaluation / "report" / "ensemble").glob("*.png"))
    assert "aurora-ensemble-v1p5" in {m.name for m in client().search_registered_models()}


@pytest.mark.slow
def test_a_compressed_model_is_gated_scored_beside_its_source_and_registered_with_its_cost(days, tmp_path,
                                                                                          monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlruns.db'}")
    summary = run_local("training", arguments("medium-range", days, compression={"method": "int8-dynamic"}),
                        workdir=tmp_path / "runs", quiet=True)
    assert summary.state == "SUCCEEDED", summary.describe()
    assert [task for task, _, _ in summary.steps][4:6] == ["compress", "evaluate"]
    evaluation = Path(summary.reports["evaluate.scores"])
    forecasts = {r["forecast"] for r in json.loads((evaluation / "scores.json").read_text())["records"]}
    assert {"model", "uncompressed", "persistence"} <= forecasts
    version = client().get_model_version("aurora-medium-range", summary.registered_version)
    assert version.tags["compression.method"] == "int8-dynamic"
    delta = json.loads(version.tags["compression.skill_delta"])
    assert abs(delta["rmse t2m @12h"]) < 0.05  # int8 of the tiny model: within 5 % of its source
    metrics = client().get_run(version.run_id).data.metrics
    assert metrics["compression.weight_bytes"] > 0 and metrics["compression.speedup"] > 0


@pytest.mark.slow
def test_a_first_model_worse_than_persistence_is_registered_and_not_promoted(tmp_path, monkeypatch):
    """The demo's split and gates in an empty registry, two steps from the initial weights:
    nothing passes because there is nothing to compare."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlruns.db'}")
    config = {**demo.CONFIG, "schedule": {"warmup_steps": 0},
              "train": {**demo.CONFIG["train"], "max_steps": 2, "val_every": 2}}
    args = {**demo.demo_arguments(), "config": config, "max_inits": 4,
            "n_trials": 1}  # one Optuna trial: the tune step searches
    summary = run_local("training", args, workdir=tmp_path / "runs", quiet=True)
    assert summary.state == "SUCCEEDED", summary.describe()
    assert summary.registered_version == "1" and not summary.promoted
    assert "champion" not in {a for a in client().get_registered_model("aurora-medium-range").aliases}
    verdict = json.loads((Path(summary.reports["evaluate.scores"]) / "gates.json").read_text())
    assert any("does not beat persistence" in r for r in verdict["reasons"])
    line = demo.demo_summary(summary)
    assert "verdict: not promoted (version 1 registered as challenger)" in line and "climatology" in line


@pytest.mark.slow
def test_a_retrained_challenger_that_fails_a_gate_is_registered_but_not_promoted(first_run, store, days):
    """The retrain pipeline warm-starts from the champion; with a learning rate that leaves the
    weights where they were, it does not beat the champion (it is the champion), so its
    version is registered and the champion stays."""
    assert first_run.promoted
    worse = arguments("medium-range", days, n_trials=0, warm_start="champion",
                      config={**CONFIG, "optim": {"lr": 1e-9}})
    summary = run_local("retrain", worse, workdir=store / "runs", quiet=True)
    assert summary.state == "SUCCEEDED", summary.describe()
    trained = json.loads((Path(summary.run_dir) / "train" / "model" / "train.json").read_text())
    assert trained["warm_start"] == "champion"
    assert summary.registered_version == "2" and not summary.promoted
    assert "does not beat champion" in summary.describe()
    scores = json.loads((Path(summary.reports["evaluate.scores"]) / "scores.json").read_text())
    assert scores["subject"]["champion"]["version"] == "1"
    assert str(client().get_registered_model("aurora-medium-range").aliases["champion"]) == "1"


@pytest.mark.slow
def test_a_rerun_takes_the_finished_steps_from_the_cache(first_run, store, days):
    """What a run killed after training finds when started again: validate re-hashes the data
    and the steps that finished before come from the cache."""
    summary = run_local("training", arguments("medium-range", days), workdir=store / "runs", quiet=True)
    assert summary.state == "SUCCEEDED", summary.describe()
    assert {"prepare", "tune", "train"} <= set(summary.cached), summary.describe()
    ran = {p.name for p in Path(summary.run_dir).iterdir()}
    assert "validate" in ran and "train" not in ran


def test_bad_data_stops_the_run_at_validate_with_the_report(store):
    bad = str(BROKEN / "fields_with_missing_values.grib")
    summary = run_local("training", arguments("medium-range", bad), workdir=store / "runs", quiet=True)
    assert summary.state == "FAILED" and summary.failed_task == "validate"
    assert summary.error.startswith("DataError: data failed"), summary.error
    report = json.loads(Path(summary.reports["validate.report_json"]).read_text())
    assert report["ok"] is False
    ran = {p.name for p in Path(summary.run_dir).iterdir()}
    assert "train" not in ran and "prepare" not in ran
    assert json.loads(Path(summary.reports["record-outcome.outcome"]).read_text())["state"] == "FAILED"


@pytest.mark.slow
def test_continuous_evaluation_records_the_champion_skill_per_window(first_run, store, days):
    """One window scored by the pipeline after an earlier one already in the history."""
    history = store / "skill.jsonl"
    history.write_text(json.dumps({"window": "earlier", "scores": {}}) + "\n")
    summary = run_local("evaluation", {"variant": "medium-range", "data": [days], "config": CONFIG,
                                       "check_contract": False, "eval_steps": 1, "max_inits": 2,
                                       "skill_history": str(history)}, workdir=store / "runs", quiet=True)
    assert summary.state == "SUCCEEDED", summary.describe()
    lines = [json.loads(line) for line in history.read_text().splitlines()]
    assert len(lines) == 2 and lines[1]["scores"] and lines[1]["drift"]["compared_with"] == 1
    assert summary.metrics["score-champion.rmse/t2m/6h"] > 0
