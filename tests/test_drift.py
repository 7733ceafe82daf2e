"""Field summaries and drift on the real hourly ERA5 series of March 2019 over the British Isles:
ordinary later weeks are quiet, faults made from one of them are flagged for their own reason."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from auroraops.cli import main
from model_code.data.grid import cell_areas
from model_code.data.ingest import Field, merge_sources, read_source
from model_code.errors import DataError
from monitoring.drift import DriftRule, compare, detect_drift
from monitoring.faults import FAULTS, celsius_as_kelvin, frozen
from monitoring.summaries import Summaries, summarise, summarise_fields

from conftest import BRITISH_ISLES, ERA5_HOURLY


def _fields(path: Path) -> dict[str, Field]:
    fields, _ = merge_sources([read_source(str(path), path)])
    return fields


@pytest.fixture(scope="module")
def march() -> xr.DataArray:
    """ERA5 hourly 2 m temperature, March 2019, 33x40 over the British Isles, as the readers give it."""
    return _fields(BRITISH_ISLES)["t2m"].values()


def _days(da: xr.DataArray, start: str, days: float) -> xr.DataArray:
    t0 = np.datetime64(start)
    return da.sel(time=slice(t0, t0 + np.timedelta64(int(days * 24) - 1, "h")))


def _summaries(da: xr.DataArray) -> Summaries:
    field = _fields(BRITISH_ISLES)["t2m"]
    return summarise_fields({"t2m": dataclasses.replace(field, data=da)}, sources=["in memory"])


def _write(da: xr.DataArray, path: Path, units: str = "K") -> str:
    ds = da.to_dataset(name="t2m")
    ds.t2m.attrs = {"units": units}
    ds.to_netcdf(path)
    return str(path)


@pytest.fixture(scope="module")
def reference(march) -> Summaries:
    """The first fortnight, 1-14 March."""
    return _summaries(_days(march, "2019-03-01", 14))


@pytest.fixture(scope="module")
def week(march) -> xr.DataArray:
    """The week after the reference, 15-21 March, that the faults are made from."""
    return _days(march, "2019-03-15", 7)


def test_summaries_are_area_weighted_nan_aware_and_do_not_depend_on_the_chunk_size():
    fields = _fields(ERA5_HOURLY)
    u = fields["u10"].data.values.copy()
    u[3, :40, :] = np.nan  # the northern third of one time step is missing
    fields["u10"].data = fields["u10"].data.copy(data=u)
    whole = summarise_fields(fields).table
    streamed = summarise_fields(fields, chunk_bytes=1).table  # one time step per block
    np.testing.assert_array_equal(whole.to_numpy(), streamed.to_numpy())
    assert len(whole) == 25 and whole.index.is_monotonic_increasing

    lat, lon = fields["u10"].grid
    w = cell_areas(lat, lon)
    x = u[3]
    ok = ~np.isnan(x)
    row = whole.iloc[3]
    mean = np.sum(x[ok] * w[ok]) / w[ok].sum()
    assert row["u10/mean"] == pytest.approx(mean, rel=1e-6)
    assert row["u10/std"] == pytest.approx(np.sqrt(np.sum((x[ok] - mean) ** 2 * w[ok]) / w[ok].sum()), rel=1e-5)
    assert row["u10/nan_share"] == pytest.approx(w[:40].sum() / w.sum(), rel=1e-9)
    # The change since the previous hour, over the cells both hours have.
    d = (x - u[2])[ok]
    assert row["u10/tendency"] == pytest.approx(np.sqrt(np.sum(d * d * w[ok]) / w[ok].sum()), rel=1e-5)
    assert np.isnan(whole.iloc[0]["u10/tendency"]) and whole.iloc[1]["u10/tendency"] > 0
    # The latitude profile: 16 bands of rows, north to south; the missing northern rows have none.
    first = np.array_split(np.arange(len(lat)), 16)[0]
    assert np.isnan(row["u10/lat00"]) and not np.isnan(row["u10/lat15"])
    assert whole.iloc[0]["u10/lat00"] == pytest.approx(
        np.sum(u[0][first] * w[first]) / w[first].sum(), rel=1e-6)
    assert row["u10/grad"] > 0 and whole.iloc[0]["u10/nan_share"] == 0.0
    assert whole.iloc[0]["u10/spec_fine"] > 0 and whole.iloc[0]["u10/spec_mid"] > 0


def test_ordinary_later_weeks_and_days_of_march_are_quiet(march, reference):
    for start, days in [("2019-03-15", 7), ("2019-03-22", 7), ("2019-03-25", 7), ("2019-03-21", 1),
                        ("2019-03-28", 3)]:
        result = compare(reference, _summaries(_days(march, start, days)))
        assert not result.drifted and result.reasons == [], (start, days, result.evidence())
        assert result.columns[0].exceedance < 1 and len(result.columns) == 10 and not result.untested
    assert result.calibration["climatology"] == "hour of day" and result.calibration["stretches"] == 32


@pytest.mark.parametrize("kind", list(FAULTS))
def test_each_fault_made_from_an_ordinary_week_is_flagged_with_its_own_reason(kind, week, reference, tmp_path):
    _, fault = FAULTS[kind]
    broken = week.copy(data=fault(week.values))
    result = compare(reference, summarise([_write(broken, tmp_path / f"{kind}.nc")]))
    assert result.drifted and [(r.variable, r.kind) for r in result.reasons] == [("t2m", kind)], result.evidence()
    assert result.reasons[0].strength == result.columns[0].exceedance > 1


def test_units_the_reader_converts_are_not_drift(week, reference, tmp_path):
    celsius = _write(week - 273.15, tmp_path / "celsius.nc", units="degC")
    result = compare(reference, summarise([celsius]))
    assert not result.drifted and result.current["units"] == {"t2m": "K"}


def test_a_unit_the_readers_do_not_know_is_out_of_range(week, reference):
    fahrenheit = (week.values - 273.15) * 9 / 5 + 32  # °F sent as K: no conversion explains it
    result = compare(reference, _summaries(week.copy(data=fahrenheit.astype(np.float32))))
    assert [r.kind for r in result.reasons] == ["range"] and "outside the plausible 170 .. 350 K" in \
        result.reasons[0].detail


@pytest.mark.parametrize("method", ["wasserstein", "ks"])
def test_the_worst_columns_come_first_for_distance_and_p_value_tests(method, week, reference):
    result = compare(reference, _summaries(week.copy(data=celsius_as_kelvin(week.values))), DriftRule(method=method))
    exceedances = [c.exceedance for c in result.columns]
    assert exceedances == sorted(exceedances, reverse=True)
    drifted = [c for c in result.columns if c.drifted]
    first = next(iter(result.evidence()["worst"]))
    strongest = max if method == "wasserstein" else min  # a distance grows with drift, a p-value shrinks
    assert first == strongest(drifted, key=lambda c: c.score).column
    assert first.split("/")[1] in ("mean", "q05", "q95") and result.reasons[0].kind == "units"
    assert all(c.method == method for c in result.columns)


def test_bad_windows_are_clear_errors(march, reference, tmp_path):
    with pytest.raises(DataError, match="missing reference"):
        detect_drift([], [str(BRITISH_ISLES)])
    with pytest.raises(DataError, match="empty window: no data files"):
        summarise([])
    with pytest.raises(DataError, match=r"mismatched grids: reference 33x40 .* current 121x86"):
        compare(reference, summarise([str(ERA5_HOURLY)]))
    usa = summarise([str(ERA5_HOURLY)])
    with pytest.raises(DataError, match="mismatched variables") as e:
        compare(usa, summarise([str(ERA5_HOURLY)], variables=["v10"]))
    assert "only in reference: ['d2m', 'u10']" in str(e.value)  # dewpoint: an Aurora 1.5 input
    stored = json.loads(Path(reference.save(str(tmp_path / "ref.summaries.json"))).read_text())
    stored["units"]["t2m"] = "degC"
    (tmp_path / "celsius.summaries.json").write_text(json.dumps(stored))
    with pytest.raises(DataError, match="mismatched units") as e:
        compare(Summaries.load(str(tmp_path / "celsius.summaries.json")), reference)
    assert "'t2m': reference in 'degC', current in 'K'" in str(e.value)
    six_hourly = march.isel(time=slice(0, None, 6))
    with pytest.raises(DataError, match=r"mismatched time steps: reference every 0 days 01:00:00, current every "
                                        r"0 days 06:00:00"):
        compare(reference, _summaries(six_hourly.sel(time=slice("2019-03-15", None))))
    shifted = march.isel(time=slice(3, None, 6))  # 03, 09, 15, 21 UTC
    with pytest.raises(DataError, match=r"hours \(UTC\) 03, 09, 15, 21 that the reference never has \(its "
                                        r"hours: 00, 06, 12, 18\)"):
        compare(_summaries(six_hourly.sel(time=slice(None, "2019-03-14T23"))), _summaries(shifted))
    with pytest.raises(DataError, match="empty current window"):
        compare(reference, Summaries(reference.table.iloc[:0], reference.grid, ["empty.nc"], reference.units))
    with pytest.raises(DataError, match="the reference has 4 time steps; at least 8"):
        compare(_summaries(_days(march, "2019-03-01", 4 / 24)), reference)
    with pytest.raises(DataError, match=r"variables \['sst'\] not in the data"):
        summarise([str(BRITISH_ISLES)], variables=["sst"])
    with pytest.raises(DataError, match="unknown drift method 'kss'"):
        DriftRule(method="kss")


def test_monitor_drift_writes_the_report_and_the_result_to_s3(week, reference, tmp_path, bucket, capsys):
    import boto3

    stored = reference.save(str(tmp_path / "train.summaries.json"))
    current = _write(week.copy(data=frozen(week.values)), tmp_path / "current.nc")
    out = f"s3://{bucket}/drift/2019-03-15"
    assert main(["monitor", "drift", "--reference", stored, "--current", current, "--out", out]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("DRIFT: ") and "t2m: frozen (RMS change between time steps 0 K" in printed
    s3 = boto3.client("s3")
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == ["drift/2019-03-15/drift.html", "drift/2019-03-15/drift.json", "drift/2019-03-15/snapshot.json"]
    doc = json.loads(s3.get_object(Bucket=bucket, Key="drift/2019-03-15/drift.json")["Body"].read())
    assert doc["drifted"] and doc["drifted_variables"] == ["t2m"] and doc["artifacts"]["html"] == f"{out}/drift.html"
    assert doc["reasons"][0]["kind"] == "frozen" and len(doc["columns"]) == 10
    snapshot = json.loads(s3.get_object(Bucket=bucket, Key="drift/2019-03-15/snapshot.json")["Body"].read())
    drifts = [m for m in snapshot["metrics"] if "ValueDrift" in m["metric_name"]]
    assert [m["config"]["column"] for m in drifts] == [c["column"] for c in doc["columns"]]  # worst first
    assert {m["config"]["column"]: m["value"] for m in drifts} == {c["column"]: c["score"] for c in doc["columns"]}
    page = s3.get_object(Bucket=bucket, Key="drift/2019-03-15/drift.html")["Body"].read().decode()
    assert "DRIFT" in page and "t2m: frozen" in page and "RMS change between time steps" in page
    assert "Evidently report of the same tests" in page and "srcdoc=" in page


def test_stored_summaries_round_trip(reference, tmp_path):
    back = Summaries.load(reference.save(str(tmp_path / "ref.summaries.json")))
    assert back.grid == reference.grid and back.sources == reference.sources and back.units == {"t2m": "K"}
    np.testing.assert_array_equal(back.table.to_numpy(), reference.table.to_numpy())
    assert (back.table.index == reference.table.index).all()
    old = json.loads((tmp_path / "ref.summaries.json").read_text())
    del old["format"]
    (tmp_path / "old.summaries.json").write_text(json.dumps(old))
    with pytest.raises(DataError, match="summaries of format 1, expected 2"):
        Summaries.load(str(tmp_path / "old.summaries.json"))
