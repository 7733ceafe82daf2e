"""Aurora 1.5, deterministic and ensemble: inputs from real files, hourly lead times, members,
clipping, checkpoints of the wrong variant, and probabilistic scores of the ensemble."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scores.probability
import torch
import xarray as xr

from conftest import BRITISH_ISLES, ERA5_USA, GFS, SOIL_TYPE
from model_code import forecast as forecasting
from model_code.checkpoint import load_checkpoint, save_checkpoint
from model_code.data.ingest import load_window, read_fields
from model_code.data.solar import insolation_field
from model_code.errors import DataError
from model_code.evaluation.hindcast import hindcast
from model_code.evaluation.metrics import area_weights
from model_code.evaluation.score import evaluate
from model_code.forecast import ForecastJob, forecast, run_forecast_job
from model_code.variables import variable
from model_code.variants import build_model, get_variant, with_timestep

DETERMINISTIC, ENSEMBLE = get_variant("medium-range-v1.5"), get_variant("ensemble-v1.5")


def gfs_window(spec, **options):
    return load_window([str(GFS)], spec, history=1, fill_missing="synthetic", crop=True, **options)


# ---- inputs -------------------------------------------------------------------------------------


def test_gfs_gives_real_surface_fields_and_the_insolation_is_computed():
    window, prov = gfs_window(DETERMINISTIC)
    real = set(prov.origin)
    assert {"t2m", "u10", "v10", "msl", "tcwv", "tcc", "lcc", "mcc", "hcc", "sp", "siconc", "scaled_sd",
            "lsm", "z_surface", "z", "t", "u", "v", "q"} <= real
    assert {"d2m", "u100", "v100", "skt", "anor", "slt_0"} <= set(prov.filled)
    assert "insolation" not in prov.filled and "computed" in prov.origin["insolation"]
    expected = insolation_field(window.latitude.values, window.longitude.values, window.time.values)
    np.testing.assert_array_equal(window.insolation.values, expected)
    # NCEP encodes every cloud cover as tcc, in %; the layer names which, and 0..100 becomes 0..1
    for key in ("tcc", "lcc", "mcc", "hcc"):
        values = window[key].values
        assert 0.0 <= values.min() and values.max() <= 1.0 and values.max() > 0.05, key
    assert not np.array_equal(window.lcc.values, window.hcc.values)


def test_era5_gives_dewpoint_and_surface_pressure():
    _, prov = load_window([str(ERA5_USA)], DETERMINISTIC, history=1, fill_missing="synthetic", crop=True)
    assert {"t2m", "u10", "v10", "d2m", "sp"} <= set(prov.origin)


def test_the_soil_type_code_becomes_aurora_1p5s_one_hot_statics():
    fields, _ = read_fields([(SOIL_TYPE.name, SOIL_TYPE)])
    codes = np.round(fields["slt"].values().values)
    one_hot = np.stack([fields[f"slt_{k}"].values().values for k in range(8)])
    assert set(np.unique(one_hot)) <= {0.0, 1.0}
    np.testing.assert_array_equal(one_hot.sum(axis=0), np.isin(codes, range(8)))
    np.testing.assert_array_equal(one_hot.argmax(axis=0)[codes < 8], codes[codes < 8])


def test_absent_open_data_variables_are_refused_unless_filled():
    with pytest.raises(DataError, match="not in the inputs") as e:
        load_window([str(GFS)], DETERMINISTIC, history=1, crop=True)
    listed = "\n".join(e.value.problems)
    assert "d2m" in listed and "insolation" not in listed
    assert not variable("surface", "tcc").open_data and variable("surface", "insolation").computed


# ---- lead times and members ------------------------------------------------------------------------


def test_hourly_lead_times_come_from_the_same_input_and_the_6_h_step_goes_on():
    window, _ = gfs_window(DETERMINISTIC)
    model = build_model(DETERMINISTIC, "tiny")
    hourly = forecast(model, DETERMINISTIC, window, 2, lead_hours=[1, 3, 6, 7, 12])
    assert (hourly.lead_time.values / np.timedelta64(1, "h")).tolist() == [1, 3, 6, 7, 12]
    steps = forecast(model, DETERMINISTIC, window, 2)
    assert (steps.lead_time.values / np.timedelta64(1, "h")).tolist() == [6, 12]
    # sub-steps do not feed back: +6 h and +12 h are those of the plain 6 h rollout
    np.testing.assert_array_equal(hourly.t2m.sel(time=steps.time).values, steps.t2m.values)
    assert not np.allclose(hourly.t2m.isel(time=0).values, hourly.t2m.isel(time=2).values)


def test_members_differ_by_their_seed_and_repeat_with_it():
    window, _ = gfs_window(ENSEMBLE)
    model = build_model(ENSEMBLE, "tiny")
    first = forecast(model, ENSEMBLE, window, 1, members=3, seed=5)
    again = forecast(model, ENSEMBLE, window, 1, members=3, seed=5)
    assert first.t2m.dims[0] == "member" and first.sizes["member"] == 3
    xr.testing.assert_identical(first, again)
    spread = first.msl.std("member")
    assert float(spread.mean()) > 0
    one = forecast(model, ENSEMBLE, window, 1, members=1, seed=6)  # member 1 of the first is seed 6
    np.testing.assert_array_equal(one.msl.isel(member=0).values, first.msl.isel(member=1).values)


@pytest.mark.parametrize("variant, options, message", [
    ("medium-range-v1.5", {"members": 2}, "deterministic"),
    ("medium-range", {"lead_hours": (3,)}, "multiples of its 6 h step"),
    ("medium-range-v1.5", {"lead_hours": (13,)}, r"every hour up to 12 h"),
    ("ensemble-v1.5", {"members": 0}, "at least 1"),
])
def test_requests_the_variant_cannot_serve_fail_before_any_data_is_read(variant, options, message, tmp_path,
                                                                         monkeypatch):
    def no_read(*args, **kwargs):
        raise AssertionError("read data")

    monkeypatch.setattr(forecasting, "load_window", no_read)
    with pytest.raises(DataError, match=message):
        run_forecast_job(ForecastJob(variant=variant, inputs=(str(GFS),), steps=2, out=str(tmp_path / "f.nc"),
                                     **options))


def test_the_cli_writes_members_and_counts_every_clip(tmp_path):
    out = tmp_path / "ensemble.nc"
    result = run_forecast_job(ForecastJob(variant="ensemble-v1.5", inputs=(str(GFS),), steps=1, out=str(out),
                                          fill_missing="synthetic", history=1, crop_to_patch=True, members=2,
                                          lead_hours=(3, 6)))
    with xr.open_dataset(out) as ds:
        assert ds.sizes["member"] == 2 and ds.sizes["time"] == 2
        counts = json.loads(ds.attrs["clipped_values"])
        for key, (lo, hi) in (("tcc", (0, 1)), ("lcc", (0, 1)), ("q", (0, None)), ("scaled_tp_1h", (0, None))):
            values = ds[key].values
            assert lo <= np.nanmin(values) and (hi is None or np.nanmax(values) <= hi), key
        assert set(counts) >= {"tcc", "q", "siconc", "ttr_1h"} and sum(counts.values()) > 0
    assert result.dataset.attrs["clipped_values"] == json.dumps(counts, sort_keys=True)


# ---- checkpoints of the wrong variant ------------------------------------------------------------------


def test_a_published_checkpoint_of_another_variant_is_refused_before_the_model_is_built(tmp_path, monkeypatch):
    import model_code.checkpoint as checkpoint

    monkeypatch.setattr(checkpoint, "build_model", lambda *a, **k: pytest.fail("built a model"))
    for name, variant in (("aurora-0.25-v1.5.ckpt", "medium-range"), ("aurora-0.25-finetuned.ckpt", "ensemble-v1.5")):
        path = tmp_path / name
        path.write_bytes(b"not read")
        with pytest.raises(DataError, match="published checkpoint of the"):
            load_checkpoint(str(path), variant=variant)


def test_a_saved_checkpoint_loads_only_as_its_own_variant(tmp_path):
    uri = save_checkpoint(build_model(ENSEMBLE, "tiny"), ENSEMBLE, "tiny", str(tmp_path / "e.safetensors"))
    with pytest.raises(DataError, match="holds variant 'ensemble-v1.5', not 'medium-range-v1.5'"):
        load_checkpoint(uri, variant="medium-range-v1.5")
    model, info = load_checkpoint(uri, variant="ensemble-v1.5")
    assert type(model).__name__ == "AuroraV1p5Ensemble" and info.variant == "ensemble-v1.5"


# ---- probabilistic verification -----------------------------------------------------------------------


def test_the_ensembles_fair_crps_on_real_data_matches_the_scores_package():
    spec = with_timestep(ENSEMBLE, None)
    model = build_model(spec, "tiny")
    with torch.random.fork_rng(devices=[]):
        forecasts, truth = hindcast(model, spec, [str(BRITISH_ISLES)], steps=2, max_inits=3, fill_missing="mean",
                                    fill_missing_dynamic="mean", crop=True, levels=[500, 850], members=3)
    assert forecasts.sizes["member"] == 3
    scored = evaluate({"model": forecasts}, truth, metrics=("crps", "spread_skill"))
    ours = [scored.value("model", "t2m", "crps", lead) for lead in (6, 12)]

    verifying = truth.t2m.sel(time=forecasts.init_time + forecasts.lead_time)
    theirs = scores.probability.crps_for_ensemble(
        forecasts.t2m, verifying, "member", method="fair", preserve_dims=["lead_time"],
        weights=area_weights(forecasts.latitude))
    np.testing.assert_allclose(ours, theirs.values, rtol=1e-5)
