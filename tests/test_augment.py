"""Augmentations keep their invariants, on real windows where the samples allow it."""

from __future__ import annotations

import copy
import json
from datetime import timedelta

import numpy as np
import pytest
import xarray as xr

from conftest import GFS, GFS_WAVE
from model_code.data.augment import (
    AUGMENTATIONS_ATTR,
    FROM_DIRECTIONS,
    BoundedNoise,
    Compose,
    ExtremeEventSampler,
    LongitudeRoll,
    RandomCrop,
    TimeStrideJitter,
    WindRotation,
    exceeds,
    extreme_weights,
    rotate_winds,
    window_peak,
    window_starts,
)
from model_code.data.contract import check_window
from model_code.data.ingest import load_window
from model_code.data.synthetic import regular_grid, synthetic_window
from model_code.errors import DataError
from model_code.variables import by_key
from model_code.variants import get_variant

MEDIUM = get_variant("medium-range")
WAVE = get_variant("wave")
POLLUTION = get_variant("air-pollution")


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


@pytest.fixture(scope="module")
def gfs() -> xr.Dataset:
    """Real GFS 2.5° global analysis (soil type synthetic), 73x144."""
    return load_window([str(GFS)], MEDIUM, history=1, fill_missing="synthetic")[0]


@pytest.fixture(scope="module")
def wave() -> xr.Dataset:
    """Real GFS-Wave swh at 1° (68x360, 15S-52.5N, land NaN); other fields synthetic."""
    return load_window([str(GFS_WAVE)], WAVE, history=1, fill_missing="synthetic", regrid_to=1.0)[0]


@pytest.fixture(scope="module")
def pollution() -> xr.Dataset:
    lat, lon = regular_grid(4.0)  # 46x90 fits patch 3
    times = np.array(["2024-01-01T00", "2024-01-01T12"], dtype="datetime64[ns]")
    return synthetic_window(POLLUTION, lat, lon, times, levels=(100, 500, 1000), seed=3)


@pytest.fixture(scope="module")
def hourly() -> xr.Dataset:
    """25 hourly steps on a small grid that fits patch 4 (17x36)."""
    lat, lon = np.linspace(80.0, -80.0, 17), np.arange(0.0, 360.0, 10.0)
    times = np.datetime64("2024-03-01T00", "ns") + np.arange(25) * np.timedelta64(1, "h")
    return synthetic_window(MEDIUM, lat, lon, times, levels=(500, 850), seed=1)


def dynamic_keys(ds: xr.Dataset) -> list[str]:
    return [k for k in ds.data_vars if "time" in ds[k].dims]


def static_keys(ds: xr.Dataset) -> list[str]:
    return [k for k in ds.data_vars if "time" not in ds[k].dims]


def notes(ds: xr.Dataset) -> list[str]:
    return json.loads(ds.attrs[AUGMENTATIONS_ATTR])


# --------------------------------------------------------------------------------------
# Crop


def test_crop_fits_the_patch_and_the_contract_with_the_input_values(gfs):
    crop = RandomCrop.for_variant(MEDIUM, height=33, width=64)
    corners = set()
    for seed in range(5):
        out = crop(gfs, rng(seed))
        assert (out.sizes["latitude"], out.sizes["longitude"]) == (33, 64)
        check_window(out, MEDIUM)
        assert np.all(np.diff(out.latitude.values) < 0) and np.all(np.diff(out.longitude.values) > 0)
        expected = gfs.sel(latitude=out.latitude, longitude=out.longitude)
        for key in gfs.data_vars:
            xr.testing.assert_identical(out[key], expected[key])
        corners.add((float(out.latitude[0]), float(out.longitude[0])))
    assert len(corners) > 1  # the window moves


def test_crop_parameters_and_grid_are_checked(gfs):
    with pytest.raises(DataError, match="width must be a multiple of the patch size 4, got 62"):
        RandomCrop(33, 62, 4)
    with pytest.raises(DataError, match="height must be a multiple of the patch size 4 or one row over, got 34"):
        RandomCrop(34, 64, 4)
    with pytest.raises(DataError, match="patch_size"):
        RandomCrop(32, 64, 0)
    with pytest.raises(DataError, match="height must be an integer >= 4"):
        RandomCrop(1, 64, 4)
    with pytest.raises(DataError, match="height 81 is larger than the grid's 73 latitudes"):
        RandomCrop(81, 64, 4)(gfs, rng())
    with pytest.raises(DataError, match="width 148 is larger than the grid's 144 longitudes"):
        RandomCrop(32, 148, 4)(gfs, rng())


# --------------------------------------------------------------------------------------
# Longitude roll


def test_roll_moves_every_field_statics_included_and_keeps_coordinates(gfs):
    out = LongitudeRoll()(gfs, rng(4))
    for name in gfs.coords:
        xr.testing.assert_identical(out[name], gfs[name])
    shift = round(out.attrs["longitude_shift_deg"] / 2.5)
    assert shift % 144 != 0
    for key in gfs.data_vars:
        np.testing.assert_array_equal(out[key].values, np.roll(gfs[key].values, shift, axis=-1))
        assert out[key].attrs == gfs[key].attrs
    speed = np.hypot(out.u10.values, out.v10.values)
    np.testing.assert_array_equal(speed, np.roll(np.hypot(gfs.u10.values, gfs.v10.values), shift, axis=-1))
    check_window(out, MEDIUM)
    assert "local solar time" in notes(out)[-1]


def test_roll_keeps_the_real_coastline_under_the_waves(wave):
    out = LongitudeRoll(max_shift_deg=90)(wave, rng(2))
    assert 0 < abs(((out.attrs["longitude_shift_deg"] + 180) % 360) - 180) <= 90
    land = np.isnan(out.swh.values[0])
    assert not np.array_equal(land, np.isnan(wave.swh.values[0]))  # the coastline moved ...
    np.testing.assert_array_equal(land, out.wmb.values == 0)  # ... together with the bathymetry


def test_roll_shift_stays_within_the_maximum(gfs):
    shifts = {LongitudeRoll(max_shift_deg=10)(gfs, rng(s)).attrs["longitude_shift_deg"] for s in range(40)}
    assert shifts == {0.0, 2.5, 5.0, 7.5, 10.0, 350.0, 352.5, 355.0, 357.5}


def test_roll_refuses_regional_grids_and_bad_maxima(gfs):
    regional = gfs.isel(longitude=slice(0, 64))
    with pytest.raises(DataError, match="needs a global grid"):
        LongitudeRoll()(regional, rng())
    for bad in (-5, 0, 200):
        with pytest.raises(DataError, match="max_shift_deg"):
            LongitudeRoll(bad)


# --------------------------------------------------------------------------------------
# Time stride jitter


def test_window_starts_are_every_start_that_fits():
    np.testing.assert_array_equal(window_starts(25, 2, 6), np.arange(19))
    np.testing.assert_array_equal(window_starts(7, 2, 6), [0])
    assert len(window_starts(6, 2, 6)) == 0
    np.testing.assert_array_equal(window_starts(3, 1, 6), [0, 1, 2])


def test_stride_jitter_picks_model_steps_at_every_phase(hourly):
    jitter = TimeStrideJitter.for_variant(MEDIUM)
    first_hours = set()
    for seed in range(30):
        out = jitter(hourly, rng(seed))
        check_window(out, MEDIUM)
        assert np.all(np.diff(out.time.values) == np.timedelta64(6, "h"))
        xr.testing.assert_identical(out.drop_attrs(), hourly.sel(time=out.time).drop_attrs())
        first_hours.add(int(out.time.dt.hour[0]))
    assert first_hours <= set(range(19)) and len(first_hours) > 8


def test_stride_jitter_refuses_what_it_cannot_do(hourly):
    with pytest.raises(DataError, match="history must be an integer >= 1"):
        TimeStrideJitter(0, timedelta(hours=6))
    with pytest.raises(DataError, match="step must be a positive timedelta"):
        TimeStrideJitter(2, timedelta(0))
    with pytest.raises(DataError, match="not a multiple of the series' spacing"):
        TimeStrideJitter(2, timedelta(minutes=90))(hourly, rng())
    with pytest.raises(DataError, match="needs 19 times of the series; time has 5"):
        TimeStrideJitter(4, timedelta(hours=6))(hourly.isel(time=slice(0, 5)), rng())


# --------------------------------------------------------------------------------------
# Bounded noise


def assert_within_bounds(ds: xr.Dataset) -> None:
    for key in dynamic_keys(ds):
        lo, hi = by_key(key).bounds
        values = ds[key].values
        if lo is not None:
            assert not np.any(values < lo), key
        if hi is not None:
            assert not np.any(values > hi), key


def test_noise_on_real_data_is_scaled_per_level_and_spares_statics(gfs):
    out = BoundedNoise(scale=0.05)(gfs, rng(0))
    for key in static_keys(gfs):
        xr.testing.assert_identical(out[key], gfs[key])
    for key in dynamic_keys(gfs):
        assert out[key].dtype == np.float32 and out[key].attrs == gfs[key].attrs
        assert not np.array_equal(out[key].values, gfs[key].values), key
    for level in (50.0, 500.0, 1000.0):  # noise follows each level's own spread
        before, after = gfs.t.sel(level=level).values, out.t.sel(level=level).values
        assert 0.04 < np.std(after - before) / np.std(before) < 0.06
    assert_within_bounds(out)
    assert float(out.q.min()) >= 0.0
    check_window(out, MEDIUM)


def test_noise_keeps_pollutants_non_negative_even_when_large(pollution):
    out = BoundedNoise(scale=3.0)(pollution, rng(1))
    assert_within_bounds(out)
    for key in ("pm1", "pm2p5", "pm10", "tcco", "co", "no2", "so2", "q"):
        assert float(out[key].min()) >= 0.0, key
    assert (out.pm2p5.values == 0).any()  # without clipping these would be negative
    check_window(out, POLLUTION)


def test_noise_keeps_land_nan_and_leaves_directions_alone(wave):
    out = BoundedNoise(scale=0.5)(wave, rng(2))
    for key in dynamic_keys(wave):
        np.testing.assert_array_equal(np.isnan(out[key].values), np.isnan(wave[key].values), err_msg=key)
    for key in FROM_DIRECTIONS:
        xr.testing.assert_identical(out[key], wave[key])
    for key in static_keys(wave):
        xr.testing.assert_identical(out[key], wave[key])
    assert not np.allclose(out.swh.values, wave.swh.values, equal_nan=True)
    assert np.nanmin(out.swh.values) >= 0.0 and np.nanmin(out.wind.values) >= 0.0
    assert_within_bounds(out)


def test_noise_on_chosen_variables_only(gfs):
    out = BoundedNoise(scale=0.1, variables=("t2m",))(gfs, rng())
    assert not np.array_equal(out.t2m.values, gfs.t2m.values)
    for key in gfs.data_vars:
        if key != "t2m":
            xr.testing.assert_identical(out[key], gfs[key])


def test_noise_parameters_are_checked(gfs):
    with pytest.raises(DataError, match="scale must be a finite number >= 0, got -0.1"):
        BoundedNoise(scale=-0.1)
    with pytest.raises(DataError, match="variables: 'lsm' is static"):
        BoundedNoise(variables=("lsm",))
    with pytest.raises(DataError, match="variables: 'mwd' is a direction"):
        BoundedNoise(variables=("mwd",))
    with pytest.raises(DataError, match="variables: 'temperature_2m' is not a catalogued"):
        BoundedNoise(variables=("temperature_2m",))
    with pytest.raises(DataError, match="variables: 'swh' not in the window"):
        BoundedNoise(variables=("swh",))(gfs, rng())


# --------------------------------------------------------------------------------------
# Wind rotation


def test_rotation_keeps_wind_speed_on_every_level_and_nothing_else_changes(gfs):
    out = rotate_winds(gfs, 37.0)
    for u, v in (("u10", "v10"), ("u", "v")):
        assert out[u].dtype == np.float32 and out[u].attrs == gfs[u].attrs
        assert not np.allclose(out[u].values, gfs[u].values)
        np.testing.assert_allclose(
            np.hypot(out[u].values, out[v].values), np.hypot(gfs[u].values, gfs[v].values), rtol=1e-5, atol=1e-5
        )
    for key in set(gfs.data_vars) - {"u10", "v10", "u", "v"}:
        xr.testing.assert_identical(out[key], gfs[key])
    back = rotate_winds(out, -37.0)
    for key in ("u10", "v10", "u", "v"):
        np.testing.assert_allclose(back[key].values, gfs[key].values, atol=1e-4)


def test_rotation_sense_a_westerly_turned_90_degrees_comes_from_the_south():
    grid = dict(coords={"time": [0], "latitude": [10.0], "longitude": [0.0]}, dims=("time", "latitude", "longitude"))
    ds = xr.Dataset({
        "u10": xr.DataArray(np.full((1, 1, 1), 5.0, np.float32), **grid),
        "v10": xr.DataArray(np.zeros((1, 1, 1), np.float32), **grid),
        "dwi": xr.DataArray(np.full((1, 1, 1), 270.0, np.float32), **grid),
    })
    out = rotate_winds(ds, 90.0)
    np.testing.assert_allclose([out.u10.item(), out.v10.item(), out.dwi.item()], [0.0, 5.0, 180.0], atol=1e-5)


def test_rotation_keeps_the_wave_model_wind_relation(wave):
    """ECMWF: u = -wind sin(dwi), v = -wind cos(dwi); must hold after rotating everything."""
    dwi = np.deg2rad(wave.dwi)
    with_wave_wind = wave.assign(
        u10_wave=(-wave.wind * np.sin(dwi)).astype(np.float32),
        v10_wave=(-wave.wind * np.cos(dwi)).astype(np.float32),
    )
    out = WindRotation(max_angle_deg=120)(with_wave_wind, rng(5))
    angle = float(notes(out)[-1].split("by ")[1].split(" ")[0])
    assert 20 < abs(angle) <= 120  # seed 5 turns by a noticeable angle
    xr.testing.assert_identical(out.wind, wave.wind)
    rad = np.deg2rad(out.dwi.values)
    sea = ~np.isnan(wave.swh.values)
    for u, v in (("u10_wave", "v10_wave"), ("u10", "v10")):  # the synthetic u10 follows dwi at sea
        np.testing.assert_allclose(out[u].values[sea], (-out.wind.values * np.sin(rad))[sea], atol=1e-3)
        np.testing.assert_allclose(out[v].values[sea], (-out.wind.values * np.cos(rad))[sea], atol=1e-3)
    for key in FROM_DIRECTIONS:
        values = out[key].values
        np.testing.assert_array_equal(np.isnan(values), np.isnan(wave[key].values))
        assert np.nanmin(values) >= 0 and np.nanmax(values) < 360, key
    turned = (wave.mwd.values[sea] - angle) % 360
    np.testing.assert_allclose(np.cos(np.deg2rad(out.mwd.values[sea] - turned)), 1.0, atol=1e-6)
    check_window(out.drop_vars(["u10_wave", "v10_wave"]), WAVE)


def test_rotation_refuses_half_a_pair_and_bad_angles(gfs):
    with pytest.raises(DataError, match="'u10' cannot be rotated without 'v10'"):
        rotate_winds(gfs.drop_vars("v10"), 10.0)
    for bad in (0, -10, 181):
        with pytest.raises(DataError, match="max_angle_deg"):
            WindRotation(bad)


# --------------------------------------------------------------------------------------
# Extreme-event sampling


def test_exceedance_of_a_real_window(gfs, wave):
    peak = float(gfs.t2m.max())
    assert window_peak(gfs, "t2m") == peak
    assert exceeds(gfs, "t2m", peak - 0.5) and not exceeds(gfs, "t2m", peak)
    assert exceeds(gfs, "msl", 96000.0, below=True) == bool(gfs.msl.min() < 96000.0)
    assert window_peak(wave, "swh") == pytest.approx(float(np.nanmax(wave.swh.values)))  # land NaN ignored
    with pytest.raises(DataError, match="variable 'pm2p5' is not in the window"):
        exceeds(gfs, "pm2p5", 1e-5)


def test_extreme_windows_are_oversampled_by_the_factor(gfs):
    import torch
    from torch.utils.data import WeightedRandomSampler

    windows = [gfs.assign(t2m=gfs.t2m + float(d)) for d in range(-5, 5)]  # peaks max-5 ... max+4
    peak = float(gfs.t2m.max())
    absolute = ExtremeEventSampler("t2m", threshold=peak + 2.5, factor=4.0)
    relative = ExtremeEventSampler("t2m", quantile=0.8, factor=4.0)
    expected = np.array([False] * 8 + [True] * 2)
    np.testing.assert_array_equal(absolute.flags(windows), expected)
    np.testing.assert_array_equal(relative.flags(windows), expected)
    weights = relative.weights(windows)
    np.testing.assert_allclose(weights, np.where(expected, 4.0, 1.0) / 16.0)
    sampler = WeightedRandomSampler(torch.as_tensor(weights), 20000, generator=torch.Generator().manual_seed(0))
    share = np.isin(np.fromiter(sampler, int), [8, 9]).mean()
    assert share == pytest.approx(0.5, abs=0.02)  # 2 of 10 windows, each 4x as likely
    cold = ExtremeEventSampler("t2m", quantile=0.8, below=True).flags(windows)
    np.testing.assert_array_equal(cold, expected[::-1])
    np.testing.assert_allclose(extreme_weights([False, False], 4.0), [0.5, 0.5])


def test_extreme_sampler_parameters_are_checked():
    with pytest.raises(DataError, match="factor must be a finite number >= 1"):
        ExtremeEventSampler("t2m", threshold=300.0, factor=0.5)
    with pytest.raises(DataError, match="exactly one"):
        ExtremeEventSampler("t2m", threshold=300.0, quantile=0.9)
    with pytest.raises(DataError, match="exactly one"):
        ExtremeEventSampler("t2m")
    with pytest.raises(DataError, match="quantile must be in"):
        ExtremeEventSampler("t2m", quantile=1.5)
    with pytest.raises(DataError, match="flags must be a non-empty"):
        extreme_weights([], 2.0)


# --------------------------------------------------------------------------------------
# Every augmentation: seeded, pure, composable


AUGMENTATIONS = {
    "crop": RandomCrop.for_variant(MEDIUM, 33, 64),
    "roll": LongitudeRoll(),
    "noise": BoundedNoise(0.02),
    "rotation": WindRotation(30.0),
    "compose": Compose((LongitudeRoll(), RandomCrop(32, 64, 4), BoundedNoise(0.02), WindRotation(30.0))),
}


@pytest.mark.parametrize("name", AUGMENTATIONS)
def test_same_seed_same_output_and_the_input_is_left_alone(name, gfs):
    aug = AUGMENTATIONS[name]
    before = copy.deepcopy(gfs)
    first, again, other = aug(gfs, rng(7)), aug(gfs, rng(7)), aug(gfs, rng(8))
    xr.testing.assert_identical(gfs, before)
    xr.testing.assert_identical(first, again)
    assert not first.equals(other)
    assert {k: first.attrs[k] for k in gfs.attrs} == gfs.attrs
    assert all(first[k].dtype == np.float32 for k in first.data_vars)
    check_window(first, MEDIUM)


def test_stride_jitter_leaves_its_input_alone(hourly):
    before = copy.deepcopy(hourly)
    TimeStrideJitter(2, timedelta(hours=6))(hourly, rng())
    xr.testing.assert_identical(hourly, before)


def test_compose_records_each_step_in_order(gfs):
    out = AUGMENTATIONS["compose"](gfs, rng(3))
    steps = notes(out)
    assert len(steps) == 4
    assert steps[0].startswith("longitude roll") and steps[1].startswith("crop 32x64")
    assert steps[2].startswith("bounded noise") and steps[3].startswith("wind rotation")
    with pytest.raises(DataError, match=r"steps\[1\]"):
        Compose((LongitudeRoll(), "noise"))
