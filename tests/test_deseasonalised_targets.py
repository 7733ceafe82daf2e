"""De-seasonalised variables (`data.deseasonalise`, model_code/data/deseasonalised.py) and robust
scaling (`data.robust`): the climatology, the model, the checks, training and forecasts.

On the real hourly 2 m temperature of the British Isles (March 2019), whose diurnal cycle is
strong, at the medium-range variant's 6 h step: the hourly data give a sample every hour, so the
training period holds every hour of the day. Absent inputs are filled with Aurora's means as in
the demo.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import xarray as xr
from aurora import Aurora

from conftest import BRITISH_ISLES, fit_keeping_model, tiny_march
from model_code.checkpoint import load_checkpoint, read_checkpoint_info
from model_code.data import windows as windows_module
from model_code.data.deseasonalised import Deseasonalise, climatology_argument
from model_code.data.lags import Lags
from model_code.data.preprocess.climatology import climatology
from model_code.data.preprocess.normalisation import aurora_surf_stats, normalisation_stats
from model_code.data.windows import WindowDataset
from model_code.errors import ConfigError, DataError
from model_code.evaluation import hindcast as hindcast_module
from model_code.forecast import ForecastJob, forecast, forecast_steps, run_forecast_job
from model_code.training import Trainer, load_config, save_config
from model_code.training.config import config_from_dict
from model_code.training.data import open_data
from model_code.variants import build_model, get_variant

SPEC = get_variant("medium-range")
HOURLY_2T = {"variables": ["2t"], "by": "hour"}
VAL_PERIOD = ("2019-03-19T00:00", "2019-03-22T00:00")
BASE = tiny_march({"data.val_period": list(VAL_PERIOD)})
INIT = np.datetime64("2019-03-25T05:00", "ns")
"""A training sample's initialisation: inputs at 23 and 5 UTC, targets at 11 and 17 UTC."""



def config(tmp_path=None, overrides: dict | None = None):
    out = {"checkpoint.out_dir": str(tmp_path / "run")} if tmp_path is not None else {}
    return config_from_dict(BASE, {**out, **(overrides or {})})


def hour_of(t: np.datetime64) -> int:
    return int(str(t)[11:13])


@pytest.fixture(scope="module")
def t2m() -> xr.DataArray:
    with xr.open_dataset(BRITISH_ISLES) as ds:
        return ds.t2m.load()


@pytest.fixture(scope="module")
def data():
    return open_data(config(None, {"data.deseasonalise": HOURLY_2T}))


@pytest.fixture(scope="module")
def clim(data) -> xr.Dataset:
    return data.climatology(["2t"], ["hour"])


@pytest.fixture(scope="module")
def stats(data, clim) -> dict:
    return data.surface_stats(climatology=clim)


def deseasonalised_model(clim: xr.Dataset, stats: dict, *, seed: int = 1, lags: Lags | None = None) -> Aurora:
    overrides = {"surf_stats": stats, "deseasonalise": climatology_argument(clim, ["2t"]),
                 **(lags.overrides if lags else {})}
    model = build_model(SPEC, "tiny", seed=seed, overrides=overrides)
    model.set_climatology(clim)
    return model


def hourly(clim: xr.Dataset, t: np.datetime64) -> torch.Tensor:
    """The climatology of 2 m temperature at `t`'s hour, on the 32 rows Aurora keeps of 33."""
    return torch.from_numpy(clim.t2m.sel(hour=hour_of(t)).values[:32])


# ---- the climatology ----------------------------------------------------------------------------


def test_the_climatology_is_the_hourly_mean_of_the_training_times_alone(data, clim, t2m, tmp_path):
    ds = data.train
    read = np.unique((ds.init_times[:, None] + ds._offsets()[None, :]).ravel())
    start, end = (np.datetime64(t, "ns") for t in VAL_PERIOD)
    assert not ((read >= start) & (read < end)).any() and len(read) > 24 * 20
    expected = climatology(t2m.sel(time=read).to_dataset(), (read[0], read[-1]), by=("hour",))
    np.testing.assert_array_equal(clim.hour.values, np.arange(24))
    np.testing.assert_array_equal(clim.n_samples.values, expected.n_samples.values)
    np.testing.assert_allclose(clim.t2m.values, expected.t2m.values, rtol=1e-6)
    # The diurnal cycle is what it removes: afternoon is well over a kelvin warmer than night
    assert float((clim.t2m.sel(hour=14) - clim.t2m.sel(hour=5)).mean()) > 1.0

    warmer = t2m.copy(data=np.where(((t2m.time >= start) & (t2m.time < end)).values[:, None, None],
                                    t2m.values + 15.0, t2m.values))  # only validation times change
    warmer.to_dataset().assign_attrs(xr.open_dataset(BRITISH_ISLES).attrs).to_netcdf(tmp_path / "warmer.nc")
    other = open_data(config(None, {"data.deseasonalise": HOURLY_2T, "data.paths": [str(tmp_path / "warmer.nc")]}))
    xr.testing.assert_identical(other.climatology(["2t"], ["hour"]), clim)


def test_de_seasonalised_variables_are_normalised_by_their_anomalies(data, clim, stats):
    raw = data.surface_stats()
    location, scale = stats["2t"]
    assert abs(location) < 0.5 and 0.3 < scale < raw["2t"][1]  # anomalies: centred on 0, less spread
    assert abs(raw["2t"][0] - 280) < 10
    # the same estimate as preprocess's on the anomalies of the training inputs
    ds = data.train
    read = np.unique((ds.init_times[:, None] + ds._offsets()[None, :]).ravel())
    inputs = np.unique((ds.init_times[:, None] + ds._offsets()[None, :-len(ds.lead_steps)]).ravel())
    times = inputs[np.unique(np.linspace(0, len(inputs) - 1, min(240, len(inputs))).round().astype(int))]
    fields = xr.Dataset({"t2m": (("time", "latitude", "longitude"), ds._fields["t2m"].values(time=times).values)},
                        coords={"time": times, "latitude": clim.latitude, "longitude": clim.longitude})
    period = (str(read[0]), str(read[-1]))  # every training time: the climatology's period
    expected = aurora_surf_stats(normalisation_stats(fields, period, "mad", climatology=clim),
                                 allow_anomalies=True)["2t"]
    assert stats["2t"] == pytest.approx(expected)


# ---- the model ----------------------------------------------------------------------------------


def test_the_model_forecasts_anomalies_plus_the_climatology_of_each_valid_hour(clim, stats):
    plain = build_model(SPEC, "tiny", seed=1, overrides={"surf_stats": stats})
    model = deseasonalised_model(clim, stats, seed=2)
    model.load_state_dict(plain.state_dict())  # plain weights: the model keeps its own climatology
    assert torch.isfinite(model.climatology).all() and model.climatology.shape == (24, 1, 33, 40)
    ds = WindowDataset.from_files([BRITISH_ISLES], SPEC, history=2, levels=(500, 850), fill_missing="mean",
                                  fill_missing_dynamic="mean", crop=True)
    batch = ds[int(np.flatnonzero(ds.init_times == INIT)[0])].inputs
    input_times = [INIT - np.timedelta64(6, "h"), INIT]
    anomalies = torch.stack([batch.surf_vars["2t"][0, j] - torch.from_numpy(clim.t2m.sel(hour=hour_of(t)).values)
                             for j, t in enumerate(input_times)])[None]
    anomaly_batch = dataclasses.replace(batch, surf_vars={**batch.surf_vars, "2t": anomalies})

    full = list(forecast_steps(model, batch, 2))
    plain_steps = list(forecast_steps(plain, anomaly_batch, 2))
    for k, (a, p) in enumerate(zip(full, plain_steps, strict=True), start=1):
        valid = INIT + np.timedelta64(6 * k, "h")
        assert a.metadata.time[0] == valid.astype("datetime64[us]").item()
        torch.testing.assert_close(a.surf_vars["2t"][0, 0], p.surf_vars["2t"][0, 0] + hourly(clim, valid),
                                   rtol=0, atol=2e-3)
        for name in ("msl", "10u"):  # the rest is the plain model's forecast of the anomaly inputs
            torch.testing.assert_close(a.surf_vars[name], p.surf_vars[name], rtol=1e-6, atol=2e-3)
        assert 265 < float(a.surf_vars["2t"].min()) and float(a.surf_vars["2t"].max()) < 295
    # the hour matters: the climatology 6 h later is another field
    assert float((hourly(clim, INIT + np.timedelta64(6, "h")) - hourly(clim, INIT)).abs().max()) > 1.0


def test_lags_of_a_de_seasonalised_variable_are_anomalies_too_and_roll_on_as_the_data(clim, stats, t2m):
    chain = Lags(hours=(12, 18, 24), variables=("2t",))
    ds = WindowDataset.from_files([BRITISH_ISLES], SPEC, history=2, levels=(500, 850), fill_missing="mean",
                                  fill_missing_dynamic="mean", crop=True, lags=chain)
    model = deseasonalised_model(clim, stats, lags=chain)
    batch = ds[int(np.flatnonzero(ds.init_times == INIT)[0])].inputs
    preds = list(forecast_steps(model, batch, 4))
    for k, pred in enumerate(preds, start=1):  # input time t + 6k h needs 2t at t + 6k - 24 h <= t: the data
        truth = t2m.sel(time=INIT + np.timedelta64(6 * k - 24, "h")).values[:32]
        np.testing.assert_allclose(pred.surf_vars["2t_lag24h"][0, 0].numpy(), truth, rtol=0, atol=2e-3)


def test_a_model_refuses_hours_its_climatology_never_saw_and_a_climatology_never_given(clim, stats):
    no_five = clim.where(clim.hour != 5, drop=True)
    model = deseasonalised_model(no_five, stats)
    assert len(climatology_argument(no_five, ["2t"])["groups"]) == 23
    ds = WindowDataset.from_files([BRITISH_ISLES], SPEC, history=2, levels=(500, 850), fill_missing="mean",
                                  fill_missing_dynamic="mean", crop=True)
    batch = ds[int(np.flatnonzero(ds.init_times == INIT)[0])].inputs  # inputs at 23 and 5 UTC
    with pytest.raises(DataError, match=r"no training data for hour 5, which 2019-03-25T05:00 falls in"):
        list(forecast_steps(model, batch, 1))
    unset = build_model(SPEC, "tiny", overrides={"surf_stats": stats,
                                                  "deseasonalise": climatology_argument(clim, ["2t"])})
    with pytest.raises(DataError, match="climatology .* was never given"):
        list(forecast_steps(unset, batch, 1))


# ---- the config and its checks ------------------------------------------------------------------


def test_by_default_nothing_changes_and_the_options_round_trip_through_yaml(tmp_path):
    cfg = config()
    assert cfg.data.deseasonalise == Deseasonalise() and not cfg.data.deseasonalise.enabled
    assert cfg.data.robust == "mad"
    path = tmp_path / "train.yaml"
    path.write_text("variant: medium-range\ntimestep_hours: 6\ndata:\n  paths: [era5.nc]\n"
                    "  normalisation: training\n  robust: iqr\n  deseasonalise: {variables: [2t], by: hour}\n")
    loaded = load_config(path)
    assert loaded.data.deseasonalise == Deseasonalise(("2t",), "hour") and loaded.data.robust == "iqr"
    assert loaded.data.deseasonalise.groupings == ("hour",)
    save_config(loaded, tmp_path / "again.yaml")
    assert load_config(tmp_path / "again.yaml") == loaded
    several = config(None, {"data.deseasonalise": {"variables": ["2t", "msl"], "by": ["month", "hour"]}})
    assert several.data.deseasonalise.groupings == ("month", "hour")


@pytest.mark.parametrize(("overrides", "field", "says"), [
    ({"data.deseasonalise": {"variables": ["2t"], "by": "week"}}, "data.deseasonalise.by", "one of dayofyear"),
    ({"data.deseasonalise": {"variables": ["2t"], "by": []}}, "data.deseasonalise.by", "one of dayofyear"),
    ({"data.deseasonalise": {"variables": ["2t"], "by": ["hour", "hour"]}}, "data.deseasonalise.by", "distinct"),
    ({"data.deseasonalise": {"variables": ["t"]}}, "data.deseasonalise.variables", "'t' is not a surface"),
    ({"data.deseasonalise": {"variables": ["pm2p5"]}}, "data.deseasonalise.variables", "medium-range"),
    ({"data.deseasonalise": {"variables": ["2t", "2t"]}}, "data.deseasonalise.variables", "once"),
    ({"data.deseasonalise": HOURLY_2T, "data.normalisation": "aurora"}, "data.normalisation", "needs training"),
    ({"data.deseasonalise": HOURLY_2T, "data.augment.longitude_roll_deg": 30}, "data.deseasonalise",
     "not the climatology"),
    ({"data.deseasonalise": {"variables": ["10u"]}, "data.augment.wind_rotation_deg": 20},
     "data.deseasonalise.variables", "turns the winds"),
    ({"data.robust": "iqr", "data.normalisation": "aurora"}, "data.robust", "nothing is estimated"),
    ({"data.robust": "median"}, "data.robust", "must be one of 'mad', 'iqr', 'none'"),
])
def test_bad_options_are_config_errors_naming_the_field(overrides, field, says):
    with pytest.raises(ConfigError) as e:
        config(None, overrides)
    assert e.value.field == field and says in e.value.message


def test_the_air_pollution_species_kept_non_negative_cannot_be_de_seasonalised():
    with pytest.raises(ConfigError) as e:
        config_from_dict({**BASE, "variant": "air-pollution", "timestep_hours": None,
                          "data": {**BASE["data"], "levels": None}}, {"data.deseasonalise": {"variables": ["pm2p5"]}})
    assert e.value.field == "data.deseasonalise.variables" and "kept non-negative" in e.value.message


def test_what_the_data_cannot_give_is_refused_before_any_model_is_built(monkeypatch):
    monkeypatch.setattr(windows_module, "validate_fields", lambda *a, **k: pytest.fail("the values were read"))
    with pytest.raises(ConfigError) as e:  # filled in the inputs: it has no season of its own
        open_data(config(None, {"data.deseasonalise": {"variables": ["10u"]}}))
    assert e.value.field == "data.deseasonalise.variables" and "10u (u10)" in e.value.message
    monkeypatch.undo()
    with pytest.raises(ConfigError) as e:  # the days validation reads are never in the training period
        open_data(config(None, {"data.deseasonalise": {"variables": ["2t"], "by": "dayofyear"}}))
    assert e.value.field == "data.deseasonalise.by" and "(dayofyear 79; dayofyear 80; dayofyear 81)" in e.value.message


def test_robust_scaling_chooses_the_estimator_of_the_training_statistics(data):
    cfg = config(None, {"data.robust": "iqr"})
    trainer = Trainer(cfg)
    try:
        assert trainer.model_overrides["surf_stats"]["2t"] == pytest.approx(data.surface_stats(robust="iqr")["2t"])
        assert tuple(trainer.model.surf_stats["2t"]) == pytest.approx(data.surface_stats(robust="iqr")["2t"])
    finally:
        trainer.close()
    assert data.surface_stats(robust="iqr")["2t"][1] != pytest.approx(data.surface_stats()["2t"][1], rel=1e-3)
    assert data.surface_stats(robust="none")["2t"][0] != pytest.approx(data.surface_stats()["2t"][0], rel=1e-6)


# ---- training, its checkpoint and forecasts from it ---------------------------------------------


def test_a_short_run_checkpoints_a_model_whose_every_forecast_is_the_full_field(tmp_path, t2m, clim):
    cfg = config(tmp_path, {"data.deseasonalise": HOURLY_2T, "rollout.curriculum": [[0, 2]],
                            "early_stopping.lead_steps": [1, 2]})
    result, trained, train = fit_keeping_model(cfg)
    assert result.steps == 2 and all(np.isfinite(h["loss"]) for h in result.history if "loss" in h)
    np.testing.assert_array_equal(trained.climatology[:, 0].numpy(), clim.t2m.values)

    info = read_checkpoint_info(result.last_checkpoint)
    assert '"deseasonalise"' in info.metadata["model_overrides"]
    loaded, _ = load_checkpoint(result.last_checkpoint)
    assert type(loaded) is type(trained) and loaded.deseasonalised == ("2t",)
    assert torch.equal(loaded.climatology, trained.climatology)
    i = int(np.flatnonzero(train.init_times == INIT)[0])
    for a, b in zip(forecast_steps(trained, train[i].inputs, 2), forecast_steps(loaded, train[i].inputs, 2),
                    strict=True):
        torch.testing.assert_close(a.surf_vars["2t"], b.surf_vars["2t"], rtol=0, atol=0)

    job = run_forecast_job(ForecastJob("medium-range", (str(BRITISH_ISLES),), 3, str(tmp_path / "forecast.nc"),
                                       checkpoint=result.last_checkpoint, init_time=str(INIT), crop_to_patch=True))
    values = job.dataset["t2m"].values
    assert values.shape == (3, 32, 40) and 265 < values.min() and values.max() < 295
    truth = t2m.sel(time=job.dataset.time.values).values[:, :32]
    assert np.abs(values - truth).mean() < 3.0  # a forecast of the field, not of its anomaly
    np.testing.assert_allclose(values, forecast(loaded, train.spec, train.window(i), 3)["t2m"].values,
                               rtol=0, atol=1e-4)

    forecasts, _ = hindcast_module.hindcast(loaded, "medium-range", [str(BRITISH_ISLES)], steps=2, inits=[INIT],
                                            fill_missing="mean", fill_missing_dynamic="mean", crop=True,
                                            levels=(500, 850))
    assert 265 < float(forecasts["t2m"].min()) and float(forecasts["t2m"].max()) < 295
