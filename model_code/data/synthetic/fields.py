"""Sampling: checks the axes, builds one context, dispatches to the families, labels the result.

The one place that knows every family: `_Ctx` composes their pieces so variables of
different families share them (one window builds the 10 m wind once for both the
atmosphere and the waves), and each variable's kind picks the families whose tables hold it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import xarray as xr

import model_code.data.synthetic.atmosphere as atmosphere
import model_code.data.synthetic.composition as composition
import model_code.data.synthetic.statics as statics
import model_code.data.synthetic.surface_state as surface_state
import model_code.data.synthetic.waves as waves
from model_code.data.synthetic.composition import _CompositionPieces
from model_code.data.synthetic.spectral import _F
from model_code.data.synthetic.surface_state import _SurfaceStatePieces
from model_code.data.synthetic.waves import _WavePieces
from model_code.errors import DataError
from model_code.variables import Variable

if TYPE_CHECKING:
    from model_code.variants import VariantSpec

SYNTHETIC_ATTR = "synthetic"
"""Attribute key that marks generated DataArrays and Datasets (value "true")."""


class _Ctx(_WavePieces, _CompositionPieces, _SurfaceStatePieces):
    """Every family's pieces on one grid, built once per context."""


_FAMILIES: dict[str, tuple[Callable[[_Ctx], dict[str, Callable]], ...]] = {
    "atmos": (atmosphere._atmos, composition._atmos),
    "surface": (atmosphere._surface, composition._surface, waves._surface, surface_state._surface),
    "static": (statics._static, composition._static, waves._static),
}
"""Generator tables by variable kind, one per family that has variables of that kind."""


def _generators(kind: str, ctx: _Ctx) -> dict[str, Callable]:
    """The name -> builder table of one kind, merged from its families."""
    table: dict[str, Callable] = {}
    for family in _FAMILIES[kind]:
        table.update(family(ctx))
    return table


def _check_axes(lat, lon, land) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    if lat.ndim != 1 or lon.ndim != 1 or lat.size == 0 or lon.size == 0:
        raise DataError(
            f"synthetic fields need 1-D, non-empty latitude and longitude; got shapes {lat.shape} and {lon.shape}"
        )
    if np.any(np.abs(lat) > 90.0) or not np.all(np.isfinite(lat)) or not np.all(np.isfinite(lon)):
        raise DataError("synthetic fields need finite latitudes within [-90, 90] and finite longitudes")
    if land is not None:
        land = np.asarray(land, dtype=bool)
        if land.shape != (lat.size, lon.size):
            raise DataError(f"land mask has shape {land.shape}; expected {(lat.size, lon.size)} (latitude, longitude)")
    return lat, lon, land


def _hours(times, var: Variable) -> np.ndarray:
    if times is None or np.size(times) == 0:
        raise DataError(f"synthetic {var.dataset_name}: a {var.kind} variable needs times")
    t = np.atleast_1d(np.asarray(times, dtype="datetime64[s]"))
    if t.ndim != 1 or np.any(np.isnat(t)):
        raise DataError(f"synthetic {var.dataset_name}: times must be a 1-D sequence of valid datetimes")
    return t.astype(np.int64).astype(np.float64) / 3600.0


def _levels(levels, var: Variable) -> np.ndarray:
    if levels is None or np.size(levels) == 0:
        raise DataError(f"synthetic {var.dataset_name}: an atmospheric variable needs pressure levels (hPa)")
    lv = np.atleast_1d(np.asarray(levels, dtype=np.float64))
    if lv.ndim != 1 or not np.all(np.isfinite(lv)) or np.any(lv <= 0) or np.any(lv > 1100):
        raise DataError(f"synthetic {var.dataset_name}: pressure levels must be in (0, 1100] hPa, got {lv.tolist()}")
    return lv


def _generate(var: Variable, ctx: _Ctx) -> np.ndarray:
    if var.kind == "atmos":
        build = _generators("atmos", ctx).get(var.name)
        if build is None:
            raise DataError(f"no synthetic generator for atmospheric variable '{var.name}'")
        out = np.empty((ctx.hours.size, ctx.levels.size) + ctx.shape, _F)  # (T, L, H, W)
        for i, level in enumerate(ctx.levels):
            out[:, i] = build(float(level))
    else:
        build = _generators("static" if var.kind == "static" else "surface", ctx).get(var.name)
        if build is None:
            raise DataError(f"no synthetic generator for {var.kind} variable '{var.name}'")
        out = np.array(np.broadcast_to(build(), _shape(var, ctx)), dtype=_F)  # fresh copy

    if var.units == "degree":
        np.mod(out, _F(360.0), out=out)
        out[out >= 360.0] = 0.0  # float32 rounding of values just below 360
    lo, hi = var.bounds
    if lo is not None or hi is not None:
        np.clip(out, lo, hi, out=out)
    if var.nan_by_design:
        out[..., ctx.land] = np.nan
    return out


def _shape(var: Variable, ctx: _Ctx) -> tuple[int, ...]:
    if var.kind == "static":
        return ctx.shape
    if var.kind == "surface":
        return (ctx.hours.size,) + ctx.shape
    return (ctx.hours.size, ctx.levels.size) + ctx.shape


def _context(var: Variable, lat, lon, times, levels, seed: int, land) -> _Ctx:
    lat, lon, land = _check_axes(lat, lon, land)
    hours = _hours(times, var) if var.kind != "static" else None
    lv = _levels(levels, var) if var.kind == "atmos" else None
    return _Ctx(lat, lon, hours, lv, seed, land)


def synthetic_field(
    var: Variable,
    lat: np.ndarray,
    lon: np.ndarray,
    times: Sequence[np.datetime64] | None = None,
    levels: Sequence[float] | None = None,
    *,
    seed: int = 0,
    land: np.ndarray | None = None,
) -> np.ndarray:
    """float32 array: surface var -> (T, H, W); static -> (H, W); atmos -> (T, L, H, W).

    lat in degrees north (any order), lon degrees east in [0, 360), times datetime64 (UTC),
    levels in hPa. land: optional boolean (H, W) mask (True = land) used for land/sea
    contrasts and NaN-over-land of wave fields; when None it comes from the synthetic lsm
    for the same seed and grid.
    """
    return _generate(var, _context(var, lat, lon, times, levels, seed, land))


def _coords(var: Variable, lat, lon, times, levels) -> tuple[tuple[str, ...], dict]:
    coords: dict = {
        "latitude": ("latitude", np.asarray(lat), {"units": "degrees_north", "standard_name": "latitude"}),
        "longitude": ("longitude", np.asarray(lon), {"units": "degrees_east", "standard_name": "longitude"}),
    }
    dims: tuple[str, ...] = ("latitude", "longitude")
    if var.kind == "atmos":
        coords["level"] = ("level", np.atleast_1d(np.asarray(levels)), {"units": "hPa", "standard_name": "air_pressure"})
        dims = ("level",) + dims
    if var.kind != "static":
        coords["time"] = ("time", np.atleast_1d(np.asarray(times, dtype="datetime64[ns]")))
        dims = ("time",) + dims
    return dims, coords


def _attrs(var: Variable, seed: int) -> dict:
    attrs = {"units": var.units, "long_name": var.long_name}
    if var.standard_name is not None:
        attrs["standard_name"] = var.standard_name
    attrs.update({SYNTHETIC_ATTR: "true", "synthetic_seed": seed})
    return attrs


def synthetic_dataarray(var, lat, lon, times=None, levels=None, *, seed=0, land=None) -> xr.DataArray:
    """`synthetic_field` as a DataArray named var.dataset_name with dims (time, [level],
    latitude, longitude) or (latitude, longitude), coords, CF attrs and the synthetic marker."""
    values = synthetic_field(var, lat, lon, times, levels, seed=seed, land=land)
    dims, coords = _coords(var, lat, lon, times, levels)
    return xr.DataArray(values, dims=dims, coords=coords, name=var.dataset_name, attrs=_attrs(var, seed))


def synthetic_window(spec: VariantSpec, lat, lon, times, levels=None, *, seed=0) -> xr.Dataset:
    """Every input variable of a variant as one Dataset keyed by dataset name (levels
    default to the variant's), marked synthetic. For scale tests and benchmarks."""
    levels = spec.levels if levels is None else levels
    variables = spec.inputs()
    lat_, lon_, _ = _check_axes(lat, lon, None)
    hours = _hours(times, variables[0])
    lv = _levels(levels, next((v for v in variables if v.kind == "atmos"), variables[0]))
    ctx = _Ctx(lat_, lon_, hours, lv, seed, None)  # shared: pieces are built once
    data_vars = {}
    for var in variables:
        dims, coords = _coords(var, lat, lon, times, levels)
        data_vars[var.dataset_name] = xr.DataArray(_generate(var, ctx), dims=dims, coords=coords, attrs=_attrs(var, seed))
    return xr.Dataset(data_vars, attrs={SYNTHETIC_ATTR: "true", "synthetic_seed": seed, "variant": spec.name})


def regular_grid(resolution: float) -> tuple[np.ndarray, np.ndarray]:
    """Global regular grid at `resolution` degrees: latitudes 90..-90 inclusive
    (decreasing), longitudes 0..360-res (increasing). E.g. 0.25 -> (721,), (1440,)."""
    resolution = float(resolution)
    n_lat = 180.0 / resolution if resolution > 0 else 0.0
    n_lon = 360.0 / resolution if resolution > 0 else 0.0
    if resolution <= 0 or abs(n_lat - round(n_lat)) > 1e-6 or abs(n_lon - round(n_lon)) > 1e-6:
        raise DataError(f"grid resolution must be a positive divisor of 180 degrees, got {resolution}")
    lat = np.linspace(90.0, -90.0, int(round(n_lat)) + 1)
    lon = np.linspace(0.0, 360.0, int(round(n_lon)), endpoint=False)
    return lat, lon
