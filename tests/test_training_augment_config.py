"""Augmentation and extreme-event sampling from the training config (`data.augment`, `data.extreme_sampling`).

On the real hourly 2 m temperature of the British Isles (March 2019) with the demo's
treatment of the absent variables (filled with Aurora's means in the inputs, NaN targets),
and, for the longitude roll, which needs a global grid, on the real 10° IFS analyses.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr
import yaml

from conftest import BRITISH_ISLES, IFS_8_STEPS, tiny_march
from model_code.data import windows as windows_module
from model_code.data.ingest import Field
from model_code.data.loader import collate
from model_code.data.samples import Sample
from model_code.errors import ConfigError
from model_code.training import load_config, save_config
from model_code.training.config import config_from_dict, with_overrides
from model_code.training.sample_config import AugmentConfig, ExtremeSamplingConfig
from model_code.training.data import EpochSampler, open_data, train_loader
from model_code.training.trainer import Trainer

BASE = tiny_march({"train.max_steps": 3, "train.val_every": 3})
"""The demo's treatment of the real March series, 6 h steps, two input times, one validation day."""

AUGMENT = {"data.augment.noise_scale": 0.05, "data.augment.wind_rotation_deg": 30, "data.augment.random_crop": [24, 32]}
EXTREME = {"data.extreme_sampling": {"variable": "2t", "quantile": 0.9, "factor": 4}}



def config(tmp_path, overrides: dict | None = None, base: dict = BASE):
    return config_from_dict(base, {"checkpoint.out_dir": str(tmp_path / "run"), **(overrides or {})})


def same(a: Sample, b: Sample) -> bool:
    """Every tensor of the two samples (inputs, targets, statics, grid) equal, NaN where NaN."""
    for x, y in [(a.inputs, b.inputs), *zip(a.targets, b.targets)]:
        if not (torch.equal(x.metadata.lat, y.metadata.lat) and torch.equal(x.metadata.lon, y.metadata.lon)):
            return False
        for group in ("surf_vars", "static_vars", "atmos_vars"):
            gx, gy = getattr(x, group), getattr(y, group)
            if gx.keys() != gy.keys() or any(
                    gx[k].shape != gy[k].shape or not torch.allclose(gx[k], gy[k], rtol=0, atol=0, equal_nan=True)
                    for k in gx):
                return False
    return len(a.targets) == len(b.targets)


# --------------------------------------------------------------------------------------
# The config


def test_both_options_are_off_by_default_and_round_trip_through_a_saved_config(tmp_path):
    default = config(tmp_path)
    assert default.data.augment == AugmentConfig() and not default.data.extreme_sampling.enabled

    cfg = config(tmp_path, {**AUGMENT, **EXTREME, "data.augment.noise_variables": ["2t", "t"]})
    assert cfg.data.augment == AugmentConfig(noise_scale=0.05, noise_variables=("2t", "t"), wind_rotation_deg=30.0,
                                             random_crop=(24, 32))
    assert cfg.data.extreme_sampling == ExtremeSamplingConfig(variable="2t", quantile=0.9, factor=4.0)
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg
    assert yaml.safe_load((tmp_path / "c.yaml").read_text())["data"]["augment"]["random_crop"] == [24, 32]

    changed = with_overrides(cfg, {"data.augment.noise_scale": 0.1, "data.extreme_sampling.factor": 2})
    assert changed.data.augment.noise_scale == 0.1 and changed.data.augment.random_crop == (24, 32)
    assert changed.data.extreme_sampling.factor == 2.0 and changed.data.extreme_sampling.variable == "2t"


EXTREME_2T = {"data.extreme_sampling.variable": "2t"}


@pytest.mark.parametrize("overrides, field, message", [
    ({"data.augment.noise_scale": -0.1}, "data.augment.noise_scale", "standard deviation >= 0"),
    ({"data.augment.noise_scale": float("nan")}, "data.augment.noise_scale", "got nan"),
    ({"data.augment.noise_variables": ["2m_t"]}, "data.augment.noise_variables",
     "'2m_t' is not a time-dependent input of the medium-range variant"),
    ({"data.augment.noise_variables": ["lsm"]}, "data.augment.noise_variables", "statics do not"),
    ({"variant": "wave", "data.augment.noise_variables": ["swh", "mwd"]}, "data.augment.noise_variables",
     "'mwd' is not a time-dependent input of the wave variant that takes noise (directions"),
    ({"data.augment.noise_variables": []}, "data.augment.noise_variables", "at least one variable"),
    ({"data.augment.noise": 0.1}, "data.augment.noise", "did you mean 'data.augment.noise_scale'"),
    ({"data.augment.wind_rotation_deg": 200}, "data.augment.wind_rotation_deg", "[0, 180] degrees (0: off); got 200.0"),
    ({"data.augment.wind_rotation_deg": -5}, "data.augment.wind_rotation_deg", "got -5.0"),
    ({"data.augment.longitude_roll_deg": 270}, "data.augment.longitude_roll_deg", "[0, 180] degrees"),
    ({"data.augment.random_crop": [26, 32]}, "data.augment.random_crop", "must fit the patch size 4"),
    ({"model.patch_size": 8, "data.augment.random_crop": [28, 32]}, "data.augment.random_crop",
     "must fit the patch size 4 and 8"),
    ({"data.augment.random_crop": [24, 30]}, "data.augment.random_crop", "got [24, 30]"),
    ({"data.augment.random_crop": [0, 32]}, "data.augment.random_crop", "got [0, 32]"),
    ({"data.augment.random_crop": [24]}, "data.augment.random_crop", "expected 2 values"),
    ({**EXTREME_2T, "data.extreme_sampling.variable": "t", "data.extreme_sampling.quantile": 0.9},
     "data.extreme_sampling.variable", "predicts no surface variable 't'; it predicts 2t, 10u, 10v, msl"),
    ({"data.extreme_sampling.quantile": 0.9}, "data.extreme_sampling.variable", "name the variable"),
    (EXTREME_2T, "data.extreme_sampling.threshold", "give one of quantile and threshold"),
    ({**EXTREME_2T, "data.extreme_sampling.quantile": 0.9, "data.extreme_sampling.threshold": 285.0},
     "data.extreme_sampling.threshold", "give one of quantile and threshold"),
    ({**EXTREME_2T, "data.extreme_sampling.quantile": 1.0}, "data.extreme_sampling.quantile", "[0, 1)"),
    ({**EXTREME_2T, "data.extreme_sampling.threshold": float("inf")}, "data.extreme_sampling.threshold",
     "finite number"),
    ({**EXTREME_2T, "data.extreme_sampling.quantile": 0.9, "data.extreme_sampling.factor": 0.5},
     "data.extreme_sampling.factor", ">= 1"),
])
def test_bad_values_are_refused_naming_the_field(tmp_path, overrides, field, message):
    with pytest.raises(ConfigError) as err:
        config(tmp_path, overrides)
    assert err.value.field == field
    assert message in str(err.value)


@pytest.mark.parametrize("overrides, field, message", [
    ({"data.augment.longitude_roll_deg": 30}, "data.augment.longitude_roll_deg",
     "longitude roll needs a global grid (evenly spaced longitudes covering 360 degrees); longitude runs 350 to "
     "359.75 in 40 columns"),
    ({"data.augment.random_crop": [36, 40]}, "data.augment.random_crop",
     "height 36 is larger than the grid's 33 latitudes"),
    ({"data.extreme_sampling": {"variable": "10u", "quantile": 0.9}}, "data.extreme_sampling.variable",
     "'10u' (u10) is not in the data, which hold t2m"),
])
def test_what_the_grid_or_the_files_rule_out_is_refused_before_any_value_is_read(
        tmp_path, monkeypatch, overrides, field, message):
    def must_not_run(*args, **kwargs):
        raise AssertionError("read values before the config was checked against the files")

    cfg = config(tmp_path, overrides)
    monkeypatch.setattr(windows_module, "validate_fields", must_not_run)
    monkeypatch.setattr(Field, "_loaded", must_not_run)
    with pytest.raises(ConfigError) as err:
        open_data(cfg)
    assert err.value.field == field
    assert message in str(err.value)


# --------------------------------------------------------------------------------------
# Augmented training samples


def test_training_samples_are_augmented_reproducibly_and_validation_samples_are_not(tmp_path):
    plain = open_data(config(tmp_path))
    augmented = open_data(config(tmp_path, AUGMENT))
    assert plain.train.augment is None and plain.train.input_augment is None
    assert augmented.val.augment is None and augmented.val.input_augment is None

    sample, truth = augmented.train[5], plain.train[5]
    assert sample.inputs.spatial_shape == (24, 32) and truth.inputs.spatial_shape == (33, 40)
    assert sample.targets[0].spatial_shape == (24, 32) and sample.inputs.static_vars["lsm"].shape == (24, 32)
    row = torch.nonzero(truth.inputs.metadata.lat == sample.inputs.metadata.lat[0]).item()
    col = torch.nonzero(truth.inputs.metadata.lon == sample.inputs.metadata.lon[0]).item()
    box = (..., slice(row, row + 24), slice(col, col + 32))

    # Noise on the inputs, 5% of the field's spread; the truth is left as it was.
    t2m, real = sample.inputs.surf_vars["2t"], truth.inputs.surf_vars["2t"][box]
    noise = (t2m - real).double()
    assert noise.abs().max() > 0 and noise.std().item() == pytest.approx(0.05 * real.double().std().item(), rel=0.1)
    assert torch.equal(sample.targets[0].surf_vars["2t"], truth.targets[0].surf_vars["2t"][box])
    # The winds (filled with Aurora's means) turn, at the same speed.
    u, v = sample.inputs.surf_vars["10u"], sample.inputs.surf_vars["10v"]
    u0, v0 = truth.inputs.surf_vars["10u"][box], truth.inputs.surf_vars["10v"][box]
    assert not torch.allclose(u, u0)
    torch.testing.assert_close(torch.hypot(u, v), torch.hypot(u0, v0))

    assert same(open_data(config(tmp_path, AUGMENT)).train[5], sample)  # same seed, same sample
    assert not same(open_data(config(tmp_path, {**AUGMENT, "train.seed": 1})).train[5], sample)
    augmented.train.set_epoch(1)
    assert not same(augmented.train[5], sample)  # other draws in the next epoch
    batch = augmented.train.__getitems__([5, 6])  # as the loader asks: one crop for the batch
    assert collate(batch).inputs.spatial_shape == (24, 32)

    assert len(augmented.val) == len(plain.val) > 0
    assert all(same(augmented.val[j], plain.val[j]) for j in range(len(plain.val)))


GLOBAL = {
    "variant": "medium-range",
    "profile": "tiny",
    "timestep_hours": 6,
    "data": {"paths": [str(IFS_8_STEPS)], "val_fraction": 0.3, "crop": True, "fill_missing": "synthetic",
             "fill_missing_dynamic": "mean", "levels": [500, 850], "history": 2, "batch_size": 1, "validate": False},
    "train": {"device": "cpu", "progress": False},
}
"""The real 10° IFS analyses (8 times 6 h apart, upper air only): a global grid, 19x36
(17x36 once cropped to the patch size), with synthetic statics that show where land went."""


def test_a_longitude_roll_moves_inputs_targets_and_statics_of_a_global_grid_together(tmp_path):
    plain = open_data(config(tmp_path, base=GLOBAL))
    rolled = open_data(config(tmp_path, {"data.augment.longitude_roll_deg": 180}, base=GLOBAL))
    shifts = []
    for i in range(len(plain.train)):
        s, p = rolled.train[i], plain.train[i]
        assert torch.equal(s.inputs.metadata.lon, p.inputs.metadata.lon)  # the labels stay, the planet moves
        t, t0 = s.inputs.atmos_vars["t"], p.inputs.atmos_vars["t"]  # (b, t, c, h, w)
        shift = next(k for k in range(36) if torch.equal(t, torch.roll(t0, k, dims=-1)))
        assert torch.equal(s.targets[0].atmos_vars["t"], torch.roll(p.targets[0].atmos_vars["t"], shift, dims=-1))
        assert torch.equal(s.inputs.static_vars["lsm"], torch.roll(p.inputs.static_vars["lsm"], shift, dims=-1))
        shifts.append(shift)
    assert any(shifts), shifts
    assert all(same(rolled.val[j], plain.val[j]) for j in range(len(plain.val)))


# --------------------------------------------------------------------------------------
# Extreme-event sampling


def sample_peaks(train) -> np.ndarray:
    """The highest 2 m temperature of each training sample over every time it reads, from the file."""
    with xr.open_dataset(BRITISH_ISLES) as ds:
        t2m = ds["t2m"].load()
    time = "time" if "time" in t2m.dims else "valid_time"
    return np.array([float(t2m.sel({time: train.times_used(i)}).max()) for i in range(len(train))])


def test_the_loader_draws_the_extreme_samples_of_the_real_series_factor_times_as_often(tmp_path):
    assert open_data(config(tmp_path)).train_weights is None
    cfg = config(tmp_path, EXTREME)
    data = open_data(cfg)
    n = len(data.train)
    weights = data.train_weights
    assert weights.shape == (n,) and weights.sum() == pytest.approx(1.0)
    extreme = weights > weights.min()
    assert weights.max() / weights.min() == pytest.approx(4.0)
    peaks = sample_peaks(data.train)  # the top tenth of the samples by their warmest value
    assert np.array_equal(extreme, peaks > np.quantile(peaks, 0.9))
    assert 0.08 < extreme.mean() < 0.12

    loader, sampler = train_loader(data, cfg, 0, 1)
    assert loader.sampler is sampler
    order = np.array(list(sampler))
    assert len(order) == n // 2 * 2  # an epoch is as many draws as samples, in whole batches
    counts = np.bincount(order, minlength=n)
    ratio = counts[extreme].mean() / counts[~extreme].mean()
    assert 3.0 < ratio < 5.0, ratio  # drawn 4 times as often, not once each
    assert extreme[order].mean() > 2 * extreme.mean()

    assert list(train_loader(data, cfg, 0, 1)[1]) == order.tolist()  # seeded
    sampler.set_epoch(0, start=10)
    assert list(sampler) == order[20:].tolist()  # a resumed epoch goes on where it stopped
    sampler.set_epoch(1)
    assert list(sampler) != order.tolist()
    ranks = [list(train_loader(data, cfg, r, 2)[1]) for r in range(2)]
    for k in range(5):  # DDP ranks split the same global batches
        assert sorted([ranks[0][k], ranks[1][k]]) == sorted(order[2 * k:2 * k + 2].tolist())


def test_the_epoch_sampler_refuses_weights_that_are_not_one_per_sample():
    with pytest.raises(ValueError, match=r"one per sample \(5\)"):
        EpochSampler(5, 2, weights=[1.0, 2.0])


# --------------------------------------------------------------------------------------
# A run


def test_a_short_run_with_augmentation_and_extreme_sampling_trains_and_saves_both_in_its_config(tmp_path):
    cfg = config(tmp_path, {**AUGMENT, **EXTREME})
    trainer = Trainer(cfg)
    assert trainer.sampler.weights is not None and trainer.data.train.augment is not None
    result = trainer.fit()
    steps = [h for h in result.history if "loss" in h]
    assert [h["step"] for h in steps] == [1, 2, 3] and all(np.isfinite(h["loss"]) for h in steps)
    assert result.best_step == 3 and np.isfinite(result.best_metric)
    saved = load_config(tmp_path / "run" / "config.yaml")
    assert saved == cfg and saved.data.augment.random_crop == (24, 32) and saved.data.extreme_sampling.enabled
