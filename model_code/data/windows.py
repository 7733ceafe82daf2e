"""Training samples cut lazily from long multi-time files: the window dataset.

Training needs many (input window, targets at several lead times) pairs from files far
larger than memory, so a sample loads only the times it uses. Every dataset is checked
once, when it is built, before any model exists. Augmentations that move the planet see
inputs and targets together, so the truth moves with the inputs.
"""

from __future__ import annotations

import copy
import logging
import os
import zlib
from datetime import timedelta
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import xarray as xr
from torch.utils.data import Dataset

from model_code.data.batch import window_to_batch
from model_code.data.emissions import with_new_statics
from model_code.data.grid import crop_to_patch
from model_code.data.lags import Lags, add_lags, lagged_fields
from model_code.data.ingest import (
    FILL_MODES, FILLED_WITH, Field, FillMode, Provenance, assemble_window, fill_values, read_fields,
)
from model_code.data.lazy_fields import _CachedField, _SliceCache, open_fields
from model_code.data.sample_layout import (
    _as_time, _checked_history, _checked_lead_steps, _choose_levels, _common_times, _complete_inits, _hours, _show,
)
from model_code.data.samples import Sample, _target_batch
from model_code.data.solar import insolation_field
from model_code.data.validate import validate_fields
from model_code.data.window_checks import check_fields, dynamic_fields, dynamic_variables, static_variables
from model_code.errors import DataError
from model_code.variants import VariantSpec, get_variant, with_history, with_timestep

__all__ = ["Augment", "WindowDataset"]

logger = logging.getLogger(__name__)

Augment = Callable[[xr.Dataset, np.random.Generator], xr.Dataset]
"""`aug(ds, rng) -> ds`, as the augmentations of `model_code.data.augment` are called."""

TARGET_COORD = "is_target"
"""Boolean coordinate on `time` in the dataset an `augment` sees: True at target times."""


class WindowDataset(Dataset):
    """Samples of one variant: history window and targets at `lead_steps`, one per init time.

    Built from the lazily-loaded fields of `read_fields` (GRIB, NetCDF or Zarr), usually
    through `from_files`. Construction checks the fields once (`window_checks`) and loads only
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
    - `lags`: lagged inputs (`data.lags`): every input time also gets each variable that many
      hours earlier (`lags.add_lags`), and an initialisation time starts a sample only when
      the data hold those times too. Off by default.
    - `new_statics`: static inputs beyond the variant's (`emissions.with_new_statics`, from the
      inventories of `data.emissions`), on the fields' grid; every window gets them.
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
        lags: Lags | None = None,
        new_statics: Mapping[str, xr.DataArray] | None = None,
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
        self.lags = lags if lags is not None and lags.enabled else None
        self.new_statics = dict(new_statics or {})
        self.augment = augment
        self.input_augment = input_augment
        self.seed = seed
        self.epoch = 0
        self.provenance = provenance or Provenance()
        self._step = np.timedelta64(int(self.spec.timestep.total_seconds()), "s")
        self._reader: tuple[tuple[str, ...], float | None] | None = None

        check_fields(fields, self.spec, history=self.history, lead_steps=self.lead_steps, offsets=self._offsets(),
                     fill_missing=fill_missing, fill_missing_dynamic=fill_missing_dynamic, crop=crop)
        self.filled_dynamic = tuple(v for v in dynamic_variables(self.spec)
                                    if v.dataset_name not in fields and not v.computed)
        """Time-dependent variables filled in the inputs, NaN in the targets (`fill_missing_dynamic`)."""
        self._note_filled_dynamic()
        if self.lags is not None:  # a lag of a variable the data lack would be invented
            lagged_fields(fields, self.lags)
        self.filled_static = tuple(v for v in static_variables(self.spec) if v.dataset_name not in fields)
        """Static fields filled as `fill_missing` says."""
        self.levels = _choose_levels(self._atmos_fields(fields), self.spec, levels)
        self._cache_bytes = cache_bytes
        self._fields = {**self._cached(dynamic_fields(fields, self.spec)), **self._statics(fields)}
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

    # ---- which fields and times ------------------------------------------------------

    def _cached(self, dynamic: Mapping[str, Field]) -> dict[str, Field]:
        cache = _SliceCache(self._cache_bytes)
        return {k: _CachedField.of(f, cache) for k, f in dynamic.items()}

    def _atmos_fields(self, fields: Mapping[str, Field]) -> list[Field]:
        return [f for f in dynamic_fields(fields, self.spec).values() if f.var.kind == "atmos"]

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
        ref = next(iter(dynamic_fields(fields, self.spec).values())).data
        lat, lon = ref.latitude.values, ref.longitude.values
        out = {}
        for v in static_variables(self.spec):
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
        """Steps from initialisation to every time a sample uses, in order: lagged times, history, targets."""
        steps = [*range(1 - self.history, 1), *self.lead_steps]
        if self.lags is None:
            return np.array(steps) * self._step
        lagged = np.unique([-np.timedelta64(h * 3600, "s") - j * self._step
                            for h in self.lags.hours for j in range(self.history)])
        return np.concatenate([lagged, np.array(steps) * self._step])

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
        """Every valid time sample `index` reads: its lagged times (`lags`), history, then target times."""
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
        """The input window of sample `index`, as `load_window` would cut it, with its lagged inputs
        and new static inputs."""
        window = assemble_window(self._fields, Provenance(), self.spec, history=self.history,
                                 init_time=self.init_times[index], levels=self.levels, crop=self.crop,
                                 fill_missing=self.fill_missing_dynamic, seed=self.seed)
        window = window if self.lags is None else add_lags(window, self._fields, self.lags)
        return with_new_statics(window, self.new_statics) if self.new_statics else window

    def targets(self, index: int) -> xr.Dataset:
        """The predicted variables at the target times of sample `index` (dims as a window's)."""
        times = self.target_times(index)
        ref = next(f for f in self._fields.values() if f.var.kind != "static").data
        data = {}
        for v in self.spec.outputs():
            sel = {"time": times, **({"level": self.levels} if v.kind == "atmos" else {})}
            if v.dataset_name in self._fields:
                data[v.dataset_name] = self._fields[v.dataset_name].values(**sel).variable.copy(deep=False)
            elif v.computed:  # the insolation the model itself sets on its predictions
                lat, lon = ref.latitude.values, ref.longitude.values
                data[v.dataset_name] = xr.Variable(("time", "latitude", "longitude"), insolation_field(lat, lon, times))
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
            self._fields = {**self._cached(dynamic_fields(fields, self.spec)), **self._fields}
