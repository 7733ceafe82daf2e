"""The spatial smoothness penalty (`loss.smoothness`): values by hand on small grids, the grid's
wrap and masks, gradients, its config, and a real training step that logs it."""

from __future__ import annotations

import json
from datetime import datetime

import numpy as np
import pytest
import torch
from aurora import Batch, Metadata
from aurora.normalisation import scales

from model_code.data.synthetic import synthetic_window
from model_code.errors import ConfigError
from model_code.training import train
from model_code.training.config import config_from_dict, load_config, save_config
from model_code.training.loss_config import LossConfig, SmoothnessConfig, default_loss_config
from model_code.training.loss_terms import smoothness_term
from model_code.training.loss_weights import latitude_weights
from model_code.training.losses import build_loss
from model_code.training.schema import from_dict, to_dict
from model_code.variants import get_variant

MEDIUM = get_variant("medium-range")
HIGH = get_variant("high-res")
AIR = get_variant("air-pollution")
WAVE = get_variant("wave")
T0 = datetime(2024, 1, 1, 12)
KINDS = ("laplacian", "tv")


def term(x: torch.Tensor, kind: str, periodic: bool = False) -> torch.Tensor:
    """The penalty of one (h, w) field, every cell valid and weighing alike."""
    h, w = x.shape
    return smoothness_term(x.reshape(1, 1, 1, h, w), torch.ones(1, 1, 1, h, w, dtype=torch.bool),
                           torch.ones(1, 1, 1, h, w), kind, periodic)


def checkerboard(h: int, w: int) -> torch.Tensor:
    return (-1.0) ** (torch.arange(h)[:, None] + torch.arange(w)[None, :])


def global_axes(h: int = 16, w: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Cell-centred global axes: latitudes 90 - d/2 .. -90 + d/2, longitudes 0 .. 360 - d."""
    d = 180 / h
    return torch.linspace(90 - d / 2, -90 + d / 2, h), torch.arange(w) * (360 / w)


def regional_axes(h: int = 16, w: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """A 1° box across the dateline: 60..45°N, 170..201°E."""
    return torch.linspace(60, 60 - (h - 1), h), 170.0 + torch.arange(w)


def batch(surf: dict[str, torch.Tensor], lat: torch.Tensor, lon: torch.Tensor) -> Batch:
    """A one-time batch (b=1, t=1) of (h, w) surface fields."""
    h, w = len(lat), len(lon)
    return Batch(surf_vars={k: v.reshape(1, 1, h, w) for k, v in surf.items()}, static_vars={}, atmos_vars={},
                 metadata=Metadata(lat=lat, lon=lon, time=(T0,), atmos_levels=(500,)))


def smooth_only(kind: str, variables=("pm2p5",), weight: float = 1.0, **kw) -> LossConfig:
    """The base loss and the smoothness penalty, no other term."""
    return LossConfig(smoothness=SmoothnessConfig(kind=kind, weight=weight, variables=variables), **kw)


def smoothness_of(normalised: torch.Tensor, kind: str, axes, *, name: str = "pm2p5", spec=AIR) -> float:
    """The loss's smoothness term for a prediction of `name` (`normalised` × its scale)."""
    s = scales[name]
    pred = batch({name: normalised * s}, *axes)
    target = batch({name: torch.zeros_like(normalised)}, *axes)
    return build_loss(spec, smooth_only(kind, (name,)))([(pred, target)], [1]).terms["smoothness"]


# --------------------------------------------------------------------------------------
# Values


@pytest.mark.parametrize("periodic", [False, True])
def test_a_constant_field_costs_nothing_and_a_checkerboard_costs_the_most(periodic):
    assert term(torch.full((6, 8), 3.0), "laplacian", periodic).item() == 0.0
    assert term(torch.full((6, 8), 3.0), "tv", periodic).item() == 0.0
    # ±1 neighbours everywhere: L = -8 x, so L² = 64; |difference| = 2 along each axis.
    assert term(checkerboard(6, 8), "laplacian", periodic).item() == pytest.approx(64.0)
    assert term(checkerboard(6, 8), "tv", periodic).item() == pytest.approx(4.0)


@pytest.mark.parametrize("along", ["longitude", "latitude"])
def test_laplacian_and_tv_by_hand_on_a_small_regional_grid(along):
    """A uniform gradient costs nothing to the Laplacian and its slope to TV; curvature costs both.

    On 3x4 cells, x = j² along each row gives rows [0, 1, 4, 9]: the Laplacian is defined at
    the two inner cells of the middle row, (0 + 4 + 1 + 1 - 4·1) = 2 and (1 + 9 + 4 + 4 - 4·4)
    = 2, so its mean square is 4; east-west differences are 1, 3, 5 (mean 3) and north-south
    ones 0, so TV is 3. The same field along latitude (transposed) gives the same numbers.
    """
    j = torch.arange(4.0)
    ramp, bowl = j.expand(3, 4).clone(), (j ** 2).expand(3, 4).clone()
    if along == "latitude":
        ramp, bowl = ramp.T.contiguous(), bowl.T.contiguous()
    assert term(ramp, "laplacian").item() == 0.0
    assert term(ramp, "tv").item() == pytest.approx(1.0)
    assert term(bowl, "laplacian").item() == pytest.approx(4.0)
    assert term(bowl, "tv").item() == pytest.approx(3.0)


@pytest.mark.parametrize("kind", KINDS)
def test_cells_weigh_their_area_so_a_spike_costs_more_at_the_equator_than_near_a_pole(kind):
    """One spike of 0.5 normalised units on a flat global field, through `Loss` with its
    latitude weights (`grid.cell_areas`, mean 1), against the value worked out cell by cell."""
    lat, lon = global_axes()
    W = latitude_weights(lat, lon).double()  # (16, 32); rows alike along longitude
    a, c = 0.5, 7

    def by_hand(r: int) -> float:
        if kind == "laplacian":  # L = -4a at the spike, a at its four neighbours; rows 1..14 are centres
            return a ** 2 * (18 * W[r, c] + W[r - 1, c] + W[r + 1, c]).item() / W[1:-1].sum().item()
        row = W[:, 0]
        east_west = a * 2 * row[r] / (32 * row.sum())  # two pairs, each weighing the spike's row
        pairs = 0.5 * (row[:-1] + row[1:])  # north-south pairs weigh the mean of their two cells
        north_south = a * (pairs[r - 1] + pairs[r]) / (32 * pairs.sum())
        return (east_west + north_south).item()

    values = {}
    for r in (2, 8):
        x = torch.full((16, 32), 2.0)
        x[r, c] += a
        values[r] = smoothness_of(x, kind, (lat, lon))
        assert values[r] == pytest.approx(by_hand(r), rel=1e-5)
    assert values[8] > 1.5 * values[2]


# --------------------------------------------------------------------------------------
# The grid: longitude wraps on global grids only, latitude never


@pytest.mark.parametrize("kind", KINDS)
def test_a_jump_across_the_longitude_seam_costs_only_on_a_global_grid(kind):
    """x = column index: smooth everywhere but between the last column and the first (the
    0°/360° seam of the global grid, which a regional box across the dateline does not have)."""
    x = torch.arange(32.0).expand(16, 32).clone()
    regional = smoothness_of(x, kind, regional_axes())
    on_the_globe = smoothness_of(x, kind, global_axes())
    if kind == "laplacian":
        assert regional == pytest.approx(0.0, abs=1e-8)
        assert on_the_globe == pytest.approx(64.0, rel=1e-5)  # L = ±32 in 2 of 32 columns
    else:
        assert regional == pytest.approx(1.0, rel=1e-6)  # every east-west step is 1
        assert on_the_globe == pytest.approx((31 + 31) / 32, rel=1e-5)  # 31 steps of 1 and one of 31


@pytest.mark.parametrize("kind", KINDS)
def test_latitude_does_not_wrap_across_the_poles(kind):
    """x = row index jumps by 15 from the northernmost row to the southernmost: no neighbours."""
    x = torch.arange(16.0)[:, None].expand(16, 32).clone()
    expected = 0.0 if kind == "laplacian" else 1.0
    for axes in (global_axes(), regional_axes()):
        assert smoothness_of(x, kind, axes) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_masked_cells_are_no_jump_and_get_no_gradient(kind):
    """A NaN target (here a block of columns) removes its cells and every stencil touching
    them: a flat field around a hole costs nothing, whatever (even NaN) is predicted in it."""
    lat, lon = global_axes()
    s = scales["pm2p5"]
    target = torch.full((16, 32), 2.0 * s)
    target[:, 10:14] = float("nan")
    pred = torch.full((16, 32), 2.0 * s)
    pred[:, 10:12] = float("nan")
    pred[:, 12:14] = 1e3 * s
    pred.requires_grad_()
    loss = build_loss(AIR, smooth_only(kind))
    of = lambda p: loss([(batch({"pm2p5": p}, lat, lon), batch({"pm2p5": target}, lat, lon))], [1])  # noqa: E731
    result = of(pred)
    assert result.terms["smoothness"] == 0.0
    bump = pred.detach().clone()
    bump[5, 20] *= 1.5
    assert of(bump).terms["smoothness"] > 0
    result.total.backward()
    assert torch.isfinite(pred.grad).all() and (pred.grad[:, 10:14] == 0).all()


# --------------------------------------------------------------------------------------
# Gradients and the total


@pytest.mark.parametrize("kind", KINDS)
def test_a_gradient_step_on_the_term_smooths_the_field(kind):
    x = torch.randn(8, 12, generator=torch.Generator().manual_seed(0)).requires_grad_()
    before = term(x, kind, periodic=True)
    before.backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    after = term((x - 0.01 * x.grad).detach(), kind, periodic=True)
    assert after.item() < before.item()


@pytest.mark.parametrize("kind", KINDS)
def test_the_term_is_weighted_into_the_total_and_its_gradient_reaches_the_prediction(kind):
    """With the prediction equal to the truth the MAE has no gradient: all of it comes from
    the penalty, and only to the variables it lists."""
    lat, lon = global_axes()
    g = torch.Generator().manual_seed(1)
    truth = {"pm2p5": (2 + torch.rand(16, 32, generator=g)) * scales["pm2p5"],
             "2t": (280 + torch.rand(16, 32, generator=g))}
    pred = {k: v.clone().requires_grad_() for k, v in truth.items()}
    pairs = [(batch(pred, lat, lon), batch(truth, lat, lon))]
    on = build_loss(AIR, smooth_only(kind, weight=0.3))(pairs, [1])
    off = build_loss(AIR, smooth_only(kind, weight=0.0))(pairs, [1])
    assert "smoothness" not in off.terms and on.terms["smoothness"] > 0
    assert on.total.item() == pytest.approx(off.total.item() + 0.3 * on.terms["smoothness"], rel=1e-6)
    on.total.backward()
    assert torch.isfinite(pred["pm2p5"].grad).all() and pred["pm2p5"].grad.abs().sum() > 0
    assert (pred["2t"].grad == 0).all()


@pytest.mark.parametrize("spec", [MEDIUM, HIGH, AIR, WAVE], ids=lambda s: s.name)
def test_off_by_default_for_every_variant_and_on_when_asked(spec):
    lat, lon = global_axes()
    rough = {"2t": 280.0 + scales["2t"] * checkerboard(16, 32)}
    pairs = [(batch(rough, lat, lon), batch({"2t": torch.full((16, 32), 280.0)}, lat, lon))]
    default = default_loss_config(spec)
    assert default.smoothness.weight == 0.0
    assert "smoothness" not in build_loss(spec, default)(pairs, [1]).terms
    asked = LossConfig(smoothness=SmoothnessConfig(weight=1.0))  # every non-angle variable
    assert build_loss(spec, asked)(pairs, [1]).terms["smoothness"] == pytest.approx(64.0, rel=1e-5)


def test_air_pollution_lists_its_species_so_a_weight_alone_turns_the_penalty_on():
    default = default_loss_config(AIR)
    assert default.smoothness.variables == default.positive_variables
    assert {"pm2p5", "tcno2", "no2", "so2"} <= set(default.smoothness.variables)
    assert "2t" not in default.smoothness.variables
    cfg = config_from_dict({"variant": "air-pollution"}, {"loss.smoothness.weight": 0.1})
    assert cfg.loss.smoothness == SmoothnessConfig("laplacian", 0.1, default.positive_variables)


# --------------------------------------------------------------------------------------
# Configuration


def test_the_config_round_trips_through_yaml(tmp_path):
    cfg = config_from_dict({"variant": "air-pollution", "loss": {"smoothness": {
        "kind": "tv", "weight": 0.25, "variables": ["pm2p5", "no2"]}}})
    assert cfg.loss.smoothness == SmoothnessConfig("tv", 0.25, ("pm2p5", "no2"))
    assert to_dict(cfg.loss)["smoothness"] == {"kind": "tv", "weight": 0.25, "variables": ["pm2p5", "no2"]}
    assert from_dict(LossConfig, to_dict(cfg.loss)) == cfg.loss
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg
    off = config_from_dict({"variant": "air-pollution"}, {"loss.smoothness": None})
    assert off.loss.smoothness is None
    save_config(off, tmp_path / "off.yaml")
    assert load_config(tmp_path / "off.yaml") == off
    lat, lon = global_axes()
    pairs = [(batch({"pm2p5": checkerboard(16, 32)}, lat, lon), batch({"pm2p5": torch.zeros(16, 32)}, lat, lon))]
    assert "smoothness" not in build_loss(AIR, off.loss)(pairs, [1]).terms


@pytest.mark.parametrize("variant, overrides, fld, message", [
    ("air-pollution", {"loss.smoothness.weight": -1.0}, "loss.smoothness.weight", "must be a finite number >= 0"),
    ("air-pollution", {"loss.smoothness.weight": float("nan")}, "loss.smoothness.weight", ">= 0"),
    ("air-pollution", {"loss.smoothness.kind": "sobolev"}, "loss.smoothness.kind", "expected one of laplacian, tv"),
    ("air-pollution", {"loss.smoothness.variables": ["pm2p5", "pm25"]}, "loss.smoothness.variables.pm25",
     "predicts no variable 'pm25'"),
    ("air-pollution", {"loss.smoothness.weight": 1.0, "loss.smoothness.variables": []}, "loss.smoothness.variables",
     "penalises nothing"),
    ("medium-range", {"loss.smoothness.variables": ["pm2p5"]}, "loss.smoothness.variables.pm2p5",
     "predicts no variable 'pm2p5'"),
    ("wave", {"loss.smoothness.variables": ["swh", "mwd"]}, "loss.smoothness.variables.mwd", "direction"),
])
def test_bad_values_are_refused_naming_the_field(variant, overrides, fld, message):
    with pytest.raises(ConfigError) as e:
        config_from_dict({"variant": variant}, overrides)
    assert e.value.field == fld and fld in str(e.value) and message in str(e.value)


@pytest.mark.parametrize("smoothness, fld", [
    (SmoothnessConfig(weight=-0.5), "loss.smoothness.weight"),
    (SmoothnessConfig(kind="TV"), "loss.smoothness.kind"),
    (SmoothnessConfig(variables="pm2p5"), "loss.smoothness.variables"),
    ({"kind": "tv", "weight": 1.0}, "loss.smoothness"),
])
def test_bad_values_in_code_are_refused_by_build_loss(smoothness, fld):
    with pytest.raises(ConfigError) as e:
        build_loss(AIR, LossConfig(smoothness=smoothness))
    assert e.value.field == fld


# --------------------------------------------------------------------------------------
# Training


def test_a_training_step_with_the_term_on_logs_its_value(tmp_path):
    """One optimiser step of the tiny air-pollution model on a global 31x63 window at 12 h
    steps: the penalty is logged per step and is part of the loss that was minimised."""
    h, w = AIR.tiny_grid
    times = np.datetime64("2024-01-01T00", "ns") + np.arange(8) * np.timedelta64(12, "h")
    window = synthetic_window(AIR, np.linspace(90, -90, h), np.linspace(0, 360, w, endpoint=False), times,
                              levels=(500, 850), seed=2)
    window.to_netcdf(tmp_path / "cams.nc")
    cfg = config_from_dict({
        "variant": "air-pollution",
        "profile": "tiny",
        "data": {"paths": [str(tmp_path / "cams.nc")], "val_fraction": 0.5, "validate": False},
        "loss": {"smoothness": {"kind": "tv", "weight": 0.5}},
        "train": {"max_steps": 1, "val_at_start": False, "val_every": 1, "device": "cpu", "progress": False},
        "checkpoint": {"out_dir": str(tmp_path / "run")},
    })
    step = train(cfg).history[-1]
    assert step["loss_term/smoothness"] > 0
    weights = {"positivity": cfg.loss.positivity_weight, "log": cfg.loss.log_weight, "smoothness": 0.5}
    parts = {k[len("loss_term/"):]: v for k, v in step.items() if k.startswith("loss_term/")}
    assert set(parts) == {"base", *weights}
    assert step["loss"] == pytest.approx(parts["base"] + sum(weights[k] * parts[k] for k in weights), rel=1e-5)
    lines = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    logged = [line for line in lines if line["event"] == "step"]
    assert [line["loss_term/smoothness"] for line in logged] == [step["loss_term/smoothness"]]
