"""Regridding (bilinear, conservative, nearest) and cropping, which only happen when asked for."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import xarray as xr

from conftest import GFS, GFS_WAVE
from fields import area_weighted_mean
from model_code.data.grid import (
    cell_areas,
    crop_to_patch,
    default_method,
    regrid,
    regrid_to_grid,
    regrid_to_variant,
    target_axes,
)
from model_code.data.ingest import read_fields
from model_code.data.synthetic import synthetic_field
from model_code.errors import DataError
from model_code.variables import by_key
from model_code.variants import Grid, get_variant


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


# --------------------------------------------------------------------------------------
# Conservative remapping and the variant's grid

MEDIUM = get_variant("medium-range")
POLLUTION = get_variant("air-pollution")


@pytest.fixture(scope="module")
def t2m() -> xr.DataArray:
    return gfs_t2m()


@pytest.fixture(scope="module")
def swh() -> xr.DataArray:
    fields, _ = read_fields([(str(GFS_WAVE), GFS_WAVE)])
    return fields["swh"].values()  # 1/6°, 15S-52.5N, global in longitude, land NaN


def test_cell_areas_tile_the_sphere(t2m):
    areas = cell_areas(t2m.latitude.values, t2m.longitude.values)
    assert areas.shape == (73, 144)
    np.testing.assert_allclose(areas.sum(), 4 * np.pi, rtol=1e-12)
    assert areas[0, 0] < areas[1, 0] < areas[36, 0]  # the polar half cell is smallest


def test_conservative_remap_keeps_the_global_mean_of_real_gfs_t2m(t2m):
    before = float(area_weighted_mean(t2m.astype("float64"))[0])
    for out in (regrid(t2m, 5.0, method="conservative"), regrid(t2m, 0.75, method="conservative"),
                regrid_to_variant(t2m, MEDIUM, method="conservative")):
        assert out.dtype == np.float32 and np.isfinite(out.values).all()
        after = float(area_weighted_mean(out.astype("float64"))[0])
        assert abs(after - before) <= 1e-6 * abs(before)
    assert out.shape == (1, *MEDIUM.grid.shape) and out.attrs["regrid_method"] == "conservative"
    assert 200 < before < 300


def test_conservative_remap_keeps_the_mean_over_the_sea_of_real_wave_heights(swh):
    out = regrid_to_variant(swh, MEDIUM)  # 1/6° -> 0.25°: coarsening, so conservative by default
    assert out.attrs["regrid_method"] == "conservative"
    assert out.sizes["latitude"] == 271 and out.sizes["longitude"] == 1440  # 52.5N..15S, whole circle
    sea = regrid_to_variant(swh.notnull().astype("float32"), MEDIUM, method="conservative")
    # A target cell is NaN exactly where it overlaps no sea cell.
    np.testing.assert_array_equal(np.isnan(out.values), sea.values == 0)
    src_area = cell_areas(swh.latitude.values, swh.longitude.values)
    dst_area = cell_areas(out.latitude.values, out.longitude.values) * sea.values[0].astype("float64")
    v0, v1 = swh.values[0].astype("float64"), out.values[0].astype("float64")
    before = np.nansum(v0 * src_area) / np.sum(src_area * np.isfinite(v0))
    after = np.nansum(v1 * dst_area) / np.sum(dst_area[np.isfinite(v1)])
    assert abs(after - before) <= 1e-6 * before
    assert 0.5 < before < 4  # metres
    assert np.nanmax(v1) <= np.nanmax(v0) and np.nanmin(v1) >= np.nanmin(v0)


def test_a_constant_field_stays_constant_with_or_without_a_mask(t2m, swh):
    const = t2m.copy(data=np.full(t2m.shape, 7.25, dtype="float32"))
    for out in (regrid(const, 5.0, method="conservative"), regrid_to_variant(const, POLLUTION, method="conservative")):
        np.testing.assert_allclose(out.values, 7.25, rtol=1e-6)
    masked = swh.where(swh.isnull(), 3.5)  # NaN on land, 3.5 m at sea
    out = regrid_to_variant(masked, POLLUTION, method="conservative")
    assert np.isnan(out.values).any()
    np.testing.assert_allclose(out.values[np.isfinite(out.values)], 3.5, rtol=1e-6)


def test_coarsening_2p5_to_5_degrees_is_the_area_weighted_block_mean():
    # Cell-centred grids, so every 5° cell is exactly a 2x2 block of 2.5° cells.
    lat, lon = np.arange(88.75, -90, -2.5), np.arange(1.25, 360, 2.5)
    fine = xr.DataArray(synthetic_field(by_key("t2m"), lat, lon, [np.datetime64("2024-01-01T00")])[0],
                        dims=("latitude", "longitude"), coords={"latitude": lat, "longitude": lon})
    out = regrid_to_grid(fine, np.arange(87.5, -90, -5.0), np.arange(2.5, 360, 5.0), method="conservative")
    w = np.sin(np.deg2rad(lat + 1.25)) - np.sin(np.deg2rad(lat - 1.25))  # all cells are 2.5° wide
    x = fine.values.astype("float64") * w[:, None]
    expected = x.reshape(36, 2, 72, 2).sum(axis=(1, 3)) / (2 * w.reshape(36, 2).sum(axis=1))[:, None]
    np.testing.assert_allclose(out.values, expected, rtol=1e-6)


def test_default_method_follows_the_documented_rule(t2m, swh):
    lat, lon = t2m.latitude.values, t2m.longitude.values  # 2.5°
    assert default_method("slt", lat, lon, 5.0) == "nearest"
    assert default_method("lat_mask", lat, lon, 0.25) == "nearest"
    assert default_method("lsm", lat, lon, 5.0) == "conservative"
    assert default_method("t2m", lat, lon, 5.0) == "conservative"
    assert default_method("t2m", lat, lon, 0.25) == "bilinear"
    assert default_method("swh", swh.latitude.values, swh.longitude.values, 0.25) == "conservative"
    assert regrid_to_variant(t2m, MEDIUM).attrs["regrid_method"] == "bilinear"


def test_directions_are_regridded_through_sine_and_cosine():
    lat, lon = np.arange(10.0, -10.5, -1.0), np.arange(0.0, 360.0, 1.0)
    values = np.where(np.arange(360) % 2 == 0, 350.0, 10.0)[None, :].repeat(len(lat), 0)  # across north
    mwd = xr.DataArray(values.astype("float32"), dims=("latitude", "longitude"),
                       coords={"latitude": lat, "longitude": lon}, name="mwd")
    two_degrees = dataclasses.replace(MEDIUM, grid=Grid(2.0, (91, 180)))
    out = regrid_to_variant(mwd, two_degrees, method="conservative")
    assert out.attrs["regrid_method"] == "conservative (through sin/cos)"
    distance = np.minimum(out.values % 360, 360 - out.values % 360)  # from north
    assert distance.max() < 1e-3  # never 180°


def test_bad_requests_are_data_errors(t2m):
    with pytest.raises(DataError, match="categorical"):
        regrid(t2m, 1.0, categorical=True, method="bilinear")
    with pytest.raises(DataError, match="unknown regridding method 'cubic'"):
        regrid(t2m, 1.0, method="cubic")
    with pytest.raises(DataError, match="'latitude' and 'longitude'"):
        regrid_to_grid(t2m.rename(latitude="y"), [0.0], [0.0])
    with pytest.raises(DataError, match="no variable has both 'latitude' and 'longitude'"):
        regrid_to_variant(t2m.isel(latitude=0), MEDIUM)
