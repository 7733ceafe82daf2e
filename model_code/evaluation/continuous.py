"""Continuous evaluation: score a checkpoint (the champion) on each new data window and watch its skill.

`score_checkpoint` runs a hindcast of the checkpoint over the window's init times, builds
persistence and climatology baselines from the same data, and scores them all
(`score.evaluate`). `evaluate_window` does that, appends one line to a skill history
(JSON lines, rewritten atomically so a reader never sees half a line) and compares the
window with the running mean of the earlier ones: the relative loss of skill against that
mean (for RMSE, MAE and CRPS `(x - mean) / mean`, for ACC `(mean - x) / |mean|`; positive
means this window is worse). A score whose change exceeds `threshold` (default 10 %) is
flagged as drift. The first window has nothing to compare with and flags nothing.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np
import xarray as xr

from model_code.checkpoint import load_checkpoint
from model_code.data.ingest import FillMode
from model_code.errors import DataError
from model_code.evaluation.baselines import (
    ReferenceClimatology, climatology_forecast, persistence, reference_climatology,
)
from model_code.evaluation.ensembles import perturbed_ensemble
from model_code.evaluation.forecasts import on_forecast_points
from model_code.evaluation.hindcast import hindcast
from model_code.evaluation.score import DEFAULT_METRICS, Scores, evaluate, target_options
from model_code.evaluation.truth import open_truth
from model_code.storage import content_hash, data_hash, is_s3, local_copy, write_atomic
from model_code.variants import get_variant

__all__ = ["HindcastConfig", "HindcastResult", "WindowResult", "evaluate_window", "read_history",
           "score_checkpoint", "skill_drift"]

TRACKED = ("rmse", "mae", "acc", "crps")
"""Metrics whose drift the history follows (bias can cross zero, so relative change is meaningless)."""


STOCHASTIC_MEMBERS = 4
"""The fewest members a stochastic variant is verified with: its gates judge fair CRPS, which
needs an ensemble (4 keeps a CPU hindcast affordable; more members sharpen the estimate)."""


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
    """Fill of absent static fields; None: as the checkpoint's training did."""
    fill_missing_dynamic: FillMode | None = None
    """Fill of absent time-dependent inputs (never scored); None: as the checkpoint's training did."""
    crop: bool | None = None
    """Crop the grid to the patch size; None: as the checkpoint's training did."""
    levels: tuple[float, ...] | None = None
    """Pressure levels; None: the checkpoint's training levels, else every level the data have."""
    regions: tuple[str, ...] | None = None
    """Default: the variant's target regions (`score.target_options`)."""
    metrics: tuple[str, ...] = DEFAULT_METRICS
    members: int = 1
    """Above 1: an ensemble of that size (CRPS, spread-skill): the model's own noise for a
    stochastic variant (at least `STOCHASTIC_MEMBERS` of them), else perturbed initial conditions."""
    perturbation: float = 0.05
    seed: int = 0
    init_period: tuple[str, str] | None = None
    """Only initialisation times in [start, end] (ISO times): the held-out period verified."""
    climatology: tuple[str, ...] | None = None
    """Files to build the climatology baseline from; default: the data before the first init."""
    climatology_period: tuple[str, str] | None = None
    """[start, end] of the climatology in `climatology` (or the data). Either way it must be
    disjoint from the verified period (`baselines.reference_climatology`)."""


@dataclass
class HindcastResult:
    scores: Scores
    forecasts: xr.Dataset
    truth: xr.Dataset
    model: object = field(repr=False)
    spec: object = field(repr=False)
    config: HindcastConfig | None = None
    """The config as run: fills, crop and levels resolved from the checkpoint where not given."""


def score_checkpoint(cfg: HindcastConfig) -> HindcastResult:
    """Hindcast `cfg.checkpoint` on `cfg.data` and score it beside persistence and climatology.

    The climatology comes from `cfg.climatology` files or `cfg.climatology_period`, else from
    the data before the first init (`baselines.reference_climatology`): never from the
    verified days. Without enough of it the baseline is left out and the scores' notes say why.
    """
    model, info = load_checkpoint(cfg.checkpoint, variant=cfg.variant)
    spec = get_variant(info.variant)
    trained = info.training_data  # fed as it was trained, unless the config says otherwise
    cfg = replace(cfg, fill_missing=cfg.fill_missing or trained.get("fill_missing"),
                  fill_missing_dynamic=cfg.fill_missing_dynamic or trained.get("fill_missing_dynamic"),
                  crop=bool(trained.get("crop")) if cfg.crop is None else cfg.crop,
                  levels=cfg.levels or info.training_levels)
    options = dict(steps=cfg.steps, inits=list(cfg.inits) if cfg.inits else None, max_inits=cfg.max_inits,
                   init_period=cfg.init_period, fill_missing=cfg.fill_missing,
                   fill_missing_dynamic=cfg.fill_missing_dynamic, crop=cfg.crop,
                   levels=list(cfg.levels) if cfg.levels else None, seed=cfg.seed)
    if spec.stochastic:
        forecasts, truth_ds = hindcast(model, spec, list(cfg.data), members=max(cfg.members, STOCHASTIC_MEMBERS),
                                       **options)
    elif cfg.members > 1:
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
    ref = climatology_of(cfg.climatology or cfg.data, forecasts, period=cfg.climatology_period,
                         explicit=bool(cfg.climatology))
    baselines = {"persistence": persistence(truth_ds, inits, leads)}
    if ref.dataset is not None:
        baselines["climatology"] = climatology_forecast(ref.dataset, inits, leads)
    options = target_options(spec.name, forecasts)
    regions = cfg.regions or options.pop("regions")
    options.pop("regions", None)
    scores = evaluate({"model": forecasts, **baselines}, truth_ds, climatology=ref.dataset, regions=regions,
                      metrics=cfg.metrics, variant=spec.name, truth_name=", ".join(cfg.data), **options)
    scores.notes.append(f"climatology: {ref.note}")
    scores.subject.update(model={"checkpoint": cfg.checkpoint, "checkpoint_sha256": content_hash(cfg.checkpoint)},
                          data_hash=data_hash(cfg.data), **verified_subject(forecasts))
    return HindcastResult(scores, forecasts, truth_ds, model, spec, cfg)


def climatology_of(uris, forecasts: xr.Dataset, *, period=None, explicit: bool = False) -> ReferenceClimatology:
    """The climatology baseline for `forecasts` from files `uris`, read only over the times it may use."""
    inits = forecasts["init_time"].values
    time_range = period if period is not None else (None, None) if explicit else (
        None, inits.min() - np.timedelta64(1, "ns"))
    source, _ = on_forecast_points(open_truth(list(uris), time_range=time_range), forecasts, "the climatology")
    return reference_climatology(source, inits, forecasts["lead_time"].values, period=period, explicit=explicit)


def verified_subject(forecasts: xr.Dataset) -> dict:
    """What a verification covered: its lead times and initialisation times."""
    inits = forecasts["init_time"].values
    return {"leads_hours": [float(h) for h in forecasts["lead_time"].values / np.timedelta64(1, "h")],
            "inits": {"first": str(inits.min())[:19], "last": str(inits.max())[:19], "count": int(len(inits)),
                      "times": [str(t)[:19] for t in np.sort(inits)]}}


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
        if mean == 0 or not (np.isfinite(mean) and np.isfinite(value)):
            continue
        lost = (mean - value) / abs(mean) if metric == "acc" else (value - mean) / abs(mean)
        changes[key] = lost
        if lost > threshold:
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
