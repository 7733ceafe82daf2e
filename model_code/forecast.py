"""Run a variant forward: a generator of steps, a forecast of a window, a job from files to a file."""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from importlib.metadata import version
from typing import Iterator, Mapping, Sequence

import numpy as np
import torch
import xarray as xr
from aurora import Aurora, Batch

from model_code.checkpoint import CheckpointInfo, load_checkpoint, read_checkpoint_info
from model_code.data.batch import predictions_to_dataset, window_to_batch
from model_code.data.coastal import check_depth
from model_code.data.contract import check_window
from model_code.data.emissions import InventoryStatics, read_inventories, with_new_statics
from model_code.data.ingest import Field, FillMode, Provenance, load_window, read_fields
from model_code.data.lags import Lags, add_lags, check_rollout
from model_code.data.writers import output_format, write_dataset
from model_code.errors import DataError
from model_code.storage import local_copy
from model_code.variables import variable
from model_code.variants import VariantSpec, build_model, get_variant


def _load_lags(uris: Sequence[str], window: xr.Dataset, lags: Lags, *, regrid_to: float | None = None) -> xr.Dataset:
    """`add_lags` for a window cut from `uris` (paths or `s3://` URIs) by `ingest.load_window`."""
    with contextlib.ExitStack() as stack:
        paths = [(str(u), stack.enter_context(local_copy(u))) for u in uris]
        fields, _ = read_fields(paths, resolution=regrid_to)
        return add_lags(window, fields, lags).load()


def _recorded_inventories(info: CheckpointInfo, fields: Mapping[str, Field]) -> InventoryStatics:
    """The emission inventories `info` records, read again from their paths onto the grid of
    `fields`; one that cannot be read is an error naming it and the checkpoint."""
    lat, lon = next((f for f in fields.values() if f.var.kind != "static"), next(iter(fields.values()))).grid
    try:
        return read_inventories(info.emissions, lat, lon)
    except DataError as e:
        labels = ", ".join(m.inventory.label for m in info.emissions)
        raise DataError(f"its model takes inputs from the emission inventories {labels}, which a forecast reads "
                        f"again from the paths its training recorded: {e.source + ': ' if e.source else ''}"
                        f"{e.message}", source=info.uri, problems=e.problems) from None


def forecast_steps(model: Aurora, batch: Batch, steps: int, *, done: Sequence[Batch] = (),
                   steps_done: int | None = None, hours_within: Sequence[int] | None = None) -> Iterator[Batch]:
    """Yield the prediction of every rollout step after the first `steps_done`, on the CPU,
    without autograd state.

    Aurora's roll-out (`aurora.rollout`: each prediction, clipped where the model clips, becomes
    the newest input), with two differences that make a forecast resumable. Static fields stay
    the ones given: Aurora's own roll-out passes them through normalise and unnormalise at
    every step, which moves them by float rounding. And an earlier run of the same model and
    batch continues: `done` holds its last predictions as it yielded them (read back from its
    step files at full precision), at least as many as the input history when they are not
    all `steps_done` (default `len(done)`) of them; the steps that follow are bit-identical to
    those of the uninterrupted forecast.

    `hours_within` (models with variable lead times, e.g. (1, 2, ..., 6)): every step also
    yields the predictions at these hours from the same input, in order; the last must be the
    step, whose prediction goes on as the next input.
    """
    if steps < 1:
        raise DataError(f"steps must be at least 1; got {steps}")
    step_hours = model.timestep.total_seconds() / 3600
    within = tuple(hours_within) if hours_within else (step_hours,)
    if within[-1] != step_hours or (len(within) > 1 and not getattr(model, "variable_lead_time", False)):
        raise DataError(f"lead hours within a step {list(within)}: the model steps {step_hours:g} h and "
                        + ("the last must be that step" if within[-1] != step_hours
                           else "forecasts no lead time in between (no variable lead time)"))
    skipped = (len(done) if steps_done is None else steps_done) - len(done)
    # Inference mode is entered around each computation, never held across a `yield`: a
    # suspended generator would leave it on in the caller's code (and a second one interleaved
    # with it would restore the wrong mode when it closes).
    with torch.inference_mode():
        p = next(model.parameters())
        batch = model.batch_transform_hook(batch).type(p.dtype).crop(model.patch_size).to(p.device)
        statics = batch.static_vars
        history = next(iter(batch.surf_vars.values())).shape[1]
        check_rollout(model, skipped + len(done) + steps, history)
        if skipped < 0 or (skipped and len(done) < history):
            raise DataError(f"resuming after step {skipped + len(done)} needs the last {history} prediction(s) "
                            f"(the input history); got {len(done)}")
        if skipped:  # their history is shifted out by the `done` that follow: only the clock moves on
            batch = replace(batch, metadata=replace(
                batch.metadata, time=tuple(t + skipped * model.timestep for t in batch.metadata.time),
                rollout_step=batch.metadata.rollout_step + skipped))
        for pred in done:
            batch = _next_input(model, batch, pred.to(p.device), statics)
    model.set_noise_accumulation(len(within) if len(within) > 1 else 0)  # Aurora 1.5: smooth noise within a step
    try:
        for _ in range(steps):
            for hours in within:
                with torch.inference_mode():
                    pred = forward_hours(model, batch, hours)
                    out = pred.to("cpu")
                yield out
            with torch.inference_mode():
                batch = _next_input(model, batch, pred, statics)
    finally:
        model.set_noise_accumulation(0)


def forward_hours(model: Aurora, batch: Batch, hours: float) -> Batch:
    """One prediction `hours` ahead; models with variable lead times are told the hours."""
    if not getattr(model, "variable_lead_time", False):
        return model.forward(batch)
    size = next(iter(batch.surf_vars.values())).shape[0]
    return model.forward(batch, lead_times=torch.full((size,), float(hours)))


def _next_input(model: Aurora, batch: Batch, pred: Batch, statics: dict) -> Batch:
    """The input after `pred`: the history window moved on by one step, the statics unchanged."""
    pred = model.apply_rollout_input_clipping(pred)
    step = model.timestep
    metadata = replace(batch.metadata, time=tuple(t + step for t in batch.metadata.time),
                       rollout_step=batch.metadata.rollout_step + 1)
    # As `aurora.rollout`: a variable goes on when it is both an input and a prediction.
    return Batch(surf_vars={k: torch.cat([batch.surf_vars[k][:, 1:], v], dim=1)
                            for k, v in pred.surf_vars.items() if k in batch.surf_vars},
                 static_vars=statics,
                 atmos_vars={k: torch.cat([batch.atmos_vars[k][:, 1:], v], dim=1)
                             for k, v in pred.atmos_vars.items() if k in batch.atmos_vars},
                 metadata=metadata)


def forecast(
    model: Aurora, spec: VariantSpec, window: xr.Dataset, steps: int, *, attrs: dict | None = None,
    lead_hours: Sequence[int] | None = None, members: int = 1, seed: int = 0,
) -> xr.Dataset:
    """A `steps`-step forecast of `spec` from `window`, as one CF dataset.

    `lead_hours`: the lead times to give (default: each step's end), among `spec.lead_hours(steps)`.
    `members` > 1 (stochastic variants): that many forecasts, member m drawing the model's
    noise from seed `seed + m`, on a `member` dimension.
    """
    within = check_forecast_request(spec, steps, lead_hours, members)
    batch = window_to_batch(window, spec)
    init = window.time.values[-1]
    runs = []
    for m in range(members):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + m)
            predictions = list(forecast_steps(model, batch, steps, hours_within=within))
        ds = predictions_to_dataset(predictions, spec, init, attrs)
        if lead_hours is not None:
            ds = ds.isel(time=[i for i, lead in enumerate(ds.lead_time.values)
                               if lead / np.timedelta64(1, "h") in set(lead_hours)])
        runs.append(ds)
    if members == 1 and not spec.stochastic:
        return runs[0]
    out = xr.concat(runs, dim="member", combine_attrs="override")
    out = out.assign_coords(member=("member", np.arange(members), {"long_name": "ensemble member",
                                                                  "seeds": f"{seed} + member"}))
    counts: dict[str, int] = {}
    for ds in runs:
        for key, n in json.loads(ds.attrs.get("clipped_values", "{}")).items():
            counts[key] = counts.get(key, 0) + n
    out.attrs["clipped_values"] = json.dumps(counts, sort_keys=True)
    return out


def check_forecast_request(spec: VariantSpec, steps: int, lead_hours: Sequence[int] | None,
                           members: int) -> tuple[int, ...] | None:
    """Refuse what the variant cannot forecast before any compute; the hours within a step to run."""
    if steps < 1:
        raise DataError(f"steps must be at least 1; got {steps}")
    if not isinstance(members, int) or members < 1:
        raise DataError(f"members must be a whole number of at least 1; got {members!r}")
    if members > 1 and not spec.stochastic:
        raise DataError(f"the {spec.name} variant is deterministic: {members} members would be "
                        f"{members} identical forecasts; ask a stochastic variant (ensemble-v1.5) for members")
    if lead_hours is None:
        return None
    supported = spec.lead_hours(steps)
    unsupported = [h for h in lead_hours if h not in supported]
    if unsupported or not lead_hours:
        within = (f"every hour up to {steps * spec.timestep_hours} h" if spec.sub_step_hours
                  else f"multiples of its {spec.timestep_hours} h step up to {steps * spec.timestep_hours} h")
        raise DataError(f"lead time(s) {unsupported or list(lead_hours)} h: the {spec.name} variant forecasts "
                        f"{within} in {steps} step(s)")
    step = spec.timestep_hours
    wanted = {h - (h - 1) // step * step for h in lead_hours}  # hours within their step
    return tuple(h for h in spec.sub_step_hours if h in wanted or h == step) if spec.sub_step_hours else None


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
    lead_hours: tuple[int, ...] | None = None
    """Lead times (hours) to give; default each step's end. Aurora 1.5 forecasts every hour."""
    members: int = 1
    """Ensemble members (stochastic variants only), each seeded `seed + member`."""


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
    check_forecast_request(spec, job.steps, job.lead_hours, job.members)
    clock = time.perf_counter()
    seconds: dict[str, float] = {}

    fills, levels = job.fill_missing, job.levels
    if fills is None and info is not None:
        fills, levels = info.filled_inputs or None, levels or info.training_levels
    new_statics: dict[str, xr.DataArray] = {}

    def add_emissions(fields: dict[str, Field], provenance: Provenance) -> None:
        """The checkpoint's emission inventories on the files' grid, mapped as its training mapped them."""
        statics = _recorded_inventories(info, fields)
        fields.update({k: Field(variable("static", k), da, da.attrs["source"]) for k, da in statics.species.items()})
        provenance.notes.extend(statics.notes)
        new_statics.update(statics.new_inputs)

    window, prov = load_window(
        job.inputs, spec, regrid_to=job.regrid, history=job.history, init_time=job.init_time,
        levels=levels, fill_missing=fills, crop=job.crop_to_patch, seed=job.seed,
        add_fields=add_emissions if info is not None and info.emissions else None,
    )
    check_window(window, spec)
    if info is not None and info.model_inputs:  # derived by the model from a real wmb: refused before it is built
        wmb = window.get("wmb")
        check_depth(wmb, window.latitude.values, window.longitude.values, asked=info.model_inputs,
                    filled=None if wmb is None else wmb.attrs.get("filled"))
    if info is not None and info.lags is not None:  # the lagged inputs its model takes, from the same files
        window = _load_lags(job.inputs, window, info.lags, regrid_to=job.regrid)
    window = with_new_statics(window, new_statics) if new_statics else window
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
    ds = forecast(model, spec, window, job.steps, attrs=attrs, lead_hours=job.lead_hours, members=job.members,
                  seed=job.seed)
    seconds["forecast"] = time.perf_counter() - clock

    clock = time.perf_counter()
    out = write_dataset(ds, job.out)
    seconds["write"] = time.perf_counter() - clock
    return ForecastResult(out, ds, window, prov, weights, seconds)
