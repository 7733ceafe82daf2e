"""The input contract of a variant, checked on a window before any model is built.

`aurora.Batch` enforces part of this contract (coordinate order and range) and silently
accepts the rest: missing surface or static variables, an unknown variable, a level
without normalisation statistics (a KeyError deep inside), one NaN pixel (which turns the
whole output field to NaN). `check_window` checks all of it, lists every problem at once,
and fixes nothing: data handed over in memory (a serving request, a prepared window) must
already be right.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from model_code.errors import DataError
from model_code.variants import VariantSpec

_DIMS = {
    "static": ("latitude", "longitude"),
    "surface": ("time", "latitude", "longitude"),
    "atmos": ("time", "level", "latitude", "longitude"),
}


def grid_fit_problem(h: int, w: int, patch: int) -> str | None:
    """Why an h x w grid does not fit the patch size, or None when it does."""
    if w % patch == 0 and h % patch <= 1:
        return None
    return (
        f"grid {h}x{w} does not fit patch size {patch}: the width must be a multiple of {patch} "
        f"and the height at most one row over a multiple (e.g. {h - max(h % patch - 1, 0)}x"
        f"{w - w % patch}); crop it (--crop-to-patch) or regrid it (--regrid RES)"
    )


def unknown_levels_problem(levels, spec: VariantSpec) -> str | None:
    """Which pressure levels have no normalisation statistics, or None when all have."""
    unknown = [lv for lv in levels if lv not in spec.levels]
    if not unknown:
        return None
    return (
        f"pressure level(s) {', '.join(f'{lv:g}' for lv in unknown)} hPa have no normalisation "
        f"statistics; known levels: {', '.join(map(str, spec.levels))} hPa"
    )


def _coordinate_problems(ds: xr.Dataset, spec: VariantSpec) -> list[str]:
    problems = []
    for name in ("latitude", "longitude", "time"):
        if name not in ds.coords:
            problems.append(f"coordinate '{name}' is missing")
    if problems:
        return problems
    lat, lon = ds.latitude.values, ds.longitude.values
    if lat.ndim != 1 or lon.ndim != 1:
        return ["latitude and longitude must be 1-D coordinates"]
    if np.any(lat < -90) or np.any(lat > 90):
        problems.append(f"latitudes must lie within [-90, 90]; found {lat.min():g} to {lat.max():g}")
    if len(lat) > 1 and not np.all(np.diff(lat) < 0):
        problems.append("latitudes must be strictly decreasing (north to south)")
    if np.any(lon < 0) or np.any(lon >= 360):
        problems.append(f"longitudes must lie within [0, 360); found {lon.min():g} to {lon.max():g}")
    if len(lon) > 1 and not np.all(np.diff(lon) > 0):
        problems.append("longitudes must be strictly increasing")
    if (problem := grid_fit_problem(len(lat), len(lon), spec.patch_size)) is not None:
        problems.append(problem)
    times = ds.time.values
    if not spec.min_history <= len(times) <= spec.max_history:
        problems.append(
            f"history of {len(times)} time(s); the {spec.name} variant takes "
            f"{spec.min_history} to {spec.max_history}"
        )
    elif len(times) > 1:
        step = np.timedelta64(int(spec.timestep.total_seconds()), "s")
        if not np.all(np.diff(times) == step):
            problems.append(
                f"times must be increasing and {spec.timestep_hours} h apart; found "
                f"{', '.join(str(t)[:16] for t in times)}"
            )
    if "level" in ds.coords:
        levels = ds.level.values
        if (problem := unknown_levels_problem(levels, spec)) is not None:
            problems.append(problem)
        if len(np.unique(levels)) != len(levels):
            problems.append("pressure levels repeat")
    return problems


def _variable_problems(ds: xr.Dataset, spec: VariantSpec) -> list[str]:
    problems = []
    expected = {v.dataset_name: v for v in spec.inputs()}
    unknown = sorted(set(ds.data_vars) - set(expected))
    if unknown:
        problems.append(
            f"variable(s) the {spec.name} variant does not know: {', '.join(map(str, unknown))}"
        )
    missing = [v for key, v in expected.items() if key not in ds.data_vars]
    for v in missing:
        problems.append(f"missing {v.kind} variable '{v.dataset_name}' ({v.long_name}, {v.units})")
    sizes = {d: ds.sizes[d] for d in ("time", "level", "latitude", "longitude") if d in ds.sizes}
    for key, v in expected.items():
        if key not in ds.data_vars:
            continue
        da = ds[key]
        if da.dims != _DIMS[v.kind]:
            problems.append(f"'{key}' has dims {da.dims}; a {v.kind} variable needs {_DIMS[v.kind]}")
            continue
        if any(da.sizes[d] != sizes.get(d) for d in da.dims):
            problems.append(f"'{key}' has shape {da.shape}, inconsistent with the coordinates {sizes}")
            continue
        problems.extend(_value_problems(key, da, v.nan_by_design))
    return problems


def _value_problems(key: str, da: xr.DataArray, nan_allowed: bool) -> list[str]:
    values = da.values
    bad = ~np.isfinite(values) if not nan_allowed else np.isinf(values)
    if not bad.any():
        return []
    share = bad.mean()
    first = np.unravel_index(int(np.argmax(bad)), values.shape)
    where = ", ".join(
        f"{d}={str(da[d].values[i])[:16]}" for d, i in zip(da.dims, first) if d in da.coords
    )
    what = "non-finite (NaN or inf)" if not nan_allowed else "infinite"
    return [
        f"'{key}' has {int(bad.sum())} {what} value(s) ({share:.1%}), first at {where}; "
        "one NaN input pixel turns Aurora's whole output field to NaN"
    ]


def check_window(ds: xr.Dataset, spec: VariantSpec, *, source: str | None = None) -> None:
    """Raise `DataError` listing every way `ds` breaks the input contract of `spec`."""
    problems = _coordinate_problems(ds, spec) + _variable_problems(ds, spec)
    if problems:
        raise DataError(
            f"input does not meet the {spec.name} variant's contract ({len(problems)} problem(s))",
            source=source,
            problems=problems,
        )
