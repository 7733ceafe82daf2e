"""Field summaries and Evidently drift on the real IFS sample and realistic shifts of it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from auroraops.cli import main
from model_code.data.grid import cell_areas
from model_code.data.ingest import merge_sources, read_source
from model_code.errors import DataError
from monitoring.drift import DriftThresholds, compare, detect_drift
from monitoring.summaries import Summaries, summarise, summarise_fields

from conftest import ERA5_HOURLY, IFS_8_STEPS


def _fields(path: Path):
    fields, _ = merge_sources([read_source(str(path), path)])
    return fields


@pytest.fixture(scope="module")
def ifs_dataset() -> xr.Dataset:
    """The IFS sample (z, t, u, v, q on 6 levels, 8 valid times, 10° global) as the readers give it."""
    fields = _fields(IFS_8_STEPS)
    ds = xr.Dataset({k: f.values() for k, f in fields.items()})
    for k, f in fields.items():
        ds[k].attrs["units"] = f.var.units
    return ds


@pytest.fixture(scope="module")
def reference() -> Summaries:
    return summarise([str(IFS_8_STEPS)])


def _write(ds: xr.Dataset, path: Path) -> str:
    ds.to_netcdf(path)
    return str(path)


def _weighted_quantile(x: np.ndarray, w: np.ndarray, q: float) -> float:
    order = np.argsort(x)
    cdf = np.cumsum(w[order]) / w.sum()
    return float(np.interp(q, cdf, x[order]))


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
    assert row["u10/global/mean"] == pytest.approx(np.sum(x[ok] * w[ok]) / w[ok].sum(), rel=1e-6)
    mean = np.sum(x[ok] * w[ok]) / w[ok].sum()
    assert row["u10/global/std"] == pytest.approx(np.sqrt(np.sum((x[ok] - mean) ** 2 * w[ok]) / w[ok].sum()), rel=1e-5)
    assert row["u10/global/nan_share"] == pytest.approx(w[:40].sum() / w.sum(), rel=1e-9)
    span = np.nanmax(x) - np.nanmin(x)
    for stat, q in (("q05", 0.05), ("q50", 0.5), ("q95", 0.95)):
        assert abs(row[f"u10/global/{stat}"] - _weighted_quantile(x[ok], w[ok], q)) <= 2 * span / 4096
    # Only bands the grid reaches (25-49 N): global and northern extra-tropics.
    assert {c.split("/")[1] for c in whole.columns} == {"global", "nh_extratropics"}
    assert row["u10/global/grad"] > 0 and whole.iloc[0]["u10/global/nan_share"] == 0.0


def test_a_window_against_itself_is_not_drift(ifs_dataset, reference, tmp_path):
    result = compare(reference, summarise([_write(ifs_dataset, tmp_path / "same.nc")]))
    assert not result.drifted and result.share == 0.0 and result.drifted_columns == []
    assert result.variable_shares == {"q": 0.0, "t": 0.0, "u": 0.0, "v": 0.0, "z": 0.0}


def _plus_2k(ds):
    return ds.assign(t=ds.t + 2.0)


def _celsius_without_units(ds):
    t = ds.t - 273.15
    t.attrs = {}  # the producer switched to °C and dropped the units attribute: read as K
    return ds.assign(t=t)


def _hemispheres_swapped(ds):
    # Southern-hemisphere winter where northern summer was, on the same grid.
    return ds.map(lambda da: da.copy(data=da.values[..., ::-1, :]))


@pytest.mark.parametrize("shift, variables", [
    (_plus_2k, ["t"]),
    (_celsius_without_units, ["t"]),
    (_hemispheres_swapped, None),
], ids=["plus-2K", "K-to-degC-unlabelled", "hemispheres-swapped"])
def test_realistic_shifts_are_flagged(shift, variables, ifs_dataset, reference, tmp_path):
    result = compare(reference, summarise([_write(shift(ifs_dataset), tmp_path / "shifted.nc")]))
    assert result.drifted
    if variables is not None:  # one variable changed: only it drifted, and its location statistics did
        assert result.drifted_variables == variables
        drifted_stats = {c.statistic for c in result.columns if c.drifted}
        assert drifted_stats <= {"mean", "q05", "q50", "q95"} and "mean" in drifted_stats
        assert not any(c.drifted for c in result.columns if c.statistic == "std")
    else:  # a season / region swap shows in the bands, not in the global statistics
        assert result.share >= DriftThresholds().share
        assert not any(c.drifted for c in result.columns if c.region == "global" and c.statistic == "mean")
        assert any(c.drifted for c in result.columns if c.region == "nh_extratropics" and c.variable == "t")
    worst = min(result.columns, key=lambda c: c.score)
    assert worst.method.startswith("K-S") and worst.score < 0.05


def test_units_the_reader_converts_are_not_drift(ifs_dataset, reference, tmp_path):
    t = ifs_dataset.t - 273.15
    t.attrs = {"units": "degC"}
    result = compare(reference, summarise([_write(ifs_dataset.assign(t=t), tmp_path / "celsius.nc")]))
    assert not result.drifted and result.share == 0.0


def test_bad_windows_are_clear_errors(ifs_dataset, reference, tmp_path):
    with pytest.raises(DataError, match="missing reference"):
        detect_drift([], [str(IFS_8_STEPS)])
    with pytest.raises(DataError, match="empty window: no data files"):
        summarise([])
    with pytest.raises(DataError, match=r"mismatched grids: reference 19x36 .* current 121x86"):
        compare(reference, summarise([str(ERA5_HOURLY)]))
    without_t = summarise([_write(ifs_dataset.drop_vars("t"), tmp_path / "no_t.nc")])
    with pytest.raises(DataError, match="mismatched variables") as e:
        compare(reference, without_t)
    assert "only in reference: ['t@1000', 't@300'" in str(e.value)
    empty = Summaries(reference.table.iloc[:0], reference.grid, ["empty.nc"])
    with pytest.raises(DataError, match="empty current window"):
        compare(reference, empty)
    with pytest.raises(DataError, match=r"variables \['sst'\] not in the data"):
        summarise([str(IFS_8_STEPS)], variables=["sst"])


@pytest.mark.slow
def test_monitor_drift_writes_the_report_and_the_result_to_s3(ifs_dataset, reference, tmp_path, bucket, capsys):
    import boto3

    stored = reference.save(str(tmp_path / "train.summaries.json"))
    current = _write(_plus_2k(ifs_dataset), tmp_path / "current.nc")
    out = f"s3://{bucket}/drift/2024-06-05"
    assert main(["monitor", "drift", "--reference", stored, "--current", current, "--out", out]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("DRIFT: ") and "over their threshold: t" in printed
    s3 = boto3.client("s3")
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == ["drift/2024-06-05/drift.html", "drift/2024-06-05/drift.json", "drift/2024-06-05/snapshot.json"]
    doc = json.loads(s3.get_object(Bucket=bucket, Key="drift/2024-06-05/drift.json")["Body"].read())
    assert doc["drifted"] and doc["drifted_variables"] == ["t"] and doc["artifacts"]["html"] == f"{out}/drift.html"
    assert {c["column"] for c in doc["columns"]} == set(reference.table.columns)
    snapshot = json.loads(s3.get_object(Bucket=bucket, Key="drift/2024-06-05/snapshot.json")["Body"].read())
    assert any("ValueDrift" in m["metric_name"] for m in snapshot["metrics"])
    html = s3.get_object(Bucket=bucket, Key="drift/2024-06-05/drift.html")["Body"].read()
    assert b"Dataset Drift" in html and b"t@850/global/mean" in html


def test_stored_summaries_round_trip(reference, tmp_path):
    back = Summaries.load(reference.save(str(tmp_path / "ref.summaries.json")))
    assert back.grid == reference.grid and back.sources == reference.sources
    np.testing.assert_array_equal(back.table.to_numpy(), reference.table.to_numpy())
    assert (back.table.index == reference.table.index).all()
