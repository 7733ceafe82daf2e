"""The datasets and loaders of a training run, built from its config.

Order matters for failing fast: the files are opened lazily (coordinates and times only),
the rollout is checked against the time span, and only then does the validator read the
values. Training and validation samples share no time: validation holds out the end of
the series (`val_fraction`) or a given period, and no training sample touches it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from model_code.data.ingest import Provenance
from model_code.data.lazy_fields import open_fields
from model_code.data.loader import make_loader
from model_code.data.sample_layout import common_times
from model_code.data.window_checks import dynamic_variables
from model_code.data.windows import WindowDataset
from model_code.errors import ConfigError, DataError
from model_code.training.config import TrainConfig
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

    @property
    def filled_inputs(self) -> dict[str, str]:
        """`{dataset name: fill mode}` of every input the data lacked, as the checkpoint records it."""
        return {**{v.dataset_name: self.train.fill_missing for v in self.train.filled_static},
                **{v.dataset_name: self.train.fill_missing_dynamic for v in self.train.filled_dynamic}}

    def surface_stats(self, max_times: int = 240) -> dict[str, tuple[float, float]]:
        """`{aurora name: (location, scale)}` of the surface variables the data hold, from the
        times training samples read as inputs (at most `max_times`, spread evenly): robust,
        area-weighted (`preprocess.normalisation_stats`), as `Aurora(surf_stats=...)` takes them."""
        import xarray as xr

        from model_code.data.preprocess.normalisation import aurora_surf_stats, normalisation_stats

        ds = self.train
        history = ds.init_times[:, None] + ds._offsets()[None, :ds.history]
        times = np.unique(history.ravel())
        times = times[np.unique(np.linspace(0, len(times) - 1, min(max_times, len(times))).round().astype(int))]
        filled = {v.dataset_name for v in ds.filled_dynamic}
        fields = {v.dataset_name: ds._fields[v.dataset_name] for v in dynamic_variables(ds.spec) if not v.computed
                  if v.kind == "surface" and v.dataset_name not in filled}
        lat, lon = next(iter(fields.values())).grid
        data = xr.Dataset({k: f.values(time=times).variable for k, f in fields.items()},
                          coords={"time": times, "latitude": lat, "longitude": lon})
        stats = normalisation_stats(data, (str(times[0]), str(times[-1])))
        return {k: (float(a), float(b)) for k, (a, b) in aurora_surf_stats(stats).items()}

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
    history = d.history or spec.max_history
    _check_span(times, spec, history, cfg.rollout.longest, "rollout.curriculum", "a rollout")
    _check_span(times, spec, history, max(cfg.early_stopping.lead_steps), "early_stopping.lead_steps",
                "validation at lead step")

    options = dict(history=history, levels=d.levels, fill_missing=d.fill_missing,
                   fill_missing_dynamic=d.fill_missing_dynamic, crop=d.crop, seed=cfg.train.seed)
    train = WindowDataset.from_fields(fields, spec, paths=d.paths, regrid_to=d.regrid, validate=d.validate,
                                      lead_steps=range(1, cfg.rollout.longest + 1), provenance=prov, **options)
    val = WindowDataset.from_fields(fields, spec, paths=d.paths, regrid_to=d.regrid, validate=False,
                                    lead_steps=cfg.early_stopping.lead_steps, provenance=prov, **options)
    start, end = _val_period(times, cfg)
    gap = np.timedelta64(int(d.gap_hours * 3600), "s")
    train = _keep(train, lambda first, last: (last < start - gap) | (first >= end + gap))
    val = _keep(val, lambda first, last: (first >= start) & (last < end))
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
    return TrainData(spec, train, val, prov)


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


def _keep(ds: WindowDataset, inside) -> WindowDataset | None:
    """The samples of `ds` whose whole time span (first input to last target) satisfies
    `inside(first, last)`; None when there are none."""
    used = ds.times_used(0)
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
    """

    def __init__(self, n: int, global_batch: int, *, rank: int = 0, world: int = 1, seed: int = 0,
                 shuffle: bool = True) -> None:
        self.n, self.global_batch, self.rank, self.world = n, global_batch, rank, world
        self.local_batch = global_batch // world
        self.seed, self.shuffle = seed, shuffle
        self.epoch, self.start = 0, 0

    @property
    def batches_per_epoch(self) -> int:
        return self.n // self.global_batch

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch))
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
    sampler = EpochSampler(len(data.train), b, rank=rank, world=world, seed=cfg.train.seed)
    loader = make_loader(data.train, sampler.local_batch, sampler=sampler, num_workers=cfg.data.num_workers,
                         seed=cfg.train.seed)
    return loader, sampler


def val_loader(data: TrainData, cfg: TrainConfig, rank: int, world: int) -> DataLoader:
    """Rank r validates samples r, r + world, ...: every sample once over all ranks."""
    b = max(1, cfg.data.batch_size // world)
    indices = list(range(rank, len(data.val), world))
    return make_loader(data.val, b, sampler=indices, num_workers=cfg.data.num_workers, seed=cfg.train.seed)

