"""Every shipped real file opens and canonicalises; broken files give clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from conftest import (
    BRITISH_ISLES, BROKEN, ERA5_HOURLY, ERA5_USA, EUROPE, FORMATS, GEMS_TCCO2, GFS, GFS_WAVE, IFS_8_STEPS, OPENDATA_0P4,
    SAMPLES, SOIL_TYPE, SWELL_PERIOD,
)
from model_code.data.canonical import canonicalise
from model_code.data.ingest import read_fields
from model_code.data.readers import detect_format, open_datasets
from model_code.errors import DataError


def fields_of(*paths):
    return read_fields([(str(p), p) for p in paths])


@pytest.mark.parametrize(
    "path, expected",
    [
        (GFS, {"t2m", "u10", "v10", "msl", "lsm", "z_surface", "z", "t", "u", "v", "q",
               "tcwv", "tcc", "lcc", "mcc", "hcc", "sp", "siconc", "scaled_sd", "i10fg"}),  # + Aurora 1.5's
        (IFS_8_STEPS, {"z", "t", "u", "v", "q"}),
        (OPENDATA_0P4, {"z"}),
        (ERA5_USA, {"t2m", "u10", "v10", "d2m", "sp"}),
        (ERA5_HOURLY, {"u10", "v10", "d2m"}),
        (GFS_WAVE, {"swh"}),
        (SWELL_PERIOD, {"mpts"}),
        (SOIL_TYPE, {"slt", "t2m", "stl1", "swvl1", *(f"slt_{k}" for k in range(8))}),  # one-hot from slt
        (FORMATS / "test4.grib", {"z", "t"}),
        (FORMATS / "test4.nc", {"z", "t"}),
        (FORMATS / "test4.zarr", {"z", "t"}),
    ],
    ids=lambda p: getattr(p, "name", ""),
)
def test_every_real_sample_converts_to_canonical_fields(path, expected):
    fields, prov = fields_of(path)
    assert set(fields) == expected
    for f in fields.values():
        lat, lon = f.data.latitude.values, f.data.longitude.values
        assert np.all(np.diff(lat) < 0) and lat.max() <= 90 and lat.min() >= -90
        assert np.all(np.diff(lon) > 0) and lon.min() >= 0 and lon.max() < 360
        if "time" in f.data.dims:
            assert np.issubdtype(f.data.time.dtype, np.datetime64)
        assert np.isfinite(f.values().values).any()


def test_every_shipped_sample_is_covered_by_a_test():
    tested = {GFS, IFS_8_STEPS, OPENDATA_0P4, ERA5_USA, ERA5_HOURLY, BRITISH_ISLES, GFS_WAVE, SWELL_PERIOD, SOIL_TYPE,
              GEMS_TCCO2, *EUROPE}
    shipped = {p for p in SAMPLES.iterdir() if p.is_file() and p.suffix in (".grib", ".grib2", ".nc")}
    assert shipped == tested


def test_the_gems_column_sample_is_31_six_hourly_global_times_outside_the_catalogue():
    """Total-column CO2 is no input of any variant: the readers name it as left out, and the air-pollution
    ablations give it to the model as a stand-in themselves (`benchmarks/held_out.py`)."""
    fields, prov = fields_of(GEMS_TCCO2)
    assert not fields and prov.ignored == [f"{GEMS_TCCO2}: tcco2"]
    with xr.open_dataset(GEMS_TCCO2) as ds:
        times = ds.time.values
        assert ds.tcco2.shape == (31, 161, 320) and np.all(np.diff(times) == np.timedelta64(6, "h"))
        assert 370 < float(ds.tcco2.min()) and float(ds.tcco2.max()) < 410


def test_the_hourly_era5_sample_is_25_consecutive_hours():
    fields, prov = fields_of(ERA5_HOURLY)
    times = fields["u10"].data.time.values
    assert len(times) == 25 and np.all(np.diff(times) == np.timedelta64(1, "h"))
    assert str(times[0])[:13] == "2018-01-02T06"
    assert "d2m" in fields and not prov.ignored  # dewpoint: an Aurora 1.5 input


def test_the_british_isles_month_is_every_hour_of_march_2019_west_of_0():
    fields, prov = fields_of(BRITISH_ISLES)
    t2m = fields["t2m"].data
    times = t2m.time.values
    assert len(times) == 744 and np.all(np.diff(times) == np.timedelta64(1, "h"))
    assert str(times[0])[:13] == "2019-03-01T00" and str(times[-1])[:13] == "2019-03-31T23"
    lon = t2m.longitude.values
    assert lon.min() == 350.0 and lon.max() == 359.75  # -10 .. -0.25 rolled into [0, 360)
    assert t2m.sizes["latitude"] == 33 and 265 < float(t2m.min()) and float(t2m.max()) < 295  # K, in March


def test_the_same_data_in_grib_netcdf_and_zarr_gives_the_same_fields():
    grib, _ = fields_of(FORMATS / "test4.grib")
    for other in ("test4.nc", "test4.zarr"):
        fields, _ = fields_of(FORMATS / other)
        for key in ("z", "t"):
            a, b = grib[key].values(), fields[key].values()
            assert a.dims == b.dims
            np.testing.assert_array_equal(a.level.values, b.level.values)
            np.testing.assert_allclose(a.values, b.values, rtol=1e-4)  # GRIB packing precision


def test_gfs_units_and_derived_variables_are_physical():
    fields, prov = fields_of(GFS)
    z500 = fields["z"].values(level=500.0).values / 9.80665
    assert 4600 < z500.mean() < 6000  # geopotential height of 500 hPa in metres
    assert fields["z_surface"].values().values.max() > 9.80665 * 4000  # orography x g: Himalaya
    q = fields["q"].values().values
    assert q.min() >= 0 and q.max() < 0.03
    assert any("z from gh" in f.note for f in fields.values() if f.note)


def test_specific_humidity_from_relative_humidity_matches_gfs_own_2m_humidity():
    """GFS carries both 2 m relative humidity (r2) and 2 m specific humidity (sh2).

    Deriving q from r2, t2m and surface pressure with our formula must reproduce sh2.
    """
    from model_code.data.ingest import specific_humidity

    datasets = open_datasets(GFS)
    at2m = next(ds for ds in datasets if "r2" in ds and "sh2" in ds)
    sp = next(ds for ds in datasets if "sp" in ds and "lsm" in ds)["sp"].values
    q = specific_humidity(at2m["r2"].values, at2m["t2m"].values, sp)
    np.testing.assert_allclose(q, at2m["sh2"].values, rtol=0.05, atol=2e-4)


def test_global_grid_in_minus_180_180_is_rolled_and_said_so():
    fields, prov = fields_of(OPENDATA_0P4)
    lon = fields["z"].data.longitude.values
    assert lon[0] == 0 and lon[-1] == pytest.approx(359.6) and len(lon) == 900
    assert any("rolled" in n for n in prov.notes)
    raw = next(ds for ds in open_datasets(OPENDATA_0P4) if "gh" in ds)
    at_0 = raw["gh"].sel(longitude=0.0, method="nearest").sel(isobaricInhPa=700).values * 9.80665
    np.testing.assert_allclose(fields["z"].values(level=700.0).sel(longitude=0.0).values[0], at_0, rtol=1e-6)


def test_regional_grid_with_negative_longitudes_is_rolled():
    fields, prov = fields_of(ERA5_USA)
    lon = fields["t2m"].data.longitude.values
    assert lon[0] == pytest.approx(235.0) and lon[-1] == pytest.approx(294.0)


def test_ascending_latitudes_are_flipped_with_a_note(tmp_path):
    ds = open_datasets(FORMATS / "test4.nc")[0].isel(latitude=slice(None, None, -1))
    flipped, notes = canonicalise(ds, "flipped.nc")
    assert flipped.latitude.values[0] == 90 and any(n.check == "latitude_order" and "flipped" in n.message for n in notes)
    np.testing.assert_array_equal(flipped["t"].values, open_datasets(FORMATS / "test4.nc")[0]["t"].values)


def test_forecast_steps_of_several_runs_are_arranged_by_valid_time():
    fields, prov = fields_of(IFS_8_STEPS)
    times = fields["t"].data.time.values
    assert len(times) == 8 and np.all(np.diff(times) == np.timedelta64(6, "h"))


def test_regional_grid_crossing_the_prime_meridian_is_refused():
    with pytest.raises(DataError, match="crosses the 0° meridian"):
        fields_of(EUROPE[0])


@pytest.mark.parametrize(
    "name, message",
    [
        ("era5-levels-corrupted.grib", "truncated or corrupted GRIB message"),
        ("regular_gg_wrong_increment.grib", "inconsistent grid definition"),
    ],
)
def test_broken_grib_files_name_the_file_and_the_fault(name, message):
    with pytest.raises(DataError, match=message) as err:
        open_datasets(BROKEN / name)
    assert name in str(err.value)


def test_file_that_is_not_weather_data_is_refused(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(DataError, match="unrecognised file format"):
        detect_format(path)


def test_missing_file_is_named(tmp_path):
    from model_code.data.ingest import load_window
    from model_code.variants import get_variant

    with pytest.raises(DataError, match="file not found") as err:
        load_window([str(tmp_path / "nope.grib")], get_variant("medium-range"))
    assert "nope.grib" in str(err.value)


def test_duplicated_and_non_monotonic_coordinates_are_refused(tmp_path):
    ds = open_datasets(FORMATS / "test4.nc")[0]
    duplicated = ds.isel(latitude=[0, 0, 1, 2])
    with pytest.raises(DataError, match="duplicated latitude"):
        canonicalise(duplicated, "dup.nc")
    shuffled = ds.isel(longitude=[0, 2, 1, 3])
    with pytest.raises(DataError, match="longitude coordinate is not monotonic"):
        canonicalise(shuffled, "shuffled.nc")
    two = ds.isel(time=[0, 0])
    with pytest.raises(DataError, match="duplicated times"):
        canonicalise(two, "twice.nc")


def test_ensemble_members_are_refused_with_the_dimension_named():
    ds = open_datasets(FORMATS / "test4.nc")[0].expand_dims(number=[0, 1, 2])
    with pytest.raises(DataError, match="3 ensemble members"):
        canonicalise(ds, "ens.nc")


def test_pressure_in_pa_is_converted_to_hpa():
    ds = open_datasets(FORMATS / "test4.nc")[0]
    in_pa = ds.assign_coords(level=("level", ds.level.values * 100.0, {"units": "Pa"}))
    canonical, notes = canonicalise(in_pa, "pa.nc")
    np.testing.assert_array_equal(canonical.level.values, [500.0, 850.0])
    assert any(n.check == "level_units" and "Pa to hPa" in n.message for n in notes)


def test_unknown_units_are_an_error_naming_variable_and_expected_units(tmp_path):
    ds = open_datasets(FORMATS / "test4.nc")[0].load()
    ds["t"].attrs["units"] = "furlongs"
    path = tmp_path / "bad_units.nc"
    ds.to_netcdf(path)
    with pytest.raises(DataError, match="variable 't' has units 'furlongs'; expected 'K'"):
        fields_of(path)


def test_celsius_is_converted_to_kelvin(tmp_path):
    ds = open_datasets(FORMATS / "test4.nc")[0].load()
    celsius = ds.copy()
    celsius["t"] = ds["t"] - 273.15
    celsius["t"].attrs["units"] = "degC"
    path = tmp_path / "celsius.nc"
    celsius.to_netcdf(path)
    fields, _ = fields_of(path)
    np.testing.assert_allclose(fields["t"].values().values, fields_of(FORMATS / "test4.nc")[0]["t"].values().values, atol=1e-3)
