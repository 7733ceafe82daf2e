"""Structured pruning: fewer MLP units and heads, the forward still runs, checkpoints round-trip
bit-identically and a pruned checkpoint fine-tunes (`train(cfg)` with `weights`) and stays pruned."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
import xarray as xr

from model_code.checkpoint import load_checkpoint, load_weights, read_checkpoint_info, save_checkpoint
from model_code.compression.prune import blocks, prune
from model_code.data.batch import window_to_batch
from model_code.data.synthetic import synthetic_window
from model_code.data.windows import WindowDataset
from model_code.errors import DataError
from model_code.forecast import forecast_steps
from model_code.variants import build_model, get_variant

from conftest import BRITISH_ISLES

SPEC = get_variant("medium-range")



def trained_like(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """`model` with every weight moved by seeded noise. A freshly built Aurora starts each Swin block
    as the identity (its residual norms are zero), so pruning one would change nothing."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


def parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def removed(n: int, fraction: float) -> int:
    return math.floor(n * fraction + 0.5)


@pytest.fixture(scope="module")
def window():
    """Two real inputs 6 h apart of the British Isles' 2 m temperature (its other inputs at
    Aurora's means), cropped to the patch size: 32x40."""
    ds = WindowDataset.from_files([BRITISH_ISLES], SPEC, crop=True, fill_missing="mean", fill_missing_dynamic="mean",
                                  levels=(500, 850), init_times=[np.datetime64("2019-03-10T12:00")])
    return ds[0].inputs


def synthetic_batch(spec, shape):
    h, w = shape
    end = np.datetime64("2024-01-01T12:00")
    times = np.array([end - np.timedelta64(spec.timestep_hours, "h"), end])
    window = synthetic_window(spec, np.linspace(90, -90, h), np.linspace(0, 360, w, endpoint=False), times)
    return window_to_batch(window.astype("float32"), spec)


def forecasts(model, batch, steps=2):
    return [p.surf_vars["2t"] for p in forecast_steps(model, batch, steps)]


# ---- pruning ------------------------------------------------------------------------------------

def test_pruning_30_percent_of_the_mlp_units_removes_their_rows_and_columns_and_the_model_still_runs(window):
    model = trained_like(build_model(SPEC, "tiny", seed=1))
    widths = {name: (b.mlp.fc1.in_features, b.mlp.fc1.out_features) for name, b in blocks(model).items()}
    before = parameters(model)
    reference = forecasts(model, window)

    pruned, record = prune(model, mlp_fraction=0.3)
    assert pruned is model
    # Each removed unit takes its fc1 row (dim weights and a bias) and its fc2 column (dim weights).
    expected = sum(removed(hidden, 0.3) * (2 * dim + 1) for dim, hidden in widths.values())
    assert before - parameters(pruned) == expected == 103_962  # tiny: hidden 128/256/512 lose 38/77/154
    assert record["method"] == "prune" and record["mlp_fraction"] == 0.3 and record["head_fraction"] == 0.0
    heads = {name: b.attn.num_heads for name, b in blocks(pruned).items()}
    assert record["kept"] == {name: {"mlp_hidden": hidden - removed(hidden, 0.3), "heads": heads[name]}
                              for name, (_, hidden) in widths.items()}
    assert record["kept"]["backbone.encoder_layers.0.blocks.0"] == {"mlp_hidden": 90, "heads": 2}
    json.dumps(record)  # what a checkpoint's metadata holds

    out = forecasts(pruned, window)
    assert [o.shape for o in out] == [r.shape for r in reference] == [(1, 1, 32, 40)] * 2
    assert all(torch.isfinite(o).all() for o in out)
    assert not torch.equal(out[0], reference[0])  # a smaller model computes another function


def test_magnitude_keeps_the_units_that_matter_more_than_the_opposite_choice(window):
    model = trained_like(build_model(SPEC, "tiny", seed=1))
    reference = forecasts(model, window, 1)[0]
    pruned, _ = prune(copy.deepcopy(model), mlp_fraction=0.5)
    worst = copy.deepcopy(model)
    with torch.no_grad():  # the same widths, keeping the least important units instead
        for block in blocks(worst).values():
            fc1, fc2 = block.mlp.fc1, block.mlp.fc2
            score = fc1.weight.pow(2).sum(1).add(fc1.bias.pow(2)).sqrt() * fc2.weight.norm(dim=0)
            drop = torch.topk(score, removed(len(score), 0.5)).indices
            fc2.weight[:, drop] = 0
    error = (forecasts(pruned, window, 1)[0] - reference).abs().mean()
    opposite = (forecasts(worst, window, 1)[0] - reference).abs().mean()
    assert error < opposite, (float(error), float(opposite))


def test_pruning_nothing_gives_identical_forecasts(window):
    model = trained_like(build_model(SPEC, "tiny", seed=2))
    reference = forecasts(model, window)
    before = parameters(model)
    pruned, record = prune(model, mlp_fraction=0.0, head_fraction=0.0)
    assert parameters(pruned) == before
    assert all(torch.equal(a, b) for a, b in zip(forecasts(pruned, window), reference, strict=True))
    assert all(v["mlp_hidden"] == 4 * b.mlp.fc1.in_features for v, b in zip(record["kept"].values(),
                                                                              blocks(pruned).values()))


def test_head_pruning_shrinks_qkv_proj_and_their_lora_and_keeps_forecasts_finite(window):
    model = trained_like(build_model(SPEC, "tiny", seed=3))
    heads = {name: b.attn.num_heads for name, b in blocks(model).items()}  # tiny: 2, 4, 8, 8, 4, 2
    pruned, record = prune(model, mlp_fraction=0.3, head_fraction=0.25)
    for name, block in blocks(pruned).items():
        attn, kept = block.attn, heads[name] - removed(heads[name], 0.25)
        assert attn.num_heads == kept == record["kept"][name]["heads"]
        inner = kept * attn.head_dim
        assert attn.qkv.weight.shape == (3 * inner, block.mlp.fc1.in_features)
        assert attn.proj.weight.shape == (block.mlp.fc1.in_features, inner)
        assert attn.lora_qkv.loras[0].lora_B.shape[0] == 3 * inner  # medium-range has LoRA adapters
        assert attn.lora_proj.loras[0].lora_A.shape[1] == inner
    assert [v["heads"] for v in record["kept"].values()] == [1, 3, 6, 6, 3, 1]
    out = forecasts(pruned, window)
    assert all(torch.isfinite(o).all() for o in out)

    pruned.train()  # and it trains: every kept weight gets a gradient
    pruned(window).surf_vars["2t"].nanmean().backward()  # forecast_steps runs without gradients
    attn = blocks(pruned)["backbone.encoder_layers.1.blocks.0"].attn
    assert attn.qkv.weight.grad is not None and torch.isfinite(attn.qkv.weight.grad).all()


@pytest.mark.parametrize("arguments", [
    {"mlp_fraction": 1.0}, {"mlp_fraction": -0.1}, {"mlp_fraction": 1.5}, {"mlp_fraction": float("nan")},
    {"mlp_fraction": "0.3"}, {"mlp_fraction": True}, {"mlp_fraction": None},
    {"head_fraction": 1.0}, {"head_fraction": -0.5}, {"importance": "random"},
])
def test_bad_fractions_are_refused_before_any_work(arguments):
    model = build_model(SPEC, "tiny")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(DataError, match="must be a number in \\[0, 1\\)|unknown pruning importance"):
        prune(model, **arguments)
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


# ---- checkpoints --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["medium-range", "medium-range-v1.5"])  # with and without LoRA adapters
def test_a_pruned_checkpoint_round_trips_bit_identically(name, tmp_path):
    spec = get_variant(name)
    model, record = prune(trained_like(build_model(spec, "tiny", seed=4)), mlp_fraction=0.3, head_fraction=0.25)
    uri = save_checkpoint(model, spec, "tiny", str(tmp_path / "pruned.safetensors"), compression=record)
    assert read_checkpoint_info(uri).compression == record

    loaded, info = load_checkpoint(uri)
    assert info.compression == record and parameters(loaded) == parameters(model)
    batch = synthetic_batch(spec, spec.tiny_grid)
    torch.manual_seed(0)
    expected = forecasts(model.eval(), batch)
    torch.manual_seed(0)
    assert all(torch.equal(a, b) for a, b in zip(forecasts(loaded, batch), expected, strict=True))

    # Into a model built from a config (fine-tuning), and again into that already pruned model.
    fresh = build_model(spec, "tiny", seed=None)
    load_weights(fresh, uri)
    assert fresh.compression_record == record
    load_weights(fresh, uri)
    torch.manual_seed(0)
    assert all(torch.equal(a, b) for a, b in zip(forecasts(fresh.eval(), batch), expected, strict=True))


def test_an_uncompressed_checkpoint_loads_into_a_built_model_as_before(tmp_path):
    model = trained_like(build_model(SPEC, "tiny", seed=5))
    uri = save_checkpoint(model, SPEC, "tiny", str(tmp_path / "plain.safetensors"))
    fresh = build_model(SPEC, "tiny", seed=None)
    load_weights(fresh, uri)
    assert fresh.compression_record is None and parameters(fresh) == parameters(model)
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values()))


def test_a_prune_record_that_does_not_fit_the_model_is_refused(tmp_path):
    model, record = prune(build_model(SPEC, "tiny"), mlp_fraction=0.3)
    uri = save_checkpoint(model, SPEC, "tiny", str(tmp_path / "pruned.safetensors"), compression=record)
    other = build_model(SPEC, "tiny", overrides={"embed_dim": 16})  # hidden 64: 90 units cannot fit
    with pytest.raises(DataError, match="does not fit this model"):
        load_weights(other, uri)
    bad = {**record, "kept": {"backbone.nowhere": {"mlp_hidden": 1, "heads": 1}}}
    with pytest.raises(DataError, match="no Swin3D block 'backbone.nowhere'"):
        load_checkpoint(save_checkpoint(model, SPEC, "tiny", str(tmp_path / "bad.safetensors"), compression=bad))


# ---- recovery fine-tune -------------------------------------------------------------------------

def demo_like(data, out, **changes):
    """`pipelines/demo.py`'s CONFIG, ten steps on a week of the sample."""
    from model_code.training.config import config_from_dict

    return config_from_dict({
        "variant": "medium-range", "profile": "tiny", "timestep_hours": 6, "head_init": "zero",
        "model": {"max_history_size": 5, "drop_rate": 0.1},
        "data": {"paths": [str(data)], "val_period": ["2019-03-06T00:00", "2019-03-08T00:00"], "crop": True,
                 "fill_missing": "mean", "fill_missing_dynamic": "mean", "levels": [500, 850], "history": 5,
                 "batch_size": 8, "normalisation": "training"},
        "optim": {"lr": 3e-4, "weight_decay": 0.1},
        "schedule": {"warmup_steps": 2},
        "rollout": {"curriculum": [[0, 1]]},
        "early_stopping": {"lead_steps": [1, 2]},
        "train": {"max_steps": 10, "val_every": 5, "device": "cpu", "progress": False},
        "checkpoint": {"out_dir": str(out), "keep_top_k": 0},
        **changes,
    })


def test_a_pruned_checkpoint_fine_tunes_with_train_and_stays_pruned(tmp_path):
    from model_code.training import Callback, train

    week = tmp_path / "week.nc"
    with xr.open_dataset(BRITISH_ISLES) as ds:
        ds.sel(time=slice("2019-03-01", "2019-03-07")).to_netcdf(week)
    base = train(demo_like(week, tmp_path / "base")).best_checkpoint
    model, info = load_checkpoint(base)
    model, record = prune(model, mlp_fraction=0.3, head_fraction=0.25)
    pruned = save_checkpoint(model, info.spec, info.profile, str(tmp_path / "pruned.safetensors"),
                             overrides=json.loads(info.metadata["model_overrides"]), compression=record)

    result = train(demo_like(week, tmp_path / "recover", weights=pruned))
    validated = [h["val_loss"] for h in result.history if "val_loss" in h]
    assert len(validated) == 3 and all(np.isfinite(validated))
    assert min(validated[1:]) < validated[0], validated  # the fine-tune recovers some of what pruning cost
    for checkpoint in (result.best_checkpoint, result.last_checkpoint):
        recovered, info = load_checkpoint(checkpoint)
        assert info.compression == record and parameters(recovered) == parameters(model)
    window = WindowDataset.from_files([BRITISH_ISLES], info.spec, crop=True, fill_missing="mean",  # 5 inputs
                                      fill_missing_dynamic="mean", levels=(500, 850), history=5,
                                      init_times=[np.datetime64("2019-03-20T00:00")])
    assert all(torch.isfinite(o).all() for o in forecasts(recovered, window[0].inputs))

    # Killed after step 7 (the last checkpoint is step 5's), the run resumes into a model built from
    # the config, pruned by the checkpoint's record, and goes on with the same losses.
    class Killed(Exception):
        pass

    class KillAt(Callback):
        def on_step_end(self, trainer, step, logs):
            if step == 7:
                raise Killed

    cfg = demo_like(week, tmp_path / "killed", weights=pruned)
    with pytest.raises(Killed):
        train(cfg, [KillAt()])
    resumed = train(cfg, resume=tmp_path / "killed")
    assert [h["step"] for h in resumed.history] == [h["step"] for h in result.history] == list(range(11))
    for a, b in zip(result.history, resumed.history):
        assert a.keys() == b.keys()
        for key in {"loss", "val_loss"} & a.keys():
            assert b[key] == pytest.approx(a[key], rel=1e-6), (a["step"], key)
    assert load_checkpoint(resumed.last_checkpoint)[1].compression == record


# ---- the published architecture ------------------------------------------------------------------

@pytest.mark.slow
def test_the_full_medium_range_architecture_prunes_and_runs():
    """~5 GB of random float32 weights: 30 % of MLP units and 25 % of heads out, one step at 32x64."""
    model = build_model(SPEC, "full")
    before = parameters(model)
    model, record = prune(model, mlp_fraction=0.3, head_fraction=0.25)
    assert {v["heads"] for v in record["kept"].values()} == {6, 12, 24}  # of 8, 16, 32
    assert {v["mlp_hidden"] for v in record["kept"].values()} == {2048 - 614, 4096 - 1229, 8192 - 2458}
    assert 0.6 * before < parameters(model) < 0.8 * before
    with torch.inference_mode():
        (out,) = forecasts(model, synthetic_batch(SPEC, (32, 64)), 1)
    assert out.shape == (1, 1, 32, 64) and torch.isfinite(out).all()
