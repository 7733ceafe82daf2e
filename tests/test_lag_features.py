"""Lagged inputs (`data.lags`, model_code/data/lags.py): samples, the model, checks, training and forecasts.

On the real hourly 2 m temperature of the British Isles (March 2019) at the medium-range
variant's 6 h step with two input times, where a 24 h lag of 2t lies beyond the history window;
the absent inputs are filled with Aurora's means as in the demo.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import xarray as xr
from aurora import Aurora

from conftest import BRITISH_ISLES, fit_keeping_model, tiny_march
from model_code.checkpoint import load_checkpoint, load_weights, read_checkpoint_info
from model_code.data import windows as windows_module
from model_code.data.lags import Lags, lags_of, rollout_problem
from model_code.data.synthetic import synthetic_window
from model_code.data.windows import WindowDataset
from model_code.errors import ConfigError, DataError
from model_code.evaluation import hindcast as hindcast_module
from model_code.forecast import ForecastJob, forecast, forecast_steps, run_forecast_job
from model_code.training import load_config, save_config
from model_code.training.config import config_from_dict
from model_code.training.data import open_data
from model_code.training.losses import build_loss
from model_code.variants import build_model, get_variant

SPEC = get_variant("medium-range")  # 6 h step: the hourly data give a sample every hour
LAG = Lags(hours=(24,), variables=("2t",))
"""One step only: the next input time needs 2t 18 h back, which no input holds."""
CHAIN = Lags(hours=(12, 18, 24), variables=("2t",))
"""Each lag's next value is in the inputs (the history or the lag 6 h shorter): rollouts go on."""
BASE = tiny_march({"data.val_period": ["2019-03-19T00:00", "2019-03-22T00:00"]})
INIT = np.datetime64("2019-03-25T00:00", "ns")



def config(tmp_path=None, overrides: dict | None = None):
    out = {"checkpoint.out_dir": str(tmp_path / "run")} if tmp_path is not None else {}
    return config_from_dict(BASE, {**out, **(overrides or {})})


def dataset(lags: Lags | None = None) -> WindowDataset:
    return WindowDataset.from_files([BRITISH_ISLES], SPEC, history=2, levels=(500, 850), fill_missing="mean",
                                    fill_missing_dynamic="mean", crop=True, lags=lags)


def as_argument(lags: Lags) -> dict:
    return {"hours": list(lags.hours), "variables": list(lags.variables)}


@pytest.fixture(scope="module")
def t2m() -> xr.DataArray:
    with xr.open_dataset(BRITISH_ISLES) as ds:
        return ds.t2m.load()


@pytest.fixture(scope="module")
def plain() -> WindowDataset:
    return dataset()


@pytest.fixture(scope="module")
def chain() -> WindowDataset:
    return dataset(CHAIN)


# ---- samples ----------------------------------------------------------------------------------


def test_a_samples_lagged_input_is_the_data_the_lag_before_each_input_time(t2m):
    ds = dataset(LAG)
    i = int(np.flatnonzero(ds.init_times == INIT)[0])
    sample = ds[i]
    lagged = sample.inputs.surf_vars["2t_lag24h"]  # (b, t, h, w)
    assert lagged.shape == sample.inputs.surf_vars["2t"].shape == (1, 2, 33, 40)
    for j, hours in enumerate((30, 24)):  # input times t - 6 h and t
        truth = t2m.sel(time=INIT - np.timedelta64(hours, "h")).values
        np.testing.assert_array_equal(lagged[0, j].numpy(), truth)
    np.testing.assert_array_equal(sample.inputs.surf_vars["2t"][0, 1].numpy(), t2m.sel(time=INIT).values)
    window = ds.window(i)
    assert window["t2m_lag24h"].attrs["aurora_name"] == "2t_lag24h" and window["t2m_lag24h"].attrs["units"] == "K"


def test_samples_lacking_their_lagged_times_are_dropped_and_the_rest_is_as_without_lags(plain, t2m):
    lagged = dataset(LAG)
    first = t2m.time.values[0]
    assert plain.init_times[0] == first + np.timedelta64(6, "h")
    assert lagged.init_times[0] == first + np.timedelta64(30, "h")  # 24 h lag of the input 6 h back
    np.testing.assert_array_equal(lagged.init_times, plain.init_times[24:])
    assert lagged.times_used(0)[0] == first and plain.times_used(0)[0] == first
    i, j = (int(np.flatnonzero(d.init_times == INIT)[0]) for d in (lagged, plain))
    a, b = lagged[i], plain[j]
    assert set(a.inputs.surf_vars) == {*SPEC.surf_vars, "2t_lag24h"} and set(b.inputs.surf_vars) == set(SPEC.surf_vars)
    for name in SPEC.surf_vars:
        assert torch.equal(a.inputs.surf_vars[name], b.inputs.surf_vars[name])
    for x, y in zip(a.targets, b.targets, strict=True):  # lagged inputs are never targets
        assert set(x.surf_vars) == set(y.surf_vars) == set(SPEC.output_surf_vars)
        for k in x.surf_vars:
            torch.testing.assert_close(x.surf_vars[k], y.surf_vars[k], rtol=0, atol=0, equal_nan=True)


def test_without_lags_the_model_and_the_config_are_as_before(plain):
    model = build_model(SPEC, "tiny")
    assert type(model) is Aurora and model.surf_vars == SPEC.surf_vars and lags_of(model) is None
    assert not any("lag" in k for k in model.state_dict())
    cfg = config()
    assert cfg.data.lags == Lags() and not cfg.data.lags.enabled and cfg.data.lags.overrides == {}
    assert plain.lags is None and set(plain[0].inputs.surf_vars) == set(SPEC.surf_vars)


def test_lags_round_trip_through_a_saved_config(tmp_path):
    cfg = config(tmp_path, {"data.lags": as_argument(CHAIN)})
    assert cfg.data.lags == CHAIN
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg


# ---- the checks ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("lags", "extra", "field", "says"), [
    ({"hours": [20], "variables": ["2t"]}, {}, "data.lags.hours", "multiples of the data's 6 h step"),
    ({"hours": [0], "variables": ["2t"]}, {}, "data.lags.hours", "positive"),
    ({"hours": [6], "variables": ["2t"]}, {}, "data.lags.hours", "already an input time"),
    ({"hours": [24, 24], "variables": ["2t"]}, {}, "data.lags.hours", "each lag once"),
    ({"hours": [], "variables": ["2t"]}, {}, "data.lags.hours", "each lag once"),
    ({"hours": [24], "variables": []}, {}, "data.lags.variables", "name each surface input"),
    ({"hours": [24], "variables": ["t"]}, {}, "data.lags.variables", "'t' is not a surface input"),
    ({"hours": [24], "variables": ["pm2p5"]}, {}, "data.lags.variables", "medium-range variant"),
    ({"hours": [24], "variables": ["10u"]}, {"data.augment.wind_rotation_deg": 20}, "data.lags.variables",
     "turns the winds but not their lags"),
    ({"hours": [24], "variables": ["2t"]}, {"rollout.curriculum": [[0, 1], [1, 2]]}, "data.lags.hours",
     "add lags of 12, 18 h"),
    ({"hours": [24], "variables": ["2t"]}, {"early_stopping.lead_steps": [1, 2]}, "data.lags.hours",
     "rollouts of 2 steps"),
    ({"hours": [24], "variables": ["2t"]}, {"distil.teacher": "t.safetensors"}, "data.lags", "teacher"),
])
def test_bad_lags_are_config_errors_naming_the_field(lags, extra, field, says):
    with pytest.raises(ConfigError) as e:
        config(None, {"data.lags": lags, **extra})
    assert e.value.field == field and says in e.value.message


def test_lags_that_can_be_moved_on_allow_longer_rollouts():
    cfg = config(None, {"data.lags": as_argument(CHAIN), "rollout.curriculum": [[0, 1], [1, 3]],
                        "early_stopping.lead_steps": [1, 2]})
    assert cfg.rollout.longest == 3


def test_lags_the_data_cannot_give_are_config_errors_before_the_validator_reads_a_value(monkeypatch):
    monkeypatch.setattr(windows_module, "validate_fields", lambda *a, **k: pytest.fail("the values were read"))
    with pytest.raises(ConfigError) as e:  # filled in the inputs: its lag would be invented
        open_data(config(None, {"data.lags": {"hours": [24], "variables": ["10u"]}}))
    assert e.value.field == "data.lags.variables" and "10u (u10)" in e.value.message
    with pytest.raises(ConfigError) as e:  # 744 h + 6 h of history + 6 h ahead: longer than the 743 h of March
        open_data(config(None, {"data.lags": {"hours": [744], "variables": ["2t"]}}))
    assert e.value.field == "data.lags.hours" and "longer than the data" in e.value.message


# ---- the model ----------------------------------------------------------------------------------


def test_the_model_moves_the_lags_on_exactly_from_its_inputs_then_from_its_own_forecast(chain, t2m):
    model = build_model(SPEC, "tiny", overrides=CHAIN.overrides)
    assert model.surf_vars == (*SPEC.surf_vars, "2t_lag12h", "2t_lag18h", "2t_lag24h")
    i = int(np.flatnonzero(chain.init_times == INIT)[0])
    preds = list(forecast_steps(model, chain[i].inputs, 5))
    for k, pred in enumerate(preds[:4], start=1):  # input time t + 6k h needs 2t at t + 6k - 24 h <= t: the data
        truth = t2m.sel(time=INIT + np.timedelta64(6 * k - 24, "h")).values[:32]  # Aurora drops the 33rd row
        np.testing.assert_allclose(pred.surf_vars["2t_lag24h"][0, 0].numpy(), truth, rtol=0, atol=1e-3)
    torch.testing.assert_close(preds[4].surf_vars["2t_lag24h"], preds[0].surf_vars["2t"], rtol=0, atol=1e-3)


def test_the_air_pollution_lags_of_24_and_48_h_roll_on_at_its_12_h_step(tmp_path):
    spec, lags = get_variant("air-pollution"), Lags(hours=(24, 48), variables=("pm2p5", "2t"))
    assert rollout_problem(lags, 2, 12) is None
    times = np.datetime64("2024-01-01T00", "ns") + np.arange(8) * np.timedelta64(12, "h")
    cams = synthetic_window(spec, np.linspace(75, -75, 31), np.arange(63) * 360 / 63, times, levels=(500, 850), seed=1)
    cams.to_netcdf(tmp_path / "cams.nc")
    data = WindowDataset.from_files([tmp_path / "cams.nc"], spec, levels=(500, 850), lags=lags, validate=False)
    np.testing.assert_array_equal(data.init_times, times[5:7])  # 48 h before the input 12 h back, 1 step ahead
    model = build_model(spec, "tiny", overrides=lags.overrides)
    assert model.surf_vars[-4:] == ("pm2p5_lag24h", "pm2p5_lag48h", "2t_lag24h", "2t_lag48h")
    preds = list(forecast_steps(model, data[0].inputs, 3))
    assert all(torch.isfinite(p.surf_vars[name]).all() for p in preds for name in spec.output_surf_vars)
    init = data.init_times[0]
    for k, pred in enumerate(preds, start=1):  # the 48 h lag of input time t + 12k h: data up to t
        truth = cams["pm2p5"].sel(time=init + np.timedelta64(12 * k - 48, "h")).values[:30]  # 31 rows: 30 kept
        np.testing.assert_allclose(pred.surf_vars["pm2p5_lag48h"][0, 0].numpy(), truth, rtol=1e-4)
    torch.testing.assert_close(preds[2].surf_vars["pm2p5_lag24h"], preds[0].surf_vars["pm2p5"], rtol=1e-4, atol=0)


def test_a_lag_the_inputs_cannot_move_on_forecasts_one_step_and_refuses_more(plain):
    lagged = dataset(LAG)
    model = build_model(SPEC, "tiny", overrides=LAG.overrides)
    batch = lagged[int(np.flatnonzero(lagged.init_times == INIT)[0])].inputs
    (pred,) = forecast_steps(model, batch, 1)
    assert torch.isfinite(pred.surf_vars["2t"]).all() and torch.isnan(pred.surf_vars["2t_lag24h"]).all()
    with pytest.raises(DataError, match=r"a rollout of 2 steps: .*24 h .*add lags of 12, 18 h"):
        list(forecast_steps(model, batch, 2))
    with pytest.raises(DataError, match="the batch lacks: 2t_lag24h"):  # a window without them is refused
        list(forecast_steps(model, plain[0].inputs, 1))


def test_lagged_inputs_are_never_scored(chain):
    cfg = config(None, {"data.lags": as_argument(CHAIN)})
    model = build_model(SPEC, "tiny", overrides=CHAIN.overrides)
    sample = chain[int(np.flatnonzero(chain.init_times == INIT)[0])]
    (pred,) = forecast_steps(model, sample.inputs, 1)
    loss = build_loss(SPEC, cfg.loss)
    before = loss([(pred, sample.targets[0])], (1,))
    moved = dataclasses.replace(pred, surf_vars={**pred.surf_vars, **{
        name: pred.surf_vars[name] + 50.0 for name in CHAIN.names}})
    after = loss([(moved, sample.targets[0])], (1,))
    assert float(after.total) == float(before.total) and not set(CHAIN.names) & set(before.per_variable)


def test_published_weights_load_with_the_lags_embedded_at_zero_and_forecast_as_before(tmp_path, chain):
    published = build_model(SPEC, "tiny", seed=3)
    path = tmp_path / "aurora-0.25-finetuned.ckpt"  # the published format: a state dict saved by torch
    torch.save(published.state_dict(), path)
    model = build_model(SPEC, "tiny", seed=4, overrides=CHAIN.overrides)
    load_weights(model, str(path))
    assert all(not model.encoder.surf_token_embeds.weights[name].any() for name in CHAIN.names)
    batch = chain[int(np.flatnonzero(chain.init_times == INIT)[0])].inputs
    plain_batch = dataclasses.replace(batch, surf_vars={k: batch.surf_vars[k] for k in SPEC.surf_vars})
    (before,), (after,) = forecast_steps(published, plain_batch, 1), forecast_steps(model, batch, 1)
    for name in SPEC.output_surf_vars:
        torch.testing.assert_close(after.surf_vars[name], before.surf_vars[name])


# ---- training, its checkpoint and forecasts from it ---------------------------------------------


def test_a_short_run_with_lags_checkpoints_a_model_whose_forecasts_build_the_same_lagged_inputs(
        tmp_path, monkeypatch):
    cfg = config(tmp_path, {"data.lags": as_argument(CHAIN), "rollout.curriculum": [[0, 2]],
                            "early_stopping.lead_steps": [1, 2]})
    result, trained, train = fit_keeping_model(cfg)
    assert result.steps == 2 and all(np.isfinite(h["loss"]) for h in result.history if "loss" in h)
    assert not any(name in key for h in result.history for key in h for name in CHAIN.names)

    info = read_checkpoint_info(result.last_checkpoint)
    assert info.lags == CHAIN
    loaded, _ = load_checkpoint(result.last_checkpoint)
    assert type(loaded) is type(trained) and loaded.surf_vars == trained.surf_vars and lags_of(loaded) == CHAIN
    assert tuple(loaded.surf_stats["2t_lag24h"]) == tuple(loaded.surf_stats["2t"]) == tuple(trained.surf_stats["2t"])
    i = int(np.flatnonzero(train.init_times == INIT)[0])
    window = train.window(i)
    for a, b in zip(forecast_steps(trained, train[i].inputs, 3), forecast_steps(loaded, train[i].inputs, 3),
                    strict=True):
        for name in SPEC.output_surf_vars:
            torch.testing.assert_close(a.surf_vars[name], b.surf_vars[name], rtol=0, atol=0)

    job = run_forecast_job(ForecastJob("medium-range", (str(BRITISH_ISLES),), 3, str(tmp_path / "forecast.nc"),
                                       checkpoint=result.last_checkpoint, init_time=str(INIT), crop_to_patch=True))
    for name in CHAIN.names:
        key = name.replace("2t", "t2m", 1)
        np.testing.assert_array_equal(job.window[key].values, window[key].values)
        np.testing.assert_array_equal(job.window[key].time.values, window.time.values)
    expected = forecast(loaded, train.spec, window, 3)
    np.testing.assert_allclose(job.dataset["t2m"].values, expected["t2m"].values, rtol=0, atol=1e-4)

    seen = []
    real = hindcast_module.forecast
    monkeypatch.setattr(hindcast_module, "forecast", lambda m, s, w, *a, **k: seen.append(w) or real(m, s, w, *a, **k))
    forecasts, _ = hindcast_module.hindcast(loaded, "medium-range", [str(BRITISH_ISLES)], steps=2, inits=[INIT],
                                            fill_missing="mean", fill_missing_dynamic="mean", crop=True,
                                            levels=(500, 850))
    assert np.isfinite(forecasts["t2m"].values).all()
    (hindcast_window,) = seen
    for name in CHAIN.names:
        key = name.replace("2t", "t2m", 1)
        np.testing.assert_array_equal(hindcast_window[key].values, window[key].values)


def test_validation_samples_may_take_their_lags_from_before_the_period_and_training_samples_never_read_it():
    data = open_data(config(overrides={"data.lags": as_argument(LAG)}))
    plain = open_data(config())
    start, end = (np.datetime64(t, "ns") for t in BASE["data"]["val_period"])
    # the same validation initialisations as without lags: history and targets inside the period
    assert np.array_equal(data.val.init_times, plain.val.init_times)
    reads = np.concatenate([data.val.times_used(i) for i in range(len(data.val))])
    assert reads.min() < start <= data.val.init_times.min() - np.timedelta64(6, "h")  # lags reach back, history not
    assert reads.max() < end
    for i in range(len(data.train)):
        used = data.train.times_used(i)
        assert not ((used >= start) & (used < end)).any()
