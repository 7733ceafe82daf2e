"""Explainability on the tiny medium-range model: occlusion, gradient x input, saliency, attention.

The window is synthetic (every input of the variant on a 32x64 grid, two levels) with
specific humidity set to zero everywhere, so one input carries nothing by construction.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from einops import rearrange
from matplotlib import image as mpimg

from model_code.data.batch import window_to_batch
from model_code.data.synthetic import synthetic_window
from model_code.errors import DataError
from model_code.evaluation.explain import (
    _gradients,
    _location_scale,
    capture_attention,
    explain,
    occlusion,
    save_figures,
)
from model_code.variants import build_model, get_variant

SPEC = get_variant("medium-range")
REGION = (40.0, 50.0, 10.0, 30.0)




@pytest.fixture(scope="module")
def window():
    lat, lon = np.linspace(60, 29, 32), np.linspace(0, 63, 64)
    times = np.array(["2020-01-01T00", "2020-01-01T06"], dtype="datetime64[ns]")
    w = synthetic_window(SPEC, lat, lon, times, levels=(500, 850))
    w["q"][:] = 0.0
    return w


@pytest.fixture(scope="module")
def model():
    # Two blocks in the first encoder and last decoder layer, so shifted windows (with their
    # attention mask) are exercised too.
    return build_model(SPEC, "tiny", overrides={"encoder_depths": (2, 1, 1), "decoder_depths": (1, 1, 2)})


@pytest.mark.parametrize("mode", ["mean", "zero"])
def test_occluding_a_zero_input_changes_nothing_and_a_used_one_does(model, window, mode):
    occ = occlusion(model, window_to_batch(window, SPEC), mode=mode)
    assert set(occ.input.values) >= {"t2m", "u10", "q", "z", "z_surface", "lsm"}
    assert list(occ.output.values) == [v.dataset_name for v in SPEC.outputs()]
    assert np.all(occ.sel(input="q").values == 0.0)
    assert occ.sel(input="t2m", output="t2m") > 1e-3
    assert occ.sel(input="t", output="t") > 1e-3
    assert np.isfinite(occ.values).all() and (occ.values >= 0).all()


def test_gradient_matches_a_finite_difference(model, window):
    batch = window_to_batch(window, SPEC)
    g = _gradients(model, batch, "t2m", None, REGION)
    grad = g.grads["msl"]
    idx = tuple(int(i) for i in np.unravel_index(int(grad.abs().argmax()), grad.shape))
    eps = 1e-2  # normalised units of msl: eps x Aurora's msl scale in Pa
    _, scale = _location_scale(model, "surface", "msl", ())
    msl = batch.surf_vars["msl"].clone()
    msl[idx] += eps * float(scale)
    moved = _gradients(model, dataclasses.replace(batch, surf_vars={**batch.surf_vars, "msl": msl}), "t2m", None, REGION)
    assert (moved.value - g.value) / eps == pytest.approx(float(grad[idx]), rel=0.1)


def test_explain_gives_maps_shaped_like_the_window_and_refuses_bad_targets(model, window):
    expl = explain(model, SPEC, window, output="t", level=850, region=REGION, attention=False)
    assert expl.objective.startswith("t@850hPa")
    for key in ("t2m", "z", "lsm", "q"):
        for kind in ("gradient_x_input", "saliency"):
            da = expl.maps[f"{key}_{kind}"]
            assert da.dims == window[key].dims and da.shape == window[key].shape, (key, kind)
    assert (expl.maps["t_saliency"].values >= 0).all()
    # q = 0 everywhere lies below Aurora's normalisation location of q: x_n < 0, so its
    # gradient x input is not 0 although occluding it changes nothing
    summary = expl.summary()
    assert summary["inputs"]["q"]["occlusion"] == 0.0
    assert summary["inputs"]["t"]["occlusion"] > 0

    with pytest.raises(DataError, match="'swh' is not predicted"):
        explain(model, SPEC, window, output="swh", attention=False)
    with pytest.raises(DataError, match=r"levels \[500.0, 850.0\]"):
        explain(model, SPEC, window, output="t", level=700, attention=False)
    with pytest.raises(DataError, match="holds no grid point"):
        explain(model, SPEC, window, region=(-30, -20, 0, 10), attention=False)


def test_attention_hooks_recompute_the_fused_attention_exactly(model, window):
    from aurora.model.swin3d import WindowAttention

    seen = {}

    def keep(name):
        def hook(module, args, kwargs, output):
            seen[name] = (args[0], output)
        return hook

    handles = [mod.register_forward_hook(keep(name.rsplit(".attn", 1)[0]), with_kwargs=True)
               for name, mod in model.named_modules() if isinstance(mod, WindowAttention)]
    try:
        with capture_attention(model) as maps, torch.no_grad():
            model.forward(window_to_batch(window, SPEC))
    finally:
        for h in handles:
            h.remove()

    modules = dict(model.named_modules())
    assert len(maps) == len(seen) == 8
    assert any(any(a.shift) for a in maps)
    with torch.no_grad():
        for a in maps:
            attn = modules[a.block].attn
            x, out = seen[a.block]
            n_tokens = a.window[0] * a.window[1] * a.window[2]
            assert a.weights.shape == (x.shape[0], attn.num_heads, n_tokens, n_tokens)
            assert torch.allclose(a.weights.sum(-1), torch.ones(()), atol=1e-5)
            assert a.received.shape == a.resolution
            # softmax(q k^T / sqrt(d) + mask) @ v through the output projection is the module's output
            v = rearrange(attn.qkv(x) + attn.lora_qkv(x, 0), "B N (qkv H D) -> qkv B H N D", H=attn.num_heads, qkv=3)[2]
            mixed = rearrange(a.weights @ v, "B H N D -> B N (H D)")
            assert torch.allclose(attn.proj(mixed) + attn.lora_proj(mixed, 0), out, atol=1e-5), a.block
            # each window's keys receive, on average over queries, a total weight of 1
            tiles = torch.roll(a.received, shifts=tuple(-s for s in a.shift), dims=(0, 1, 2))
            C, H, W = a.resolution
            wc, wh, ww = a.window
            sums = tiles.reshape(C // wc, wc, H // wh, wh, W // ww, ww).sum((1, 3, 5))
            assert torch.allclose(sums, torch.ones(()), atol=1e-5), a.block

    assert not any(mod._forward_hooks for mod in model.modules() if isinstance(mod, WindowAttention))


def test_figures_are_png_images(model, window, tmp_path):
    expl = explain(model, SPEC, window, output="t2m", region=REGION)
    assert {a.block for a in expl.attention} == {n for n, _ in model.named_modules() if n.endswith(tuple(
        f"blocks.{i}" for i in range(2)))}
    figures = save_figures(expl, tmp_path)
    assert [p.name for _, p in figures] == ["explain_occlusion.png", "explain_gradient_x_input.png",
                                            "explain_saliency.png", "explain_attention.png"]
    for _, path in figures:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        img = mpimg.imread(path)
        assert img.ndim == 3 and img.shape[0] > 50 and img.shape[1] > 50
