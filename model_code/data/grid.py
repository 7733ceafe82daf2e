"""Grid operations a user asks for explicitly: regridding and cropping to the patch size.

Neither happens by default: a grid that does not fit a variant is an error that names
these two options, because both change the data the forecast starts from.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from model_code.variables import find

_CATEGORICAL = {"slt"}


def _is_global(lon: np.ndarray) -> bool:
    if len(lon) < 2:
        return False
    step = float(np.median(np.diff(lon)))
    return lon[-1] - lon[0] + step >= 360 - 1e-6


def target_axes(lat: np.ndarray, lon: np.ndarray, resolution: float) -> tuple[np.ndarray, np.ndarray]:
    """Latitudes (decreasing) and longitudes at `resolution` covering the same domain."""
    new_lat = np.arange(lat[0], lat[-1] - 1e-9, -resolution)
    if _is_global(lon):
        new_lon = np.arange(0.0, 360.0 - 1e-9, resolution)
    else:
        new_lon = np.arange(lon[0], lon[-1] + 1e-9, resolution)
    return np.round(new_lat, 6), np.round(new_lon, 6)


def regrid(ds: xr.Dataset, resolution: float) -> xr.Dataset:
    """Bilinear interpolation of every variable of a canonical dataset onto `resolution`.

    Periodic in longitude for global grids; soil type uses the nearest neighbour because
    its values are categories. NaN (e.g. land in wave fields) spreads to the cells it
    touches, which keeps masked areas masked.
    """
    lat, lon = ds.latitude.values, ds.longitude.values
    new_lat, new_lon = target_axes(lat, lon, resolution)
    if _is_global(lon):  # pad one column on each side so interpolation wraps around
        ds = xr.concat(
            [ds.isel(longitude=[-1]).assign_coords(longitude=[lon[-1] - 360.0]), ds,
             ds.isel(longitude=[0]).assign_coords(longitude=[lon[0] + 360.0])],
            dim="longitude",
            data_vars="all",
        )
    out = {}
    for name, da in ds.data_vars.items():
        if "latitude" not in da.dims or "longitude" not in da.dims:
            continue
        categorical = (v := find(str(name), "static")) is not None and v.name in _CATEGORICAL
        out[name] = da.interp(
            latitude=new_lat, longitude=new_lon, method="nearest" if categorical else "linear"
        ).astype(da.dtype if da.dtype.kind == "f" else "float32")
        out[name].attrs = da.attrs
    return xr.Dataset(out, attrs=ds.attrs)


def crop_to_patch(ds: xr.Dataset, patch_size: int) -> tuple[xr.Dataset, str | None]:
    """Drop the fewest easternmost columns and southernmost rows so the grid fits the patch.

    Aurora needs the width to be a multiple of the patch size and the height at most one
    row over a multiple (it drops that row itself).
    """
    h, w = ds.sizes["latitude"], ds.sizes["longitude"]
    drop_cols = w % patch_size
    drop_rows = max(h % patch_size - 1, 0)
    if not drop_cols and not drop_rows:
        return ds, None
    cropped = ds.isel(latitude=slice(0, h - drop_rows), longitude=slice(0, w - drop_cols))
    lat, lon = cropped.latitude.values, cropped.longitude.values
    note = (
        f"cropped from {h}x{w} to {h - drop_rows}x{w - drop_cols} to fit patch size {patch_size}: "
        f"{drop_rows} southernmost row(s) and {drop_cols} easternmost column(s) dropped "
        f"(latitudes now {lat[0]:g}..{lat[-1]:g}, longitudes {lon[0]:g}..{lon[-1]:g})"
    )
    return cropped, note
