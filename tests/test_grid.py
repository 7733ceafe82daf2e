"""Regridding and cropping, which only happen when a user asks for them."""

from __future__ import annotations

import numpy as np
import xarray as xr

from conftest import GFS
from model_code.data.grid import crop_to_patch, regrid, target_axes
from model_code.data.ingest import read_fields


def gfs_t2m() -> xr.DataArray:
    fields, _ = read_fields([(str(GFS), GFS)])
    return fields["t2m"].values()


def test_regridding_keeps_values_at_shared_nodes_and_wraps_around_the_globe():
    t2m = gfs_t2m()  # 2.5°
    fine = regrid(t2m, 1.25)
    assert fine.sizes["latitude"] == 145 and fine.sizes["longitude"] == 288
    np.testing.assert_allclose(fine.sel(latitude=t2m.latitude, longitude=t2m.longitude).values, t2m.values, rtol=1e-6)
    between = fine.sel(longitude=358.75, latitude=t2m.latitude).values  # between 357.5 and 0/360
    expected = 0.5 * (t2m.sel(longitude=357.5).values + t2m.sel(longitude=0.0).values)
    np.testing.assert_allclose(between, expected, rtol=1e-5)


def test_categorical_fields_take_the_nearest_category():
    slt = gfs_t2m().isel(time=0).copy(data=np.random.default_rng(0).integers(0, 8, (73, 144)).astype("float32"))
    fine = regrid(slt, 1.0, categorical=True)
    assert set(np.unique(fine.values)) <= set(range(8))


def test_regional_axes_keep_the_domain():
    lat, lon = target_axes(np.array([52.5, -15.0]), np.array([0.0, 359.8333]), 1.0)
    assert lat[0] == 52.5 and lat[-1] == -14.5 and len(lon) == 360


def test_crop_drops_the_fewest_edge_rows_and_columns():
    ds = gfs_t2m().to_dataset()
    cropped, note = crop_to_patch(ds, 10)
    assert (cropped.sizes["latitude"], cropped.sizes["longitude"]) == (71, 140)
    assert cropped.latitude.values[0] == 90 and cropped.longitude.values[0] == 0
    assert "2 southernmost row(s) and 4 easternmost column(s)" in note
    same, none = crop_to_patch(ds, 4)  # 73 = 72 + 1 fits patch 4 already
    assert none is None and same.sizes == ds.sizes
