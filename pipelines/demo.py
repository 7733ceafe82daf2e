"""The demo pipeline: train, evaluate and register the tiny medium-range model on real data.

The data is the shipped hourly ERA5 sample (10 m wind over the central USA, 25 hours,
data/samples/README.md). The variant's other variables are not in it: they are filled with
zeros in the inputs and left out of the loss, so the model learns winds from real winds.
The tiny profile runs on a laptop CPU; a few minutes of training on one day of data makes
no skilful model, and the scorecard says so beside persistence and climatology.
"""

from __future__ import annotations

import os
from pathlib import Path

from pipelines.runner import RunSummary, run_local

SAMPLES = Path(os.environ.get("AURORAOPS_SAMPLES", Path(__file__).resolve().parents[1] / "data" / "samples"))
DATA = "era5_d2m_u10_v10_usa_2018-01-02_hourly.nc"

CONFIG = {
    "profile": "tiny",
    "timestep_hours": 1,
    "data": {"val_fraction": 0.2, "crop": True, "fill_missing": "zeros", "fill_missing_dynamic": "zeros",
             "levels": [500, 850], "batch_size": 2},
    "optim": {"lr": 1e-3},
    "train": {"max_steps": 12, "val_every": 4, "device": "cpu"},
}
# The first model of a variant has no champion to beat; a later run must beat it on 10 m wind.
GATES = {"gates": [{"metric": "rmse", "variable": "u10", "against": ["champion"]},
                   {"metric": "rmse", "variable": "v10", "against": ["champion"]}]}


def demo_arguments(data_dir: str | Path = SAMPLES) -> dict:
    """The training pipeline's arguments for the demo."""
    return {"variant": "medium-range", "data": [str(Path(data_dir) / DATA)], "config": CONFIG,
            "check_contract": False, "n_trials": 2, "gates": GATES, "eval_steps": 3, "max_inits": 4}


def run_demo(workdir: str | Path = "outputs/demo/pipeline", data_dir: str | Path = SAMPLES) -> RunSummary:
    """Run the demo training pipeline under `workdir`, registering into its MLflow store."""
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    arguments = demo_arguments(data_dir)
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        arguments["tracking_uri"] = f"sqlite:///{workdir / 'mlruns.db'}"
    return run_local("training", arguments, workdir=workdir)
