"""Preprocessing for training: regridding, climatology, normalisation statistics, angles, statics.

Everything learnt from data here (climatologies, normalisation statistics) is computed from
the times inside an explicit training period only, so validation and test dates cannot leak
into what the model is trained with. Directions never enter a mean as degrees: they go
through their sine and cosine, as `AuroraWave` models them.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal, Mapping, Sequence

import numpy as np
import pandas as pd
import xarray as xr

from model_code.data.grid import (
    Method,
    cell_areas,
    default_method,
    regrid_to_variant,
    variant_axes,
)
from model_code.errors import DataError
from model_code.variables import VARIABLES, by_key, variable
from model_code.variants import VariantSpec

__all__ = [
    "ANGLE_VARS",
    "GROUPINGS",
    "LocationScale",
    "NormalisationStats",
    "angles_to_sincos",
    "aurora_atmos_stats",
    "aurora_surf_stats",
    "climatology",
    "deseasonalise",
    "mean_direction",
    "normalisation_stats",
    "prepare_statics",
    "regrid_to_variant",
    "reseasonalise",
    "sincos_to_angles",
]


def _angle_surf_vars() -> tuple[str, ...]:
    """`AuroraWave`'s default `angle_surf_vars`, read from its signature."""
    from aurora import AuroraWave

    default = inspect.signature(AuroraWave.__init__).parameters["angle_surf_vars"].default
    return tuple(default)


ANGLE_VARS: tuple[str, ...] = _angle_surf_vars()
"""Direction variables (degrees) that `AuroraWave` models by their sine and cosine."""

GROUPINGS = ("dayofyear", "hour", "month")
"""Calendar keys a climatology can be grouped by."""

MAD_TO_SIGMA = 1.4826
"""1 / Φ⁻¹(3/4): scales a median absolute deviation to the standard deviation of a normal."""
IQR_TO_SIGMA = 1.349
"""Φ⁻¹(3/4) - Φ⁻¹(1/4): the interquartile range of a unit normal."""

_ISO = "%Y-%m-%dT%H:%M:%S"


# --------------------------------------------------------------------------------------
# Training period


def _as_dataset(obj: xr.Dataset | xr.DataArray) -> xr.Dataset:
    if isinstance(obj, xr.DataArray):
        return obj.to_dataset(name=obj.name if obj.name is not None else "field")
    return obj


def _period(train_period: Sequence[Any]) -> tuple[np.datetime64, np.datetime64]:
    """(start, end) as datetime64[ns]; both ends inclusive."""
    try:
        start, end = train_period
        s = np.datetime64(pd.Timestamp(start).to_datetime64(), "ns")
        e = np.datetime64(pd.Timestamp(end).to_datetime64(), "ns")
    except (TypeError, ValueError) as exc:
        raise DataError(
            f"training period {train_period!r} is not a (start, end) pair of dates; "
            "expected e.g. ('2019-01-01', '2021-12-31T18:00')"
        ) from exc
    if np.isnat(s) or np.isnat(e) or s > e:
        raise DataError(f"training period {_iso(s)} .. {_iso(e)} is empty; expected start <= end")
    return s, e


def _iso(t: np.datetime64) -> str:
    return "NaT" if np.isnat(t) else pd.Timestamp(t).strftime(_ISO)


def _training(ds: xr.Dataset, train_period: Sequence[Any]) -> tuple[xr.Dataset, tuple[str, str]]:
    """The times of `ds` inside the training period (statics untouched)."""
    start, end = _period(train_period)
    if "time" not in ds.dims:
        raise DataError(
            f"data has no 'time' dimension (dims: {', '.join(map(str, ds.dims))}); "
            "a training period selects valid times"
        )
    times = ds.time.values.astype("datetime64[ns]")
    inside = (times >= start) & (times <= end)
    if not inside.any():
        raise DataError(
            f"training period {_iso(start)} .. {_iso(end)} holds none of the {len(times)} times of "
            f"the data ({_iso(times.min())} .. {_iso(times.max())}); expected a period that overlaps them"
        )
    return ds.isel(time=np.flatnonzero(inside)), (_iso(start), _iso(end))


# --------------------------------------------------------------------------------------
# Angles


def _names(names: Iterable[str] | None) -> tuple[str, ...]:
    return ANGLE_VARS if names is None else tuple(names)


def angles_to_sincos(ds: xr.Dataset, names: Iterable[str] | None = None) -> xr.Dataset:
    """Replace each direction `x` (degrees) by `x_sin = sin(deg2rad(x))`, `x_cos = cos(deg2rad(x))`.

    `names` defaults to `ANGLE_VARS` (`AuroraWave.angle_surf_vars`); absent names are skipped.
    NaN stays NaN (AuroraWave fills it with 0 inside the model, with a density channel). The
    new variables take the place of the direction in the variable order.
    """
    names = _names(names)
    out: dict[str, xr.DataArray] = {}
    for key, da in ds.data_vars.items():
        key = str(key)
        if key not in names:
            out[key] = da
            continue
        clash = [f"{key}_{part}" for part in ("sin", "cos") if f"{key}_{part}" in ds]
        if clash:
            raise DataError(
                f"direction variable '{key}' is given both as degrees and as {', '.join(clash)}; "
                "expected one form only"
            )
        rad = np.deg2rad(da.values.astype("float64"))
        dtype = da.dtype if da.dtype.kind == "f" else np.dtype("float32")
        long_name = da.attrs.get("long_name", key)
        for part, fn in (("sin", np.sin), ("cos", np.cos)):
            comp = da.copy(data=fn(rad).astype(dtype))
            comp.attrs = {"units": "1", "long_name": f"{'sine' if part == 'sin' else 'cosine'} of {long_name}",
                          "aurora_name": f"{key}_{part}"}
            out[f"{key}_{part}"] = comp.rename(f"{key}_{part}")
    return xr.Dataset(out, attrs=ds.attrs)


def sincos_to_angles(ds: xr.Dataset, names: Iterable[str] | None = None) -> xr.Dataset:
    """Invert `angles_to_sincos`: `x = rad2deg(arctan2(x_sin, x_cos)) % 360`, as in
    `AuroraWave._post_decoder_hook`. NaN in either component gives NaN.

    Raises `DataError` when only one of a pair is present.
    """
    names = _names(names)
    problems = []
    for name in names:
        has = [f"{name}_{p}" in ds for p in ("sin", "cos")]
        if any(has) and not all(has):
            present, absent = (f"{name}_sin", f"{name}_cos") if has[0] else (f"{name}_cos", f"{name}_sin")
            problems.append(f"direction variable '{name}': '{present}' is present but '{absent}' is missing")
    if problems:
        raise DataError("a direction needs both its sine and its cosine", problems=problems)
    out: dict[str, xr.DataArray] = {}
    for key, da in ds.data_vars.items():
        key = str(key)
        base, _, part = key.rpartition("_")
        if base not in names or part not in ("sin", "cos"):
            out[key] = da
            continue
        if part == "cos":
            continue
        s, c = da, ds[f"{base}_cos"]
        sin, cos = s.values.astype("float64"), c.transpose(*s.dims).values.astype("float64")
        angle = np.rad2deg(np.arctan2(sin, cos)) % 360.0
        dtype = s.dtype if s.dtype.kind == "f" else np.dtype("float32")
        restored = s.copy(data=angle.astype(dtype)).rename(base)
        restored.attrs = _catalogue_attrs(base)
        out[base] = restored
    return xr.Dataset(out, attrs=ds.attrs)


def _catalogue_attrs(key: str) -> dict[str, str]:
    try:
        v = by_key(key)
    except KeyError:
        return {"units": "degree"}
    attrs = {"units": v.units, "long_name": v.long_name, "aurora_name": v.name}
    if v.standard_name:
        attrs["standard_name"] = v.standard_name
    return attrs


def mean_direction(
    angles: xr.DataArray, dim: str | Sequence[str] | None = None, weights: xr.DataArray | None = None
) -> xr.DataArray:
    """Circular mean of directions in degrees, NaN ignored, in [0, 360).

    mean = rad2deg(arctan2(Σ w sin θ, Σ w cos θ)) mod 360, so the mean of 350° and 10° is 0°
    (not 180°). Undefined (arbitrary) when the directions cancel out.
    """
    rad = np.deg2rad(angles.astype("float64"))
    s, c = np.sin(rad), np.cos(rad)
    if weights is not None:
        s, c = s.weighted(weights), c.weighted(weights)
    return np.rad2deg(np.arctan2(s.mean(dim, skipna=True), c.mean(dim, skipna=True))) % 360.0


def _angles_present(ds: xr.Dataset) -> list[str]:
    return [n for n in ANGLE_VARS if n in ds.data_vars]


# --------------------------------------------------------------------------------------
# Climatology


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


# --------------------------------------------------------------------------------------
# Normalisation statistics


@dataclass(frozen=True)
class LocationScale:
    """Normalisation of one variable (at one level): z = (x - location) / scale."""

    location: float
    scale: float
    estimator: str
    """How they were computed, e.g. `median, 1.4826 MAD` (with any fallback)."""


Robust = Literal["mad", "iqr"]


@dataclass(frozen=True)
class NormalisationStats:
    """Location and scale of every variable, learnt from a training period.

    `surface` holds surface and static variables (dataset names; directions as `{name}_sin`
    and `{name}_cos`), `atmos` pressure-level variables per level (hPa).
    """

    surface: Mapping[str, LocationScale]
    atmos: Mapping[str, Mapping[float, LocationScale]]
    train_period: tuple[str, str]
    robust: str
    """`mad`, `iqr` or `none` (mean and standard deviation)."""
    area_weighted: bool
    deseasonalised: bool = False
    notes: tuple[str, ...] = field(default=())

    FORMAT = "aurora-mlops/normalisation-stats"
    VERSION = 1

    def get(self, key: str, level: float | None = None) -> LocationScale:
        """Statistics of dataset variable `key` (and `level` for atmospheric ones)."""
        try:
            return self.surface[key] if level is None else self.atmos[key][float(level)]
        except KeyError:
            where = f" at {level:g} hPa" if level is not None else ""
            raise DataError(f"no normalisation statistics for '{key}'{where}") from None

    def to_json(self) -> str:
        """A JSON document that `from_json` reads back exactly (floats keep all digits)."""
        def entry(s: LocationScale) -> dict:
            return {"location": s.location, "scale": s.scale, "estimator": s.estimator}

        doc = {
            "format": self.FORMAT,
            "version": self.VERSION,
            "train_period": list(self.train_period),
            "robust": self.robust,
            "area_weighted": self.area_weighted,
            "deseasonalised": self.deseasonalised,
            "notes": list(self.notes),
            "surface": {k: entry(v) for k, v in self.surface.items()},
            "atmos": {k: {repr(float(lv)): entry(s) for lv, s in levels.items()} for k, levels in self.atmos.items()},
        }
        return json.dumps(doc, indent=1)

    @classmethod
    def from_json(cls, text: str | bytes) -> NormalisationStats:
        try:
            doc = json.loads(text)
            if doc.get("format") != cls.FORMAT:
                raise ValueError(f"format {doc.get('format')!r}")
            if doc.get("version") != cls.VERSION:
                raise ValueError(f"version {doc.get('version')!r}")

            def entry(d: dict) -> LocationScale:
                return LocationScale(float(d["location"]), float(d["scale"]), str(d["estimator"]))

            return cls(
                surface={k: entry(v) for k, v in doc["surface"].items()},
                atmos={k: {float(lv): entry(s) for lv, s in levels.items()} for k, levels in doc["atmos"].items()},
                train_period=tuple(doc["train_period"]),
                robust=str(doc["robust"]),
                area_weighted=bool(doc["area_weighted"]),
                deseasonalised=bool(doc["deseasonalised"]),
                notes=tuple(doc.get("notes", ())),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise DataError(
                f"not a normalisation statistics document ({exc}); expected JSON written by "
                f"NormalisationStats.to_json (format '{cls.FORMAT}', version {cls.VERSION})"
            ) from exc


def weighted_quantiles(x: np.ndarray, w: np.ndarray, qs: Sequence[float]) -> np.ndarray:
    """Quantiles of values `x` with weights `w`: the sorted values placed at cumulative
    weight p_i = (Σ_{k≤i} w_k - w_i / 2) / Σ w, interpolated linearly (with equal weights,
    the Hazen definition, whose median is the usual median)."""
    order = np.argsort(x, kind="stable")
    xs, ws = x[order], w[order]
    cw = np.cumsum(ws)
    p = (cw - 0.5 * ws) / cw[-1]
    return np.interp(np.asarray(qs, dtype="float64"), p, xs)


def _location_scale(x: np.ndarray, w: np.ndarray, robust: str) -> LocationScale:
    if robust == "mad":
        loc = float(weighted_quantiles(x, w, [0.5])[0])
        scale = MAD_TO_SIGMA * float(weighted_quantiles(np.abs(x - loc), w, [0.5])[0])
        estimator = "median, 1.4826 MAD"
    elif robust == "iqr":
        q25, loc, q75 = weighted_quantiles(x, w, [0.25, 0.5, 0.75])
        loc, scale = float(loc), float(q75 - q25) / IQR_TO_SIGMA
        estimator = "median, IQR / 1.349"
    else:
        loc = float(np.sum(w * x) / np.sum(w))
        scale = float(np.sqrt(np.sum(w * (x - loc) ** 2) / np.sum(w)))
        estimator = "mean, standard deviation"
    if not (np.isfinite(scale) and scale > 0) and robust != "none":
        mean = float(np.sum(w * x) / np.sum(w))
        scale = float(np.sqrt(np.sum(w * (x - mean) ** 2) / np.sum(w)))
        estimator += " (robust scale is 0: standard deviation instead)"
    if not (np.isfinite(scale) and scale > 0):
        scale = 1.0
        estimator += " (constant field: scale 1)"
    return LocationScale(loc, scale, estimator)


def _robust_name(robust: bool | str) -> str:
    if robust is True:
        return "mad"
    if robust is False or robust == "none":
        return "none"
    if robust in ("mad", "iqr"):
        return str(robust)
    raise DataError(f"robust = {robust!r}; expected True ('mad'), 'iqr' or False")


def normalisation_stats(
    ds: xr.Dataset,
    train_period: Sequence[Any],
    robust: bool | Robust = True,
    *,
    climatology: xr.Dataset | None = None,
    area_weighted: bool = True,
) -> NormalisationStats:
    """Location and scale of every variable (per level), from the training period only.

    robust: True or ``mad``: median and 1.4826 · median(|x - median|); ``iqr``: median and
    (q75 - q25) / 1.349; False: mean and standard deviation. All are consistent estimates of
    the mean and standard deviation of a normal distribution. NaN (land in wave fields) is
    left out; with `area_weighted` every value weighs its cell area (≈ cos latitude, see
    `grid.cell_areas`). Statics are included. Directions in `ANGLE_VARS` get statistics of
    their sine and cosine. With `climatology` (computed over a period inside `train_period`),
    the statistics are those of the anomalies (`deseasonalise`). A robust scale of zero (a
    mostly-constant field such as a land-sea mask) falls back to the standard deviation, and
    a zero standard deviation to 1; `estimator` says so.
    """
    method = _robust_name(robust)
    ds = _as_dataset(ds)
    train, period = _training(ds, train_period)
    if climatology is not None:
        clim_period = json.loads(climatology.attrs.get("train_period", "null"))
        if clim_period is None or not (period[0] <= clim_period[0] and clim_period[1] <= period[1]):
            raise DataError(
                f"the climatology was computed over {clim_period}; expected a period inside the "
                f"training period {period[0]} .. {period[1]} (otherwise other dates leak in)"
            )
        train = deseasonalise(train, climatology)
    train = angles_to_sincos(train, _angles_present(train))
    surface: dict[str, LocationScale] = {}
    atmos: dict[str, dict[float, LocationScale]] = {}
    for key, da in train.data_vars.items():
        key = str(key)
        if "latitude" not in da.dims or "longitude" not in da.dims:
            raise DataError(f"variable '{key}' has dims {tuple(da.dims)}; expected 'latitude' and 'longitude'")
        if area_weighted:
            area = xr.DataArray(cell_areas(da.latitude.values, da.longitude.values), dims=("latitude", "longitude"))
        else:
            area = xr.DataArray(np.ones((da.sizes["latitude"], da.sizes["longitude"])), dims=("latitude", "longitude"))
        levels = da.level.values if "level" in da.dims else [None]
        for level in levels:
            part = da.sel(level=level) if level is not None else da
            x = part.values.astype("float64").ravel()
            w = area.broadcast_like(part).transpose(*part.dims).values.ravel()
            ok = np.isfinite(x)
            if not ok.any():
                where = f" at {level:g} hPa" if level is not None else ""
                raise DataError(
                    f"variable '{key}'{where} has no finite value in the training period {period[0]} .. {period[1]}"
                )
            stats = _location_scale(x[ok], w[ok], method)
            if level is None:
                surface[key] = stats
            else:
                atmos.setdefault(key, {})[float(level)] = stats
    return NormalisationStats(surface, atmos, period, method, area_weighted, climatology is not None)


def _skipped_for_aurora(key: str) -> bool:
    """Aurora never normalises these with `surf_stats`: angle components (AuroraWave takes
    sine and cosine after normalising the raw angle by (0, 1)) and `dwi` (split into
    10u_wave and 10v_wave before normalisation)."""
    base, _, part = key.rpartition("_")
    return (part in ("sin", "cos") and base in ANGLE_VARS) or key == "dwi" or key in ANGLE_VARS


def aurora_surf_stats(stats: NormalisationStats, *, allow_anomalies: bool = False) -> dict[str, tuple[float, float]]:
    """`{aurora_name: (location, scale)}` for `Aurora(surf_stats=...)`: surface and static
    variables under Aurora's names (`t2m` -> `2t`, `z_surface` -> `z`).

    Left out: directions and their components and `dwi` (see `_skipped_for_aurora`), and
    keys outside the catalogue. Statistics of anomalies are refused unless
    `allow_anomalies` (Aurora normalises the fields it is given, not their anomalies).
    """
    if stats.deseasonalised and not allow_anomalies:
        raise DataError(
            "these statistics are of de-seasonalised anomalies; Aurora normalises raw fields. "
            "Pass allow_anomalies=True only if the model is fed anomalies"
        )
    keys = {v.dataset_name: v for v in VARIABLES if v.kind in ("surface", "static")}
    return {
        keys[k].name: (s.location, s.scale)
        for k, s in stats.surface.items()
        if k in keys and not _skipped_for_aurora(k)
    }


def aurora_atmos_stats(stats: NormalisationStats) -> dict[str, tuple[float, float]]:
    """`{f"{name}_{level}": (location, scale)}`, the keys of `aurora.normalisation.locations`
    and `scales` for pressure-level variables (levels written by `level_to_str`)."""
    from aurora.normalisation import level_to_str

    return {
        f"{variable('atmos', k).name}_{level_to_str(lv)}": (s.location, s.scale)
        for k, levels in stats.atmos.items()
        for lv, s in levels.items()
    }


# --------------------------------------------------------------------------------------
# Static fields


def _static_items(fields_or_ds: Any) -> dict[str, xr.DataArray]:
    if isinstance(fields_or_ds, xr.Dataset):
        return {str(k): v for k, v in fields_or_ds.data_vars.items()}
    if isinstance(fields_or_ds, Mapping):
        return {str(k): (v if isinstance(v, xr.DataArray) else v.values()) for k, v in fields_or_ds.items()}
    raise DataError(
        f"static fields given as {type(fields_or_ds).__name__}; expected an xarray Dataset or a "
        "mapping from dataset name to field (as `read_fields` returns)"
    )


def prepare_statics(
    fields_or_ds: xr.Dataset | Mapping[str, Any],
    spec: VariantSpec,
    method: Method | Mapping[str, Method] | None = None,
) -> xr.Dataset:
    """The static fields of `spec` found in the input, on the variant's grid.

    Default methods (`grid.default_method`): `slt` nearest (soil type codes stay codes; any
    other method is refused), `lat_mask` nearest; `lsm`, `z_surface` (surface geopotential),
    `wmb` and the emission statics conservative when coarsening (land fraction and mean
    orography of each coarse cell) and bilinear when refining. `lsm` is then clipped to
    [0, 1] and `slt` rounded to integer codes. A field with a time dimension takes its first
    time. All statics must cover the same domain.
    """
    items = _static_items(fields_or_ds)
    wanted = [variable("static", n) for n in spec.static_vars]
    found = [v for v in wanted if v.dataset_name in items]
    if not found:
        raise DataError(
            f"none of the {spec.name} variant's static fields is in the input; expected some of: "
            f"{', '.join(v.dataset_name for v in wanted)} (got: {', '.join(items) or 'nothing'})"
        )
    res = float(spec.grid.resolution)
    out: dict[str, xr.DataArray] = {}
    domains: dict[str, str] = {}
    for v in found:
        key = v.dataset_name
        da = items[key]
        if "level" in da.dims:
            raise DataError(f"static field '{key}' has a level dimension; expected (latitude, longitude)")
        if "time" in da.dims:
            da = da.isel(time=0)
        da = da.drop_vars([c for c in da.coords if c not in ("latitude", "longitude")])
        if "latitude" not in da.dims or "longitude" not in da.dims:
            raise DataError(f"static field '{key}' has dims {tuple(da.dims)}; expected (latitude, longitude)")
        chosen = method if isinstance(method, str) else (method or {}).get(key)
        chosen = chosen or default_method(key, da.latitude.values, da.longitude.values, res)
        if key == "slt" and chosen != "nearest":
            raise DataError(f"static field 'slt' holds soil type codes; expected method 'nearest', got '{chosen}'")
        regridded = regrid_to_variant(da.rename(key), spec, method=chosen)
        how = regridded.attrs.get("regrid_method", chosen)
        if key in ("lsm", "lat_mask"):
            regridded = regridded.clip(0.0, 1.0)
        elif key == "slt":
            regridded = np.round(regridded)
        regridded.attrs = {**_catalogue_attrs(key), "regrid_method": how}
        out[key] = regridded.astype("float32")
        lat, lon = variant_axes(da.latitude.values, da.longitude.values, spec.grid)
        domains[key] = f"{len(lat)}x{len(lon)}, latitudes {lat[0]:g}..{lat[-1]:g}, longitudes {lon[0]:g}..{lon[-1]:g}"
    if len(set(domains.values())) > 1:
        raise DataError(
            "static fields cover different domains on the variant's grid; crop them to one domain first",
            problems=[f"{k}: {d}" for k, d in domains.items()],
        )
    return xr.Dataset(out, attrs={"variant": spec.name, "grid_resolution": res})
