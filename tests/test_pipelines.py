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
import xarray as xr

from conftest import BROKEN, ERA5_HOURLY
from pipelines.runner import run_local

CONFIG = {
    "profile": "tiny",
    "timestep_hours": 1,
    "data": {"val_fraction": 0.2, "crop": True, "fill_missing": "zeros", "fill_missing_dynamic": "zeros",
             "levels": [500, 850], "batch_size": 2},
    "optim": {"lr": 1e-3},
    "train": {"max_steps": 2, "val_every": 2, "device": "cpu"},
}
GATES = {"gates": [{"metric": "rmse", "variable": "u10", "against": ["champion"]},
                   {"metric": "rmse", "variable": "v10", "against": ["champion"]}]}


@pytest.fixture(scope="module")
def box(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("era5") / "era5_hourly_box.nc"
    with xr.open_dataset(ERA5_HOURLY) as ds:
        ds.isel(latitude=slice(0, 33), longitude=slice(0, 64)).load().to_netcdf(path)
    return str(path)


@pytest.fixture
def store(tmp_path, monkeypatch) -> Path:
    """A fresh sqlite registry in the test's directory (artifacts beside it)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlruns.db'}")
    return tmp_path


def arguments(variant: str, data: str, **extra) -> dict:
    return {"variant": variant, "data": [data], "config": CONFIG, "check_contract": False, "n_trials": 1,
            "gates": GATES, "eval_steps": 1, "max_inits": 2, **extra}


@pytest.mark.slow
def test_training_pipelines_of_two_variants_register_models_that_forecast(store, box):
    import mlflow

    for variant in ("medium-range", "high-res"):
        summary = run_local("training", arguments(variant, box), workdir=store / "runs", quiet=True)
        assert summary.state == "SUCCEEDED", summary.describe()
        assert summary.registered_version == "1" and summary.promoted, summary.describe()
        assert summary.metrics[f"evaluate.rmse/u10/1h"] > 0
        assert Path(summary.reports["evaluate.report"]).read_text().lstrip().startswith("<")
        outcome = json.loads(Path(summary.reports["record-outcome.outcome"]).read_text())
        assert outcome["state"] == "SUCCEEDED"

        model = mlflow.pyfunc.load_model(f"models:/aurora-{variant}@champion")
        forecast = model.predict(box, params={"steps": 2, "fill_missing": "zeros", "crop": True})
        assert forecast.sizes["time"] == 2 and {"u10", "v10"} <= set(forecast.data_vars)
        assert bool(forecast.u10.notnull().all())


@pytest.mark.slow
def test_a_worse_challenger_is_registered_but_not_promoted_and_the_rerun_uses_the_cache(store, box):
    first = run_local("training", arguments("medium-range", box), workdir=store / "runs", quiet=True)
    assert first.promoted, first.describe()
    # Learning rate 0: the challenger keeps its random start; seed 1 makes that start another one.
    worse = arguments("medium-range", box, seed=1, config={**CONFIG, "optim": {"lr": 0.0}})
    second = run_local("training", worse, workdir=store / "runs", quiet=True)
    assert second.state == "SUCCEEDED", second.describe()
    assert second.registered_version == "2" and not second.promoted
    assert "gate: rmse u10" in second.describe()
    from pipelines.registry import client

    assert client().get_registered_model("aurora-medium-range").aliases["champion"] == "1"

    # The same arguments again: validate re-hashes the data, everything it keys comes from the cache.
    again = run_local("training", arguments("medium-range", box), workdir=store / "runs", quiet=True)
    assert {"augment", "tune", "train"} <= set(again.cached), again.describe()
    assert again.state == "SUCCEEDED"


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
