"""Optimiser groups, LoRA modes and schedules on tiny real models; checkpoint and output ensembles."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from model_code.checkpoint import load_checkpoint, save_checkpoint
from model_code.data.batch import window_to_batch
from model_code.data.synthetic import synthetic_window
from model_code.errors import ConfigError, DataError
from model_code.training.ensemble import average_checkpoints, write_averaged_checkpoint
from model_code.training.losses import build_loss
from model_code.training.optim import (
    OptimConfig,
    ScheduleConfig,
    apply_lora_mode,
    build_optimizer,
    build_scheduler,
    lora_parameters,
    lr_factor,
    parameter_groups,
)
from model_code.variants import build_model, get_variant

MEDIUM = get_variant("medium-range")
LEVELS = (500, 850)


def tiny_inputs(spec, seed: int = 0):
    h, w = spec.tiny_grid
    lat, lon = np.linspace(90, -90, h), np.linspace(0, 360, w, endpoint=False)
    step = np.timedelta64(spec.timestep_hours, "h")
    times = np.array([np.datetime64("2024-01-01T00", "ns") + i * step for i in range(2)])
    return window_to_batch(synthetic_window(spec, lat, lon, times, levels=LEVELS, seed=seed), spec)


@pytest.fixture(scope="module")
def inputs():
    return tiny_inputs(MEDIUM)


def pretrained_like(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """A freshly built Aurora's adaptive norms start at zero, so its attention (and the LoRA
    adapters in it) gets no gradient until they move; a fine-tuning run starts from trained
    weights where they have. Perturb every weight but the adapters' B (which starts at 0)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.endswith("lora_B"):
                p.add_(0.02 * torch.randn(p.shape, generator=g))
    return model


def train_step(model, optimizer, inputs) -> float:
    pred = model(inputs)
    target = dataclasses.replace(pred, surf_vars={k: v.detach() + 1.0 for k, v in pred.surf_vars.items()},
                                 atmos_vars={k: v.detach() + 1.0 for k, v in pred.atmos_vars.items()})
    loss = build_loss(MEDIUM)([(pred, target)], [1]).total
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


# --------------------------------------------------------------------------------------
# LoRA modes


def test_lora_only_trains_the_adapters_and_nothing_else(inputs):
    model = pretrained_like(build_model(MEDIUM, "tiny")).train()
    cfg = OptimConfig(lr=1e-2, lora="lora_only")
    trainable = apply_lora_mode(model, cfg)
    adapters = dict(lora_parameters(model))
    assert adapters and trainable == sum(p.numel() for p in adapters.values())
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    train_step(model, build_optimizer(model, cfg), inputs)
    changed = {k for k, v in model.named_parameters() if not torch.equal(v, before[k])}
    assert changed and changed <= set(adapters)
    assert any(k.endswith("lora_B") for k in changed)  # B starts at zero and moves first


def test_full_mode_trains_everything_again(inputs):
    model = build_model(MEDIUM, "tiny").train()
    apply_lora_mode(model, OptimConfig(lora="lora_only"))
    assert apply_lora_mode(model, OptimConfig(lora="full")) == sum(p.numel() for p in model.parameters())


def test_lora_only_without_adapters_is_refused():
    model = build_model(dataclasses.replace(MEDIUM, use_lora=False), "tiny")
    with pytest.raises(ConfigError) as e:
        apply_lora_mode(model, OptimConfig(lora="lora_only"))
    assert e.value.field == "optim.lora" and "use_lora=False" in str(e.value)
    with pytest.raises(ConfigError) as e:
        apply_lora_mode(model, OptimConfig(lora_rank=4))
    assert e.value.field == "optim.lora_rank"


def test_lora_rank_rebuilds_adapters_without_changing_the_forecast(inputs):
    model = build_model(MEDIUM, "tiny")
    assert {p.shape[0] for k, p in lora_parameters(model) if k.endswith("lora_A")} == {8}  # Aurora's rank
    with torch.no_grad():
        before = model(inputs).surf_vars["2t"]
    apply_lora_mode(model, OptimConfig(lora="lora_only", lora_rank=4))
    ranks = {p.shape[0] for k, p in lora_parameters(model) if k.endswith("lora_A")}
    ranks |= {p.shape[1] for k, p in lora_parameters(model) if k.endswith("lora_B")}
    assert ranks == {4}
    assert all(p.requires_grad for _, p in lora_parameters(model))
    with torch.no_grad():
        assert torch.equal(model(inputs).surf_vars["2t"], before)  # new adapters start at B = 0


# --------------------------------------------------------------------------------------
# Parameter groups


def test_no_weight_decay_on_biases_and_norms_and_multipliers_by_name():
    model = build_model(MEDIUM, "tiny")
    cfg = OptimConfig(lr=1e-3, weight_decay=0.1, lr_multipliers={r"token_embeds": 10.0, r"^decoder\.": 0.5})
    groups = parameter_groups(model, cfg)
    names = {id(p): n for n, p in model.named_parameters()}
    by_name = {names[id(p)]: g for g in groups for p in g["params"]}
    assert len(by_name) == sum(1 for _ in model.parameters())
    assert by_name["encoder.surf_norm.weight"]["weight_decay"] == 0.0
    assert by_name["encoder.pos_embed.bias"]["weight_decay"] == 0.0
    assert by_name["encoder.pos_embed.weight"]["weight_decay"] == 0.1
    assert by_name["encoder.surf_token_embeds.weights.2t"]["lr"] == pytest.approx(1e-2)
    assert by_name["decoder.surf_heads.2t.weight"]["lr"] == pytest.approx(5e-4)
    assert by_name["backbone.encoder_layers.0.blocks.0.attn.qkv.weight"]["lr"] == pytest.approx(1e-3)
    optimizer = build_optimizer(model, cfg)
    assert sorted(g["lr_multiplier"] for g in optimizer.param_groups) == sorted(g["lr_multiplier"] for g in groups)


def test_a_pattern_matching_no_parameter_is_refused():
    with pytest.raises(ConfigError) as e:
        parameter_groups(build_model(MEDIUM, "tiny"), OptimConfig(lr_multipliers={"embedz": 10.0}))
    assert e.value.field == "optim.lr_multipliers.embedz"


# --------------------------------------------------------------------------------------
# Schedules


def lrs(scheduler, optimizer, steps: int) -> list[list[float]]:
    out = []
    for _ in range(steps):
        out.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    return out


def small_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 1))


def test_warmup_then_cosine_to_the_minimum():
    model = small_model()
    optimizer = build_optimizer(model, OptimConfig(lr=1.0, lr_multipliers={r"^2\.": 0.1}))
    cfg = ScheduleConfig(name="cosine", warmup_steps=4, min_lr_ratio=0.1)
    seen = lrs(build_scheduler(optimizer, cfg, total_steps=24), optimizer, 30)
    head = [row[0] for row in seen]  # groups: (1.0, decay), (1.0, no decay), (0.1, ...)
    assert head[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert head[4] == pytest.approx(1.0)
    assert head[14] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 10 / 20)))
    assert head[24:] == pytest.approx([0.1] * 6)
    assert all(a >= b for a, b in zip(head[4:], head[5:]))
    # Multipliers are kept: the slow group runs at a tenth all along.
    slow = [g["lr_multiplier"] for g in optimizer.param_groups].index(0.1)
    assert [row[slow] for row in seen] == pytest.approx([0.1 * h for h in head])


def test_cosine_restarts_match_pytorchs():
    cfg = ScheduleConfig(name="cosine_restarts", warmup_steps=0, min_lr_ratio=0.2, restart_period=5, restart_mult=2)
    model = small_model()
    ours = torch.optim.AdamW(model.parameters(), lr=0.5)
    theirs = torch.optim.AdamW(small_model().parameters(), lr=0.5)
    reference = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(theirs, T_0=5, T_mult=2, eta_min=0.1)
    assert sum(lrs(build_scheduler(ours, cfg), ours, 40), []) == pytest.approx(sum(lrs(reference, theirs, 40), []))
    assert lr_factor(5, cfg) == 1.0 and lr_factor(15, cfg) == 1.0  # restarts at 5, 5 + 10


def test_constant_after_warmup():
    cfg = ScheduleConfig(name="constant", warmup_steps=2)
    assert [lr_factor(s, cfg) for s in range(5)] == [0.5, 1.0, 1.0, 1.0, 1.0]


@pytest.mark.parametrize("name", ["cosine", "cosine_restarts"])
def test_optimiser_and_scheduler_resume_exactly_from_their_state(name, tmp_path):
    cfg = ScheduleConfig(name=name, warmup_steps=3, restart_period=4)
    x, y = torch.randn(16, 4, generator=torch.Generator().manual_seed(1)), torch.randn(16, 1)

    def run(model, optimizer, scheduler, steps):
        out = []
        for _ in range(steps):
            loss = torch.nn.functional.mse_loss(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            out.append((loss.item(), optimizer.param_groups[0]["lr"]))
        return out

    def fresh():
        model = small_model()
        optimizer = build_optimizer(model, OptimConfig(lr=0.05))
        return model, optimizer, build_scheduler(optimizer, cfg, total_steps=20)

    straight = run(*fresh(), 20)
    model, optimizer, scheduler = fresh()
    first = run(model, optimizer, scheduler, 8)
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict()}, tmp_path / "state.pt")
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    model, optimizer, scheduler = fresh()
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    assert first + run(model, optimizer, scheduler, 12) == straight


# --------------------------------------------------------------------------------------
# Configuration


@pytest.mark.parametrize(
    "cfg, fld",
    [
        (OptimConfig(lr=-1e-4), "optim.lr"),
        (OptimConfig(lr=float("inf")), "optim.lr"),
        (OptimConfig(weight_decay=-0.1), "optim.weight_decay"),
        (OptimConfig(betas=(0.9, 1.0)), "optim.betas"),
        (OptimConfig(eps=0), "optim.eps"),
        (OptimConfig(lr_multipliers={"(": 2.0}), "optim.lr_multipliers.("),
        (OptimConfig(lr_multipliers={"embed": -1.0}), "optim.lr_multipliers.embed"),
        (OptimConfig(lora="qlora"), "optim.lora"),
        (OptimConfig(lora_rank=0), "optim.lora_rank"),
        (OptimConfig(lora_rank=2.5), "optim.lora_rank"),
    ],
)
def test_bad_optimiser_settings_are_refused_naming_the_field(cfg, fld):
    with pytest.raises(ConfigError) as e:
        cfg.validate()
    assert e.value.field == fld and fld in str(e.value)


@pytest.mark.parametrize(
    "cfg, fld",
    [
        (ScheduleConfig(name="linear"), "schedule.name"),
        (ScheduleConfig(warmup_steps=-1), "schedule.warmup_steps"),
        (ScheduleConfig(min_lr_ratio=1.5), "schedule.min_lr_ratio"),
        (ScheduleConfig(restart_period=0), "schedule.restart_period"),
        (ScheduleConfig(restart_mult=0), "schedule.restart_mult"),
        (ScheduleConfig(warmup_steps=100), "schedule.warmup_steps"),  # >= the 100 steps of the run
    ],
)
def test_bad_schedules_are_refused_naming_the_field(cfg, fld):
    with pytest.raises(ConfigError) as e:
        cfg.validate(total_steps=100)
    assert e.value.field == fld


# --------------------------------------------------------------------------------------
# Ensembles


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    d = tmp_path_factory.mktemp("ensemble")
    paths = []
    for seed in range(3):
        model = build_model(MEDIUM, "tiny", seed=seed)
        paths.append(save_checkpoint(model, MEDIUM, "tiny", str(d / f"step{seed}.safetensors")))
    return paths


def test_averaged_checkpoint_is_the_mean_of_the_weights(checkpoints):
    averaged = average_checkpoints(checkpoints)
    states = [load_checkpoint(p)[0].state_dict() for p in checkpoints]
    assert averaged.keys() == states[0].keys()
    for k, v in averaged.items():
        assert v.dtype == states[0][k].dtype
        assert torch.allclose(v, torch.stack([s[k] for s in states]).mean(0), atol=1e-7), k
    assert not torch.equal(averaged["encoder.pos_embed.weight"], states[0]["encoder.pos_embed.weight"])


def test_an_averaged_checkpoint_loads_as_the_same_model(checkpoints, tmp_path, inputs):
    out = write_averaged_checkpoint(checkpoints, str(tmp_path / "average.safetensors"))
    model, info = load_checkpoint(out)
    assert info.variant == "medium-range" and info.profile == "tiny"
    assert json.loads(info.metadata["averaged_from"]) == list(checkpoints)
    averaged = average_checkpoints(checkpoints)
    assert all(torch.equal(v, averaged[k]) for k, v in model.state_dict().items())
    with torch.no_grad():
        assert torch.isfinite(model(inputs).surf_vars["2t"]).all()


def test_checkpoints_of_different_models_are_not_averaged(checkpoints, tmp_path):
    other = save_checkpoint(build_model("high-res", "tiny"), get_variant("high-res"), "tiny",
                            str(tmp_path / "highres.safetensors"))
    with pytest.raises(DataError, match="different models") as e:
        average_checkpoints([checkpoints[0], other])
    assert "variant" in str(e.value)
    with pytest.raises(DataError, match="no checkpoints"):
        average_checkpoints([])


