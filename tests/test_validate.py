"""The validator on real files with injected faults: every fault named by its check."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

from conftest import BROKEN, ERA5_USA, EUROPE, GFS, GFS_WAVE, IFS_8_STEPS, SAMPLES
from model_code.data.ingest import read_fields
from model_code.data.validate import Policy, validate
from model_code.variables import G0
from model_code.variants import get_variant

MEDIUM = get_variant("medium-range")


@pytest.fixture(scope="module")
def ifs() -> xr.Dataset:
    """Real IFS upper air (z, t, u, v, q on 6 levels, 8 six-hourly times) as a plain dataset."""
    fields, _ = read_fields([(str(IFS_8_STEPS), IFS_8_STEPS)])
    return xr.Dataset({k: fields[k].values() for k in ("z", "t", "u", "v", "q")})


@pytest.fixture(scope="module")
def gfs_surface() -> xr.Dataset:
    fields, _ = read_fields([(str(GFS), GFS)])
    return xr.Dataset({k: fields[k].values() for k in ("t2m", "msl", "u10", "v10")})


def write(ds: xr.Dataset, tmp_path, name="data.nc") -> str:
    path = tmp_path / name
    ds.to_netcdf(path)
    return str(path)


def checks(report, severity=None) -> set[str]:
    return {f.check for f in report.findings if severity is None or f.severity == severity}


def finding(report, check):
    return next(f for f in report.findings if f.check == check)


def test_clean_real_data_passes(ifs, tmp_path):
    report = validate([write(ifs, tmp_path)])
    assert report.ok, [f.line() for f in report.findings]
    assert report.statistics["t"]["levels"]["500"]["mean"] == pytest.approx(float(ifs.t.sel(level=500).mean()), rel=1e-5)
    assert report.coverage["t"]["times"] == 8 and report.coverage["t"]["step_hours"] == 6.0


def test_reversed_latitudes_are_reported(ifs, tmp_path):
    report = validate([write(ifs.isel(latitude=slice(None, None, -1)), tmp_path)])
    assert finding(report, "latitude_order").severity == "warning"  # fixed on ingest, said so
    assert report.ok


def test_longitudes_in_minus_180_180_are_reported(ifs, tmp_path):
    shifted = ifs.roll(longitude=18, roll_coords=True)
    shifted = shifted.assign_coords(longitude=np.where(shifted.longitude > 180, shifted.longitude - 360, shifted.longitude))
    report = validate([write(shifted.sortby("longitude"), tmp_path)])
    assert "longitudes rolled from [-170, 180]" in finding(report, "longitude_range").message


def test_nan_block_is_an_error_with_its_place(ifs, tmp_path):
    bad = ifs.copy(deep=True)
    bad["t"][2, 3, 5:8, 10:20] = np.nan
    report = validate([write(bad, tmp_path)])
    f = finding(report, "nan_share")
    assert f.severity == "error" and f.variable == "t" and f.level == 700
    assert f.where == "time=2024-06-03T12:00" and "30" in f.message


def test_duplicated_time_stamp_is_an_error(ifs, tmp_path):
    doubled = xr.concat([ifs, ifs.isel(time=[3])], dim="time")
    report = validate([write(doubled, tmp_path)])
    assert "time_duplicates" in checks(report, "error") and not report.ok


def test_gaps_are_listed_with_their_dates(ifs, tmp_path):
    report = validate([write(ifs.isel(time=[0, 1, 2, 5, 6, 7]), tmp_path)])
    f = finding(report, "time_gaps")
    assert "missing 2024-06-03T18:00 to 2024-06-04T00:00" in f.message and f.found == "6 of 8 times"
    assert report.coverage["t"]["gaps"][0]["missing_steps"] == 2


def test_irregular_steps_are_reported(ifs, tmp_path):
    times = ifs.time.values.copy()
    times[4] += np.timedelta64(1, "h")
    report = validate([write(ifs.assign_coords(time=times), tmp_path)])
    assert "time_step" in checks(report)


@pytest.mark.parametrize("variable, change, found, hint", [
    ("t", lambda x: x - 273.15, "degrees Celsius", "degC"),
    ("z", lambda x: x / G0, "geopotential height in m", "9.80665"),
    ("q", lambda x: x * 1000, "g/kg", "divide by 1000"),
])
def test_mislabelled_units_are_named_with_a_fix(ifs, tmp_path, variable, change, found, hint):
    bad = ifs.copy(deep=True)
    bad[variable] = change(bad[variable])  # values change, the units attribute does not
    report = validate([write(bad, tmp_path)])
    f = finding(report, "units")
    assert f.severity == "error" and f.variable == variable and found in f.found and hint in f.hint
    assert "physical_bounds" not in {x.check for x in report.findings if x.variable == variable}


def test_pressure_in_hpa_is_named(gfs_surface, tmp_path):
    bad = gfs_surface.copy(deep=True)
    bad["msl"] = bad["msl"] / 100
    f = finding(validate([write(bad, tmp_path)]), "units")
    assert f.variable == "msl" and "hPa" in f.found and "multiply by 100" in f.hint


def test_a_level_without_values_is_a_missing_level(ifs, tmp_path):
    bad = ifs.copy(deep=True)
    bad["t"].loc[dict(level=500)] = np.nan  # what a file with t lacking 500 hPa looks like
    f = finding(validate([write(bad, tmp_path)]), "missing_level")
    assert f.severity == "error" and f.variable == "t" and f.level == 500


def test_missing_level_and_missing_variable_break_the_contract(ifs, tmp_path):
    t_only = write(ifs[["t"]].drop_sel(level=500), tmp_path, "t.nc")  # t lacks 500 hPa
    others = write(ifs[["z", "u", "v"]], tmp_path, "zuv.nc")
    report = validate([t_only, others], MEDIUM)
    missing = {f.variable for f in report.findings if f.check == "contract_variables"}
    assert {"q", "t2m", "msl", "lsm", "slt", "z_surface"} <= missing
    level = next(f for f in report.findings if f.check == "contract_levels" and f.variable == "t" and "missing" in f.message)
    assert "500 hPa missing here" in level.message
    assert "contract_grid" in checks(report, "error")  # 19x36 does not fit patch 4


def test_constant_field_is_an_error(gfs_surface, tmp_path):
    bad = gfs_surface.copy(deep=True)
    bad["t2m"][:] = 273.15
    f = finding(validate([write(bad, tmp_path)]), "constant_field")
    assert f.severity == "error" and f.variable == "t2m" and "273.15" in f.found


def test_physical_bounds_and_spikes(gfs_surface, ifs, tmp_path):
    bad = ifs.copy(deep=True)
    bad["q"][0, 0, 0, 0] = -0.01
    bad["t"][1, 2, 3, 4] = 9999.0
    report = validate([write(bad, tmp_path)])
    bounds = [f for f in report.findings if f.check == "physical_bounds"]
    assert {f.variable for f in bounds} == {"q", "t"}
    q = next(f for f in bounds if f.variable == "q")
    assert "-0.01" in q.found and q.where.startswith("time=2024-06-03T00:00")
    spike = finding(report, "outliers")
    assert spike.variable == "t" and "9999" in spike.message


def test_wave_nan_over_land_is_allowed(tmp_path):
    report = validate([str(GFS_WAVE)])
    assert report.ok and 0.3 < report.statistics["swh"]["levels"]["all"]["nan_share"] < 0.45


@pytest.mark.parametrize("path, check", [
    (BROKEN / "era5-levels-corrupted.grib", "readable"),
    (BROKEN / "regular_gg_wrong_increment.grib", "readable"),
    (BROKEN / "fields_with_missing_values.grib", "nan_share"),
    (EUROPE[0], "longitude_meridian"),
])
def test_broken_real_files_give_named_errors(path, check):
    report = validate([str(path)])
    assert not report.ok and check in checks(report, "error")


@pytest.mark.parametrize("path", [
    p for p in sorted(SAMPLES.rglob("*"))
    if (p.suffix in (".grib", ".grib2", ".nc") or p.suffix == ".zarr") and "broken" not in p.parts
    and p not in EUROPE and ".zarr" not in p.parent.name
], ids=lambda p: p.name)
def test_every_shipped_sample_validates(path):
    report = validate([str(path)])
    assert report.ok, [f.line() for f in report.by_severity("error")]


def test_chunked_pass_gives_the_statistics_of_one_pass(ifs, tmp_path):
    path = write(ifs, tmp_path)
    whole = validate([path])
    one_time_at_a_time = validate([path], policy=Policy(chunk_bytes=1))
    for key in ("t", "q"):
        a, b = whole.statistics[key]["levels"], one_time_at_a_time.statistics[key]["levels"]
        for level in a:
            for stat in ("count", "min", "max", "mean", "std", "median"):
                assert a[level][stat] == pytest.approx(b[level][stat], rel=1e-6)


def test_chunks_stay_within_the_memory_bound(ifs, tmp_path, monkeypatch):
    from model_code.data import ingest

    sizes = []
    original = ingest.Field.chunk
    monkeypatch.setattr(ingest.Field, "chunk", lambda self, **p: (lambda da: (sizes.append(da.nbytes), da)[1])(original(self, **p)))
    per_time = ifs["t"].isel(time=0).nbytes
    validate([write(ifs, tmp_path)], policy=Policy(chunk_bytes=3 * per_time))
    assert max(sizes) <= 3 * per_time and len(sizes) >= 3 * 5


def test_report_round_trips_through_json(ifs, tmp_path):
    report = validate([write(ifs.isel(time=[0, 1, 5]), tmp_path)], MEDIUM)
    data = json.loads(report.to_json())
    assert data["ok"] is False and {f["check"] for f in data["findings"]} >= {"time_gaps", "contract_variables"}
    assert data["statistics"]["t"]["units"] == "K"


def test_validation_with_a_variant_on_era5_lists_its_gaps(tmp_path):
    report = validate([str(ERA5_USA)], MEDIUM)
    missing = {f.variable for f in report.findings if f.check == "contract_variables"}
    assert missing == {"msl", "lsm", "slt", "z_surface", "z", "u", "v", "t", "q"}
