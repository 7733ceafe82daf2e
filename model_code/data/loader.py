"""Training samples cut lazily from long multi-time files, and the loaders that batch them.

Training needs many (input window, targets at several lead times) pairs from files far
larger than memory, so a sample loads only the times it uses. `aurora.Batch` is not a
tensor and needs its own collate. A validation score is only honest when no time seen in
training is seen again, so splits keep every sample's whole time span inside its period.
Every dataset is checked once, when it is built, before any model exists.
"""

from __future__ import annotations

import copy
import logging
import os
from collections import OrderedDict
import random
import zlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
import xarray as xr
from aurora import Batch, Metadata
from torch.utils.data import DataLoader, Dataset, Sampler

from model_code.data.batch import window_to_batch
from model_code.data.grid import crop_to_patch
from model_code.data.ingest import (
    FILL_MODES, FILLED_WITH, Field, FillMode, Provenance, assemble_window, fill_values, read_fields,
)
from model_code.data.validate import validate_fields
from model_code.errors import DataError
from model_code.storage import is_s3
from model_code.variables import Variable
from model_code.variants import VariantSpec, get_variant, with_history, with_timestep

__all__ = [
    "Augment",
    "Sample",
    "WindowDataset",
    "collate",
    "common_times",
    "make_loader",
    "open_fields",
    "pair_predictions",
    "split_by_time",
]

logger = logging.getLogger(__name__)

Augment = Callable[[xr.Dataset, np.random.Generator], xr.Dataset]
"""`aug(ds, rng) -> ds`, as the augmentations of `model_code.data.augment` are called."""

TARGET_COORD = "is_target"
"""Boolean coordinate on `time` in the dataset an `augment` sees: True at target times."""


# --------------------------------------------------------------------------------------
# Samples


@dataclass
class Sample:
    """An input batch and the truth at each lead time, as a training step compares them.

    `inputs` is what `aurora.rollout` starts from: surf (b, t, h, w), atmos (b, t, c, h, w),
    static (h, w), `metadata.time` the initialisation time of each element. `targets[j]`
    holds the predicted variables only (`spec.outputs()`) at `lead_steps[j]` model steps
    after initialisation: surf (b, 1, h', w), atmos (b, 1, c, h', w), `metadata.time` the
    valid times. Targets are already cropped the way Aurora crops its input (`Batch.crop`:
    the last latitude row goes when h % patch_size == 1), so h' and the latitudes are those
    of the predictions and no loss has to know about the crop. Roll out `max(lead_steps)`
    steps and compare prediction k - 1 with the target at lead k (`pair_predictions`).
    """

    inputs: Batch
    targets: tuple[Batch, ...]
    lead_steps: tuple[int, ...]

    @property
    def batch_size(self) -> int:
        return len(self.inputs.metadata.time)

    def to(self, device: str | torch.device) -> Sample:
        return Sample(self.inputs.to(device), tuple(t.to(device) for t in self.targets), self.lead_steps)

    def pin_memory(self) -> Sample:
        """Called by `DataLoader(pin_memory=True)` for faster copies to the GPU."""
        pin = lambda x: x.pin_memory()  # noqa: E731
        return Sample(_map_tensors(self.inputs, pin), tuple(_map_tensors(t, pin) for t in self.targets),
                      self.lead_steps)


def _map_tensors(batch: Batch, fn: Callable[[torch.Tensor], torch.Tensor]) -> Batch:
    m = batch.metadata
    return Batch(
        surf_vars={k: fn(v) for k, v in batch.surf_vars.items()},
        static_vars={k: fn(v) for k, v in batch.static_vars.items()},
        atmos_vars={k: fn(v) for k, v in batch.atmos_vars.items()},
        metadata=Metadata(lat=fn(m.lat), lon=fn(m.lon), time=m.time, atmos_levels=m.atmos_levels,
                          rollout_step=m.rollout_step),
    )


def pair_predictions(predictions: Sequence[Batch], sample: Sample) -> list[tuple[Batch, Batch]]:
    """(prediction, target) for every lead step of `sample`, from its rollout's predictions.

    `predictions[k - 1]` is the prediction k steps ahead (`aurora.rollout` yields one per
    step). Raises ValueError when the rollout is too short or a prediction's valid times or
    grid differ from its target's: comparing them would train on the wrong truth.
    """
    if len(predictions) < max(sample.lead_steps):
        raise ValueError(f"{len(predictions)} prediction(s) for lead steps {sample.lead_steps}; "
                         f"roll out {max(sample.lead_steps)} steps")
    pairs = []
    for k, target in zip(sample.lead_steps, sample.targets):
        pred = predictions[k - 1]
        if tuple(pred.metadata.time) != tuple(target.metadata.time):
            raise ValueError(f"prediction {k} is valid at {pred.metadata.time}, its target at "
                             f"{target.metadata.time}")
        if pred.spatial_shape != target.spatial_shape:
            raise ValueError(f"prediction {k} is on a {tuple(pred.spatial_shape)} grid, its target on "
                             f"{tuple(target.spatial_shape)}")
        pairs.append((pred, target))
    return pairs


# --------------------------------------------------------------------------------------
# The dataset


def _as_time(t) -> np.datetime64:
    return np.datetime64(t, "ns")


def _show(t: np.datetime64) -> str:
    return str(t)[:16]


def _hours(k: int, step: np.timedelta64) -> str:
    return f"{k * step / np.timedelta64(1, 'h'):+g} h"


class _SliceCache:
    """Time slices of dynamic fields already read, least recently used dropped first.

    Consecutive samples share most of their times (a history of 2 and a target 1 step ahead
    touch 3 times, 2 of them shared with the next sample), so each slice is read from the
    file about once an epoch instead of once per sample that uses it. Bounded in bytes;
    each worker process has its own.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._slices: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()  # (variable, time in ns)

    def get(self, key: tuple[str, int]) -> np.ndarray | None:
        array = self._slices.get(key)
        if array is not None:
            self._slices.move_to_end(key)
        return array

    def put(self, key: tuple[str, int], array: np.ndarray) -> None:
        old = self._slices.pop(key, None)
        self.bytes += array.nbytes - (0 if old is None else old.nbytes)
        self._slices[key] = array
        while self.bytes > self.max_bytes and len(self._slices) > 1:
            _, old = self._slices.popitem(last=False)
            self.bytes -= old.nbytes


READ_AHEAD_BYTES = 4 * 2**20


@dataclass
class _CachedField(Field):
    """A dynamic field read through a `_SliceCache`: `Field.values`'s values, without coordinates.

    A time not cached yet is read together with the times after it, up to `READ_AHEAD_BYTES`
    in one read: each read has a fixed cost (selection, a call into the backend, a chunk per
    time), which dominates on coarse grids, and the next samples need those times.
    """

    cache: _SliceCache | None = None
    times: np.ndarray | None = None  # the field's time axis in ns, read once
    ahead: int = 1

    @classmethod
    def of(cls, f: Field, cache: _SliceCache) -> _CachedField:
        per_time = f.data.dtype.itemsize * int(np.prod([n for d, n in f.data.sizes.items() if d != "time"]))
        return cls(f.var, f.data, f.source, f.convert, f.note, cache,
                   f.data.indexes["time"].asi8.copy(), max(1, READ_AHEAD_BYTES // per_time))

    def values(self, **selection) -> xr.DataArray:
        times = np.atleast_1d(np.asarray(selection.pop("time"), dtype="datetime64[ns]")).astype(np.int64).tolist()
        found = {t: self.cache.get((self.key, t)) for t in times}
        missing = [t for t, a in found.items() if a is None]
        if missing:
            positions = self._positions("time", np.array(missing, dtype="datetime64[ns]"))
            start = int(positions.min())
            stop = max(int(positions.max()) + 1, min(start + self.ahead, len(self.times)))
            if stop - start > max(self.ahead, len(missing)):  # far apart: read only those
                block, read = Field.values(self, time=np.array(missing, dtype="datetime64[ns]")).values, missing
            else:
                block, read = self.chunk(time=slice(start, stop)).values, self.times[start:stop].tolist()
            for t, array in zip(read, block):
                self.cache.put((self.key, t), array)
                if t in found:
                    found[t] = array
        data = np.stack([found[t] for t in times])
        if "level" in selection:
            data = data[:, np.atleast_1d(self._positions("level", selection.pop("level")))]
        if selection:
            raise ValueError(f"cached fields select by time and level only, not {sorted(selection)}")
        # No coordinates: building their indexes costs milliseconds, and the loader's callers
        # (assemble_window, targets) lay the values on their own coordinates.
        return xr.DataArray(data, dims=self.data.dims)


class WindowDataset(Dataset):
    """Samples of one variant: history window and targets at `lead_steps`, one per init time.

    Built from the lazily-loaded fields of `read_fields` (GRIB, NetCDF or Zarr), usually
    through `from_files`. Construction checks the fields once (`_validate`) and loads only
    coordinates and static fields; `__getitem__` loads the `history` times of the inputs
    and the target times of the predicted variables, nothing else.

    - `history`: input times (default `spec.max_history`).
    - `lead_steps`: model steps ahead of initialisation with a target, e.g. (1, 2, 4).
    - `init_times`: the initialisation times to use; by default every time that has its
      full history and every target in all dynamic variables.
    - `levels`: pressure levels (default: those of `spec.levels` every atmospheric field has).
    - `fill_missing`: a fill mode (`ingest.FILL_MODES`) fills missing *static* fields (recorded in
      `provenance.filled`).
    - `fill_missing_dynamic`: a fill mode fills missing time-dependent
      variables in the *inputs* only; their targets are NaN, so a NaN-masked loss never
      trains towards invented values (recorded in `provenance.filled` and `notes`). Off by
      default: without it a missing dynamic variable is an error. At least one predicted
      variable must come from the data.
    - `timestep`: the step between the times of a sample (the data's natural step, e.g.
      1 h for hourly ERA5); default the variant's own. The dataset's `spec` carries it
      (`variants.with_timestep`), so build the model from `dataset.spec`.
    - `crop`: crop the grid to the patch size (`grid.crop_to_patch`) before anything else.
    - `augment(ds, rng)`: sees one dataset with the input window *and* the targets on one
      time axis (history times, then target times; statics included; the boolean
      coordinate `is_target` marks target times), so moves in space or rotations of the
      wind apply to inputs and truth alike. It must keep the time axis. In a loader it
      draws once per batch (see `__getitems__`).
    - `input_augment(ds, rng)`: sees the input window only, after `augment`: noise and
      other perturbations the truth must not get. Draws per sample; must leave statics.
    - `seed`: generators are seeded from (seed, epoch, init times), so a sample is
      augmented the same way whatever the worker or number of workers; `set_epoch`
      changes the draws from one epoch to the next.
    - `cache_bytes`: time slices already read stay in memory up to this size, since
      consecutive samples share most of their times.
    """

    def __init__(
        self,
        fields: Mapping[str, Field],
        spec: VariantSpec | str,
        *,
        history: int | None = None,
        lead_steps: Sequence[int] = (1,),
        init_times: Iterable | None = None,
        levels: Sequence[float] | None = None,
        fill_missing: FillMode | None = None,
        fill_missing_dynamic: FillMode | None = None,
        timestep: timedelta | None = None,
        crop: bool = False,
        augment: Augment | None = None,
        input_augment: Augment | None = None,
        seed: int = 0,
        provenance: Provenance | None = None,
        cache_bytes: int = 512 * 2**20,
    ):
        self.spec = with_timestep(get_variant(spec) if isinstance(spec, str) else spec, timestep)
        self.history = _checked_history(history, self.spec)
        self.lead_steps = _checked_lead_steps(lead_steps)
        for name, mode in (("fill_missing", fill_missing), ("fill_missing_dynamic", fill_missing_dynamic)):
            if mode is not None and mode not in FILL_MODES:
                raise DataError(f"unknown {name} mode '{mode}'; expected one of {FILL_MODES}")
        self.fill_missing = fill_missing
        self.fill_missing_dynamic = fill_missing_dynamic
        self.crop = crop
        self.augment = augment
        self.input_augment = input_augment
        self.seed = seed
        self.epoch = 0
        self.provenance = provenance or Provenance()
        self._step = np.timedelta64(int(self.spec.timestep.total_seconds()), "s")
        self._reader: tuple[tuple[str, ...], float | None] | None = None

        self._validate(fields)
        self.filled_dynamic = tuple(v for v in self._dynamic_variables() if v.dataset_name not in fields)
        """Time-dependent variables filled in the inputs, NaN in the targets (`fill_missing_dynamic`)."""
        self._note_filled_dynamic()
        self.filled_static = tuple(v for v in self._static_variables() if v.dataset_name not in fields)
        """Static fields filled as `fill_missing` says."""
        self.levels = _choose_levels(self._atmos_fields(fields), self.spec, levels)
        self._cache_bytes = cache_bytes
        self._fields = {**self._cached(self._dynamic_fields(fields)), **self._statics(fields)}
        self._complete = _complete_inits(self._common_times(), self._offsets())
        self.init_times = self._select(init_times)

    @classmethod
    def from_files(
        cls,
        paths: Sequence[str | os.PathLike],
        spec: VariantSpec | str,
        *,
        regrid_to: float | None = None,
        validate: bool = True,
        **options,
    ) -> WindowDataset:
        """Open local GRIB/NetCDF/Zarr files lazily and build the dataset (`options`: `__init__`'s).

        First the data validator reads every field once, chunk by chunk, and any error-level
        finding (NaN, impossible values, wrong units, broken time axis, ...) stops here with
        the whole report, before a model is built; `validate=False` skips that pass when a
        pipeline step has just validated the same files. Fails with `DataError` when the
        files cannot make samples. `regrid_to` regrids every field on reading, which loads it whole: for
        large data, regrid the files once beforehand instead.
        """
        fields, prov = open_fields(paths, regrid_to=regrid_to)
        return cls.from_fields(fields, spec, paths=paths, regrid_to=regrid_to, validate=validate,
                               provenance=prov, **options)

    @classmethod
    def from_fields(
        cls,
        fields: Mapping[str, Field],
        spec: VariantSpec | str,
        *,
        paths: Sequence[str | os.PathLike],
        regrid_to: float | None = None,
        validate: bool = True,
        **options,
    ) -> WindowDataset:
        """`from_files` for fields already opened by `open_fields(paths, regrid_to)`.

        Lets a caller look at the coordinates and times (no values read yet) before the
        validation pass reads everything, e.g. to refuse a rollout longer than the data.
        """
        names = tuple(str(p) for p in paths)
        if validate:
            report = validate_fields(fields)
            report.sources = list(names)
            report.raise_for_errors()
        dataset = cls(fields, spec, **options)
        dataset._reader = (names, regrid_to)
        return dataset

    # ---- the one check before use ----------------------------------------------------

    def _validate(self, fields: Mapping[str, Field]) -> None:
        """Every dataset passes here once, before any sample is cut or any model built.

        The data checks themselves run in `from_files` (`model_code.data.validate`); here
        are the structural checks the loader relies on: the variables are present (statics
        may be filled), on one grid that fits the patch size, and the time axis has at
        least one complete sample.
        """
        self._check_variables(fields)
        self._check_grid(fields)
        dynamic = self._dynamic_fields(fields)
        if not len(_complete_inits(_common_times(dynamic.values()), self._offsets())):
            raise self._no_sample_error(dynamic)

    def _check_variables(self, fields: Mapping[str, Field]) -> None:
        problems = []
        missing = [v for v in self._dynamic_variables() if v.dataset_name not in fields]
        if self.fill_missing_dynamic is not None and missing:
            real_outputs = [v for v in self.spec.outputs() if v.dataset_name in fields]
            if not real_outputs:
                raise DataError(
                    f"none of the variables the {self.spec.name} variant predicts is in the inputs; "
                    "with every target filled there is nothing to learn",
                    problems=[f"{v.kind} variable '{v.dataset_name}' ({v.long_name})" for v in self.spec.outputs()],
                )
            missing = []
        for v in missing:
            role = "input and target" if v in self.spec.inputs() and v in self.spec.outputs() else (
                "input" if v in self.spec.inputs() else "target")
            problems.append(f"{v.kind} variable '{v.dataset_name}' ({v.long_name}, {v.units}), "
                            f"needed as {role}")
        for v in self._static_variables():
            if v.dataset_name not in fields and self.fill_missing is None:
                problems.append(f"static variable '{v.dataset_name}' ({v.long_name}, {v.units}): add a "
                                "file holding it, or pass fill_missing='synthetic' or 'zeros'")
        if problems:
            raise DataError(
                f"{len(problems)} variable(s) the {self.spec.name} variant needs for training are not in "
                "the inputs; time-dependent variables are never filled as targets, since a model "
                "trained on invented targets learns nothing (pass fill_missing_dynamic='zeros' or "
                "'synthetic' to fill them in the inputs only, their targets NaN)",
                problems=problems,
            )

    def _check_grid(self, fields: Mapping[str, Field]) -> None:
        used = [fields[v.dataset_name] for v in (*self._dynamic_variables(), *self._static_variables())
                if v.dataset_name in fields]
        lat0, lon0 = used[0].data.latitude.values, used[0].data.longitude.values
        if any(f.data.latitude.shape != lat0.shape or f.data.longitude.shape != lon0.shape
               or not np.allclose(f.data.latitude.values, lat0) or not np.allclose(f.data.longitude.values, lon0)
               for f in used[1:]):
            raise DataError(
                "the variables are on different grids; regrid them to one grid (regrid_to=...)",
                problems=[f"{f.key} from {f.source}: {f.data.sizes['latitude']}x{f.data.sizes['longitude']}"
                          for f in used],
            )
        p = self.spec.patch_size
        h, w = len(lat0), len(lon0)
        if self.crop:
            h, w = h - max(h % p - 1, 0), w - w % p
        if w % p or h % p > 1 or h < p or w < p:
            raise DataError(
                f"grid {h}x{w} does not fit patch size {p} of the {self.spec.name} variant: the width "
                f"must be a multiple of {p} and the height at most one row over a multiple; pass "
                "crop=True or regrid_to=..."
            )

    def _no_sample_error(self, dynamic: Mapping[str, Field]) -> DataError:
        common = _common_times(dynamic.values())
        leads = ", ".join(_hours(k, self._step) for k in self.lead_steps)
        span = (self._offsets()[-1] - self._offsets()[0]) / np.timedelta64(1, "h")
        shared = f"{len(common)} time(s) in common"
        if len(common):
            shared += f", {_show(common[0])} to {_show(common[-1])}"
        if len(common) > 1:
            spacing = np.unique(np.diff(common)).astype("timedelta64[h]")
            shared += f", spaced {', '.join(str(s) for s in spacing[:3])}"
        return DataError(
            f"no initialisation time has the {self.history} input time(s) {self.spec.timestep_hours} h "
            f"apart and the targets at {leads} that a sample needs ({span:g} h from first input to last "
            f"target); the time-dependent variables have {shared}",
            problems=[f"{f.key} ({f.source}): {f.data.sizes['time']} time(s) from {_show(f.data.time.values[0])} "
                      f"to {_show(f.data.time.values[-1])}" for f in dynamic.values()],
        )

    # ---- which fields and times ------------------------------------------------------

    def _dynamic_variables(self) -> list[Variable]:
        """Inputs and outputs that change with time, each once."""
        seen = {}
        for v in (*self.spec.inputs(), *self.spec.outputs()):
            if v.kind != "static":
                seen.setdefault((v.kind, v.name), v)
        return list(seen.values())

    def _static_variables(self) -> list[Variable]:
        return [v for v in self.spec.inputs() if v.kind == "static"]

    def _cached(self, dynamic: Mapping[str, Field]) -> dict[str, Field]:
        cache = _SliceCache(self._cache_bytes)
        return {k: _CachedField.of(f, cache) for k, f in dynamic.items()}

    def _dynamic_fields(self, fields: Mapping[str, Field]) -> dict[str, Field]:
        """The time-dependent fields present (the others are filled or refused in `_check_variables`)."""
        return {v.dataset_name: fields[v.dataset_name] for v in self._dynamic_variables()
                if v.dataset_name in fields}

    def _atmos_fields(self, fields: Mapping[str, Field]) -> list[Field]:
        return [f for f in self._dynamic_fields(fields).values() if f.var.kind == "atmos"]

    def _note_filled_dynamic(self) -> None:
        if not self.filled_dynamic:
            return
        names = [v.dataset_name for v in self.filled_dynamic]
        for name in names:
            self.provenance.filled[name] = f"{self.fill_missing_dynamic} (inputs only; targets NaN)"
        how = FILLED_WITH[self.fill_missing_dynamic]
        note = (f"{len(names)} time-dependent variable(s) not in the data filled with {how} "
                "in the inputs only, their targets NaN (not trained on): " + ", ".join(names))
        if note not in self.provenance.notes:  # datasets sharing one provenance say it once
            self.provenance.notes.append(note)
            logger.warning(note)

    def _statics(self, fields: Mapping[str, Field]) -> dict[str, Field]:
        """Static fields loaded once (they are small), missing ones filled as asked."""
        ref = next(iter(self._dynamic_fields(fields).values())).data
        lat, lon = ref.latitude.values, ref.longitude.values
        out = {}
        for v in self._static_variables():
            if v.dataset_name in fields:
                f = fields[v.dataset_name]
                out[v.dataset_name] = Field(v, f.values(), f.source, note=f.note)
                continue
            values = fill_values(v, self.fill_missing, lat, lon)
            da = xr.DataArray(values, dims=("latitude", "longitude"), coords={"latitude": lat, "longitude": lon})
            out[v.dataset_name] = Field(v, da, f"{self.fill_missing} (filled)")
            self.provenance.filled[v.dataset_name] = self.fill_missing
        return out

    def _common_times(self) -> np.ndarray:
        return _common_times(f for f in self._fields.values() if f.var.kind != "static")

    def _offsets(self) -> np.ndarray:
        """Steps from initialisation to every time a sample uses, in order."""
        steps = [*range(1 - self.history, 1), *self.lead_steps]
        return np.array(steps) * self._step

    def _select(self, init_times: Iterable | None) -> np.ndarray:
        if init_times is None:
            return self._complete
        wanted = np.array([_as_time(t) for t in init_times], dtype="datetime64[ns]")
        if not len(wanted):
            raise DataError("init_times is empty")
        bad = wanted[~np.isin(wanted, self._complete)]
        if len(bad):
            common = self._common_times()
            problems = []
            for t in bad[:10]:
                missing = [u for u in t + self._offsets() if u not in common]
                problems.append(f"{_show(t)}: missing {', '.join(_show(u) for u in missing)}")
            raise DataError(
                f"{len(bad)} initialisation time(s) cannot start a sample, which needs "
                f"{self.history} input time(s) and targets at "
                f"{', '.join(_hours(k, self._step) for k in self.lead_steps)}",
                problems=problems,
            )
        return np.unique(wanted)

    def subset(self, init_times: Iterable) -> WindowDataset:
        """The same dataset restricted to `init_times` (sharing the opened files)."""
        other = copy.copy(self)
        other.init_times = self._select(init_times)
        return other

    def times_used(self, index: int) -> np.ndarray:
        """Every valid time sample `index` reads: its history, then its target times."""
        return self.init_times[index] + self._offsets()

    def target_times(self, index: int) -> np.ndarray:
        return self.init_times[index] + np.array(self.lead_steps) * self._step

    def set_epoch(self, epoch: int) -> None:
        """Draw other augmentations from now on (with workers that are not persistent)."""
        self.epoch = int(epoch)

    # ---- one sample --------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.init_times)

    def window(self, index: int) -> xr.Dataset:
        """The input window of sample `index`, as `load_window` would cut it."""
        return assemble_window(self._fields, Provenance(), self.spec, history=self.history,
                               init_time=self.init_times[index], levels=self.levels, crop=self.crop,
                               fill_missing=self.fill_missing_dynamic, seed=self.seed)

    def targets(self, index: int) -> xr.Dataset:
        """The predicted variables at the target times of sample `index` (dims as a window's)."""
        times = self.target_times(index)
        ref = next(f for f in self._fields.values() if f.var.kind != "static").data
        data = {}
        for v in self.spec.outputs():
            sel = {"time": times, **({"level": self.levels} if v.kind == "atmos" else {})}
            if v.dataset_name in self._fields:
                data[v.dataset_name] = self._fields[v.dataset_name].values(**sel).variable.copy(deep=False)
            else:  # filled in the inputs only (`fill_missing_dynamic`): no truth to train towards
                dims = ("time", "level", "latitude", "longitude") if v.kind == "atmos" else (
                    "time", "latitude", "longitude")
                shape = (len(times), *((len(self.levels),) if v.kind == "atmos" else ()), ref.sizes["latitude"], ref.sizes["longitude"])
                data[v.dataset_name] = xr.Variable(dims, np.full(shape, np.nan, dtype=np.float32))
            data[v.dataset_name].attrs.update(units=v.units, aurora_name=v.name)
        ds = xr.Dataset(data, coords={"time": times, "level": self.levels, "latitude": ref.latitude.values,
                                      "longitude": ref.longitude.values})
        return crop_to_patch(ds, self.spec.patch_size)[0] if self.crop else ds

    def __getitem__(self, index: int) -> Sample:
        return self._sample(index, self._generator("augment", [index]))

    def __getitems__(self, indices: Sequence[int]) -> list[Sample]:
        """The samples of one batch, which `DataLoader` asks for together.

        `augment` draws once for the whole batch (every sample starts from a generator in the
        same state), since a batch shares one set of statics: a planet moved by a different
        shift in each sample could not be batched.
        """
        return [self._sample(i, self._generator("augment", indices)) for i in indices]

    def _generator(self, stream: str, indices: Sequence[int]) -> np.random.Generator:
        """Seeded by (seed, epoch, stream, init times): the same whatever the worker or order."""
        inits = [int(self.init_times[i].astype("int64")) % 2**63 for i in indices]
        return np.random.default_rng([self.seed, self.epoch, zlib.crc32(stream.encode()), *inits])

    def _sample(self, index: int, augment_rng: np.random.Generator) -> Sample:
        window, targets = self.window(index), self.targets(index)
        if self.augment is not None:
            window, targets = self._augment_together(window, targets, augment_rng)
        if self.input_augment is not None:
            window = self.input_augment(window, self._generator("input_augment", [index]))
        inputs = window_to_batch(window, self.spec)
        levels = inputs.metadata.atmos_levels
        return Sample(inputs, tuple(_target_batch(targets.isel(time=[j]), self.spec, levels)
                                    for j in range(len(self.lead_steps))), self.lead_steps)

    def _augment_together(self, window: xr.Dataset, targets: xr.Dataset, rng) -> tuple[xr.Dataset, xr.Dataset]:
        times = np.concatenate([window.time.values, targets.time.values])
        joint = {}
        for key in dict.fromkeys([*window.data_vars, *targets.data_vars]):
            parts = [ds[key] for ds in (window, targets) if key in ds.data_vars]
            if "time" in parts[0].dims:  # a variable of only the inputs (or targets) is NaN at the other times
                joint[key] = xr.concat(parts, dim="time", join="exact").reindex(time=times)
            else:
                joint[key] = parts[0]
        ds = xr.Dataset(joint, attrs=window.attrs).assign_coords(
            {TARGET_COORD: ("time", np.arange(len(times)) >= window.sizes["time"])})
        ds = self.augment(ds, rng)
        if "time" not in ds.coords or not np.array_equal(ds.time.values, times):
            raise DataError("augment changed the time axis of a sample; the loader chooses the "
                            "times itself (history and targets), so augmentations must keep them")
        ds = ds.drop_vars(TARGET_COORD, errors="ignore")
        history = slice(0, window.sizes["time"])
        inputs = ds[list(window.data_vars)].isel(time=history)
        return inputs, ds[list(targets.data_vars)].isel(time=slice(window.sizes["time"], None))

    # ---- pickling (spawn / forkserver workers) ------------------------------------------

    def __getstate__(self) -> dict:
        """Files are reopened by path in the receiving process rather than pickled; the
        variant travels by name (its spec holds read-only mappings, which do not pickle)."""
        state = dict(self.__dict__, spec=(self.spec.name, self.spec.timestep, self.spec.max_history))
        if self._reader is not None:
            state["_fields"] = {k: f for k, f in self._fields.items() if f.var.kind == "static"}
        return state

    def __setstate__(self, state: dict) -> None:
        name, timestep, max_history = state["spec"]
        self.__dict__.update(state, spec=with_history(with_timestep(get_variant(name), timestep), max_history))
        if self._reader is not None:
            names, resolution = self._reader
            fields, _ = read_fields([(n, Path(n)) for n in names], resolution=resolution)
            self._fields = {**self._cached(self._dynamic_fields(fields)), **self._fields}


def open_fields(
    paths: Sequence[str | os.PathLike], *, regrid_to: float | None = None
) -> tuple[dict[str, Field], Provenance]:
    """Open local training files lazily: coordinates and times known, no values read yet."""
    if not paths:
        raise DataError("no input files given")
    remote = [str(p) for p in paths if is_s3(p)]
    if remote:
        raise DataError("training reads its files lazily for the whole run; copy them to a local "
                        "disk first", problems=remote)
    names = tuple(str(p) for p in paths)
    for name in names:
        if not Path(name).exists():
            raise DataError("file not found", source=name)
    return read_fields([(n, Path(n)) for n in names], resolution=regrid_to)


def common_times(fields: Mapping[str, Field], spec: VariantSpec) -> np.ndarray:
    """Valid times shared by every time-dependent variable of `spec` present in `fields`."""
    keys = {v.dataset_name for v in (*spec.inputs(), *spec.outputs()) if v.kind != "static"}
    return _common_times(f for k, f in fields.items() if k in keys)


def _checked_history(history: int | None, spec: VariantSpec) -> int:
    history = spec.max_history if history is None else history
    if isinstance(history, bool) or not isinstance(history, (int, np.integer)) or not (
            spec.min_history <= history <= spec.max_history):
        raise DataError(f"history of {history!r} step(s); the {spec.name} variant takes "
                        f"{spec.min_history} to {spec.max_history}")
    return int(history)


def _checked_lead_steps(lead_steps: Sequence[int]) -> tuple[int, ...]:
    steps = tuple(lead_steps) if not isinstance(lead_steps, (int, np.integer)) else (lead_steps,)
    bad = [k for k in steps if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1]
    if not steps or bad:
        raise DataError(f"lead_steps must be whole numbers of model steps >= 1, e.g. (1, 2, 4); got {lead_steps!r}")
    return tuple(sorted({int(k) for k in steps}))


def _common_times(fields: Iterable[Field]) -> np.ndarray:
    common = None
    for f in fields:
        times = f.data.time.values.astype("datetime64[ns]")
        common = times if common is None else np.intersect1d(common, times)
    return np.array([], "datetime64[ns]") if common is None else np.unique(common)


def _complete_inits(times: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Times t with t + offset among `times` for every offset: inits of complete samples."""
    if not len(times):
        return times
    needed = times[:, None] + offsets[None, :].astype("timedelta64[ns]")  # (T, len(offsets))
    return times[np.isin(needed, times).all(axis=1)]


def _choose_levels(atmos: list[Field], spec: VariantSpec, levels: Sequence[float] | None) -> np.ndarray:
    if not atmos:
        return np.array(levels if levels is not None else spec.levels, dtype="float64")
    shared = atmos[0].data.level.values
    for f in atmos[1:]:
        shared = np.intersect1d(shared, f.data.level.values)
    if levels is None:
        chosen = [lv for lv in spec.levels if lv in shared]
        if not chosen:
            raise DataError(
                "no pressure level shared by all atmospheric variables has normalisation statistics "
                f"(known: {', '.join(map(str, spec.levels))} hPa)",
                problems=[f"{f.key} ({f.source}): {', '.join(f'{lv:g}' for lv in f.data.level.values)}"
                          for f in atmos],
            )
        return np.array(chosen, dtype="float64")
    unknown = [lv for lv in levels if lv not in spec.levels]
    absent = [lv for lv in levels if lv not in shared]
    if unknown or absent:
        raise DataError(
            "requested pressure levels cannot be used",
            problems=[f"{lv:g} hPa has no normalisation statistics" for lv in unknown]
            + [f"{lv:g} hPa is not in every atmospheric variable (shared: "
               f"{', '.join(f'{s:g}' for s in shared)})" for lv in absent],
        )
    return np.array(sorted(levels), dtype="float64")


def _target_batch(ds: xr.Dataset, spec: VariantSpec, levels: tuple) -> Batch:
    """The truth at one valid time as a Batch of the predicted variables, cropped like Aurora's input."""

    def tensor(key: str) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(ds[key].values, dtype=np.float32))[None]

    valid = ds.time.values[0].astype("datetime64[us]").astype(datetime)
    batch = Batch(
        surf_vars={n: tensor(v.dataset_name) for n, v in _outputs(spec, "surface")},  # (1, 1, h, w)
        static_vars={},
        atmos_vars={n: tensor(v.dataset_name) for n, v in _outputs(spec, "atmos")},  # (1, 1, c, h, w)
        metadata=Metadata(
            lat=torch.from_numpy(ds.latitude.values.astype(np.float32)),
            lon=torch.from_numpy(ds.longitude.values.astype(np.float32)),
            time=(valid,),
            atmos_levels=levels,
        ),
    )
    return batch.crop(spec.patch_size)


def _outputs(spec: VariantSpec, kind: str) -> list[tuple[str, Variable]]:
    return [(v.name, v) for v in spec.outputs() if v.kind == kind]


# --------------------------------------------------------------------------------------
# Splits by time


Period = tuple  # (start, end): start included, end excluded


def split_by_time(
    dataset: WindowDataset,
    *,
    train: Period | float,
    val: Period | float | None = None,
    test: Period | float | None = None,
    gap: timedelta = timedelta(0),
) -> dict[str, WindowDataset]:
    """Train/validation/test datasets whose samples share no time.

    Each period is `(start, end)` (start included, end excluded) or a fraction of the
    dataset's time span (fractions are laid out in the order train, val, test, `gap` apart).
    A sample belongs to a period only when *every* time it reads, from its first input to
    its last target, lies inside it; samples that straddle a boundary are dropped. So no
    time is shared across splits even with `gap=0`; `gap` is the least separation required
    between periods, to keep out samples merely correlated with each other (weather
    remembers a few days).
    """
    given = {name: p for name, p in (("train", train), ("val", val), ("test", test)) if p is not None}
    if all(isinstance(p, float) for p in given.values()):
        periods = _periods_from_fractions(dataset, given, gap)
    elif all(isinstance(p, (tuple, list)) and len(p) == 2 for p in given.values()):
        periods = {name: (_as_time(a), _as_time(b)) for name, (a, b) in given.items()}
    else:
        raise DataError("give every period as (start, end) or every period as a fraction; got "
                        + ", ".join(f"{n}={p!r}" for n, p in given.items()))
    _check_separated(periods, gap)
    first = np.array([dataset.times_used(i)[0] for i in range(len(dataset))], dtype="datetime64[ns]")
    last = np.array([dataset.times_used(i)[-1] for i in range(len(dataset))], dtype="datetime64[ns]")
    out = {}
    for name, (start, end) in periods.items():
        inside = (first >= start) & (last < end)
        if not inside.any():
            span = dataset.times_used(0)[-1] - dataset.times_used(0)[0] if len(dataset) else None
            raise DataError(
                f"the {name} period {_show(start)} to {_show(end)} holds no complete sample; a sample "
                f"spans {span.astype('timedelta64[h]') if span is not None else '?'} from its first input "
                f"to its last target (history {dataset.history}, lead steps {dataset.lead_steps})"
            )
        out[name] = dataset.subset(dataset.init_times[inside])
    return out


def _periods_from_fractions(dataset: WindowDataset, fractions: dict[str, float], gap: timedelta):
    if any(f <= 0 for f in fractions.values()) or sum(fractions.values()) > 1 + 1e-9:
        raise DataError(f"fractions must be positive and sum to at most 1; got {fractions}")
    if not len(dataset):
        raise DataError("the dataset has no samples to split")
    start = dataset.times_used(0)[0]
    end = dataset.times_used(len(dataset) - 1)[-1] + np.timedelta64(1, "ns")
    gap64 = np.timedelta64(gap, "ns")
    usable = (end - start) - gap64 * (len(fractions) - 1)
    if usable <= np.timedelta64(0, "ns"):
        raise DataError(f"a gap of {gap} leaves no time for {len(fractions)} periods in "
                        f"{_show(start)} to {_show(end)}")
    periods = {}
    for name, fraction in fractions.items():
        stop = start + np.timedelta64(int(usable / np.timedelta64(1, "ns") * fraction), "ns")
        periods[name] = (start, stop)
        start = stop + gap64
    return periods


def _check_separated(periods: dict[str, tuple[np.datetime64, np.datetime64]], gap: timedelta) -> None:
    for name, (start, end) in periods.items():
        if not start < end:
            raise DataError(f"the {name} period must start before it ends; got {_show(start)} to {_show(end)}")
    ordered = sorted(periods.items(), key=lambda item: item[1][0])
    for (a, (_, a_end)), (b, (b_start, _)) in zip(ordered, ordered[1:]):
        if b_start < a_end:
            raise DataError(f"the {a} and {b} periods overlap ({a} ends {_show(a_end)}, {b} starts "
                            f"{_show(b_start)})")
        if b_start - a_end < np.timedelta64(gap, "ns"):
            raise DataError(f"the {a} and {b} periods are {(b_start - a_end).astype('timedelta64[h]')} "
                            f"apart; the gap asked for is {gap}")


# --------------------------------------------------------------------------------------
# Collation and loaders


def collate(samples: Sequence[Sample]) -> Sample:
    """Stack samples along the batch dimension; they must share grid, levels, statics and leads."""
    if not samples:
        raise DataError("no samples to collate")
    first = samples[0]
    problems = [p for i, s in enumerate(samples[1:], 1) for p in _mismatches(first, s, i)]
    if problems:
        raise DataError(f"{len(samples)} samples cannot form one batch", problems=problems)
    inputs = _stack([s.inputs for s in samples])
    targets = tuple(_stack([s.targets[j] for s in samples]) for j in range(len(first.lead_steps)))
    return Sample(inputs, targets, first.lead_steps)


def _mismatches(a: Sample, b: Sample, i: int) -> list[str]:
    """Why sample `b` (element `i`) cannot join a batch with sample `a` (element 0)."""
    where = f"element {i} (init {b.inputs.metadata.time[0]:%Y-%m-%dT%H:%M}) differs from element 0"
    if a.lead_steps != b.lead_steps:
        return [f"{where} in lead steps: {b.lead_steps} vs {a.lead_steps}"]
    parts = [("inputs", a.inputs, b.inputs)]
    parts += [(f"target at lead {k}", x, y) for k, x, y in zip(a.lead_steps, a.targets, b.targets)]
    problems = []
    for what, x, y in parts:
        mx, my = x.metadata, y.metadata
        if not (torch.equal(mx.lat, my.lat) and torch.equal(mx.lon, my.lon)):
            problems.append(f"{where} in the grid of its {what}: {len(my.lat)}x{len(my.lon)} vs "
                            f"{len(mx.lat)}x{len(mx.lon)}")
            continue
        if tuple(mx.atmos_levels) != tuple(my.atmos_levels):
            problems.append(f"{where} in the levels of its {what}: {my.atmos_levels} vs {mx.atmos_levels}")
        for group in ("surf_vars", "atmos_vars"):
            gx, gy = getattr(x, group), getattr(y, group)
            if gx.keys() != gy.keys():
                problems.append(f"{where} in the {group} of its {what}: {sorted(gy)} vs {sorted(gx)}")
            else:
                problems += [f"{where} in the shape of {what} '{k}': {tuple(gy[k].shape)} vs {tuple(gx[k].shape)}"
                             for k in gx if gx[k].shape[1:] != gy[k].shape[1:]]
        if x.static_vars.keys() != y.static_vars.keys():
            problems.append(f"{where} in the static variables of its {what}: {sorted(y.static_vars)} vs "
                            f"{sorted(x.static_vars)}")
        else:
            problems += [f"{where} in static variable '{k}': a batch shares one set of statics"
                         for k in x.static_vars if not torch.equal(x.static_vars[k], y.static_vars[k])]
    return problems


def _stack(batches: Sequence[Batch]) -> Batch:
    first = batches[0]
    return Batch(
        surf_vars={k: torch.cat([b.surf_vars[k] for b in batches]) for k in first.surf_vars},  # (b, t, h, w)
        static_vars=dict(first.static_vars),  # (h, w), checked equal
        atmos_vars={k: torch.cat([b.atmos_vars[k] for b in batches]) for k in first.atmos_vars},  # (b, t, c, h, w)
        metadata=Metadata(
            lat=first.metadata.lat,
            lon=first.metadata.lon,
            time=tuple(t for b in batches for t in b.metadata.time),
            atmos_levels=first.metadata.atmos_levels,
            rollout_step=first.metadata.rollout_step,
        ),
    )


def _seed_worker(seed: int, worker_id: int) -> None:
    """Seed Python, NumPy and torch in a worker from the loader's seed and the worker's id.

    `torch.initial_seed()` is the per-epoch base seed the loader drew from its seeded
    generator, plus `worker_id`; mixing it in keeps the streams distinct across epochs.
    """
    state = np.random.SeedSequence([seed, worker_id, torch.initial_seed()]).generate_state(2, dtype=np.uint32)
    worker_seed = int(state[0]) << 32 | int(state[1])
    random.seed(worker_seed)
    np.random.seed(int(state[0]))
    torch.manual_seed(worker_seed)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool = False,
    num_workers: int = 0,
    seed: int = 0,
    sampler: Sampler | None = None,
    drop_last: bool = False,
    pin_memory: bool = False,
    multiprocessing_context: str | None = None,
) -> DataLoader:
    """A DataLoader of collated `Sample`s whose order and worker seeds follow from `seed`.

    The same seed gives the same batches in the same order with any `num_workers`
    (the dataset seeds augmentations from its own seed and the init times). A `sampler` given here should
    carry its own seeded `generator`. Workers are started afresh each epoch, so
    `dataset.set_epoch(e)` before an epoch reaches them.
    """
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        drop_last=drop_last,
        generator=torch.Generator().manual_seed(seed),
        worker_init_fn=partial(_seed_worker, seed),
        multiprocessing_context=multiprocessing_context if num_workers else None,
    )
