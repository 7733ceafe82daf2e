"""Climatology by day of year and hour from the training period, and anomalies against it."""

from __future__ import annotations

import json
from typing import Any, Sequence

import numpy as np
import pandas as pd
import xarray as xr

from model_code.errors import DataError
from model_code.data.preprocess.period import _as_dataset, _training
from model_code.data.preprocess.angles import _angles_present, angles_to_sincos, sincos_to_angles


GROUPINGS = ("dayofyear", "hour", "month")
"""Calendar keys a climatology can be grouped by."""


def _check_by(by: Sequence[str] | str) -> tuple[str, ...]:
    by = (by,) if isinstance(by, str) else tuple(by)
    bad = [b for b in by if b not in GROUPINGS]
    if not by or bad or len(set(by)) != len(by):
        raise DataError(
            f"climatology grouping {by!r}; expected distinct keys among {', '.join(GROUPINGS)}"
        )
    return by


def _calendar(times: np.ndarray, by: Sequence[str]) -> dict[str, np.ndarray]:
    """Group values of each time. Day of year is on a 366-day calendar: 29 February is day
    60 and 1 March day 61 in every year, so a date keeps its day in leap and common years."""
    idx = pd.DatetimeIndex(times)
    out = {}
    for b in by:
        if b == "dayofyear":
            out[b] = (idx.dayofyear + ((~idx.is_leap_year) & (idx.month >= 3))).to_numpy().astype(int)
        elif b == "hour":
            out[b] = idx.hour.to_numpy().astype(int)
        else:
            out[b] = idx.month.to_numpy().astype(int)
    return out


def _circular_window_sum(x: np.ndarray, axis: int, half: int) -> np.ndarray:
    """Σ_{k=-half..half} x[(d + k) mod n] along `axis`."""
    total = np.zeros_like(x)
    for k in range(-half, half + 1):
        total += np.roll(x, k, axis=axis)
    return total


def climatology(
    ds: xr.Dataset | xr.DataArray,
    train_period: Sequence[Any],
    by: Sequence[str] = ("dayofyear", "hour"),
    smoothing_days: int | None = None,
) -> xr.Dataset:
    """Mean of every time-dependent variable per calendar group, from the training period only.

    clim[g] = Σ_{t ∈ train, key(t) = g} x_t / N_g per grid point (and level), NaN ignored.
    `by` picks the keys: ``dayofyear`` (366-day calendar, see `_calendar`), ``hour`` (UTC),
    ``month``. With `smoothing_days` = w (odd) and ``dayofyear`` in `by`, the mean pools every
    training sample within ±(w - 1)/2 days of d, wrapping around the year (31 December
    neighbours 1 January): clim[d] = Σ_{|d' - d| ≤ k} S[d'] / Σ_{|d' - d| ≤ k} N[d'] on all
    366 days. Directions in `ANGLE_VARS` are averaged as `{name}_sin`, `{name}_cos`.

    The result has dims (*by, [level], latitude, longitude); the coordinate `n_samples` (dims
    `by`) counts the training times pooled in each group, 0 where there are none (values NaN).
    """
    by = _check_by(by)
    half = 0
    if smoothing_days is not None:
        if "dayofyear" not in by:
            raise DataError(f"smoothing over {smoothing_days} days needs 'dayofyear' in the grouping, got {by!r}")
        if int(smoothing_days) != smoothing_days or smoothing_days < 1 or smoothing_days % 2 == 0:
            raise DataError(f"smoothing_days = {smoothing_days}; expected an odd number of days >= 1")
        half = int(smoothing_days) // 2
    train, period = _training(_as_dataset(ds), train_period)
    angles = _angles_present(train)
    train = angles_to_sincos(train, angles)
    dynamic = [str(k) for k, v in train.data_vars.items() if "time" in v.dims]
    if not dynamic:
        raise DataError("no time-dependent variable to build a climatology of (statics have no season)")

    keys = _calendar(train.time.values, by)
    axes = {b: np.arange(1, 367) if (b == "dayofyear" and smoothing_days is not None) else np.unique(keys[b])
            for b in by}
    shape = tuple(len(axes[b]) for b in by)
    flat = np.ravel_multi_index(tuple(np.searchsorted(axes[b], keys[b]) for b in by), shape)
    order = np.argsort(flat, kind="stable")
    groups, starts, counts = np.unique(flat[order], return_index=True, return_counts=True)
    n_samples = np.zeros(int(np.prod(shape)))
    n_samples[groups] = counts
    n_samples = n_samples.reshape(shape)
    day_axis = by.index("dayofyear") if smoothing_days is not None else None
    if day_axis is not None:
        n_samples = _circular_window_sum(n_samples, day_axis, half)

    coords: dict[str, Any] = {b: (b, axes[b]) for b in by}
    coords["n_samples"] = (by, n_samples.astype("int64"))
    out = {}
    for key in dynamic:
        da = train[key].transpose("time", ...)
        x = da.values.astype("float64")[order]
        valid = np.isfinite(x)
        rest = x.shape[1:]
        sums = np.zeros((len(n_samples.ravel()),) + rest)
        nums = np.zeros_like(sums)
        sums[groups] = np.add.reduceat(np.where(valid, x, 0.0), starts, axis=0)
        nums[groups] = np.add.reduceat(valid.astype("float64"), starts, axis=0)
        sums, nums = sums.reshape(shape + rest), nums.reshape(shape + rest)
        if day_axis is not None:
            sums = _circular_window_sum(sums, day_axis, half)
            nums = _circular_window_sum(nums, day_axis, half)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(nums > 0, sums / np.where(nums > 0, nums, 1.0), np.nan)
        dims = by + tuple(da.dims[1:])
        dtype = da.dtype if da.dtype.kind == "f" else np.dtype("float32")
        var_coords = {d: da[d].values for d in da.dims[1:] if d in da.coords}
        out[key] = xr.DataArray(mean.astype(dtype), dims=dims, coords=var_coords, attrs=dict(da.attrs))
    clim = xr.Dataset(out).assign_coords(coords)
    clim.attrs = {
        "train_period": json.dumps(list(period)),
        "by": json.dumps(list(by)),
        "smoothing_days": int(smoothing_days) if smoothing_days is not None else 0,
        "angles_as_sincos": json.dumps(angles),
        "dayofyear_calendar": "366 days: 29 February is day 60, 1 March day 61 in every year",
    }
    return clim


def _clim_by(clim: xr.Dataset) -> tuple[str, ...]:
    if "by" in clim.attrs:
        return tuple(json.loads(clim.attrs["by"]))
    by = tuple(d for d in GROUPINGS if d in clim.dims)
    if not by:
        raise DataError(f"not a climatology: none of the dims {', '.join(GROUPINGS)} (dims: {tuple(clim.dims)})")
    return by


def _clim_positions(ds: xr.Dataset, clim: xr.Dataset) -> dict[str, np.ndarray]:
    """For every time of `ds`, its position along each grouping axis of `clim`."""
    if "time" not in ds.dims:
        raise DataError(f"data has no 'time' dimension (dims: {', '.join(map(str, ds.dims))}); expected 'time'")
    by = _clim_by(clim)
    keys = _calendar(ds.time.values, by)
    pos, known = {}, np.ones(ds.sizes["time"], dtype=bool)
    for b in by:
        axis = clim[b].values
        p = np.clip(np.searchsorted(axis, keys[b]), 0, len(axis) - 1)
        known &= axis[p] == keys[b]
        pos[b] = p
    if "n_samples" in clim.coords:
        n = clim["n_samples"].transpose(*by).values
        known &= np.where(known, n[tuple(pos[b] for b in by)], 0) > 0
    if not known.all():
        bad = sorted({", ".join(f"{b} {keys[b][i]}" for b in by) for i in np.flatnonzero(~known)})
        raise DataError(
            f"the climatology has no training data for {len(bad)} calendar group(s) of the data; "
            "expected a climatology from a training period that covers them (or smoothing_days)",
            problems=bad[:10] + ([f"... and {len(bad) - 10} more"] if len(bad) > 10 else []),
        )
    return pos


def _clim_values(ds: xr.Dataset, clim: xr.Dataset, key: str, pos: dict[str, np.ndarray]) -> np.ndarray:
    """Climatology of `key` at every time of `ds`, laid out like `ds[key]`."""
    da, c = ds[key], clim[key]
    for axis in ("latitude", "longitude"):
        if axis in da.dims:
            a, b = da[axis].values, c[axis].values if axis in c.coords else None
            if b is None or a.shape != b.shape or not np.allclose(a, b, atol=1e-6):
                raise DataError(
                    f"variable '{key}': data and climatology are on different grids ({axis} "
                    f"{len(a)} points from {a[0]:g} vs {len(b) if b is not None else 0}); expected the same grid"
                )
    sel = c.isel({b: xr.DataArray(p, dims="time") for b, p in pos.items()})
    sel = sel.drop_vars([v for v in sel.coords if v not in sel.dims or v in pos or v == "time"], errors="ignore")
    if "level" in da.dims:
        missing = sorted(set(da.level.values.tolist()) - set(c.level.values.tolist()))
        if missing:
            raise DataError(f"variable '{key}': the climatology has no level(s) {missing} hPa; "
                            f"expected {', '.join(f'{lv:g}' for lv in da.level.values)}")
        sel = sel.sel(level=da.level.values)
    return sel.transpose(*da.dims).values


def _anomaly_op(ds: xr.Dataset, clim: xr.Dataset, sign: float) -> xr.Dataset:
    pos = _clim_positions(ds, clim)
    dynamic = [str(k) for k, v in ds.data_vars.items() if "time" in v.dims]
    missing = [k for k in dynamic if k not in clim.data_vars]
    if missing:
        raise DataError(
            f"no climatology for time-dependent variable(s) {', '.join(missing)}; "
            f"expected one of: {', '.join(map(str, clim.data_vars))}"
        )
    out = {}
    for key, da in ds.data_vars.items():
        key = str(key)
        if key not in dynamic:
            out[key] = da
            continue
        dtype = da.dtype if da.dtype.kind == "f" else np.dtype("float32")
        values = da.values.astype("float64") + sign * _clim_values(ds, clim, key, pos)
        out[key] = da.copy(data=values.astype(dtype))
    return xr.Dataset(out, attrs=dict(ds.attrs))


def deseasonalise(ds: xr.Dataset | xr.DataArray, clim: xr.Dataset) -> xr.Dataset:
    """Anomalies x_t - clim[key(t)] of every time-dependent variable; statics pass through.

    Directions that the climatology holds as sine and cosine are converted first, and the
    anomalies are those of the components (the attribute `angles_as_sincos` lists them, so
    `reseasonalise` can turn them back). Raises `DataError` for a variable without
    climatology, a calendar group without training data, or a different grid.
    """
    ds = _as_dataset(ds)
    angles = [n for n in _angles_present(ds) if f"{n}_sin" in clim.data_vars]
    ds = angles_to_sincos(ds, angles)
    out = _anomaly_op(ds, clim, -1.0)
    out.attrs["deseasonalised"] = json.dumps(
        [str(k) for k, v in out.data_vars.items() if "time" in v.dims])
    out.attrs["angles_as_sincos"] = json.dumps(angles)
    return out


def reseasonalise(anomalies: xr.Dataset, clim: xr.Dataset) -> xr.Dataset:
    """Inverse of `deseasonalise`: x_t = anomaly_t + clim[key(t)], then directions listed in
    `angles_as_sincos` back to degrees."""
    out = _anomaly_op(anomalies, clim, +1.0)
    angles = json.loads(out.attrs.pop("angles_as_sincos", "[]"))
    out.attrs.pop("deseasonalised", None)
    return sincos_to_angles(out, angles) if angles else out
