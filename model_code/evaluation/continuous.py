"""Continuous evaluation: score a checkpoint (the champion) on each new data window and watch its skill.

`score_checkpoint` runs a hindcast of the checkpoint over the window's init times, builds
persistence and climatology baselines from the same data, and scores them all
(`score.evaluate`). `evaluate_window` does that, appends one line to a skill history
(JSON lines, rewritten atomically so a reader never sees half a line) and compares the
window with the running mean of the earlier ones:

    change = -improvement(metric, this window, mean of earlier windows)

i.e. the relative loss of skill against the running mean (for RMSE, `(rmse - mean) / mean`;
positive means this window is worse). A score whose change exceeds `threshold` (default 10 %) is
flagged as drift. The first window has nothing to compare with and flags nothing.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np
import xarray as xr

from model_code.checkpoint import load_checkpoint
from model_code.data.ingest import FillMode
from model_code.errors import DataError
from model_code.evaluation.baselines import climatology, climatology_forecast, persistence
from model_code.evaluation.ensembles import perturbed_ensemble
from model_code.evaluation.hindcast import hindcast
from model_code.evaluation.report import improvement
from model_code.evaluation.score import DEFAULT_METRICS, Scores, evaluate, target_options
from model_code.evaluation.truth import open_truth
from model_code.storage import is_s3, local_copy, write_atomic
from model_code.variants import get_variant

__all__ = ["HindcastConfig", "HindcastResult", "WindowResult", "evaluate_window", "read_history",
           "score_checkpoint", "skill_drift"]

TRACKED = ("rmse", "mae", "acc", "crps")
"""Metrics whose drift the history follows (bias can cross zero, so relative change is meaningless)."""


@dataclass(frozen=True)
class HindcastConfig:
    """One scoring run of a checkpoint on data files: the typed config behind
    `auroraops evaluate --checkpoint` and the nightly continuous evaluation."""

    checkpoint: str
    data: tuple[str, ...]
    steps: int = 4
    variant: str | None = None
    """Must match the checkpoint's variant when given."""
    max_inits: int | None = None
    inits: tuple[str, ...] | None = None
    fill_missing: FillMode | None = None
    fill_missing_dynamic: FillMode | None = None
    crop: bool = False
    levels: tuple[float, ...] | None = None
    regions: tuple[str, ...] | None = None
    """Default: the variant's target regions (`score.target_options`)."""
    metrics: tuple[str, ...] = DEFAULT_METRICS
    members: int = 1
    """Above 1: a perturbed-initial-condition ensemble of that size (CRPS, spread-skill)."""
    perturbation: float = 0.05
    seed: int = 0
    climatology: tuple[str, ...] | None = None
    """Files of a training period to build the climatology from; default: the data itself
    (in-sample: on a short window it nearly equals the truth, a baseline hard to beat)."""


@dataclass
class HindcastResult:
    scores: Scores
    forecasts: xr.Dataset
    truth: xr.Dataset
    model: object = field(repr=False)
    spec: object = field(repr=False)


def score_checkpoint(cfg: HindcastConfig) -> HindcastResult:
    """Hindcast `cfg.checkpoint` on `cfg.data` and score it beside persistence and climatology.

    The climatology comes from `cfg.climatology` files, else from the data's own truth (by
    hour of day; a whole year of data gives day of year and hour).
    """
    model, info = load_checkpoint(cfg.checkpoint, variant=cfg.variant)
    spec = get_variant(info.variant)
    options = dict(steps=cfg.steps, inits=list(cfg.inits) if cfg.inits else None, max_inits=cfg.max_inits,
                   fill_missing=cfg.fill_missing, fill_missing_dynamic=cfg.fill_missing_dynamic, crop=cfg.crop,
                   levels=list(cfg.levels) if cfg.levels else None, seed=cfg.seed)
    if cfg.members > 1:
        truth: list[xr.Dataset] = []

        def run(m):
            fc, tr = hindcast(m, spec, list(cfg.data), **options)
            truth[:] = [tr]
            return fc

        forecasts = perturbed_ensemble(model, spec, None, cfg.steps, members=cfg.members, scale=cfg.perturbation,
                                       seed=cfg.seed, run=run)
        truth_ds = truth[0]
    else:
        forecasts, truth_ds = hindcast(model, spec, list(cfg.data), **options)
    inits, leads = forecasts["init_time"].values, forecasts["lead_time"].values
    clim = climatology(open_truth(list(cfg.climatology)) if cfg.climatology else truth_ds)
    baselines = {"persistence": persistence(truth_ds, inits, leads),
                 "climatology": climatology_forecast(clim, inits, leads)}
    regions = cfg.regions or target_options(spec.name)["regions"]
    extra = {k: v for k, v in target_options(spec.name).items() if k != "regions"}
    scores = evaluate({"model": forecasts, **baselines}, truth_ds, climatology=clim, regions=regions,
                      metrics=cfg.metrics, variant=spec.name, truth_name=", ".join(cfg.data), **extra)
    return HindcastResult(scores, forecasts, truth_ds, model, spec)


# --------------------------------------------------------------------------------------
# Skill history


def score_key(record: dict) -> str:
    """A stable name of one score: `t2m rmse global +24h`, `z500 acc global +72h`."""
    level = "" if record.get("level") is None else f"{record['level']:g}"
    thr = f" {record['threshold']}" if record.get("threshold") else ""
    return f"{record['variable']}{level} {record['metric']}{thr} {record['region']} +{record['lead_hours']:g}h"


def read_history(uri: str) -> list[dict]:
    """The entries of a skill history (JSON lines); [] when the file does not exist yet."""
    if not is_s3(uri) and not Path(uri).exists():
        return []
    try:
        with local_copy(uri) as path:
            text = Path(path).read_text()
    except DataError as err:
        if "not found" in str(err):
            return []
        raise
    entries = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            entries.append(json.loads(line))
        except ValueError as err:
            raise DataError(f"line {n} is not JSON ({err})", source=str(uri)) from None
    return entries


def skill_drift(history: Sequence[dict], current: dict[str, float], *, threshold: float = 0.1) -> dict:
    """Change of each tracked score of `current` against the running mean of `history`.

    Returns `{"compared_with": n windows, "threshold", "changes": {key: change}, "flagged":
    [keys worse than threshold]}`; change > 0 means skill was lost (see module docstring).
    """
    past: dict[str, list[float]] = {}
    for entry in history:
        for key, value in entry.get("scores", {}).items():
            past.setdefault(key, []).append(value)
    changes, flagged = {}, []
    for key, value in current.items():
        if key not in past:
            continue
        metric = key.split(" ")[1]
        mean = float(np.mean(past[key]))
        gain = improvement(metric, value, mean)
        if gain is None:
            continue
        changes[key] = -gain  # positive: skill lost against the earlier mean
        if -gain > threshold:
            flagged.append(key)
    return {"compared_with": len(history), "threshold": threshold, "changes": changes, "flagged": flagged}


@dataclass
class WindowResult:
    """One continuous-evaluation window: the scores, its history line and the drift found."""

    scores: Scores
    entry: dict
    drift: dict
    history: str


def evaluate_window(
    cfg: HindcastConfig, history_uri: str, *, window: str | None = None, threshold: float = 0.1,
    result: HindcastResult | None = None,
) -> WindowResult:
    """Score `cfg.checkpoint` on `cfg.data` (or take `result` already scored) and append
    the window to the skill history at `history_uri`, with its drift against earlier windows."""
    result = result or score_checkpoint(cfg)
    model_name = result.scores.forecasts()[0]
    current = {score_key(r): r["value"] for r in result.scores.records
               if r["forecast"] == model_name and r["metric"] in TRACKED}
    history = read_history(history_uri)
    drift = skill_drift(history, current, threshold=threshold)
    inits = result.forecasts["init_time"].values
    entry = {
        "window": window or f"{str(inits.min())[:16]}..{str(inits.max())[:16]}",
        "evaluated_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "checkpoint": cfg.checkpoint,
        "variant": result.scores.variant,
        "data": list(cfg.data),
        "inits": len(inits),
        "config": {k: v for k, v in asdict(cfg).items() if k not in ("checkpoint", "data")},
        "scores": current,
        "drift": drift,
    }
    lines = [json.dumps(e, allow_nan=False) for e in (*history, entry)]
    written = write_atomic(history_uri, lambda path: Path(path).write_text("\n".join(lines) + "\n"))
    return WindowResult(result.scores, entry, drift, written)
