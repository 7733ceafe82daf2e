"""Reductions the tests check conservation and means with (the code under test has its own)."""

from __future__ import annotations

import xarray as xr

from model_code.data.grid import cell_areas


def area_weighted_mean(da: xr.DataArray) -> xr.DataArray:
    """Mean over latitude and longitude weighted by cell area, ignoring NaN cells."""
    w = xr.DataArray(cell_areas(da.latitude.values, da.longitude.values), dims=("latitude", "longitude"))
    valid = da.notnull()
    return (da.fillna(0) * w).sum(("latitude", "longitude")) / (w * valid).sum(("latitude", "longitude"))
