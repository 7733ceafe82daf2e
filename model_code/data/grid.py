"""Grid operations a user asks for explicitly: regridding and cropping to the patch size.

Neither happens by default: a grid that does not fit a variant is an error that names
these two options, because both change the data the forecast starts from.
"""

from __future__ import annotations

import numpy as np
import xarray as xr



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


def regrid(da: xr.DataArray, resolution: float, *, categorical: bool = False) -> xr.DataArray:
    """Bilinear interpolation of a canonical field onto `resolution` degrees.

    Periodic in longitude for global grids. Categorical fields (soil type) take the nearest
    neighbour instead. NaN (e.g. land in wave fields) spreads to the cells it touches,
    which keeps masked areas masked.
    """
    lat, lon = da.latitude.values, da.longitude.values
    new_lat, new_lon = target_axes(lat, lon, resolution)
    if _is_global(lon):  # pad one column on each side so interpolation wraps around
        da = xr.concat(
            [da.isel(longitude=[-1]).assign_coords(longitude=[lon[-1] - 360.0]), da,
             da.isel(longitude=[0]).assign_coords(longitude=[lon[0] + 360.0])],
            dim="longitude",
        )
    out = da.interp(latitude=new_lat, longitude=new_lon, method="nearest" if categorical else "linear")
    out.attrs = da.attrs
    return out.astype(da.dtype if da.dtype.kind == "f" else "float32")


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
