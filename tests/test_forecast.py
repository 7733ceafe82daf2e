"""Forecasts of every variant from real inputs: variables, shapes, coordinates, NaN policy, files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from conftest import BRITISH_ISLES, ERA5_HOURLY, GFS, GFS_WAVE, IFS_8_STEPS
from model_code.data.ingest import read_fields
from model_code.errors import DataError
from model_code.forecast import ForecastJob, run_forecast_job
from model_code.variants import get_variant

# variant -> real inputs and options; synthetic only where no public sample exists.
CASES = {
    "medium-range": ((GFS,), dict(history=1, fill_missing="synthetic")),
    "high-res": ((GFS,), dict(history=1, fill_missing="synthetic", crop_to_patch=True)),
    "air-pollution": ((IFS_8_STEPS,), dict(fill_missing="synthetic")),
    "wave": ((GFS_WAVE,), dict(history=1, fill_missing="synthetic", regrid=1.0)),
}
STEPS = 3


@pytest.fixture(scope="module", params=list(CASES))
def result(request, tmp_path_factory):
    files, options = CASES[request.param]
    out = tmp_path_factory.mktemp(request.param) / "forecast.nc"
    job = ForecastJob(request.param, tuple(map(str, files)), STEPS, str(out), **options)
    return request.param, run_forecast_job(job)


def test_output_has_every_predicted_variable_with_cf_metadata(result):
    name, r = result
    spec = get_variant(name)
    ds = xr.open_dataset(r.out)
    assert set(ds.data_vars) == {v.dataset_name for v in spec.outputs()}
    for v in spec.outputs():
        da = ds[v.dataset_name]
        assert da.attrs["units"] == v.units and da.attrs["aurora_name"] == v.name
        assert da.dims == (("time", "latitude", "longitude") if v.kind == "surface"
                           else ("time", "level", "latitude", "longitude"))
    assert ds.attrs["Conventions"] == "CF-1.10" and ds.attrs["aurora_variant"] == name
    assert ds.latitude.attrs["units"] == "degrees_north" and ds.level.attrs["units"] == "hPa"


def test_time_coordinates_are_valid_times_with_lead_times(result):
    name, r = result
    spec = get_variant(name)
    ds = xr.open_dataset(r.out)
    init = r.window.time.values[-1]
    step = np.timedelta64(spec.timestep_hours, "h")
    np.testing.assert_array_equal(ds.time.values, [init + k * step for k in range(1, STEPS + 1)])
    np.testing.assert_array_equal(ds.lead_time.values, [k * step for k in range(1, STEPS + 1)])
    assert ds.forecast_reference_time.values == init
    assert ds.lead_time.attrs["standard_name"] == "forecast_period"


def test_grid_is_the_input_grid_less_the_row_aurora_drops(result):
    name, r = result
    spec = get_variant(name)
    ds, window = r.dataset, r.window
    h = window.sizes["latitude"]
    expected_h = h - 1 if h % spec.patch_size == 1 else h
    np.testing.assert_allclose(ds.latitude.values, window.latitude.values[:expected_h])
    np.testing.assert_allclose(ds.longitude.values, window.longitude.values)
    np.testing.assert_array_equal(ds.level.values, window.level.values)


def test_no_nan_where_aurora_gives_none(result):
    name, r = result
    spec = get_variant(name)
    ds = r.dataset
    for v in spec.outputs():
        values = ds[v.dataset_name].values
        if v.nan_by_design:
            continue
        assert np.isfinite(values).all(), v.dataset_name
    if name == "wave":
        land = r.window["wmb"].values[: ds.sizes["latitude"]] == 0
        assert np.isnan(ds["swh"].values[:, land]).all()  # masked by design over land
        assert np.isfinite(ds["swh"].values[:, ~land]).any()


def test_provenance_is_recorded(result):
    name, r = result
    ds = xr.open_dataset(r.out)
    filled = json.loads(ds.attrs["filled_variables"])
    assert filled == r.provenance.filled and all(m == "synthetic" for m in filled.values())
    assert json.loads(ds.attrs["input_files"]) == [str(f) for f in CASES[name][0]]
    assert "random initial weights (seed 0)" in ds.attrs["weights"]


def test_a_forecast_file_reads_back_as_input(result):
    """Our own output is a valid input: a forecast can start from another forecast."""
    name, r = result
    fields, _ = read_fields([(r.out, Path(r.out))])
    spec = get_variant(name)
    assert {v.dataset_name for v in spec.outputs()} <= set(fields)
    np.testing.assert_array_equal(fields["t"].data.time.values, r.dataset.time.values)


def test_zarr_output_holds_the_same_forecast(tmp_path):
    files, options = CASES["medium-range"]
    job = ForecastJob("medium-range", tuple(map(str, files)), 2, str(tmp_path / "f.zarr"), **options)
    r = run_forecast_job(job)
    z = xr.open_zarr(r.out)
    xr.testing.assert_allclose(z.load(), r.dataset)


def test_bad_output_name_fails_before_any_compute(tmp_path):
    job = ForecastJob("medium-range", (str(GFS),), 2, str(tmp_path / "out.grib"), history=1)
    with pytest.raises(DataError, match="cannot tell the output format"):
        run_forecast_job(job)


def test_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
    def half_then_crash(self, path, *args, **kwargs):
        Path(path).write_bytes(b"CDF\x01 partial")
        raise OSError("disk full")

    monkeypatch.setattr(xr.Dataset, "to_netcdf", half_then_crash)
    files, options = CASES["medium-range"]
    job = ForecastJob("medium-range", tuple(map(str, files)), 1, str(tmp_path / "f.nc"), **options)
    with pytest.raises(OSError, match="disk full"):
        run_forecast_job(job)
    assert list(tmp_path.iterdir()) == []


def test_rewriting_an_existing_zarr_store_replaces_it_whole(tmp_path):
    files, options = CASES["medium-range"]
    out = tmp_path / "f.zarr"
    run_forecast_job(ForecastJob("medium-range", tuple(map(str, files)), 2, str(out), **options))
    run_forecast_job(ForecastJob("medium-range", tuple(map(str, files)), 1, str(out), **options))
    assert xr.open_zarr(out).sizes["time"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["f.zarr"]


# ---- a checkpoint says how it was trained to be fed ---------------------------------------------------


@pytest.fixture(scope="module")
def trained_on_t2m_only(tmp_path_factory) -> str:
    """A tiny model trained for a few steps on the real British Isles 2 m temperature, its other
    inputs filled with Aurora's means, on its own normalisation, with 4 input times."""
    from model_code.training import train
    from model_code.training.config import config_from_dict

    root = tmp_path_factory.mktemp("t2m_only")
    with xr.open_dataset(BRITISH_ISLES) as ds:
        ds.sel(time=slice("2019-03-01", "2019-03-04")).to_netcdf(root / "days.nc")
    cfg = config_from_dict({
        "variant": "medium-range", "profile": "tiny", "timestep_hours": 6, "model": {"max_history_size": 4},
        "data": {"paths": [str(root / "days.nc")], "val_period": ["2019-03-03T12:00", "2019-03-05"], "crop": True,
                 "fill_missing": "mean", "fill_missing_dynamic": "mean", "levels": [500, 850], "history": 4,
                 "normalisation": "training"},
        "train": {"max_steps": 2, "val_every": 2, "device": "cpu", "progress": False},
        "checkpoint": {"out_dir": str(root / "run"), "keep_top_k": 0}})
    return train(cfg).best_checkpoint


def test_a_checkpoint_records_its_fills_and_forecasts_fill_alike_by_default(trained_on_t2m_only, tmp_path):
    from model_code.checkpoint import read_checkpoint_info

    info = read_checkpoint_info(trained_on_t2m_only)
    assert info.filled_inputs == {**{k: "mean" for k in ("u10", "v10", "msl", "z", "u", "v", "t", "q")},
                                  **{k: "mean" for k in ("lsm", "z_surface", "slt")}}
    assert info.spec.max_history == 4 and info.training_levels == (500.0, 850.0)
    loc, scale = json.loads(info.metadata["model_overrides"])["surf_stats"]["2t"]
    assert 278 < loc < 284 and 1 < scale < 4  # the British Isles in early March, not Aurora's 278.5 K +- 21 K

    job = ForecastJob("medium-range", (str(BRITISH_ISLES),), 2, str(tmp_path / "default.nc"),
                      checkpoint=trained_on_t2m_only, init_time="2019-03-25T00:00", crop_to_patch=True)
    result = run_forecast_job(job)
    assert result.window.sizes["time"] == 4 and list(result.window.level.values) == [500.0, 850.0]
    assert "11 variable(s) filled with Aurora's normalisation means, as the checkpoint's training filled them" in \
        " ".join(result.provenance.notes)
    explicit = run_forecast_job(ForecastJob("medium-range", (str(BRITISH_ISLES),), 2, str(tmp_path / "explicit.nc"),
                                            checkpoint=trained_on_t2m_only, init_time="2019-03-25T00:00",
                                            crop_to_patch=True, fill_missing="mean", levels=(500.0, 850.0)))
    xr.testing.assert_equal(result.dataset["t2m"], explicit.dataset["t2m"])
    # What training read from its data is never filled: an input without 2 m temperature is refused.
    with pytest.raises(DataError, match="1 variable.* not in the inputs") as e:
        run_forecast_job(ForecastJob("medium-range", (str(ERA5_HOURLY),), 2, str(tmp_path / "x.nc"),
                                     checkpoint=trained_on_t2m_only, crop_to_patch=True))
    assert "'2t'" in str(e.value) and not (tmp_path / "x.nc").exists()
