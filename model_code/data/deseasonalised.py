"""De-seasonalised variables: the model learns anomalies from a climatology of its training period.

Off by default (the training config's `data.deseasonalise`). Hourly 2 m temperature is mostly
its diurnal cycle; a model given the whole field spends its capacity relearning the cycle. The
model built with a climatology (`deseasonalised_class`) subtracts it from the chosen variables
at every input time before normalising them, and adds it back to its predictions at their valid
times, so everything outside the model (samples, the loss, forecasts, the server, hindcasts)
sees full fields. The loss compares prediction and target, in which the climatology cancels:
it judges the anomalies. Lagged inputs of a chosen variable (`data.lags`) are anomalies too,
from the climatology at their own valid time, so a rollout moves them on exactly.

The climatology is the mean of each variable per calendar group (`preprocess.climatology`'s
groupings: hour of day, day of year, month) over the times the training samples read, never the
validation period. Its values are a buffer of the model, saved with the weights; its groups and
grid are a constructor argument, recorded in the checkpoint's `model_overrides`, so
`load_checkpoint` rebuilds the model and every forecast from it gives full fields.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import torch
import xarray as xr

from model_code.data.lags import lags_of
from model_code.data.preprocess.climatology import _calendar, _check_by
from model_code.errors import DataError
from model_code.variables import variable

if TYPE_CHECKING:
    from aurora import Aurora, Batch, Metadata

    from model_code.data.ingest import Field

__all__ = ["Deseasonalise", "climatology_argument", "deseasonalised_class", "deseasonalised_fields",
           "training_climatology", "uncovered_groups"]

BUFFER = "climatology"
"""The name of the model's buffer (and of its entry in a checkpoint's weights)."""
GRID_TOLERANCE = 1e-3
"""Degrees within which a batch's coordinate is the climatology's (batches carry float32)."""


@dataclasses.dataclass(frozen=True)
class Deseasonalise:
    """Which surface variables the model learns as anomalies, and the calendar groups of their
    climatology (YAML `data.deseasonalise`; off without variables)."""

    variables: tuple[str, ...] = ()
    """Surface variables the variant takes and predicts, read from the files (Aurora names, e.g. `2t`)."""
    by: str | tuple[str, ...] = "hour"
    """A grouping of `preprocess.climatology.GROUPINGS` (`hour`: of day, UTC), or several."""

    @property
    def enabled(self) -> bool:
        return bool(self.variables)

    @property
    def groupings(self) -> tuple[str, ...]:
        return (self.by,) if isinstance(self.by, str) else tuple(self.by)


# ---- the climatology --------------------------------------------------------------------------


def deseasonalised_fields(fields: Mapping[str, Field], variables: Sequence[str]) -> dict[str, Field]:
    """`{variable: field}` of the chosen variables; one the data lack is refused, since a filled
    field has no season to learn."""
    keys = {name: variable("surface", name).dataset_name for name in variables}
    absent = [f"{name} ({key})" for name, key in keys.items() if key not in fields]
    if absent:
        raise DataError(f"the data lack {', '.join(absent)}, de-seasonalised by data.deseasonalise; choose "
                        f"variables the files hold ({', '.join(sorted(fields))})")
    return {name: fields[key] for name, key in keys.items()}


def _group_keys(times: np.ndarray, by: Sequence[str]) -> list[tuple[int, ...]]:
    keys = _calendar(np.asarray(times, dtype="datetime64[ns]"), by)
    return list(zip(*(keys[b].tolist() for b in by)))


def _describe(by: Sequence[str], key: Sequence[int]) -> str:
    return ", ".join(f"{b} {k}" for b, k in zip(by, key))


def uncovered_groups(train_times: np.ndarray, times: np.ndarray, by: Sequence[str]) -> list[str]:
    """The calendar groups of `times` that no training time falls in, described (`hour 5`)."""
    by = _check_by(by)
    seen = set(_group_keys(train_times, by))
    return [_describe(by, key) for key in sorted(set(_group_keys(times, by)) - seen)]


def training_climatology(fields: Mapping[str, Field], times: np.ndarray, variables: Sequence[str],
                         by: Sequence[str], *, block_bytes: int = 64 * 2**20) -> xr.Dataset:
    """The climatology of `variables` (Aurora names) over `times`, the training samples' times.

    clim[g] = Σ_{t ∈ times, key(t) = g} x_t / N_g per grid point, as `preprocess.climatology`
    computes it and in its form (dims (*by, latitude, longitude), `n_samples`, the attributes
    `train_period` and `by`), with the groups that `times` hold. The fields are read
    `block_bytes` at a time: a training period of global hourly fields does not fit in memory.
    A grid point with no finite value in a group is refused.
    """
    by = _check_by(by)
    times = np.unique(np.asarray(times, dtype="datetime64[ns]"))
    keys = _calendar(times, by)
    axes = {b: np.unique(keys[b]) for b in by}
    shape = tuple(len(axes[b]) for b in by)
    group = np.ravel_multi_index(tuple(np.searchsorted(axes[b], keys[b]) for b in by), shape)
    n_samples = np.bincount(group, minlength=int(np.prod(shape)))
    out, grid = {}, None
    for name, f in deseasonalised_fields(fields, variables).items():
        lat, lon = f.grid
        if grid is not None and not (np.array_equal(grid[0], lat) and np.array_equal(grid[1], lon)):
            raise DataError(f"{f.key} in {f.source} is not on the grid of the other de-seasonalised variables; "
                            "regrid the files to one grid")
        grid = lat, lon
        sums = np.zeros((len(n_samples), len(lat), len(lon)))
        counts = np.zeros_like(sums)
        step = max(1, block_bytes // (4 * len(lat) * len(lon)))
        for i in range(0, len(times), step):
            block = f.values(time=times[i:i + step]).transpose("time", "latitude", "longitude").values
            block = block.astype("float64")
            finite = np.isfinite(block)
            for g in np.unique(group[i:i + step]):
                rows = group[i:i + step] == g
                sums[g] += np.where(finite[rows], block[rows], 0.0).sum(axis=0)
                counts[g] += finite[rows].sum(axis=0)
        seen = n_samples > 0
        empty = seen[:, None, None] & (counts == 0)
        if empty.any():
            g = int(np.flatnonzero(empty.any(axis=(1, 2)))[0])
            key = tuple(int(axes[b][i]) for b, i in zip(by, np.unravel_index(g, shape)))
            raise DataError(f"{f.key} in {f.source} has no finite value at {int(empty.sum())} grid point(s) and "
                            f"calendar group(s) of the training period (first: {_describe(by, key)}); a climatology "
                            "needs values at every point")
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
        out[f.key] = xr.DataArray(mean.reshape(shape + mean.shape[1:]).astype("float32"),
                                  dims=(*by, "latitude", "longitude"), attrs=dict(f.data.attrs))
    lat, lon = grid
    period = [np.datetime_as_string(t, unit="s") for t in (times[0], times[-1])]
    return xr.Dataset(out, coords={**{b: (b, axes[b]) for b in by}, "latitude": lat, "longitude": lon,
                                   "n_samples": (by, n_samples.reshape(shape).astype("int64"))},
                      attrs={"train_period": json.dumps(period), "by": json.dumps(list(by)), "smoothing_days": 0,
                             "angles_as_sincos": "[]"})


def _clim_groups(clim: xr.Dataset) -> tuple[tuple[str, ...], list[tuple[int, ...]], np.ndarray]:
    """The groupings of `clim`, its groups with training data, and their flat positions."""
    by = tuple(json.loads(clim.attrs["by"]))
    counts = clim["n_samples"].transpose(*by).values.ravel()
    grid = np.stack(np.meshgrid(*(clim[b].values for b in by), indexing="ij"), axis=-1).reshape(-1, len(by))
    kept = np.flatnonzero(counts > 0)
    return by, [tuple(int(k) for k in grid[i]) for i in kept], kept


def climatology_argument(clim: xr.Dataset, variables: Sequence[str]) -> dict[str, list]:
    """The constructor argument `deseasonalise` of the model that takes `clim` (`training_climatology`):
    the variables (Aurora names), groupings, groups and grid; the values go in with `set_climatology`."""
    by, groups, _ = _clim_groups(clim)
    return {"variables": list(variables), "by": list(by), "groups": [list(g) for g in groups],
            "latitude": clim.latitude.values.tolist(), "longitude": clim.longitude.values.tolist()}


# ---- the model ----------------------------------------------------------------------------------


class DeseasonalisedVariables:
    """Mixed into a variant's Aurora class by `deseasonalised_class`: the chosen variables are
    anomalies inside the model.

    Before normalisation, the climatology of each input time (a lagged input's own valid time)
    is subtracted; after un-normalisation, that of the prediction's valid time is added. The
    model's `surf_stats` of these variables should be those of their anomalies (the trainer
    gives them). The values live in the buffer `climatology` (groups, variables, latitude,
    longitude); a model built but never given them (`set_climatology`, or weights holding them)
    refuses to run rather than treat anomalies as fields.
    """

    def __init__(self, *, deseasonalise: Mapping[str, Any], **kw_args: Any) -> None:
        super().__init__(**kw_args)
        self.deseasonalised = tuple(str(v) for v in deseasonalise["variables"])
        self.climatology_by = _check_by(tuple(deseasonalise["by"]))
        groups = [tuple(int(k) for k in g) for g in deseasonalise["groups"]]
        self._groups = {g: i for i, g in enumerate(groups)}
        self._grid = tuple(np.asarray(deseasonalise[axis], dtype="float64") for axis in ("latitude", "longitude"))
        unknown = [v for v in self.deseasonalised if v not in self.surf_vars]
        if not self.deseasonalised or unknown or not groups or len(self._groups) != len(groups):
            raise DataError(f"deseasonalise: variables among the model's surface inputs {list(self.surf_vars)} and "
                            f"distinct calendar groups expected; got variables {list(self.deseasonalised)}, "
                            f"{len(groups)} group(s)")
        shape = (len(groups), len(self.deseasonalised), *(len(a) for a in self._grid))
        self.register_buffer(BUFFER, torch.full(shape, float("nan")))
        self._climatology_set = False

    def set_climatology(self, clim: xr.Dataset) -> None:
        """Copy the values of `clim` (`training_climatology`, over this model's groups and grid) in."""
        by, groups, kept = _clim_groups(clim)
        if by != self.climatology_by or groups != list(self._groups):
            raise DataError(f"the climatology is grouped by {list(by)} into {len(groups)} group(s); the model "
                            f"takes {list(self.climatology_by)} in {len(self._groups)}")
        for axis, own in zip(("latitude", "longitude"), self._grid):
            if not np.array_equal(clim[axis].values, own):
                raise DataError(f"the climatology's {axis} ({clim.sizes[axis]} points) is not the model's ({len(own)})")
        values = np.stack([clim[variable("surface", name).dataset_name].transpose(*by, "latitude", "longitude")
                           .values.reshape(-1, len(self._grid[0]), len(self._grid[1]))[kept]
                           for name in self.deseasonalised], axis=1)
        if not np.isfinite(values).all():
            raise DataError("the climatology holds non-finite values; expected one from `training_climatology`")
        with torch.no_grad():
            getattr(self, BUFFER).copy_(torch.from_numpy(values))
        self._climatology_set = True

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any, **kwargs: Any) -> None:
        """Weights holding a climatology of this model's shape bring it; others (published weights,
        a run without this option) leave the model's own."""
        key, own = prefix + BUFFER, getattr(self, BUFFER)
        if key in state_dict and state_dict[key].shape == own.shape:
            self._climatology_set = True
        else:
            state_dict[key] = own
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _shifted(self) -> dict[str, tuple[str, int]]:
        """`{surface input: (variable, hours before its time)}` of everything de-seasonalised: the
        variables themselves and their lagged inputs (`data.lags`)."""
        lags = lags_of(self)
        lagged = {} if lags is None else {name: (var, hours) for name, (var, hours) in lags.names.items()
                                          if var in self.deseasonalised}
        return {**{v: (v, 0) for v in self.deseasonalised}, **lagged}

    def _pre_norm_hook(self, batch: Batch) -> Batch:
        surf = dict(batch.surf_vars)
        steps = next(iter(surf.values())).shape[1]
        step = np.timedelta64(int(self.timestep.total_seconds()), "s")
        latest = np.array([np.datetime64(t, "ns") for t in batch.metadata.time])
        times = latest[:, None] + np.arange(1 - steps, 1) * step  # (b, t): every input time
        for name, (var, hours) in self._shifted().items():
            if name in surf:
                surf[name] = surf[name] - self._at(var, times - np.timedelta64(hours, "h"), batch.metadata, surf[name])
        return super()._pre_norm_hook(dataclasses.replace(batch, surf_vars=surf))

    def _post_unnorm_hook(self, batch: Batch, pred: Batch) -> Batch:
        pred = super()._post_unnorm_hook(batch, pred)
        surf = dict(pred.surf_vars)
        times = np.array([np.datetime64(t, "ns") for t in pred.metadata.time])[:, None]
        for name, (var, hours) in self._shifted().items():
            if name in surf:
                surf[name] = surf[name] + self._at(var, times - np.timedelta64(hours, "h"), pred.metadata, surf[name])
        return dataclasses.replace(pred, surf_vars=surf)

    def _at(self, var: str, times: np.ndarray, metadata: Metadata, like: torch.Tensor) -> torch.Tensor:
        """The climatology of `var` at `times` (b, t) on the batch's grid, shaped (b, t, h, w) as `like`."""
        if not self._climatology_set:
            raise DataError("the model's climatology (data.deseasonalise) was never given: load it from a "
                            "checkpoint, or set it with `set_climatology`")
        keys = _group_keys(times.ravel(), self.climatology_by)
        missing = sorted({k for k in keys if k not in self._groups})
        if missing:
            raise DataError(f"the model's climatology (data.deseasonalise, by {', '.join(self.climatology_by)}) has "
                            f"no training data for {'; '.join(_describe(self.climatology_by, k) for k in missing)}, "
                            f"which {str(times.ravel()[keys.index(missing[0])])[:16]} falls in; train on a period "
                            "that covers it")
        own = getattr(self, BUFFER)
        rows, cols = (torch.as_tensor(_positions(c, own_axis, axis), device=own.device)
                      for c, own_axis, axis in ((metadata.lat, self._grid[0], "latitude"),
                                                (metadata.lon, self._grid[1], "longitude")))
        field = own[:, self.deseasonalised.index(var)].index_select(1, rows).index_select(2, cols)
        index = torch.as_tensor([self._groups[k] for k in keys], device=own.device)
        return field[index].reshape(*times.shape, len(rows), len(cols)).to(device=like.device, dtype=like.dtype)


def _positions(coords: torch.Tensor, own: np.ndarray, axis: str) -> np.ndarray:
    """Where each of a batch's coordinates lies in the climatology's `own` (monotonic)."""
    c = coords.detach().cpu().double().numpy()
    if c.ndim != 1:
        raise DataError(f"a de-seasonalised model needs 1-D {axis} coordinates; got shape {tuple(c.shape)}")
    order = np.argsort(own)
    at = np.searchsorted(own[order], c)
    found, below = (order[np.clip(i, 0, len(own) - 1)] for i in (at, at - 1))
    found = np.where(np.abs(own[below] - c) < np.abs(own[found] - c), below, found)
    off = np.abs(own[found] - c) > GRID_TOLERANCE
    if off.any():
        raise DataError(f"the batch's {axis} {c[off][0]:g} is not on the grid of the model's climatology "
                        f"(data.deseasonalise: {len(own)} points from {own[0]:g} to {own[-1]:g}); forecast on "
                        "the grid it was trained on, or a part of it")
    return found


@functools.cache
def deseasonalised_class(cls: type[Aurora]) -> type[Aurora]:
    """`cls` learning the chosen variables as anomalies: what `variants.build_model` builds given `deseasonalise`."""
    return type(f"Deseasonalised{cls.__name__}", (DeseasonalisedVariables, cls), {"__module__": __name__})
