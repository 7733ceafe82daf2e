"""The variant contract on windows handed over in memory: every breach named, nothing fixed."""

from __future__ import annotations

import numpy as np
import pytest

from model_code.data.batch import window_to_batch
from model_code.data.contract import check_window
from model_code.data.synthetic import synthetic_window
from model_code.errors import DataError
from model_code.variants import VARIANTS, get_variant


def window_for(name: str, grid=None, history=None):
    spec = get_variant(name)
    h, w = grid or spec.tiny_grid
    lat = np.linspace(90, -90, h)
    lon = np.linspace(0, 360, w, endpoint=False)
    steps = history or spec.max_history
    end = np.datetime64("2024-06-01T12:00")
    times = np.array([end - k * np.timedelta64(spec.timestep_hours, "h") for k in range(steps - 1, -1, -1)])
    return spec, synthetic_window(spec, lat, lon, times, seed=1)


def problems(spec, ds) -> str:
    with pytest.raises(DataError) as err:
        check_window(ds, spec)
    return str(err.value)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_a_valid_window_passes_and_becomes_a_batch(name):
    spec, ds = window_for(name)
    batch = window_to_batch(ds, spec)
    assert set(batch.surf_vars) == set(spec.surf_vars)
    assert set(batch.static_vars) == set(spec.static_vars)
    assert set(batch.atmos_vars) == set(spec.atmos_vars)
    h, w = spec.tiny_grid
    assert batch.surf_vars["2t"].shape == (1, spec.max_history, h, w)
    assert batch.atmos_vars["t"].shape == (1, spec.max_history, len(spec.levels), h, w)
    assert batch.static_vars["lsm"].shape == (h, w)
    assert batch.metadata.atmos_levels == spec.levels
    assert batch.metadata.time[0].isoformat() == "2024-06-01T12:00:00"


def test_ascending_latitudes_are_refused_not_flipped():
    spec, ds = window_for("medium-range")
    assert "latitudes must be strictly decreasing" in problems(spec, ds.isel(latitude=slice(None, None, -1)))


def test_longitudes_outside_0_360_are_refused():
    spec, ds = window_for("medium-range")
    shifted = ds.assign_coords(longitude=ds.longitude.values - 180)
    assert "longitudes must lie within [0, 360)" in problems(spec, shifted)


@pytest.mark.parametrize("name, grid, fits", [
    ("medium-range", (33, 64), True), ("medium-range", (32, 66), False), ("medium-range", (34, 64), False),
    ("high-res", (31, 60), True), ("high-res", (32, 60), False), ("air-pollution", (31, 63), True),
    ("air-pollution", (32, 64), False),
])
def test_grid_must_fit_the_patch_size(name, grid, fits):
    spec, ds = window_for(name, grid=grid)
    if fits:
        check_window(ds, spec)
    else:
        text = problems(spec, ds)
        assert f"does not fit patch size {spec.patch_size}" in text and "--crop-to-patch" in text


def test_level_without_normalisation_statistics_is_refused():
    spec, ds = window_for("medium-range")
    odd = ds.assign_coords(level=[10.0] + list(ds.level.values[1:]))
    assert "pressure level(s) 10 hPa have no normalisation statistics" in problems(spec, odd)


def test_unknown_variable_is_refused():
    spec, ds = window_for("medium-range")
    ds["pm2p5"] = ds["t2m"] * 0
    assert "does not know: pm2p5" in problems(spec, ds)


def test_all_missing_variables_are_listed():
    spec, ds = window_for("medium-range")
    text = problems(spec, ds.drop_vars(["t2m", "slt", "q"]))
    for key in ("'t2m'", "'slt'", "'q'"):
        assert "missing" in text and key in text
    assert "(3 problem(s))" in text


def test_history_longer_than_the_variant_allows_is_refused():
    spec, ds = window_for("medium-range", history=3)
    assert "history of 3 time(s); the medium-range variant takes 1 to 2" in problems(spec, ds)


def test_air_pollution_needs_two_history_steps():
    spec, ds = window_for("air-pollution", history=1)
    assert "takes 2 to 2" in problems(spec, ds)


def test_times_must_be_one_timestep_apart():
    spec, ds = window_for("medium-range")
    gappy = ds.assign_coords(time=ds.time.values + np.array([0, 6], dtype="timedelta64[h]"))
    assert "6 h apart" in problems(spec, gappy)


def test_one_nan_pixel_is_named_with_its_place():
    spec, ds = window_for("medium-range")
    ds["t"][1, 3, 5, 7] = np.nan
    text = problems(spec, ds)
    assert "'t' has 1 non-finite (NaN or inf) value(s)" in text and "level=" in text and "turns Aurora's whole output" in text


def test_wave_fields_may_be_nan_over_land_but_not_infinite():
    spec, ds = window_for("wave")
    assert np.isnan(ds["swh"].values).any()  # land
    check_window(ds, spec)
    ds["swh"][0, 0, 0] = np.inf
    assert "'swh' has 1 infinite value(s)" in problems(spec, ds)


def test_wrong_dimensions_are_named():
    spec, ds = window_for("medium-range")
    ds["lsm"] = ds["t2m"]  # a static field with a time dimension
    assert "'lsm' has dims ('time', 'latitude', 'longitude'); a static variable needs" in problems(spec, ds)
