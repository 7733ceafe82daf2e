"""The demo pipeline: train, evaluate and register the tiny medium-range model on a real month.

The data is the longest real series shipped: ERA5 hourly 2 m temperature over the British
Isles, March 2019 (the part west of 0°; data/samples/README.md). 1-21 March trains (1-16)
and validates (17-21, early stopping), with an initialisation every hour and 6 h model
steps; 22-31 March is held out: the prepare step removes it from the training series, so
no training, tuning or early stopping sees it, and the evaluation verifies every hourly
initialisation in it at +6, +12, +18 and +24 h. The baselines are persistence and the
hour-of-day climatology of 1-21 March. The variables the file lacks (10 m wind, pressure,
the upper air, the statics) are filled with Aurora's normalisation means, which the model
sees as zeros, and are never scored; the checkpoint records so, and every forecast from it
fills them the same way.

The model is promoted only if it beats persistence and the climatology at +6, +12 and
+24 h (and the champion, once there is one); `demo_summary` says in one line which.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pipelines.runner import RunSummary, run_local

SAMPLES = Path(os.environ.get("AURORAOPS_SAMPLES", Path(__file__).resolve().parents[1] / "data" / "samples"))
DATA = "era5_t2m_british_isles_2019-03_hourly.nc"
TEST_PERIOD = ["2019-03-22T00:00", "2019-03-31T23:00"]
"""Held out of prepare, tune and train; the evaluation's initialisations."""
GATED_LEADS = (6, 12, 24)

CONFIG = {
    "profile": "tiny",
    "timestep_hours": 6,
    "head_init": "zero",
    "model": {"max_history_size": 5, "drop_rate": 0.1},
    "data": {"val_period": ["2019-03-17T00:00", "2019-03-22T00:00"], "crop": True, "fill_missing": "mean",
             "fill_missing_dynamic": "mean", "levels": [500, 850], "history": 5, "batch_size": 8,
             "normalisation": "training"},
    "optim": {"lr": 3e-4, "weight_decay": 0.1},
    "schedule": {"warmup_steps": 25},
    "rollout": {"curriculum": [[0, 1], [60, 2], [100, 4]]},
    "early_stopping": {"lead_steps": [1, 2, 4]},
    "train": {"max_steps": 150, "val_every": 10, "device": "cpu"},
}
"""Five input times 6 h apart (the field 24 h before each target is among them), the data's own
normalisation, absent inputs at Aurora's means, heads starting at zero (a flat forecast at the
training median), a short run validated every 10 steps: on three weeks of one region the model
overfits within ~100 steps, and the best validated weights are kept."""
GATES = {"gates": [{"metric": "rmse", "variable": "t2m", "lead_hours": list(GATED_LEADS)}]}
"""Beat persistence, the climatology and any champion on 2 m temperature at +6, +12, +24 h."""


def demo_arguments(data_dir: str | Path = SAMPLES) -> dict:
    """The training pipeline's arguments for the demo."""
    return {"variant": "medium-range", "data": [str(Path(data_dir) / DATA)], "config": CONFIG,
            "check_contract": False, "n_trials": 0, "gates": GATES, "eval_steps": 4, "max_inits": 0,
            "test_period": TEST_PERIOD}


def run_demo(workdir: str | Path = "outputs/demo/pipeline", data_dir: str | Path = SAMPLES, *,
             quiet: bool = False) -> RunSummary:
    """Run the demo training pipeline under `workdir`, registering into its MLflow store."""
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    arguments = demo_arguments(data_dir)
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        arguments["tracking_uri"] = f"sqlite:///{workdir / 'mlruns.db'}"
    return run_local("training", arguments, workdir=workdir, quiet=quiet)


def held_out_rmse(scores_path: str | Path, variable: str = "t2m") -> dict[str, dict[float, float]]:
    """`{forecast: {lead hours: whole-grid RMSE}}` of `variable` in an evaluation's scores.json."""
    from model_code.evaluation.regions import WHOLE_GRID

    out: dict[str, dict[float, float]] = {}
    for r in json.loads(Path(scores_path).read_text())["records"]:
        if r["variable"] == variable and r["metric"] == "rmse" and r["region"] in WHOLE_GRID:
            out.setdefault(r["forecast"], {})[float(r["lead_hours"])] = float(r["value"])
    return out


def demo_summary(summary: RunSummary) -> str:
    """The held-out scores side by side, the verdict in one plain line, and where the report is."""
    evaluation = Path(summary.reports.get("evaluate.scores", ""))
    if not (evaluation / "scores.json").is_file():
        return "no evaluation: the pipeline stopped before it (see the log above)"
    rmse = held_out_rmse(evaluation / "scores.json")
    forecasts = [f for f in ("model", "persistence", "climatology", "champion") if f in rmse]
    leads = sorted(rmse["model"])
    lines = [f"2 m temperature RMSE (K, latitude-weighted) on the held-out days {TEST_PERIOD[0][:10]} .. "
             f"{TEST_PERIOD[1][:10]}, every hourly initialisation:",
             "  " + f"{'lead':<6}" + "".join(f"{f:>13}" for f in forecasts)]
    for lead in leads:
        mark = "*" if lead in GATED_LEADS else " "
        lines.append(f"  +{lead:<3g}h{mark}" + "".join(f"{rmse[f].get(lead, float('nan')):>13.3f}" for f in forecasts))
    lines.append("  (* gated leads)")
    gates = json.loads((evaluation / "gates.json").read_text())
    version = summary.registered_version
    if summary.promoted:
        lines.append(f"verdict: promoted: aurora-medium-range version {version} is champion; it beats "
                     + ", ".join(f for f in forecasts if f != "model") + " at every gated lead")
    else:
        lost = [c for c in gates["comparisons"] if not c["passed"]]
        where = "; ".join(f"+{c['lead_hours']:g} h {c['model']:.2f} vs {c['against']} {c['other']:.2f}"
                          for c in lost if c["model"] is not None and c["other"] is not None)
        lines.append(f"verdict: not promoted (version {version} registered as challenger): it does not beat "
                     f"every baseline at the gated leads: {where or '; '.join(c['note'] for c in lost)}")
    lines.append(f"report: {evaluation / 'report' / 'report.html'}")
    return "\n".join(lines)
