"""Directions as `AuroraWave` models them: never averaged as degrees, always via sin/cos."""

from __future__ import annotations

import inspect
from typing import Iterable, Sequence

import numpy as np
import xarray as xr

from model_code.errors import DataError
from model_code.variables import by_key


def _angle_surf_vars() -> tuple[str, ...]:
    """`AuroraWave`'s default `angle_surf_vars`, read from its signature."""
    from aurora import AuroraWave

    default = inspect.signature(AuroraWave.__init__).parameters["angle_surf_vars"].default
    return tuple(default)


ANGLE_VARS: tuple[str, ...] = _angle_surf_vars()
"""Direction variables (degrees) that `AuroraWave` models by their sine and cosine."""


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
