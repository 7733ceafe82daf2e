"""Run a variant forward: a generator of steps, a forecast of a window, a job from files to a file."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.metadata import version
from typing import Iterator

import torch
import xarray as xr
from aurora import Aurora, Batch, rollout

from model_code.checkpoint import load_checkpoint, read_checkpoint_info
from model_code.data.batch import forecast_to_dataset, window_to_batch
from model_code.data.contract import check_window
from model_code.data.ingest import FillMode, Provenance, load_window
from model_code.data.writers import output_format, write_dataset
from model_code.errors import DataError
from model_code.variants import VariantSpec, build_model, get_variant


def forecast_steps(model: Aurora, batch: Batch, steps: int) -> Iterator[Batch]:
    """Yield the prediction of every rollout step, on the CPU, without autograd state."""
    if steps < 1:
        raise DataError(f"steps must be at least 1; got {steps}")
    with torch.inference_mode():
        for pred in rollout(model, batch, steps=steps):
            yield pred.to("cpu")


def forecast(
    model: Aurora, spec: VariantSpec, window: xr.Dataset, steps: int, *, attrs: dict | None = None
) -> xr.Dataset:
    """A `steps`-step forecast of `spec` from `window`, as one CF dataset."""
    batch = window_to_batch(window, spec)
    predictions = list(forecast_steps(model, batch, steps))
    return forecast_to_dataset(predictions, spec, window.time.values[-1], attrs)


@dataclass(frozen=True)
class ForecastJob:
    """One forecast from files to a file: the typed config behind `auroraops forecast`."""

    variant: str
    inputs: tuple[str, ...]
    steps: int
    out: str
    profile: str | None = None
    """`tiny` or `full`; by default the checkpoint's own, or `tiny` without a checkpoint."""
    checkpoint: str | None = None
    """Path or s3:// URI of weights; None means seeded random initial weights."""
    fill_missing: FillMode | None = None
    """Fill every absent input this way; None: as the checkpoint's training filled them
    (`CheckpointInfo.filled_inputs`), and refuse any other absent input."""
    history: int | None = None
    init_time: str | None = None
    levels: tuple[float, ...] | None = None
    regrid: float | None = None
    crop_to_patch: bool = False
    seed: int = 0
    device: str = "cpu"


@dataclass
class ForecastResult:
    out: str
    dataset: xr.Dataset
    window: xr.Dataset
    provenance: Provenance
    weights: str
    seconds: dict[str, float] = field(default_factory=dict)


def run_forecast_job(job: ForecastJob) -> ForecastResult:
    """Ingest, check, build or load the model, forecast and write: fail before compute."""
    spec = get_variant(job.variant)
    info = None
    if job.checkpoint and str(job.checkpoint).endswith(".safetensors"):
        info = read_checkpoint_info(job.checkpoint)  # metadata only: the model is built after the checks
        if info.variant != spec.name:
            raise DataError(f"checkpoint holds variant '{info.variant}', not '{spec.name}'", source=job.checkpoint)
        spec = info.spec  # its time step and history
    output_format(job.out)
    if job.steps < 1:
        raise DataError(f"steps must be at least 1; got {job.steps}")
    clock = time.perf_counter()
    seconds: dict[str, float] = {}

    fills, levels = job.fill_missing, job.levels
    if fills is None and info is not None:
        fills, levels = info.filled_inputs or None, levels or info.training_levels
    window, prov = load_window(
        job.inputs, spec, regrid_to=job.regrid, history=job.history, init_time=job.init_time,
        levels=levels, fill_missing=fills, crop=job.crop_to_patch, seed=job.seed,
    )
    check_window(window, spec)
    seconds["ingest"] = time.perf_counter() - clock

    clock = time.perf_counter()
    if job.checkpoint:
        model, info = load_checkpoint(job.checkpoint, variant=spec.name, profile=job.profile)
        weights = f"checkpoint {info.uri} ({info.variant}/{info.profile})"
        profile = info.profile
    else:
        profile = job.profile or "tiny"
        model = build_model(spec, profile, seed=job.seed)
        weights = (f"random initial weights (seed {job.seed}); no checkpoint given, so the values "
                   "exercise the system but are not a meaningful forecast")
    model = model.to(job.device)
    seconds["model"] = time.perf_counter() - clock

    clock = time.perf_counter()
    attrs = {
        "aurora_profile": profile,
        "weights": weights,
        "source": f"auroraops {version('aurora-mlops')} with microsoft-aurora {version('microsoft-aurora')}",
        "history": f"{datetime.now(timezone.utc):%Y-%m-%dT%H:%M:%SZ} forecast of {job.steps} step(s)",
        **prov.attrs(),
    }
    ds = forecast(model, spec, window, job.steps, attrs=attrs)
    seconds["forecast"] = time.perf_counter() - clock

    clock = time.perf_counter()
    out = write_dataset(ds, job.out)
    seconds["write"] = time.perf_counter() - clock
    return ForecastResult(out, ds, window, prov, weights, seconds)
