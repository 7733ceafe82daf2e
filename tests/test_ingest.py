"""Real files to a variant's input window: selection, derivation, filling and refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

from conftest import BROKEN, GFS, GFS_WAVE, IFS_8_STEPS, SWELL_PERIOD
from model_code.data.contract import check_window
from model_code.data.ingest import load_window
from model_code.errors import DataError
from model_code.variants import LEVELS, get_variant

MEDIUM = get_variant("medium-range")


@pytest.fixture(scope="module")
def gfs_window():
    return load_window([str(GFS)], MEDIUM, history=1, fill_missing="synthetic")


def test_gfs_gives_a_complete_medium_range_window(gfs_window):
    window, prov = gfs_window
    check_window(window, MEDIUM)
    assert set(window.data_vars) == {v.dataset_name for v in MEDIUM.inputs()}
    assert tuple(window.level.values) == LEVELS
    assert window.sizes["time"] == 1 and str(window.time.values[0])[:16] == "2011-01-15T12:00"
    assert prov.filled == {"slt": "synthetic"}
    assert window["slt"].attrs["filled"] == "synthetic"
    assert "q from relative humidity" in prov.origin["q"]
    assert json.loads(window.attrs["filled_variables"]) == {"slt": "synthetic"}


def test_missing_variables_are_all_listed_without_fill():
    with pytest.raises(DataError) as err:
        load_window([str(IFS_8_STEPS)], MEDIUM)
    text = str(err.value)
    assert "7 variable(s) the medium-range variant needs are not in the inputs" in text
    for key in ("'2t'", "'10u'", "'10v'", "'msl'", "'lsm'", "'slt'", "'z'"):
        assert key in text
    assert "--fill-missing" in text


def test_fill_with_zeros_is_recorded():
    window, prov = load_window([str(IFS_8_STEPS)], MEDIUM, fill_missing="zeros")
    assert set(prov.filled) == {"t2m", "u10", "v10", "msl", "lsm", "slt", "z_surface"}
    assert float(np.abs(window["msl"]).max()) == 0.0
    assert float(np.abs(window["t"]).min()) > 150  # real data untouched


def test_history_and_init_time_select_a_window_of_consecutive_steps():
    window, _ = load_window([str(IFS_8_STEPS)], MEDIUM, fill_missing="zeros")
    assert [str(t)[:16] for t in window.time.values] == ["2024-06-04T12:00", "2024-06-04T18:00"]
    window, _ = load_window([str(IFS_8_STEPS)], MEDIUM, fill_missing="zeros", init_time="2024-06-03T06:00")
    assert [str(t)[:16] for t in window.time.values] == ["2024-06-03T00:00", "2024-06-03T06:00"]
    with pytest.raises(DataError, match="initialisation 2024-06-03T00:00:00 needs 2 time"):
        load_window([str(IFS_8_STEPS)], MEDIUM, fill_missing="zeros", init_time="2024-06-03T00:00")


def test_air_pollution_takes_two_steps_twelve_hours_apart():
    spec = get_variant("air-pollution")
    window, _ = load_window([str(IFS_8_STEPS)], spec, fill_missing="synthetic")
    assert np.diff(window.time.values)[0] == np.timedelta64(12, "h")
    check_window(window, spec)


def test_single_time_file_needs_history_one():
    with pytest.raises(DataError, match="Use --history 1"):
        load_window([str(GFS)], MEDIUM, fill_missing="synthetic")


def test_history_longer_than_allowed_is_refused():
    with pytest.raises(DataError, match="history of 3 step"):
        load_window([str(GFS)], MEDIUM, history=3)


def test_levels_can_be_chosen_but_only_with_statistics():
    window, _ = load_window([str(GFS)], MEDIUM, history=1, fill_missing="synthetic", levels=(500, 850))
    assert tuple(window.level.values) == (500, 850)
    with pytest.raises(DataError, match="10 hPa have no normalisation statistics"):
        load_window([str(GFS)], MEDIUM, history=1, fill_missing="synthetic", levels=(10, 500))


def test_levels_missing_from_the_data_are_noted():
    _, prov = load_window([str(IFS_8_STEPS)], MEDIUM, fill_missing="zeros")
    assert any("only 6 of the 13 levels" in n for n in prov.notes)


def test_grid_that_does_not_fit_the_patch_is_cropped_only_on_request():
    spec = get_variant("high-res")
    window, _ = load_window([str(GFS)], spec, history=1, fill_missing="synthetic")
    with pytest.raises(DataError, match="does not fit patch size 10"):
        check_window(window, spec)
    window, prov = load_window([str(GFS)], spec, history=1, fill_missing="synthetic", crop=True)
    assert window.sizes["latitude"] == 71 and window.sizes["longitude"] == 140
    assert any("cropped from 73x144 to 71x140" in n for n in prov.notes)
    check_window(window, spec)


def test_inputs_on_different_grids_are_refused_unless_regridded():
    spec = get_variant("wave")
    with pytest.raises(DataError, match="different grids") as err:
        load_window([str(GFS_WAVE), str(SWELL_PERIOD)], spec, history=1, fill_missing="synthetic")
    assert "--regrid" in str(err.value) and "406x2160" in str(err.value) and "181x360" in str(err.value)


def test_wave_synthetic_fill_follows_the_real_coastline():
    spec = get_variant("wave")
    window, prov = load_window([str(GFS_WAVE)], spec, history=1, fill_missing="synthetic", regrid_to=1.0)
    land = np.isnan(window["swh"].values[0])
    assert 0.2 < land.mean() < 0.6  # real GFS-Wave land share in 15S-52.5N
    np.testing.assert_array_equal(np.isnan(window["mwp"].values[0]), land)
    np.testing.assert_array_equal(window["wmb"].values == 0, land)
    assert prov.origin["swh"].startswith(str(GFS_WAVE))


def test_the_same_field_from_two_sources_is_refused():
    with pytest.raises(DataError, match="given twice|more than one source"):
        load_window([str(GFS), str(GFS)], MEDIUM, history=1, fill_missing="synthetic")


def test_files_with_consecutive_times_are_joined(tmp_path):
    window_all, _ = load_window([str(IFS_8_STEPS)], MEDIUM, fill_missing="zeros", init_time="2024-06-04T00:00")
    from model_code.data.ingest import read_fields

    fields, _ = read_fields([(str(IFS_8_STEPS), IFS_8_STEPS)])
    parts = []
    for i, times in enumerate((slice(0, 3), slice(3, 8))):
        ds = xr.Dataset({k: fields[k].data.isel(time=times) for k in ("z", "t", "u", "v")})
        ds["q"] = fields["q"].data.isel(time=times)
        path = tmp_path / f"part{i}.nc"
        ds.to_netcdf(path)
        parts.append(str(path))
    window, prov = load_window(parts, MEDIUM, fill_missing="zeros", init_time="2024-06-04T00:00")
    assert [str(t)[:13] for t in window.time.values] == ["2024-06-03T18", "2024-06-04T00"]
    np.testing.assert_allclose(window["t"].values, window_all["t"].values)
    assert "part0.nc, " in prov.origin["t"]


def test_missing_values_in_a_real_field_are_caught_before_any_model():
    window, _ = load_window([str(BROKEN / "fields_with_missing_values.grib")], MEDIUM, history=1,
                            fill_missing="synthetic")
    with pytest.raises(DataError) as err:
        check_window(window, MEDIUM)
    assert "'t2m' has" in str(err.value) and "non-finite" in str(err.value)
