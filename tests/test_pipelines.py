"""Whole pipelines with KFP's real local runner (subprocess tasks) and a real MLflow sqlite store.

The data is the shipped hourly ERA5 series (u10/v10 over the USA) on its north-west 33x64
box, the model the tiny profile at a 1 h step, trained for two steps. The promotion gate is
10 m wind RMSE against the champion: the first model of a variant has no champion to beat
and is promoted; a later one must beat it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import BROKEN
from pipelines import demo
from pipelines.runner import run_local

# The demo's run (pipelines.demo), trained for two steps instead of twelve.
CONFIG = {**demo.CONFIG, "train": {**demo.CONFIG["train"], "max_steps": 2, "val_every": 2}}
GATES = demo.GATES


@pytest.fixture(scope="module")
def box(hourly_box) -> str:
    return str(hourly_box)


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


HIGH_RES = {"n_trials": 0}


def arguments(variant: str, data: str, **extra) -> dict:
    return {"variant": variant, "data": [data], "config": CONFIG, "check_contract": False, "n_trials": 1,
            "gates": GATES, "eval_steps": 1, "max_inits": 2, **extra}


@pytest.fixture(scope="module")
def first_runs(store, box) -> dict:
    """The training pipeline of two variants into an empty registry. High-res skips tuning (zero
    trials): the step is the one medium-range runs, and the suite's time is better spent elsewhere."""
    return {v: run_local("training", arguments(v, box, **HIGH_RES if v == "high-res" else {}),
                         workdir=store / "runs", quiet=True)
            for v in ("medium-range", "high-res")}


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["medium-range", "high-res"])
def test_the_training_pipeline_registers_a_champion_that_forecasts(first_runs, variant, box):
    import mlflow

    summary = first_runs[variant]
    assert summary.state == "SUCCEEDED", summary.describe()
    assert summary.registered_version == "1" and summary.promoted, summary.describe()
    assert summary.metrics["evaluate.rmse/u10/1h"] > 0
    assert "<html" in Path(summary.reports["evaluate.report"]).read_text().lower()
    assert json.loads(Path(summary.reports["record-outcome.outcome"]).read_text())["state"] == "SUCCEEDED"

    model = mlflow.pyfunc.load_model(f"models:/aurora-{variant}@champion")
    forecast = model.predict(box, params={"steps": 2, "fill_missing": "zeros", "crop": True})
    assert forecast.sizes["time"] == 2 and {"u10", "v10"} <= set(forecast.data_vars)
    assert bool(forecast.u10.notnull().all())


@pytest.mark.slow
def test_a_retrained_challenger_that_fails_a_gate_is_registered_but_not_promoted(first_runs, store, box):
    """The retrain pipeline warm-starts from the champion; with a learning rate that leaves the
    weights where they were and a gate on persistence too, which a tiny model two steps from
    random weights cannot beat at one hour, its version is registered and the champion stays."""
    from pipelines.registry import client

    assert first_runs["medium-range"].promoted
    gates = {"gates": [{**g, "against": ["champion", "persistence"]} for g in GATES["gates"]]}
    worse = arguments("medium-range", box, n_trials=0, warm_start="champion",
                      config={**CONFIG, "optim": {"lr": 1e-9}}, gates=gates)
    summary = run_local("retrain", worse, workdir=store / "runs", quiet=True)
    assert summary.state == "SUCCEEDED", summary.describe()
    trained = json.loads((Path(summary.run_dir) / "train" / "model" / "train.json").read_text())
    assert trained["warm_start"] == "champion"
    assert summary.registered_version == "2" and not summary.promoted
    assert "does not beat persistence" in summary.describe()
    assert str(client().get_registered_model("aurora-medium-range").aliases["champion"]) == "1"


@pytest.mark.slow
def test_a_rerun_takes_the_finished_steps_from_the_cache(first_runs, store, box):
    """What a run killed after training finds when started again: validate re-hashes the data
    and the steps that finished before come from the cache."""
    summary = run_local("training", arguments("high-res", box, **HIGH_RES), workdir=store / "runs", quiet=True)
    assert summary.state == "SUCCEEDED", summary.describe()
    assert {"augment", "tune", "train"} <= set(summary.cached), summary.describe()
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
    assert "train" not in ran and "augment" not in ran
    assert json.loads(Path(summary.reports["record-outcome.outcome"]).read_text())["state"] == "FAILED"


@pytest.mark.slow
def test_continuous_evaluation_records_the_champion_skill_per_window(first_runs, store, box):
    """One window scored by the pipeline after an earlier one already in the history."""
    history = store / "skill.jsonl"
    history.write_text(json.dumps({"window": "earlier", "scores": {}}) + "\n")
    summary = run_local("evaluation", {"variant": "medium-range", "data": [box], "config": CONFIG,
                                       "check_contract": False, "eval_steps": 1, "max_inits": 2,
                                       "skill_history": str(history)}, workdir=store / "runs", quiet=True)
    assert summary.state == "SUCCEEDED", summary.describe()
    lines = [json.loads(line) for line in history.read_text().splitlines()]
    assert len(lines) == 2 and lines[1]["scores"] and lines[1]["drift"]["compared_with"] == 1
    assert summary.metrics["score-champion.rmse/u10/1h"] > 0
