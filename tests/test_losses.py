"""Training losses: weights, NaN masks, physics terms and variant specifics, on tiny real models
and on real or synthetic batches."""

from __future__ import annotations

import dataclasses
import math
from datetime import datetime

import numpy as np
import pytest
import torch
import xarray as xr
from aurora import Batch, Metadata, rollout
from aurora.normalisation import scales

from conftest import IFS_8_STEPS
from model_code.data.batch import window_to_batch
from model_code.data.ingest import read_fields
from model_code.data.loader import collate
from model_code.data.samples import pair_predictions
from model_code.data.synthetic import synthetic_dataarray, synthetic_window
from model_code.data.windows import WindowDataset
from model_code.errors import ConfigError, DataError
from model_code.training.loss_config import (
    AURORA_ATMOS_WEIGHTS,
    AURORA_SURFACE_WEIGHTS,
    LossConfig,
    default_loss_config,
)
from model_code.training.loss_weights import latitude_weights, level_weights
from model_code.training.losses import DensityRecorder, NonFiniteLoss, build_loss
from model_code.variants import build_model, get_variant

MEDIUM = get_variant("medium-range")
HIGH = get_variant("high-res")
AIR = get_variant("air-pollution")
WAVE = get_variant("wave")
T0 = datetime(2024, 1, 1, 6)
LEVELS = (500, 850)


def axes(h: int = 16, w: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Cell-centred global axes: latitudes 90 - d/2 .. -90 + d/2, longitudes 0 .. 360 - d."""
    d = 180 / h
    return torch.linspace(90 - d / 2, -90 + d / 2, h), torch.arange(w) * (360 / w)


def batch(surf=None, atmos=None, h: int = 16, w: int = 32, levels=LEVELS) -> Batch:
    """A one-time batch (b=1, t=1) of the given fields: surf (h, w), atmos (c, h, w)."""
    lat, lon = axes(h, w)
    return Batch(
        surf_vars={k: v.reshape(1, 1, h, w) for k, v in (surf or {}).items()},
        static_vars={},
        atmos_vars={k: v.reshape(1, 1, len(levels), h, w) for k, v in (atmos or {}).items()},
        metadata=Metadata(lat=lat, lon=lon, time=(T0,), atmos_levels=levels),
    )


def field(seed: int, mean: float, spread: float, shape=(16, 32)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return mean + spread * torch.randn(shape, generator=g)


def plain(kind="mae", **kw) -> LossConfig:
    """Only the base loss: no latitude, extremes, coastal or physics refinements."""
    return LossConfig(kind=kind, latitude_weighting=False, **kw)


def tiny_inputs(spec, seed: int = 0) -> Batch:
    h, w = spec.tiny_grid
    lat, lon = np.linspace(90, -90, h), np.linspace(0, 360, w, endpoint=False)
    step = np.timedelta64(spec.timestep_hours, "h")
    times = np.array([np.datetime64("2024-01-01T00", "ns") + i * step for i in range(2)])
    return window_to_batch(synthetic_window(spec, lat, lon, times, levels=LEVELS, seed=seed), spec)


def perturbed(pred: Batch, factor: float = 1.01) -> Batch:
    return dataclasses.replace(pred, surf_vars={k: v.detach() * factor for k, v in pred.surf_vars.items()},
                               atmos_vars={k: v.detach() * factor for k, v in pred.atmos_vars.items()})


# --------------------------------------------------------------------------------------
# Weights


def test_latitude_weights_follow_cell_area_with_mean_one():
    lat = torch.linspace(90, -90, 181)  # 1 degree, poles included
    lon = torch.arange(360.0)
    w = latitude_weights(lat, lon)
    assert w.shape == (181, 360)
    assert w.mean().item() == pytest.approx(1.0, abs=1e-6)
    row = w[:, 0]
    assert torch.equal(w, row[:, None].expand_as(w))
    # Away from the poles the weight is proportional to cos(latitude)...
    ratio = row[1:-1] / torch.cos(torch.deg2rad(lat[1:-1]))
    assert torch.allclose(ratio, ratio[90], rtol=1e-4)
    # ... and a pole row, half a cell wide, keeps a small but non-zero weight.
    assert 0 < row[0] < row[1] / 4


def test_level_weights_uniform_or_proportional_to_pressure():
    assert level_weights((50, 500, 1000), LossConfig()).tolist() == [1.0, 1.0, 1.0]
    w = level_weights((50, 500, 1000), LossConfig(level_weighting="pressure", level_weights={500: 2.0}))
    mean_p = (50 + 500 + 1000) / 3
    assert w.tolist() == pytest.approx([50 / mean_p, 2 * 500 / mean_p, 1000 / mean_p])


def test_default_weights_are_auroras_with_surface_terms_a_quarter():
    """One normalised unit of error in every variable: the loss is the weighted mean of the
    variable weights, surface weights scaled by 1/4."""
    surf, atmos = {}, {}
    target_s = {k: field(i, 0.0, 1.0) for i, k in enumerate(MEDIUM.output_surf_vars)}
    target_a = {k: torch.stack([field(10 + i, 0.0, 1.0)] * 2) for i, k in enumerate(MEDIUM.atmos_vars)}
    for k, t in target_s.items():
        surf[k] = t + scales[k]
    for k, t in target_a.items():
        atmos[k] = t + torch.tensor([scales[f"{k}_{lv}"] for lv in LEVELS])[:, None, None]
    result = build_loss(MEDIUM, plain())([(batch(surf, atmos), batch(target_s, target_a))], [1])
    expected = (0.25 * sum(AURORA_SURFACE_WEIGHTS.values()) + sum(AURORA_ATMOS_WEIGHTS.values())) / 9
    assert result.total.item() == pytest.approx(expected, rel=1e-5)
    assert result.per_variable["2t"] == pytest.approx(1.0, rel=1e-5)
    assert result.per_variable["z500"] == pytest.approx(1.0, rel=1e-5)
    assert result.per_variable["z"] == pytest.approx(1.0, rel=1e-5)
    assert {"2t", "10u", "10v", "msl", "z", "z500", "z850", "q850"} <= result.per_variable.keys()


@pytest.mark.parametrize(
    "kind, mixture, expected",
    [("mse", {}, 4.0), ("mae", {}, 2.0), ("huber", {}, 1.5), ("mixture", {"mae": 0.5, "mse": 0.5}, 3.0)],
)
def test_elementwise_kinds_and_mixtures(kind, mixture, expected):
    t = field(0, 280.0, 5.0)
    pred, target = batch({"2t": t + 2 * scales["2t"]}), batch({"2t": t})
    result = build_loss(MEDIUM, plain(kind, mixture=mixture))([(pred, target)], [1])
    assert result.per_variable["2t"] == pytest.approx(expected, rel=1e-5)


def test_latitude_weighting_weighs_the_tropics_more_than_the_poles():
    t = field(0, 280.0, 5.0)
    near_pole, near_equator = t.clone(), t.clone()
    near_pole[0, 3] += scales["2t"]
    near_equator[8, 3] += scales["2t"]
    loss = build_loss(MEDIUM, LossConfig())
    at_pole = loss([(batch({"2t": near_pole}), batch({"2t": t}))], [1]).total.item()
    at_equator = loss([(batch({"2t": near_equator}), batch({"2t": t}))], [1]).total.item()
    lat, lon = axes()
    w = latitude_weights(lat, lon)
    assert at_equator / at_pole == pytest.approx((w[8, 3] / w[0, 3]).item(), rel=1e-4)


# --------------------------------------------------------------------------------------
# NaN masks and non-finite losses


def test_a_nan_target_pixel_does_not_change_the_loss_of_the_others():
    target, pred = field(0, 280.0, 5.0), field(1, 280.0, 5.0).requires_grad_()
    loss = build_loss(MEDIUM, LossConfig())
    holed = target.clone()
    holed[5, 7] = float("nan")
    result = loss([(batch({"2t": pred}), batch({"2t": holed}))], [1])
    # The same loss whatever the prediction there, even NaN...
    other = pred.detach().clone()
    other[5, 7] = float("nan")
    assert loss([(batch({"2t": other}), batch({"2t": holed}))], [1]).total.item() == pytest.approx(
        result.total.item(), rel=1e-6)
    # ... equal to the area-weighted mean over the other pixels ...
    lat, lon = axes()
    w = latitude_weights(lat, lon)
    keep = torch.ones_like(w, dtype=torch.bool)
    keep[5, 7] = False
    err = ((pred.detach() - target) / scales["2t"]).abs()
    expected = (err * w)[keep].sum() / w[keep].sum() * 0.25 * AURORA_SURFACE_WEIGHTS["2t"]
    assert result.total.item() == pytest.approx(expected.item(), rel=1e-5)
    # ... and no gradient, NaN or otherwise, reaches the masked pixel.
    result.total.backward()
    assert torch.isfinite(pred.grad).all() and pred.grad[5, 7] == 0 and pred.grad.abs().sum() > 0


def test_a_nan_prediction_where_the_target_is_finite_names_the_variable():
    levels_t = torch.stack([field(0, 250.0, 5.0), field(1, 270.0, 5.0)])
    bad = levels_t.clone()
    bad[1, 2, 3] = float("nan")
    target = batch({"2t": field(2, 280.0, 5.0)}, {"t": levels_t})
    pred = batch({"2t": field(3, 280.0, 5.0)}, {"t": bad})
    with pytest.raises(NonFiniteLoss) as e:
        build_loss(MEDIUM)([(pred, target), (pred, target)], [1, 2])
    assert isinstance(e.value, DataError)
    assert e.value.variable == "t" and e.value.lead_step == 1
    assert "'t'" in str(e.value)


def test_an_overflowing_loss_names_the_variable():
    t = field(0, 101000.0, 500.0)
    huge = t.clone()
    huge[0, 0] = 3e38
    with pytest.raises(NonFiniteLoss) as e:
        build_loss(MEDIUM, plain("mse"))([(batch({"msl": huge}), batch({"msl": t}))], [1])
    assert e.value.variable == "msl"


def test_variables_not_observed_are_left_out():
    t = field(0, 280.0, 5.0)
    result = build_loss(MEDIUM, plain())([(batch({"2t": t + scales["2t"], "msl": t}), batch({"2t": t}))], [1])
    assert set(result.per_variable) == {"2t"}
    assert result.total.item() == pytest.approx(0.25 * AURORA_SURFACE_WEIGHTS["2t"], rel=1e-5)


# --------------------------------------------------------------------------------------
# Lead times


def test_medium_range_weighs_three_to_five_days_twice():
    cfg = default_loss_config(MEDIUM)
    loss = build_loss(MEDIUM, cfg)
    assert [loss.lead_weight(k) for k in (1, 11, 12, 20, 21)] == [1.0, 1.0, 2.0, 2.0, 1.0]  # 6 h steps
    t = field(0, 280.0, 5.0)
    pairs = [(batch({"2t": t + scales["2t"]}), batch({"2t": t})), (batch({"2t": t + 4 * scales["2t"]}), batch({"2t": t}))]
    result = loss(pairs, [1, 12])
    assert result.per_lead[12] == pytest.approx(4 * result.per_lead[1], rel=1e-5)
    assert result.total.item() == pytest.approx((result.per_lead[1] + 2 * result.per_lead[12]) / 3, rel=1e-5)
    # Hours, not steps: with hourly steps lead 12 is half a day.
    assert build_loss(MEDIUM, cfg, timestep_hours=1).lead_weight(12) == 1.0


# --------------------------------------------------------------------------------------
# Variant specifics


def test_high_res_weighs_extreme_pixels_more():
    t = torch.zeros(16, 32)
    t[4, 10] = 30.0  # one warm extreme in a flat field
    t += 280.0
    loss = build_loss(HIGH, dataclasses.replace(default_loss_config(HIGH), latitude_weighting=False))
    err_at_extreme, err_elsewhere = t.clone(), t.clone()
    err_at_extreme[4, 10] += scales["2t"]
    err_elsewhere[4, 11] += scales["2t"]
    extreme = loss([(batch({"2t": err_at_extreme}), batch({"2t": t}))], [1]).total.item()
    typical = loss([(batch({"2t": err_elsewhere}), batch({"2t": t}))], [1]).total.item()
    # 1 of 512 pixels weighs 2: 2 / 513 against 1 / 513.
    assert extreme / typical == pytest.approx(2.0, rel=1e-5)


def test_positivity_penalises_negative_concentrations_only():
    cfg = default_loss_config(AIR)
    assert {"pm2p5", "tcno2", "no2", "so2"} <= set(cfg.positive_variables)
    loss = build_loss(AIR, cfg)
    truth = field(0, 2e-8, 1e-9).abs()
    right = loss([(batch({"pm2p5": truth * 1.1}), batch({"pm2p5": truth}))], [1])
    assert right.terms["positivity"] == 0.0
    # A sign slip (or an offset wrong unit) makes the concentrations negative.
    wrong = loss([(batch({"pm2p5": -truth}), batch({"pm2p5": truth}))], [1])
    w = latitude_weights(*axes())
    expected = (truth / scales["pm2p5"] * w).sum() / w.sum()
    assert wrong.terms["positivity"] == pytest.approx(expected.item(), rel=1e-4)
    assert wrong.total.item() > right.total.item()


def test_log_space_term_weighs_relative_errors_alike():
    """Twice the truth costs the same in log space for clean and polluted air, while the
    physical-space error of the clean air is 100 times smaller."""
    loss = build_loss(AIR, dataclasses.replace(default_loss_config(AIR), latitude_weighting=False))
    clean, polluted = torch.full((16, 32), 1e-6), torch.full((16, 32), 1e-4)
    a = loss([(batch({"pm10": 2 * clean}), batch({"pm10": clean}))], [1])
    b = loss([(batch({"pm10": 2 * polluted}), batch({"pm10": polluted}))], [1])
    assert b.per_variable["pm10"] == pytest.approx(100 * a.per_variable["pm10"], rel=1e-4)
    eps = default_loss_config(AIR).log_eps
    s = scales["pm10"]
    expected = lambda c: math.log(2 * c / s + eps) - math.log(c / s + eps)  # noqa: E731
    assert a.terms["log"] == pytest.approx(expected(1e-6), rel=1e-4)
    assert b.terms["log"] == pytest.approx(expected(1e-4), rel=1e-4)
    assert b.terms["log"] == pytest.approx(math.log(2), rel=1e-3)


def test_air_pollution_loss_is_on_physical_outputs_and_trains_the_difference_heads():
    """AuroraAirPollution predicts some species as a difference to an earlier step; the loss
    sees its outputs after that step is added back, and its gradient reaches the heads of
    both the difference and its modulation."""
    model = build_model(AIR, "tiny").train()
    inputs = tiny_inputs(AIR)
    pred = model(inputs)
    loss = build_loss(AIR)
    exact = loss([(pred, perturbed(pred, 1.0))], [1])
    assert exact.terms["base"] == 0.0 and exact.terms["log"] == 0.0
    result = loss([(pred, perturbed(pred, 1.05))], [1])
    result.total.backward()
    heads = dict(model.named_parameters())
    for name in ("decoder.surf_heads.pm2p5.weight", "decoder.surf_heads.pm2p5_mod.weight"):
        assert heads[name].grad is not None and heads[name].grad.abs().sum() > 0, name
    # The output is the previous state plus a change, not the change alone: zero both heads
    # and the physical output is the input at the history index the model uses (t - 24 h).
    with torch.no_grad():
        for name in ("pm2p5", "pm2p5_mod"):
            heads[f"decoder.surf_heads.{name}.weight"].zero_()
            heads[f"decoder.surf_heads.{name}.bias"].zero_()
        out = model(inputs).surf_vars["pm2p5"][:, 0]
    previous = inputs.surf_vars["pm2p5"][:, 0, : out.shape[-2]]
    assert torch.allclose(out, previous, rtol=1e-4, atol=1e-12)


def wave_pair(pred_swh: torch.Tensor, target_swh: torch.Tensor, **others) -> tuple[Batch, Batch]:
    return batch({"swh": pred_swh, **{k: v[0] for k, v in others.items()}}), batch(
        {"swh": target_swh, **{k: v[1] for k, v in others.items()}})


def test_wave_directions_are_compared_on_the_circle():
    loss = build_loss(WAVE, plain())
    t = field(0, 2.0, 0.1).abs()
    across_north = loss([wave_pair(t, t, mwd=(torch.full((16, 32), 359.0), torch.full((16, 32), 1.0)))], [1])
    nearby = loss([wave_pair(t, t, mwd=(torch.full((16, 32), 91.0), torch.full((16, 32), 93.0)))], [1])
    assert across_north.per_variable["mwd"] == pytest.approx(nearby.per_variable["mwd"], rel=1e-3)
    assert across_north.per_variable["mwd"] < 0.05


def test_wave_no_wave_predictions_are_masked_but_all_nan_is_an_error():
    loss = build_loss(WAVE, default_loss_config(WAVE))
    target = field(0, 2.0, 0.3).abs()
    target[:, :8] = float("nan")  # land
    pred = target + 0.1
    pred[3, 12] = float("nan")  # the density head says "no wave" where there is one
    result = loss([wave_pair(pred, target)], [1])
    assert math.isfinite(result.total.item())
    with pytest.raises(NonFiniteLoss) as e:
        loss([wave_pair(torch.full_like(target, float("nan")), target)], [1])
    assert e.value.variable == "swh"


def test_wave_pixels_next_to_land_weigh_more():
    cfg = dataclasses.replace(default_loss_config(WAVE), latitude_weighting=False, spectral_weight=0.0)
    loss = build_loss(WAVE, cfg)
    target = torch.full((16, 32), 2.0)
    target[:, 10:14] = float("nan")  # a continent
    near, far = target.clone(), target.clone()
    near[6, 14] += scales["swh"]  # next to it
    far[6, 24] += scales["swh"]  # 10 cells away
    at_coast = loss([wave_pair(near, target)], [1]).per_variable["swh"]
    offshore = loss([wave_pair(far, target)], [1]).per_variable["swh"]
    n_coastal = 2 * 2 * 16  # two cells wide on each side
    n_sea = 16 * 28
    assert at_coast / offshore == pytest.approx(2.0, rel=1e-5)
    assert offshore == pytest.approx(1.0 / (n_sea + n_coastal), rel=1e-5)


def test_spectral_term_compares_power_not_position():
    cfg = dataclasses.replace(default_loss_config(WAVE), coastal_factor=1.0)
    loss = build_loss(WAVE, cfg)
    assert "mwp" in cfg.spectral_variables and "swh" not in cfg.spectral_variables
    x = torch.linspace(0, 2 * math.pi, 33)[:-1]
    target = 8.0 + torch.sin(3 * x)[None, :] + 0.5 * torch.cos(7 * x)[None, :] + torch.zeros(16, 1)
    same = loss([wave_pair(torch.ones(16, 32), torch.ones(16, 32), mwp=(target, target))], [1])
    shifted = loss([wave_pair(torch.ones(16, 32), torch.ones(16, 32), mwp=(target.roll(5, dims=1), target))], [1])
    smooth = loss([wave_pair(torch.ones(16, 32), torch.ones(16, 32), mwp=(torch.full_like(target, 8.0), target))], [1])
    assert same.terms["spectral"] == 0.0
    assert shifted.terms["spectral"] < 1e-4 < shifted.per_variable["mwp"]  # moved, same spectrum
    assert smooth.terms["spectral"] > 1.0  # the waves are gone


def test_wave_density_heads_learn_where_waves_are():
    model = build_model(WAVE, "tiny").train()
    with DensityRecorder(model) as recorder:
        preds = list(rollout(model, tiny_inputs(WAVE), 2))
        assert len(recorder.logits) == 2
        logits = recorder.logits
    target = perturbed(preds[1], 1.0)
    land = torch.arange(64) < 20
    target.surf_vars["swh"] = torch.where(land, float("nan"), 1.0).expand_as(target.surf_vars["swh"]).clone()
    loss = build_loss(WAVE)
    result = loss([(preds[0], perturbed(preds[0], 1.0)), (preds[1], target)], [1, 2], density_logits=logits)
    assert result.terms["density"] > 0
    result.total.backward()
    head = dict(model.named_parameters())["decoder.surf_heads.swh_density.weight"]
    assert head.grad is not None and head.grad.abs().sum() > 0
    assert "density" not in loss([(preds[1], target)], [2]).terms  # no logits, no term


# --------------------------------------------------------------------------------------
# Real data through the loader


def test_loss_of_a_tiny_model_on_a_real_sample(tmp_path):
    """Real IFS fields on 6 levels (synthetic surface fields beside them), through the
    loader and a two-step rollout: finite, differentiable, logged per variable and level."""
    fields, _ = read_fields([(str(IFS_8_STEPS), IFS_8_STEPS)])
    any_field = next(iter(fields.values())).data
    lat, lon, times = any_field.latitude.values, any_field.longitude.values, any_field.time.values
    surface = [v for v in MEDIUM.inputs() if v.kind == "surface"]
    xr.Dataset({v.dataset_name: synthetic_dataarray(v, lat, lon, times) for v in surface}).to_netcdf(
        tmp_path / "surface.nc")
    dataset = WindowDataset.from_files([IFS_8_STEPS, tmp_path / "surface.nc"], MEDIUM, lead_steps=(1, 2),
                                       crop=True, fill_missing="synthetic")
    sample = collate([dataset[0], dataset[1]])
    model = build_model(MEDIUM, "tiny").train()
    preds = list(rollout(model, sample.inputs, max(sample.lead_steps)))
    result = build_loss(MEDIUM)(pair_predictions(preds, sample), sample.lead_steps)
    assert math.isfinite(result.total.item()) and result.total.item() > 0
    result.total.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    levels = [int(lv) for lv in dataset.levels]
    assert {f"z{levels[0]}", f"t{levels[-1]}", "2t", "msl"} <= result.per_variable.keys()
    assert set(result.per_lead) == {1, 2}


# --------------------------------------------------------------------------------------
# Configuration


@pytest.mark.parametrize(
    "change, fld",
    [
        (dict(kind="l3"), "loss.kind"),
        (dict(kind="mixture"), "loss.mixture"),
        (dict(kind="mixture", mixture={"mae": 1.0, "l4": 1.0}), "loss.mixture.l4"),
        (dict(mixture={"mae": 1.0}), "loss.mixture"),
        (dict(huber_delta=0.0), "loss.huber_delta"),
        (dict(surface_weights={"2t": -1.0}), "loss.surface_weights.2t"),
        (dict(surface_scale=float("nan")), "loss.surface_scale"),
        (dict(level_weighting="height"), "loss.level_weighting"),
        (dict(level_weights={"x": 1.0}), "loss.level_weights"),
        (dict(lead_weights={0: 1.0}), "loss.lead_weights"),
        (dict(lead_emphasis_hours=[120, 72]), "loss.lead_emphasis_hours"),
        (dict(extremes_quantile=0.3), "loss.extremes_quantile"),
        (dict(coastal_width=0), "loss.coastal_width"),
        (dict(log_eps=0.0), "loss.log_eps"),
        (dict(spectral_variables="mwp"), "loss.spectral_variables"),
    ],
)
def test_bad_settings_are_refused_naming_the_field(change, fld):
    cfg = LossConfig(**change)
    with pytest.raises(ConfigError) as e:
        cfg.validate()
    assert e.value.field == fld and fld in str(e.value)


@pytest.mark.parametrize(
    "change, fld",
    [
        (dict(surface_weights={"2tt": 1.0}), "loss.surface_weights.2tt"),
        (dict(atmos_weights={"co": 1.0}), "loss.atmos_weights.co"),  # air pollution only
        (dict(positive_variables=("pm2p5",)), "loss.positive_variables.pm2p5"),
        (dict(level_weights={925: 2.0, 123: 1.0}), "loss.level_weights.123"),
    ],
)
def test_variables_and_levels_the_variant_lacks_are_refused(change, fld):
    with pytest.raises(ConfigError) as e:
        build_loss(MEDIUM, LossConfig(**change))
    assert e.value.field == fld


def test_yaml_shaped_values_are_accepted():
    cfg = LossConfig(lead_emphasis_hours=[72, 120], level_weights={"500": 2.0}, spectral_variables=["2t"])
    cfg.validate()
    assert cfg.lead_emphasis_hours == (72, 120) and cfg.level_weights == {500: 2.0}
    assert cfg.spectral_variables == ("2t",)
    for spec in (MEDIUM, HIGH, AIR, WAVE):
        build_loss(spec, default_loss_config(spec))
