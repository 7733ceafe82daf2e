"""The datasets and loaders of a training run, built from its config.

Order matters for failing fast: the files are opened lazily (coordinates and times only),
the rollout is checked against the time span, and only then does the validator read the
values. Training and validation samples share no time: validation holds out the end of
the series (`val_fraction`) or a given period, and no training sample touches it.
Augmentation (`data.augment`) and extreme-event sampling (`data.extreme_sampling`) change
the training samples only: validation judges the data as they are. The climatology of
de-seasonalised variables (`data.deseasonalise`) comes from the training samples' times alone.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from typing import Iterator, Mapping, Sequence

import numpy as np
import torch
import xarray as xr
from torch.utils.data import DataLoader, Sampler

from model_code.data.augment import BoundedNoise, Compose, ExtremeEventSampler, LongitudeRoll, RandomCrop, WindRotation
from model_code.data.deseasonalised import deseasonalised_fields, training_climatology, uncovered_groups
from model_code.data.emissions import InventoryStatics, MappedInventory, read_inventories
from model_code.data.grid import crop_to_patch
from model_code.data.ingest import Field, Provenance
from model_code.data.lags import lagged_fields
from model_code.data.lazy_fields import open_fields
from model_code.data.loader import make_loader
from model_code.data.sample_layout import common_times
from model_code.data.window_checks import dynamic_fields, dynamic_variables
from model_code.data.windows import Augment, WindowDataset
from model_code.errors import ConfigError, DataError
from model_code.training.config import TrainConfig
from model_code.training.sample_config import patch_size
from model_code.variables import variable
from model_code.variants import VariantSpec

__all__ = ["EpochSampler", "TrainData", "open_data", "train_loader", "val_loader"]


@dataclass
class TrainData:
    spec: VariantSpec
    """The variant at the data's step (`timestep_hours`)."""
    train: WindowDataset
    """Targets at lead steps 1 .. the curriculum's longest rollout."""
    val: WindowDataset
    """Targets at `early_stopping.lead_steps`."""
    provenance: Provenance
    train_weights: np.ndarray | None = None
    """Probability of drawing each training sample (`data.extreme_sampling`); None: each once an epoch."""
    emissions: tuple[MappedInventory, ...] = ()
    """The inventories of `data.emissions` with the numbers that map them onto the model's inputs."""

    @property
    def filled_inputs(self) -> dict[str, str]:
        """`{dataset name: fill mode}` of every input the data lacked, as the checkpoint records it."""
        return {**{v.dataset_name: self.train.fill_missing for v in self.train.filled_static},
                **{v.dataset_name: self.train.fill_missing_dynamic for v in self.train.filled_dynamic}}

    def surface_stats(self, max_times: int = 240, *, robust: str = "mad", climatology: xr.Dataset | None = None,
                      non_negative: Sequence[str] = ()) -> dict[str, tuple[float, float]]:
        """`{aurora name: (location, scale)}` of the surface variables the data hold, from the
        times training samples read as inputs (at most `max_times`, spread evenly): robust
        (`robust`: `mad`, `iqr` or `none`), area-weighted (`preprocess.normalisation_stats`), as
        `Aurora(surf_stats=...)` takes them. The variables of `climatology` (`climatology()`) get
        the statistics of their anomalies from it, which is what a de-seasonalised model normalises.

        The variables the model clamps at zero (`non_negative`, the air-pollution species) keep
        location 0, scaled by their area-weighted root mean square: the model clamps, log-transforms
        and adds its predicted changes in normalised units, so zero there must stay zero (as in
        Aurora's own statistics for them); centred on their median, half of every field was clipped."""
        from model_code.data.preprocess.normalisation import aurora_surf_stats, normalisation_stats

        ds = self.train
        inputs = ds.init_times[:, None] + ds._offsets()[None, :-len(ds.lead_steps)]  # lagged times too
        times = np.unique(inputs.ravel())
        times = times[np.unique(np.linspace(0, len(times) - 1, min(max_times, len(times))).round().astype(int))]
        filled = {v.dataset_name for v in ds.filled_dynamic}
        fields = {v.dataset_name: ds._fields[v.dataset_name] for v in dynamic_variables(ds.spec) if not v.computed
                  if v.kind == "surface" and v.dataset_name not in filled}
        lat, lon = next(iter(fields.values())).grid
        data = xr.Dataset({k: f.values(time=times).variable for k, f in fields.items()},
                          coords={"time": times, "latitude": lat, "longitude": lon})
        stats = aurora_surf_stats(normalisation_stats(data, (str(times[0]), str(times[-1])), robust))
        if climatology is not None:  # its period spans every training time, inputs and targets
            chosen = [str(k) for k in climatology.data_vars]
            anomalies = normalisation_stats(data[chosen], json.loads(climatology.attrs["train_period"]), robust,
                                            climatology=climatology)
            stats.update(aurora_surf_stats(anomalies, allow_anomalies=True))
        for name in set(non_negative) & set(stats) - set(climatology.data_vars if climatology is not None else ()):
            field = data[variable("surface", name).dataset_name]
            rms = float(np.sqrt((field ** 2).weighted(np.cos(np.deg2rad(field.latitude))).mean()))
            stats[name] = (0.0, rms if rms > 0 else 1.0)
        return {k: (float(a), float(b)) for k, (a, b) in stats.items()}

    def climatology(self, variables: Sequence[str], by: Sequence[str]) -> xr.Dataset:
        """The climatology of `variables` (Aurora names) by the calendar groupings `by`, over every
        time the training samples read (lagged inputs, history and targets): never a validation time
        (`deseasonalised.training_climatology`)."""
        ds = self.train
        return training_climatology(ds._fields, _times_read(ds), variables, by)

    def provenance_record(self) -> dict:
        p = self.provenance
        return {"inputs": p.inputs, "filled": p.filled, "notes": p.notes}


def _hours(td: np.timedelta64) -> float:
    return float(td / np.timedelta64(1, "h"))


def _show(t: np.datetime64) -> str:
    return str(t)[:16]


def open_data(cfg: TrainConfig) -> TrainData:
    """Open, check against the config, validate and split the data of `cfg`."""
    spec, d = cfg.spec, cfg.data
    fields, prov = open_fields(d.paths, regrid_to=d.regrid)
    times = common_times(fields, spec)
    if not len(times):
        raise DataError(
            f"the time-dependent variables of the {spec.name} variant share no time in the data",
            problems=[f"{key} ({f.source}): {len(f.data.time)} time(s) from {_show(f.data.time.values[0])} "
                      f"to {_show(f.data.time.values[-1])}"
                      for key, f in fields.items() if "time" in f.data.dims and len(f.data.time)])
    _check_model_patch(cfg, _sample_grid(cfg, fields))
    history = d.history or spec.max_history
    _check_span(times, spec, history, 1, "data.history", "a forecast")  # the history alone: name it
    _check_span(times, spec, history, cfg.rollout.longest, "rollout.curriculum", "a rollout")
    _check_span(times, spec, history, max(cfg.early_stopping.lead_steps), "early_stopping.lead_steps",
                "validation at lead step")
    _check_lags(cfg, fields, times, history)
    if cfg.data.deseasonalise.enabled:  # a filled field has no season: refused before any value is read
        try:
            deseasonalised_fields(fields, cfg.data.deseasonalise.variables)
        except DataError as e:
            raise ConfigError(e.message, field="data.deseasonalise.variables") from None
    if cfg.model_inputs.asked:  # derived from a real wmb: refused before the validator reads every value
        from model_code.data.coastal import check_depth

        wmb, (lat, lon) = fields.get("wmb"), next(iter(dynamic_fields(fields, spec).values())).grid
        check_depth(None if wmb is None else wmb.values(), lat, lon, asked=cfg.model_inputs.asked)

    emissions = _emission_statics(cfg, fields, prov) if d.emissions else None
    augment, input_augment = _augmentations(cfg, fields)
    extreme = _extreme_field(cfg, fields)

    options = dict(history=history, levels=d.levels, fill_missing=d.fill_missing,
                   fill_missing_dynamic=d.fill_missing_dynamic, crop=d.crop, lags=d.lags, seed=cfg.train.seed,
                   new_statics=emissions.new_inputs if emissions else None)
    train = WindowDataset.from_fields(fields, spec, paths=d.paths, regrid_to=d.regrid, validate=d.validate,
                                      lead_steps=range(1, cfg.rollout.longest + 1), provenance=prov,
                                      augment=augment, input_augment=input_augment, **options)
    val = WindowDataset.from_fields(fields, spec, paths=d.paths, regrid_to=d.regrid, validate=False,
                                    lead_steps=cfg.early_stopping.lead_steps, provenance=prov, **options)
    start, end = _val_period(times, cfg)
    gap = np.timedelta64(int(d.gap_hours * 3600), "s")
    train = _keep(train, lambda first, last: (last < start - gap) | (first >= end + gap))
    val = _keep(val, lambda first, last: (first >= start) & (last < end), lags_before=True)
    if train is None:
        raise ConfigError(
            f"no training sample fits outside the validation period {_show(start)} to {_show(end)} (gap "
            f"{d.gap_hours:g} h): a sample spans {_span_hours(spec, history, cfg.rollout.longest):g} h with "
            f"a rollout of {cfg.rollout.longest} step(s); shorten the rollout or hold out less "
            f"(data.val_fraction / data.val_period)", field="rollout.curriculum")
    if val is None:
        raise ConfigError(
            f"the validation period {_show(start)} to {_show(end)} holds no sample with targets at lead "
            f"step(s) {list(cfg.early_stopping.lead_steps)} ({_span_hours(spec, history, max(cfg.early_stopping.lead_steps)):g} h "
            "from first input to last target); hold out more or validate at shorter leads",
            field="data.val_period" if d.val_period else "data.val_fraction")
    _check_seasons(cfg, train, val)
    weights = None if extreme is None else _extreme_weights(train, extreme, cfg, _sample_grid(cfg, fields))
    return TrainData(spec, train, val, prov, weights, emissions.mapped if emissions else ())


def _times_read(ds: WindowDataset) -> np.ndarray:
    """Every time the samples of `ds` read, once, in order."""
    return np.unique((ds.init_times[:, None] + ds._offsets()[None, :]).ravel())


def _check_seasons(cfg: TrainConfig, train: WindowDataset, val: WindowDataset) -> None:
    """Every calendar group validation reads must have training times, of which its climatology is
    the mean (`data.deseasonalise.by`); checked from the time axis, before any model is built."""
    des = cfg.data.deseasonalise
    if not des.enabled:
        return
    missing = uncovered_groups(_times_read(train), _times_read(val), des.groupings)
    if missing:
        shown = "; ".join(missing[:10]) + (f"; ... and {len(missing) - 10} more" if len(missing) > 10 else "")
        raise ConfigError(f"the training period holds no time in {len(missing)} calendar group(s) that validation "
                          f"reads ({shown}), so their climatology would be unknown; group more coarsely (e.g. "
                          f"hour) or train on a period that covers them", field="data.deseasonalise.by")


def _emission_statics(cfg: TrainConfig, fields: dict[str, Field], prov: Provenance) -> InventoryStatics:
    """The inventories of `data.emissions` on the samples' grid, read, checked and remapped before the
    validator reads every value, so that a bad inventory fails first. The species' statics join
    `fields` (in place of any the files hold); the new static inputs are returned with them."""
    lat, lon = next(iter(dynamic_fields(fields, cfg.spec).values())).grid
    statics = read_inventories(cfg.data.emissions, lat, lon, field="data.emissions")
    fields.update({k: Field(variable("static", k), da, da.attrs["source"]) for k, da in statics.species.items()})
    prov.notes.extend(statics.notes)
    return statics


def _augmentations(cfg: TrainConfig, fields: Mapping[str, Field]) -> tuple[Augment | None, Augment | None]:
    """`(augment, input_augment)` of the training samples (`data.augment`), as `WindowDataset` takes them.

    The roll, the crop and the rotation move inputs and truth together; the noise goes on the
    inputs only, so the model never learns towards a perturbed truth. The roll comes first,
    so that a crop can take any part of a global grid. A roll of a regional grid or a crop
    larger than the grid is refused from the coordinates alone, before any value is read.
    """
    a = cfg.data.augment
    grid = _sample_grid(cfg, fields)
    joint: list[Augment] = []
    if a.longitude_roll_deg:
        joint.append(_fits(LongitudeRoll(a.longitude_roll_deg), grid, "data.augment.longitude_roll_deg"))
    if a.random_crop is not None:
        joint.append(_fits(RandomCrop(*a.random_crop, patch_size(cfg)), grid, "data.augment.random_crop"))
    if a.wind_rotation_deg:
        joint.append(WindRotation(a.wind_rotation_deg))
    noise = None
    if a.noise_scale:
        names = {v.name: v.dataset_name for v in cfg.spec.inputs() if v.kind != "static"}
        chosen = None if a.noise_variables is None else tuple(names[n] for n in a.noise_variables)
        noise = BoundedNoise(a.noise_scale, chosen)
    return (Compose(tuple(joint)) if joint else None), noise


def _sample_grid(cfg: TrainConfig, fields: Mapping[str, Field]) -> xr.Dataset:
    """The samples' latitudes and longitudes, no values: the grid `WindowDataset` takes from
    the first time-dependent field, cropped to the patch size with `data.crop`."""
    lat, lon = next(iter(dynamic_fields(fields, cfg.spec).values())).grid
    grid = xr.Dataset(coords={"latitude": lat, "longitude": lon})
    return crop_to_patch(grid, cfg.spec.patch_size)[0] if cfg.data.crop else grid


def _fits(aug: Augment, grid: xr.Dataset, field: str) -> Augment:
    """`aug`, once it has worked on the samples' grid alone: its own rule decides, as a config error."""
    try:
        aug(grid, np.random.default_rng(0))
    except DataError as e:
        raise ConfigError(e.message, field=field) from None
    return aug


def _extreme_field(cfg: TrainConfig, fields: Mapping[str, Field]) -> Field | None:
    """The field whose extremes `data.extreme_sampling` draws more often, None when off. It
    must come from the files: a filled or computed field has no extremes."""
    es = cfg.data.extreme_sampling
    if not es.enabled:
        return None
    name = variable("surface", es.variable).dataset_name
    if name not in fields:
        raise ConfigError(f"'{es.variable}' ({name}) is not in the data, which hold {', '.join(sorted(fields))}; "
                          "extremes are looked for in the files, not in filled fields",
                          field="data.extreme_sampling.variable")
    return fields[name]


def _extreme_weights(ds: WindowDataset, f: Field, cfg: TrainConfig, grid: xr.Dataset,
                     block_bytes: int = 64 * 2**20) -> np.ndarray:
    """The probability of drawing each sample of `ds`, from `ExtremeEventSampler`.

    A sample's peak is the highest value (the lowest with `below`) of the variable on the
    samples' grid at any time the sample reads, inputs and targets. The field is read once,
    `block_bytes` at a time, down to one peak per time; each sample is handed to the sampler
    as the series of its times' peaks, whose own peak is the sample's.
    """
    es = cfg.data.extreme_sampling
    used = ds.init_times[:, None] + ds._offsets()[None, :]  # (samples, times each reads)
    times, where = np.unique(used.ravel(), return_inverse=True)
    h, w = grid.sizes["latitude"], grid.sizes["longitude"]
    reduce = np.nanmin if es.below else np.nanmax
    step = max(1, block_bytes // (4 * h * w))
    peaks = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a time without a finite value peaks at NaN
        for i in range(0, len(times), step):
            block = f.values(time=times[i:i + step]).isel(latitude=slice(0, h), longitude=slice(0, w))
            peaks.append(reduce(block.transpose("time", ...).values.reshape(block.sizes["time"], -1), axis=1))
    per_time = np.concatenate(peaks)
    sampler = ExtremeEventSampler(f.key, threshold=es.threshold, quantile=es.quantile, factor=es.factor,
                                  below=es.below)
    return sampler.weights(xr.Dataset({f.key: ("time", per_time[row])}) for row in where.reshape(used.shape))


def _check_model_patch(cfg: TrainConfig, grid: xr.Dataset) -> None:
    """Refuse, from the coordinates alone, a `model.patch_size` the samples' grid does not fit.

    The loader fits the grid (`data.crop`) and crops the targets to the variant's patch size;
    the model crops its input to its own (Aurora's `Batch.crop`), so it must keep the same
    grid: the width a multiple of its patch size, the height too, or one row over where the
    targets drop a row.
    """
    p, variant_p = patch_size(cfg), cfg.spec.patch_size
    if p == variant_p:
        return
    h, w = grid.sizes["latitude"], grid.sizes["longitude"]
    kept = h - 1 if h % variant_p == 1 else h  # the targets' rows
    rows = h - 1 if h % p == 1 else h  # the model's, where its crop works
    if w % p or h % p > 1 or rows != kept or min(rows, w) < p:
        extra_row = ", and exceed 1 to drop the row over them as the targets do" if rows != kept == h - 1 else ""
        raise ConfigError(f"patch size {p} does not fit the {h}x{w} grid of the samples (the data's grid"
                          f"{f', cropped to patch size {variant_p}' if cfg.data.crop else ''}): it must divide the "
                          f"width {w} and the {kept} rows the targets keep{extra_row} (the variant's own is "
                          f"{variant_p})", field="model.patch_size")


def _span_hours(spec: VariantSpec, history: int, lead: int) -> float:
    return (history - 1 + lead) * spec.timestep.total_seconds() / 3600


def _check_span(times: np.ndarray, spec: VariantSpec, history: int, lead: int, field: str, what: str) -> None:
    """A rollout longer than the data is a config error, found from the time axis alone."""
    need = _span_hours(spec, history, lead)
    have = _hours(times[-1] - times[0])
    if need > have:
        raise ConfigError(
            f"{what} of {lead} step(s) of {spec.timestep_hours} h from {history} input time(s) spans "
            f"{need:g} h, longer than the data: {len(times)} time(s) from {_show(times[0])} to "
            f"{_show(times[-1])} ({have:g} h)", field=field)


def _check_lags(cfg: TrainConfig, fields: Mapping[str, Field], times: np.ndarray, history: int) -> None:
    """`data.lags` against the files' variables and time axis alone, before the validator reads a value:
    a lag of a variable the data lack, or one reaching farther back than the data allow a sample."""
    lags, spec = cfg.data.lags, cfg.spec
    if not lags.enabled:
        return
    try:
        lagged_fields(fields, lags)
    except DataError as e:
        raise ConfigError(e.message, field="data.lags.variables") from None
    lead = max(cfg.rollout.longest, *cfg.early_stopping.lead_steps)
    need, have = max(lags.hours) + _span_hours(spec, history, lead), _hours(times[-1] - times[0])
    if need > have:
        raise ConfigError(
            f"a lag of {max(lags.hours)} h before {history} input time(s) and targets {lead} step(s) of "
            f"{spec.timestep_hours} h ahead span {need:g} h, longer than the data: {len(times)} time(s) from "
            f"{_show(times[0])} to {_show(times[-1])} ({have:g} h)", field="data.lags.hours")


def _val_period(times: np.ndarray, cfg: TrainConfig) -> tuple[np.datetime64, np.datetime64]:
    d = cfg.data
    if d.val_period is not None:
        try:
            start, end = (np.datetime64(t, "ns") for t in d.val_period)
        except ValueError as e:
            raise ConfigError(f"expected [start, end] as ISO times ({e})", field="data.val_period") from None
        if not start < end:
            raise ConfigError(f"must start before it ends; got {list(d.val_period)}", field="data.val_period")
        return start, end
    span = times[-1] - times[0]
    start = times[0] + (span * (1 - d.val_fraction)).astype("timedelta64[ns]")
    return start, times[-1] + np.timedelta64(1, "ns")


def _keep(ds: WindowDataset, inside, *, lags_before: bool = False) -> WindowDataset | None:
    """The samples of `ds` whose whole time span (first input to last target) satisfies
    `inside(first, last)`; None when there are none.

    `lags_before` (validation): the span starts at the first input time of the history, so
    lagged inputs may reach back before the validation period, as a forecast's do before its
    initialisation: a lag of 24 h would otherwise shrink the validated samples by a day and
    judge a model with lags on fewer windows than one without. The training samples' lags
    never reach into the validation period (their whole span stays outside it)."""
    used = ds.times_used(0)
    if lags_before:
        used = ds.init_times[0] + np.array([*range(1 - ds.history, 1), *ds.lead_steps]) * ds._step
    first = ds.init_times + (used[0] - ds.init_times[0])
    last = ds.init_times + (used[-1] - ds.init_times[0])
    chosen = ds.init_times[inside(first, last)]
    return ds.subset(chosen) if len(chosen) else None


class EpochSampler(Sampler[int]):
    """One rank's sample indices for one epoch, resumable part-way through.

    The epoch's order is a permutation drawn from (seed, epoch), cut into global batches
    of `global_batch` samples; rank r takes its slice of each global batch. So any number
    of ranks sees the same global batches as one process, and a resumed run skips the
    `start` global batches already done without loading them. The last incomplete global
    batch is dropped (every step has the same batch).

    With `weights` (one per sample), the epoch is instead `n` draws with replacement, each
    sample in proportion to its weight, from the same (seed, epoch): a sample weighing k
    times as much comes k times as often, and everything above holds as before.
    """

    def __init__(self, n: int, global_batch: int, *, rank: int = 0, world: int = 1, seed: int = 0,
                 shuffle: bool = True, weights: Sequence[float] | np.ndarray | None = None) -> None:
        self.n, self.global_batch, self.rank, self.world = n, global_batch, rank, world
        self.local_batch = global_batch // world
        self.seed, self.shuffle = seed, shuffle
        self.weights = None if weights is None else torch.as_tensor(np.asarray(weights, dtype=np.float64))
        if self.weights is not None and self.weights.shape != (n,):
            raise ValueError(f"weights: one per sample ({n}) expected, got shape {tuple(self.weights.shape)}")
        self.epoch, self.start = 0, 0

    @property
    def batches_per_epoch(self) -> int:
        return self.n // self.global_batch

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        if self.weights is not None:
            order = torch.multinomial(self.weights, self.n, replacement=True, generator=generator)
        elif self.shuffle:
            order = torch.randperm(self.n, generator=generator)
        else:
            order = torch.arange(self.n)
        for k in range(self.start, self.batches_per_epoch):
            chunk = order[k * self.global_batch:(k + 1) * self.global_batch]
            yield from chunk[self.rank * self.local_batch:(self.rank + 1) * self.local_batch].tolist()

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.start) * self.local_batch


def train_loader(data: TrainData, cfg: TrainConfig, rank: int, world: int) -> tuple[DataLoader, EpochSampler]:
    """The training loader of one rank and the sampler that positions it in the epoch."""
    b = cfg.data.batch_size
    if b % world:
        raise ConfigError(f"a global batch of {b} cannot be split evenly over {world} processes",
                          field="data.batch_size")
    if len(data.train) < b:
        raise ConfigError(f"larger than the {len(data.train)} training sample(s)", field="data.batch_size")
    sampler = EpochSampler(len(data.train), b, rank=rank, world=world, seed=cfg.train.seed,
                           weights=data.train_weights)
    loader = make_loader(data.train, sampler.local_batch, sampler=sampler, num_workers=cfg.data.num_workers,
                         seed=cfg.train.seed)
    return loader, sampler


def val_loader(data: TrainData, cfg: TrainConfig, rank: int, world: int) -> DataLoader:
    """Rank r validates samples r, r + world, ...: every sample once over all ranks."""
    b = max(1, cfg.data.batch_size // world)
    indices = list(range(rank, len(data.val), world))
    return make_loader(data.val, b, sampler=indices, num_workers=cfg.data.num_workers, seed=cfg.train.seed)

