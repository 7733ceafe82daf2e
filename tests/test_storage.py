"""S3 through boto3 against a real S3 server on loopback, and atomic local writes."""

from __future__ import annotations

from pathlib import Path

import boto3
import numpy as np
import pytest
import xarray as xr

from conftest import FORMATS, GFS
from model_code.data.ingest import load_window, read_fields
from model_code.errors import DataError
from model_code.forecast import ForecastJob, run_forecast_job
from model_code.storage import local_copy, upload, write_atomic
from model_code.variants import get_variant


def test_grib_input_from_s3_gives_the_same_window_as_the_local_file(bucket):
    boto3.client("s3").upload_file(str(GFS), bucket, "in/gfs.grib2")
    spec = get_variant("medium-range")
    remote, prov = load_window([f"s3://{bucket}/in/gfs.grib2"], spec, history=1, fill_missing="zeros")
    local, _ = load_window([str(GFS)], spec, history=1, fill_missing="zeros")
    xr.testing.assert_identical(remote.drop_attrs(), local.drop_attrs())
    assert prov.inputs == [f"s3://{bucket}/in/gfs.grib2"]


def test_zarr_store_under_an_s3_prefix_is_read(bucket):
    upload(FORMATS / "test4.zarr", f"s3://{bucket}/era/test4.zarr")
    local, _ = read_fields([("local", FORMATS / "test4.zarr")])
    with local_copy(f"s3://{bucket}/era/test4.zarr") as path:
        fields, _ = read_fields([("s3", path)])
        np.testing.assert_array_equal(fields["t"].values().values, local["t"].values().values)


@pytest.mark.parametrize("suffix", [".nc", ".zarr"])
def test_forecast_is_written_to_s3(bucket, suffix, tmp_path):
    uri = f"s3://{bucket}/forecasts/mr{suffix}"
    job = ForecastJob("medium-range", (str(GFS),), 1, uri, history=1, fill_missing="synthetic")
    result = run_forecast_job(job)
    assert result.out == uri
    with local_copy(uri) as path:
        ds = xr.open_zarr(path) if suffix == ".zarr" else xr.open_dataset(path)
        xr.testing.assert_allclose(ds.load(), result.dataset)


def test_zarr_upload_puts_metadata_last(bucket, monkeypatch):
    order = []
    client = boto3.client("s3")
    monkeypatch.setattr("model_code.storage.s3_client", lambda: client)
    real = client.upload_file
    monkeypatch.setattr(client, "upload_file", lambda src, b, key: (order.append(key), real(src, b, key)))
    upload(FORMATS / "test4.zarr", f"s3://{bucket}/z.zarr")
    names = [Path(k).name for k in order]
    first_metadata = min(i for i, n in enumerate(names) if n.startswith(".z"))
    assert all(n.startswith(".z") for n in names[first_metadata:])
    assert len(order) == sum(1 for p in (FORMATS / "test4.zarr").rglob("*") if p.is_file())


def test_failed_s3_write_uploads_nothing(bucket):
    def crash(path: Path) -> None:
        path.write_bytes(b"half")
        raise RuntimeError("crash")

    with pytest.raises(RuntimeError):
        write_atomic(f"s3://{bucket}/out.nc", crash)
    assert boto3.client("s3").list_objects_v2(Bucket=bucket).get("KeyCount") == 0


def test_missing_bucket_is_a_clear_error(s3_endpoint):
    with pytest.raises(DataError, match="object not found"):
        with local_copy("s3://no-such-bucket/x.grib"):
            pass


def test_local_atomic_write_replaces_only_on_success(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")
    with pytest.raises(ValueError):
        write_atomic(target, lambda p: (p.write_text("new"), (_ for _ in ()).throw(ValueError())))
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f.txt"]
    write_atomic(target, lambda p: p.write_text("new"))
    assert target.read_text() == "new"


@pytest.mark.parametrize("suffix", [".zarr", ".nc"])
def test_writer_chunks_one_time_and_as_many_levels_as_fit(tmp_path, suffix, monkeypatch):
    from model_code.data import writers

    times = np.datetime64("2024-01-01", "ns") + np.arange(3) * np.timedelta64(6, "h")
    ds = xr.Dataset(
        {"t": (("time", "level", "latitude", "longitude"), np.zeros((3, 13, 19, 36), "float32")),
         "t2m": (("time", "latitude", "longitude"), np.zeros((3, 19, 36), "float32"))},
        coords={"time": times, "level": np.arange(13.0), "latitude": np.arange(19.0), "longitude": np.arange(36.0)},
    )
    key = "chunks" if suffix == ".zarr" else "chunksizes"
    coarse = xr.open_dataset(writers.write_dataset(ds, str(tmp_path / f"coarse{suffix}")))
    assert coarse.t.encoding[key] == (1, 13, 19, 36) and coarse.t2m.encoding[key] == (1, 19, 36)
    monkeypatch.setattr(writers, "CHUNK_BYTES", 5 * 19 * 36 * 4)  # five levels fit, as 4 MB levels in 20 MB
    fine = xr.open_dataset(writers.write_dataset(ds, str(tmp_path / f"fine{suffix}")))
    assert fine.t.encoding[key] == (1, 5, 19, 36)
