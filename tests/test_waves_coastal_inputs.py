"""The wave model's coastal and shallow-water inputs (`model_code/data/coastal.py`).

The fields on a coast with a known answer and on the real wave samples (GFS-Wave at 1/6°, the
ECMWF swell period at 1°, land NaN in both); the model that takes them; a short training run
whose checkpoint rebuilds the model and forecasts; and the errors for data they cannot come
from. The real samples hold one time each, too short to train on, so training reads synthetic
wave fields (`model_code/data/synthetic`).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import xarray as xr
from aurora import AuroraWave

from conftest import GFS_WAVE, SWELL_PERIOD
from model_code.checkpoint import load_checkpoint, load_weights, read_checkpoint_info, save_checkpoint
from model_code.data.batch import window_to_batch
from model_code.data.coastal import (
    COAST,
    COAST_DISTANCE,
    SHALLOW_WATER,
    CoastalAuroraWave,
    check_depth,
    coastal_fields,
    coastline,
    distance_to_coast_km,
    shallow_water_index,
)
from model_code.data.ingest import read_fields
from model_code.data.synthetic import synthetic_dataarray, synthetic_window
from model_code.errors import ConfigError, DataError
from model_code.evaluation.regions import EARTH_RADIUS_KM, sea_from_data
from model_code import forecast as forecast_module
from model_code.forecast import ForecastJob, forecast_steps, run_forecast_job
from model_code.training import Trainer
from model_code.training import trainer as trainer_module
from model_code.training.config import config_from_dict
from model_code.training.loss_config import LossConfig
from model_code.training.loss_terms import coastal_factor
from model_code.variables import G0, variable
from model_code.variants import build_model, get_variant

WAVE = get_variant("wave")
DERIVED = (COAST, COAST_DISTANCE, SHALLOW_WATER)
INPUTS = {"coastal_inputs": True, "shallow_water_input": True}
LAT, LON = np.linspace(77.5, -77.5, 32), np.arange(64) * 5.625  # the tiny grid, round the globe
TIMES = np.datetime64("2024-01-01T00", "ns") + np.arange(8) * np.timedelta64(6, "h")



def steps(model, batch) -> list:
    """A two-step forecast, run to its end: two forecast generators advanced in turn would leave
    each other's inference mode behind."""
    return list(forecast_steps(model, batch, 2))


def real_sea(path) -> xr.DataArray:
    """The land-sea mask of a real wave field's NaN-over-land pattern (1 on land), named `lsm`."""
    fields, _ = read_fields([(str(path), path)])
    (field,) = fields.values()
    return sea_from_data(field.values())


# ---- the fields -----------------------------------------------------------------------------


def test_distance_to_coast_is_zero_on_the_coastline_and_grows_offshore_as_on_the_sphere():
    """Land west of 5.5°E, 40-70°N at 1°: the coastline is the meridian 6°E, and a point Δλ east of
    it at latitude φ lies R asin(cos φ sin Δλ) from that meridian, at its foot poleward of φ."""
    lat, lon = np.arange(70.0, 39.5, -1.0), np.arange(0.0, 41.0, 1.0)
    sea = np.broadcast_to(lon > 5.5, (len(lat), len(lon)))
    coast = coastline(sea, lon)
    np.testing.assert_array_equal(coast, np.broadcast_to(lon == 6.0, sea.shape))
    km = distance_to_coast_km(sea, lat, lon)
    assert (km[coast] == 0).all() and (km[~sea] == 0).all()
    assert (np.diff(km[:, lon >= 6.0], axis=1) > 0).all()  # every row, strictly, eastward
    phi, dlam = np.deg2rad(lat)[:, None], np.deg2rad(lon - 6.0)[None, :]
    exact = EARTH_RADIUS_KM * np.arcsin(np.cos(phi) * np.sin(dlam))
    foot = np.rad2deg(np.arctan(np.tan(phi) / np.cos(dlam)))  # latitude of the nearest point of the meridian
    half_cell = EARTH_RADIUS_KM * np.deg2rad(0.5)
    offshore = sea & ~coast
    # No coast cell is nearer than the meridian they lie on; the one nearest the foot is at most
    # half a cell along the meridian from it (where the foot lies on the grid).
    assert (km[offshore] >= exact[offshore] - 0.01).all()
    bound = np.hypot(exact, half_cell)
    on_grid = offshore & (foot <= 70.0)
    assert (km[on_grid] <= bound[on_grid]).all()
    assert np.abs(km - exact)[on_grid].max() < 0.01 * exact[on_grid].max()


def test_the_coastline_is_the_losss_coastal_band_one_cell_wide():
    """One neighbourhood for both: the sea cells `coastal_factor` weighs at width 1 on a real coast."""
    lsm = real_sea(SWELL_PERIOD)
    sea = lsm.values == 0
    t_ok = torch.from_numpy(sea)[None, None, None]  # (b, t, c, h, w): NaN target over land
    factor = coastal_factor(t_ok, t_ok, LossConfig(coastal_factor=2.0, coastal_width=1))[0, 0, 0].numpy()
    np.testing.assert_array_equal(factor == 2.0, coastline(sea, lsm.longitude.values))
    assert 0.02 < coastline(sea, lsm.longitude.values).mean() < 0.2


def test_distance_to_coast_on_the_real_gfs_wave_grid_is_in_plausible_km():
    """GFS-Wave swh at 1/6° (406x2160, 15°S-52.5°N): the cells next to the coastline lie within one
    grid diagonal of it, and from 30°N 140°W, in the open North Pacific, the nearest coast is Point
    Arena, California (38.95°N 123.74°W, 1,788 km away), to within the cell or so between the coastline
    cells (sea next to land) and the shore."""
    lsm = real_sea(GFS_WAVE)
    lat, lon = lsm.latitude.values, lsm.longitude.values
    ds = coastal_fields(lsm, lat, lon)
    coast, km = ds[COAST].values == 1, ds[COAST_DISTANCE].values
    sea = lsm.values == 0
    assert ds[COAST_DISTANCE].attrs["units"] == "km"
    assert (km[coast] == 0).all() and (km[sea & ~coast] > 0).all()
    next_to = sea & ~coast & coastline(~coast, lon)  # offshore cells with a coastline cell among their neighbours
    dlat, dlon = np.abs(np.diff(lat)).max(), np.abs(np.diff(lon)).max()
    widest = np.cos(np.deg2rad(np.clip(np.abs(lat) - dlat, 0, None)))  # of the two rows a diagonal spans
    diagonal = EARTH_RADIUS_KM * np.deg2rad(np.hypot(dlat, dlon * widest))[:, None] * np.ones_like(km)
    assert (km[next_to] <= diagonal[next_to] + 0.01).all()
    point = np.abs(lat - 30.0).argmin(), np.abs(lon - 220.0).argmin()
    assert abs(km[point] - 1788) < 1.5 * EARTH_RADIUS_KM * np.deg2rad(dlat)
    assert km.max() < 3000  # no sea of this band lies farther from its coast


def test_distance_to_coast_on_a_global_grid_has_no_seam_at_the_date_line_or_greenwich():
    """ECMWF mean swell period at 1°, global: the coast and the distance move with the planet."""
    lsm = real_sea(SWELL_PERIOD)
    lat, lon = lsm.latitude.values, lsm.longitude.values
    ds = coastal_fields(lsm, lat, lon)
    rolled = lsm.roll(longitude=180, roll_coords=False)
    moved = coastal_fields(rolled, lat, lon)
    np.testing.assert_array_equal(np.roll(ds[COAST].values, 180, axis=1), moved[COAST].values)
    np.testing.assert_allclose(np.roll(ds[COAST_DISTANCE].values, 180, axis=1), moved[COAST_DISTANCE].values,
                               rtol=1e-5, atol=0.01)
    south_pacific = (ds.latitude < -10) & (ds.latitude > -40) & (ds.longitude > 200) & (ds.longitude < 260)
    assert float(ds[COAST_DISTANCE].where(south_pacific).max()) == ds[COAST_DISTANCE].values.max()
    assert 4000 < ds[COAST_DISTANCE].values.max() < 6000  # its small islands vanish at 1°


def test_shallow_water_index_is_one_in_deep_water_zero_on_land_and_falls_with_wind():
    wind = torch.tensor([10.0, 10.0, 10.0, 20.0, 0.2, float("nan")])
    depth = torch.tensor([4000.0, 20.0, 0.0, 20.0, 20.0, 20.0])
    index = shallow_water_index(wind, depth)
    k10, k20, k_calm = (G0 / (1.2 * u) ** 2 for u in (10.0, 20.0, 1.0))
    expected = torch.tensor([1.0, np.tanh(k10 * 20), 0.0, np.tanh(k20 * 20), np.tanh(k_calm * 20),
                             np.tanh(k_calm * 20)], dtype=torch.float32)
    torch.testing.assert_close(index, expected)
    assert index[3] < index[1] < index[0]  # a stronger wind's longer sea feels 20 m of water more


def test_the_fields_of_a_mask_on_another_grid_are_refused_naming_it():
    lsm = real_sea(SWELL_PERIOD)  # 1° global
    gfs_wave = real_sea(GFS_WAVE)  # the data: 1/6°, 15°S-52.5°N
    with pytest.raises(DataError, match=r"^lsm: on the grid global: .*181x360.*not the data's domain: .*406x2160"):
        coastal_fields(lsm, gfs_wave.latitude.values, gfs_wave.longitude.values)
    with pytest.raises(DataError, match=r"^swh: the sea is taken from"):
        coastal_fields(lsm.rename("swh"), lsm.latitude.values, lsm.longitude.values)


def test_a_depth_with_no_sea_is_refused_naming_wmb():
    wmb = xr.DataArray(np.zeros((4, 8)), dims=("latitude", "longitude"),
                       coords={"latitude": [30.0, 20.0, 10.0, 0.0], "longitude": np.arange(8.0)}, name="wmb")
    with pytest.raises(DataError, match=r"^wmb: model_inputs.coastal is derived .* 0 \(land\) everywhere"):
        check_depth(wmb, wmb.latitude, wmb.longitude, asked=("coastal",))


# ---- the model ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def batch():
    return window_to_batch(synthetic_window(WAVE, LAT, LON, TIMES[:2], levels=(500, 850), seed=1), WAVE)


def test_without_the_options_the_wave_model_is_the_published_architecture():
    model = build_model(WAVE, "tiny")
    assert type(model) is AuroraWave and model.static_vars == WAVE.static_vars
    assert not set(DERIVED) & set(model.encoder.surf_token_embeds.weights)


def test_a_model_with_the_inputs_embeds_them_and_predicts_only_the_variants_outputs(batch):
    model = build_model(WAVE, "tiny", overrides=INPUTS)
    assert isinstance(model, CoastalAuroraWave)
    assert model.static_vars == (*WAVE.static_vars, *DERIVED)
    preds = steps(model, batch)
    assert [set(p.surf_vars) for p in preds] == [set(WAVE.output_surf_vars)] * 2
    assert all(set(p.static_vars) == set(WAVE.static_vars) for p in preds)
    land = batch.static_vars["wmb"] <= 0
    swh = preds[-1].surf_vars["swh"][0, 0]
    assert torch.isnan(swh[land]).all() and torch.isfinite(swh[~land]).any()
    for name in DERIVED:  # each reaches the encoder: without its embedding the forecast changes
        other = copy.deepcopy(model)
        with torch.no_grad():
            other.encoder.surf_token_embeds.weights[name].zero_()
        first = list(forecast_steps(other, batch, 1))[0].surf_vars["2t"]
        assert not torch.allclose(first, preds[0].surf_vars["2t"]), name


def test_published_weights_load_with_the_new_embeddings_at_zero_and_forecast_as_before(tmp_path, batch):
    published = build_model(WAVE, "tiny", seed=3)
    path = tmp_path / "aurora-0.25-wave.ckpt"  # the published format: a state dict saved by torch
    torch.save(published.state_dict(), path)
    model = build_model(WAVE, "tiny", seed=4, overrides=INPUTS)
    load_weights(model, str(path))
    assert all(not model.encoder.surf_token_embeds.weights[name].any() for name in DERIVED)
    for before, after in zip(steps(published, batch), steps(model, batch), strict=True):
        for name in ("2t", "swh", "10u_wave"):
            torch.testing.assert_close(after.surf_vars[name], before.surf_vars[name], equal_nan=True)


def test_the_options_are_for_the_wave_model_only():
    with pytest.raises(DataError, match="only the wave variant"):
        build_model("medium-range", "tiny", overrides={"coastal_inputs": True})
    with pytest.raises(ConfigError) as e:
        config_from_dict({"variant": "medium-range", "model_inputs": {"coastal": True}})
    assert e.value.field == "model_inputs.coastal"
    with pytest.raises(ConfigError, match="coast"):
        config_from_dict({"variant": "wave", "model_inputs": {"coast": True}})


# ---- training, its checkpoint and forecasts ---------------------------------------------------


def wave_dataset(seed: int = 2) -> xr.Dataset:
    """Eight 6-hourly times of every wave input and target on the tiny grid."""
    ds = synthetic_window(WAVE, LAT, LON, TIMES, levels=(500, 850), seed=seed)
    for name in ("10u_wave", "10v_wave"):  # targets only
        v = variable("surface", name)
        ds[v.dataset_name] = synthetic_dataarray(v, LAT, LON, TIMES, seed=seed)
    return ds


@pytest.fixture(scope="module")
def wave_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("wave") / "wave.nc"
    wave_dataset().to_netcdf(path)
    return path


def wave_config(paths, out, **data):
    return config_from_dict({
        "variant": "wave", "profile": "tiny",
        "data": {"paths": [str(p) for p in paths], "val_fraction": 0.5, "levels": [500, 850], **data},
        "model_inputs": {"coastal": True, "shallow_water": True},
        "train": {"max_steps": 2, "val_every": 2, "device": "cpu", "progress": False},
        "checkpoint": {"out_dir": str(out), "keep_top_k": 0},
    })


def test_a_short_run_with_the_inputs_checkpoints_a_model_that_loads_back_the_same_and_forecasts(
        wave_file, tmp_path, batch):
    trainer = Trainer(wave_config([wave_file], tmp_path / "run"))
    try:
        result = trainer.fit()
        trained = trainer.model.eval()
    finally:
        trainer.close()
    assert result.steps == 2 and all(np.isfinite(h["loss"]) for h in result.history if "loss" in h)
    info = read_checkpoint_info(result.last_checkpoint)
    assert info.model_inputs == ("coastal", "shallow_water")
    loaded, _ = load_checkpoint(result.last_checkpoint)
    assert type(loaded) is CoastalAuroraWave and loaded.static_vars == trained.static_vars
    for a, b in zip(steps(trained, batch), steps(loaded, batch), strict=True):
        for name in WAVE.output_surf_vars:
            torch.testing.assert_close(a.surf_vars[name], b.surf_vars[name], equal_nan=True, rtol=0, atol=0)

    out = run_forecast_job(ForecastJob("wave", (str(wave_file),), 2, str(tmp_path / "forecast.nc"),
                                       checkpoint=result.last_checkpoint))
    swh = out.dataset["swh"].values
    sea = out.window["wmb"].values[: swh.shape[1]] > 0
    assert np.isfinite(swh[:, sea]).any() and np.isnan(swh[:, ~sea]).all()


def test_training_data_without_wmb_is_refused_naming_it_before_any_model(tmp_path, monkeypatch):
    path = tmp_path / "no_wmb.nc"
    wave_dataset().drop_vars("wmb").to_netcdf(path)
    monkeypatch.setattr(trainer_module, "build_model", lambda *a, **k: pytest.fail("a model was built"))
    with pytest.raises(DataError, match=r"^wmb: model_inputs.coastal and model_inputs.shallow_water are derived .* "
                                        r"the data lack it"):
        Trainer(wave_config([path], tmp_path / "run", fill_missing="synthetic"))


def test_a_wmb_on_another_grid_is_refused_naming_it_before_any_model(tmp_path, monkeypatch):
    data, depth = tmp_path / "wave.nc", tmp_path / "wmb.nc"
    ds = wave_dataset()
    ds.drop_vars("wmb").to_netcdf(data)
    ds["wmb"].isel(latitude=slice(None, None, 2), longitude=slice(None, None, 2)).to_netcdf(depth)
    monkeypatch.setattr(trainer_module, "build_model", lambda *a, **k: pytest.fail("a model was built"))
    with pytest.raises(DataError, match=r"^wmb: on the grid .*16x32.*, not the data's .*32x64"):
        Trainer(wave_config([data, depth], tmp_path / "run"))


def test_a_forecast_that_would_fill_wmb_is_refused_naming_it_before_the_model_loads(tmp_path, monkeypatch):
    checkpoint = save_checkpoint(build_model(WAVE, "tiny", overrides=INPUTS), WAVE, "tiny",
                                 str(tmp_path / "m.safetensors"), overrides=INPUTS)
    path = tmp_path / "no_wmb.nc"
    wave_dataset().drop_vars("wmb").to_netcdf(path)
    monkeypatch.setattr(forecast_module, "load_checkpoint", lambda *a, **k: pytest.fail("a model was loaded"))
    with pytest.raises(DataError, match=r"^wmb: .*the data lack it \(it would be filled: synthetic"):
        run_forecast_job(ForecastJob("wave", (str(path),), 1, str(tmp_path / "f.nc"), checkpoint=checkpoint,
                                     fill_missing="synthetic", levels=(500, 850)))
