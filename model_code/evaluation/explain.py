"""Which inputs a forecast rests on: occlusion, gradient x input, saliency and attention maps.

All four look at one model step from one input window (the first lead time), in the
model's own normalised units (Aurora's per-variable, per-level location and scale), so a
kelvin of temperature and a pascal of pressure are compared on the scale the model sees:

- **Occlusion** replaces one input variable (all history steps and levels) by its spatial
  mean (per time and level) or by zero, runs the step again and reports, per output
  variable, the RMS change of the output in normalised units. An input the model ignores,
  or one already equal to its replacement, scores exactly 0.
- **Gradient x input** is `x_n * d J / d x_n` summed over the input, with `x_n` the
  normalised input and `J` the region mean of one normalised output variable: a first-order
  estimate of how much of `J` (relative to the normalisation location) each input carries.
- **Saliency** maps are `|d J / d x_n|` per grid point: where in the inputs the forecast of
  the chosen region is sensitive.
- **Attention maps** come from every Swin block of the backbone (`capture_attention`).

Figures for the report come from `save_figures`.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Literal, Sequence

import numpy as np
import torch
import xarray as xr
from aurora import Aurora, Batch
from aurora.model.swin3d import Swin3DTransformerBlock, WindowAttention, crop_3d, window_reverse_3d
from aurora.model.util import maybe_adjust_windows
from aurora.normalisation import level_to_str, locations, scales
from einops import rearrange

from model_code.data.batch import window_to_batch
from model_code.data.grid import cell_areas
from model_code.errors import DataError
from model_code.forecast import forward_hours
from model_code.variables import variable
from model_code.variants import VariantSpec

__all__ = [
    "AttentionMap",
    "Explanation",
    "LatLonBox",
    "capture_attention",
    "explain",
    "gradient_x_input",
    "occlusion",
    "save_figures",
]

LatLonBox = tuple[float, float, float, float]
"""A box (lat_min, lat_max, lon_min, lon_max) in degrees, longitudes in [0, 360)."""

OcclusionMode = Literal["mean", "zero"]

_KINDS = (("surf_vars", "surface"), ("static_vars", "static"), ("atmos_vars", "atmos"))


# --------------------------------------------------------------------------------------
# Normalised units


def _location_scale(model: Aurora, kind: str, name: str, levels: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Aurora's normalisation of one variable, broadcastable against its tensor; (0, 1)
    where Aurora has no statistics for it (the variable is then taken in its own units)."""
    try:
        if kind == "atmos":
            keys = [f"{name}_{level_to_str(lv)}" for lv in levels]
            loc = torch.tensor([locations[k] for k in keys])[:, None, None]
            scl = torch.tensor([scales[k] for k in keys])[:, None, None]
            return loc, scl
        if name in model.surf_stats:
            loc, scl = model.surf_stats[name]
        else:
            loc, scl = locations[name], scales[name]
        return torch.tensor(float(loc)), torch.tensor(float(scl))
    except KeyError:
        return torch.tensor(0.0), torch.tensor(1.0)


def _dataset_name(kind: str, name: str) -> str:
    try:
        return variable(kind, name).dataset_name
    except KeyError:
        return name


def _step(model: Aurora, batch: Batch) -> Batch:
    """One model step from `batch` (b = 1), whatever the caller's grad mode."""
    return forward_hours(model, batch, model.timestep.total_seconds() / 3600)


def _normalised_outputs(model: Aurora, pred: Batch) -> dict[str, torch.Tensor]:
    """Each predicted field in normalised units, keyed by dataset name: surface (h, w),
    atmospheric (c, h, w), batch element 0 of the single predicted time."""
    levels = pred.metadata.atmos_levels
    out = {}
    for attr, kind in (("surf_vars", "surface"), ("atmos_vars", "atmos")):
        for name, x in getattr(pred, attr).items():
            loc, scl = _location_scale(model, kind, name, levels)
            out[_dataset_name(kind, name)] = (x[0, 0].float() - loc) / scl
    return out


# --------------------------------------------------------------------------------------
# Occlusion


def _occlude(x: torch.Tensor, kind: str, mode: OcclusionMode) -> torch.Tensor:
    if mode == "zero":
        return torch.zeros_like(x)
    spatial = (-2, -1)
    mean = torch.nanmean(x, dim=spatial, keepdim=True)
    return torch.where(torch.isnan(x), x, mean.expand_as(x))


def occlusion(model: Aurora, batch: Batch, *, mode: OcclusionMode = "mean") -> xr.DataArray:
    """Contribution of every input variable to every output variable by occlusion.

    Returns a DataArray (input, output) of RMS output changes in normalised units (dataset
    names; atmospheric outputs averaged over levels, NaN points ignored), one extra step
    per input variable.
    """
    if mode not in ("mean", "zero"):
        raise DataError(f"occlusion mode must be 'mean' or 'zero'; got '{mode}'")
    with torch.inference_mode():
        base = _normalised_outputs(model, _step(model, batch))
        inputs, rows = [], []
        for attr, kind in _KINDS:
            for name, x in getattr(batch, attr).items():
                occluded = dataclasses.replace(batch, **{attr: {**getattr(batch, attr), name: _occlude(x, kind, mode)}})
                changed = _normalised_outputs(model, _step(model, occluded))
                rows.append([_rms_change(changed[k], base[k]) for k in base])
                inputs.append(_dataset_name(kind, name))
    return xr.DataArray(
        np.array(rows, dtype="float64"), dims=("input", "output"),
        coords={"input": inputs, "output": list(base)}, name="occlusion",
        attrs={"long_name": f"RMS output change (normalised units) when the input is replaced by its {mode}"
               if mode == "mean" else "RMS output change (normalised units) when the input is set to zero",
               "mode": mode},
    )


def _rms_change(a: torch.Tensor, b: torch.Tensor) -> float:
    d = (a - b).double()
    if d.dim() == 3:  # (c, h, w): mean over levels of per-level RMS
        return float(torch.stack([_rms(level) for level in d]).nanmean())
    return float(_rms(d))


def _rms(d: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(torch.nanmean(d**2))


# --------------------------------------------------------------------------------------
# Gradients


def _region_mask(lat: torch.Tensor, lon: torch.Tensor, region: LatLonBox | None) -> torch.Tensor:
    """(h, w) cell-area weights (`grid.cell_areas`) inside `region`, normalised to sum 1."""
    weights = torch.from_numpy(cell_areas(lat.detach().cpu().double().numpy(), lon.detach().cpu().double().numpy()))
    if region is not None:
        lat_min, lat_max, lon_min, lon_max = region
        inside_lat = (lat >= lat_min) & (lat <= lat_max)
        lon360 = lon % 360
        lo, hi = lon_min % 360, lon_max % 360
        inside_lon = (lon360 >= lo) & (lon360 <= hi) if lo <= hi else (lon360 >= lo) | (lon360 <= hi)
        weights = weights * (inside_lat[:, None] & inside_lon[None, :])
    total = weights.sum()
    if total <= 0:
        raise DataError(f"region {region} (lat_min, lat_max, lon_min, lon_max) holds no grid point of the forecast "
                        f"(latitudes {float(lat.min()):g}..{float(lat.max()):g}, longitudes "
                        f"{float(lon.min()):g}..{float(lon.max()):g})")
    return weights / total


@dataclass
class Gradients:
    """Gradient of one scalar objective wrt every input, in normalised units.

    `inputs` and `grads` map dataset names to tensors shaped like the batch's fields:
    surface (b, t, h, w), static (h, w), atmospheric (b, t, c, h, w).
    """

    objective: str
    value: float
    inputs: dict[str, torch.Tensor]
    grads: dict[str, torch.Tensor]
    kinds: dict[str, str]


def _gradients(model: Aurora, batch: Batch, output: str, level: float | None, region: LatLonBox | None) -> Gradients:
    levels = batch.metadata.atmos_levels
    leaves: dict[str, torch.Tensor] = {}
    kinds: dict[str, str] = {}
    fields: dict[str, dict[str, torch.Tensor]] = {}
    for attr, kind in _KINDS:
        fields[attr] = {}
        for name, x in getattr(batch, attr).items():
            loc, scl = _location_scale(model, kind, name, levels)
            leaf = ((x.float() - loc) / scl).detach().requires_grad_(True)
            key = _dataset_name(kind, name)
            leaves[key], kinds[key] = leaf, kind
            fields[attr][name] = leaf * scl + loc
    with torch.enable_grad():
        pred = _step(model, dataclasses.replace(batch, **fields))
        outputs = _normalised_outputs(model, pred)
        if output not in outputs:
            raise DataError(f"output variable '{output}' is not predicted by this model; "
                            f"expected one of: {', '.join(outputs)}")
        y = outputs[output]
        label = output
        if y.dim() == 3:
            pred_levels = [float(lv) for lv in pred.metadata.atmos_levels]
            if level is None or float(level) not in pred_levels:
                raise DataError(f"output '{output}' has levels {pred_levels}: give one of them as the level; got {level}")
            y = y[pred_levels.index(float(level))]
            label = f"{output}@{level:g}hPa"
        elif level is not None:
            raise DataError(f"output '{output}' is a surface variable; it has no level (got {level})")
        weights = _region_mask(pred.metadata.lat, pred.metadata.lon, region).to(y.dtype)
        objective = (torch.nan_to_num(y) * weights).sum()
        keys = list(leaves)
        grads = torch.autograd.grad(objective, [leaves[k] for k in keys], allow_unused=True)
    return Gradients(
        objective=label + (f" over {region}" if region else ""),
        value=float(objective.detach()),
        inputs={k: leaves[k].detach() for k in keys},
        grads={k: torch.zeros_like(leaves[k]) if g is None else g.detach() for k, g in zip(keys, grads)},
        kinds=kinds,
    )


def gradient_x_input(grads: Gradients) -> xr.DataArray:
    """Per input variable, `sum(x_n * dJ/dx_n)` over all its points: a signed first-order share of J."""
    keys = list(grads.grads)
    values = [float((grads.inputs[k] * grads.grads[k]).double().sum()) for k in keys]
    return xr.DataArray(np.array(values), dims=("input",), coords={"input": keys}, name="gradient_x_input",
                        attrs={"long_name": f"gradient x input of {grads.objective} (normalised units)"})


def _maps(grads: Gradients, batch: Batch, *, times, times_dim: str) -> xr.Dataset:
    """`x_n * dJ/dx_n` and `|dJ/dx_n|` per input as a dataset shaped like the input window."""
    lat = batch.metadata.lat.numpy().astype("float64")
    lon = batch.metadata.lon.numpy().astype("float64")
    levels = np.asarray(batch.metadata.atmos_levels, dtype="float64")
    data = {}
    for key, g in grads.grads.items():
        x = grads.inputs[key]
        kind = grads.kinds[key]
        if kind == "static":
            dims = ("latitude", "longitude")
            gx, sal = (x * g).numpy(), g.abs().numpy()
        elif kind == "surface":
            dims = (times_dim, "latitude", "longitude")
            gx, sal = (x * g)[0].numpy(), g.abs()[0].numpy()
        else:
            dims = (times_dim, "level", "latitude", "longitude")
            gx, sal = (x * g)[0].numpy(), g.abs()[0].numpy()
        data[f"{key}_gradient_x_input"] = (dims, gx)
        data[f"{key}_saliency"] = (dims, sal)
    return xr.Dataset(data, coords={times_dim: times, "level": levels, "latitude": lat, "longitude": lon},
                      attrs={"objective": grads.objective})


# --------------------------------------------------------------------------------------
# Attention


@dataclass
class AttentionMap:
    """Attention weights of one call of one Swin block (batch element 0).

    `weights` (windows, heads, tokens, tokens): softmax rows, each summing to 1, in the
    block's (shifted) window order. `received` (levels, h, w) on the block's token grid:
    the attention each token receives, averaged over heads and over the queries of its
    window, put back in place (windows reversed, padding cropped, the cyclic shift undone).
    A token of a window of N tokens that gets as much as its neighbours scores 1/N.
    """

    block: str
    rollout_step: int
    resolution: tuple[int, int, int]
    window: tuple[int, int, int]
    shift: tuple[int, int, int]
    weights: torch.Tensor
    received: torch.Tensor


@contextlib.contextmanager
def capture_attention(model: torch.nn.Module, *, blocks: Sequence[str] | None = None) -> Iterator[list[AttentionMap]]:
    """Collect an `AttentionMap` for every call of the Swin blocks of `model` in the block.

    Aurora's `WindowAttention` calls the fused `F.scaled_dot_product_attention`, which never
    materialises the attention matrix, so a forward hook on each `WindowAttention` recomputes
    it from the hook's input: `q, k` from the module's own `qkv` projection (plus its LoRA
    adapter at the call's roll-out step), `softmax(q k^T / sqrt(head_dim) + mask)` with the
    shifted-window mask the block passed in, as the fused kernel does (dropout is off in eval
    mode). A pre-hook on the enclosing `Swin3DTransformerBlock` records the token resolution,
    from which window and shift sizes follow (`maybe_adjust_windows`), to place the windows
    back on the grid. `blocks` restricts capture to these module names.
    """
    maps: list[AttentionMap] = []
    handles = []
    current: dict[str, tuple[int, int, int]] = {}

    def block_pre_hook(name):
        def hook(module, args):
            current[name] = tuple(args[2])
        return hook

    def attention_hook(name, block: Swin3DTransformerBlock):
        def hook(module: WindowAttention, args, kwargs, output):
            x = args[0]
            mask = kwargs.get("mask")
            step = int(kwargs.get("rollout_step", 0))
            res = current[name]
            ws, ss = maybe_adjust_windows(block.window_size, block.shift_size, res)
            with torch.no_grad():
                qkv = module.qkv(x) + module.lora_qkv(x, step)
                qkv = rearrange(qkv, "B N (qkv H D) -> qkv B H N D", H=module.num_heads, qkv=3)
                logits = (qkv[0] @ qkv[1].transpose(-2, -1)) * module.head_dim**-0.5  # (nW*B, H, N, N)
                if mask is not None:
                    n_windows = mask.shape[0]
                    logits = logits.view(-1, n_windows, *logits.shape[1:]) + mask[None, :, None]
                    logits = logits.view(-1, *logits.shape[2:])
                weights = logits.float().softmax(-1)
            maps.append(_attention_map(name, step, res, ws, ss, weights))
        return hook

    for name, module in model.named_modules():
        if isinstance(module, Swin3DTransformerBlock) and (blocks is None or name in blocks):
            handles.append(module.register_forward_pre_hook(block_pre_hook(name)))
            handles.append(module.attn.register_forward_hook(attention_hook(name, module), with_kwargs=True))
    if not handles:
        raise DataError("the model has no Swin3DTransformerBlock" + (f" named {list(blocks)}" if blocks else ""))
    try:
        yield maps
    finally:
        for h in handles:
            h.remove()


def _attention_map(name, step, res, ws, ss, weights: torch.Tensor) -> AttentionMap:
    C, H, W = res
    pad = ((-C) % ws[0], (-H) % ws[1], (-W) % ws[2])
    n_windows = ((C + pad[0]) // ws[0]) * ((H + pad[1]) // ws[1]) * ((W + pad[2]) // ws[2])
    weights = weights[:n_windows]  # batch element 0: windows are ordered batch-major
    received = weights.mean(dim=(1, 2))  # (nW, N): mean over heads and queries
    grid = window_reverse_3d(received.view(n_windows, *ws, 1), ws, C + pad[0], H + pad[1], W + pad[2])
    grid = crop_3d(grid, pad)[0, ..., 0]  # (C, H, W)
    if any(ss):
        grid = torch.roll(grid, shifts=tuple(ss), dims=(0, 1, 2))
    return AttentionMap(name, step, (C, H, W), tuple(ws), tuple(ss), weights, grid)


# --------------------------------------------------------------------------------------
# Everything at once, and figures


@dataclass
class Explanation:
    """What `explain` found for one window; `save_figures` draws it."""

    variant: str
    objective: str
    occlusion: xr.DataArray
    """(input, output) RMS output change in normalised units."""
    gradient_x_input: xr.DataArray
    """(input,) signed sum of x_n dJ/dx_n."""
    maps: xr.Dataset
    """`<input>_gradient_x_input` and `<input>_saliency` shaped like the input window."""
    region: LatLonBox | None
    attention: list[AttentionMap] = field(default_factory=list)

    def summary(self) -> dict:
        """Per-input numbers for JSON: mean occlusion over outputs, gradient x input."""
        occl = self.occlusion.mean("output")
        return {
            "variant": self.variant,
            "objective": self.objective,
            "region": list(self.region) if self.region else None,
            "occlusion_mode": self.occlusion.attrs.get("mode"),
            "inputs": {
                str(k): {"occlusion": float(occl.sel(input=k)),
                         "gradient_x_input": float(self.gradient_x_input.sel(input=k))}
                for k in self.occlusion.input.values
            },
            "attention_blocks": sorted({a.block for a in self.attention}),
        }


def explain(
    model: Aurora,
    spec: VariantSpec,
    window: xr.Dataset,
    *,
    output: str | None = None,
    level: float | None = None,
    region: LatLonBox | None = None,
    occlusion_mode: OcclusionMode = "mean",
    attention: bool = True,
) -> Explanation:
    """Occlusion, gradient x input, saliency and (optionally) attention for one step of
    `model` from `window`. The objective is the area-weighted mean over `region` (default:
    the whole grid) of `output` (dataset name; default the variant's first surface output)
    at `level` (hPa; atmospheric outputs only)."""
    batch = window_to_batch(window, spec)
    output = output or spec.outputs()[0].dataset_name
    model = model.eval()
    if attention:
        with capture_attention(model) as maps, torch.inference_mode():
            _step(model, batch)
    else:
        maps = []
    grads = _gradients(model, batch, output, level, region)
    return Explanation(
        variant=spec.name,
        objective=grads.objective,
        occlusion=occlusion(model, batch, mode=occlusion_mode),
        gradient_x_input=gradient_x_input(grads),
        maps=_maps(grads, batch, times=window.time.values, times_dim="time"),
        region=region,
        attention=maps,
    )


def save_figures(expl: Explanation, out_dir: str | Path, *, top: int = 4) -> list[tuple[str, Path]]:
    """Draw `expl` as PNGs in `out_dir`: (caption, path) pairs for the report.

    Occlusion heat map (inputs x outputs), gradient x input bars, saliency maps of the `top`
    inputs by |gradient x input| (last history step; atmospheric inputs at the level of
    largest saliency) with the region outlined, and the received-attention map of every
    block (first roll-out step, lowest latent level).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures: list[tuple[str, Path]] = []

    def save(fig, name: str, caption: str) -> None:
        path = out / name
        fig.savefig(path, dpi=90, bbox_inches="tight")
        plt.close(fig)
        figures.append((caption, path))

    occ = expl.occlusion
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * occ.sizes["output"], 1.0 + 0.35 * occ.sizes["input"]))
    im = ax.imshow(occ.values, cmap="viridis", aspect="auto")
    ax.set_xticks(range(occ.sizes["output"]), occ.output.values, rotation=45, ha="right")
    ax.set_yticks(range(occ.sizes["input"]), occ.input.values)
    ax.set_xlabel("output")
    ax.set_ylabel("occluded input")
    fig.colorbar(im, ax=ax, label="RMS change (normalised)")
    ax.set_title(f"Occlusion ({occ.attrs.get('mode')})")
    save(fig, "explain_occlusion.png", f"Occlusion: output change when each input is replaced by its "
         f"{occ.attrs.get('mode')}")

    gxi = expl.gradient_x_input
    fig, ax = plt.subplots(figsize=(6, 1.0 + 0.3 * gxi.sizes["input"]))
    ax.barh(range(gxi.sizes["input"]), gxi.values, color=["tab:red" if v < 0 else "tab:blue" for v in gxi.values])
    ax.set_yticks(range(gxi.sizes["input"]), gxi.input.values)
    ax.invert_yaxis()
    ax.set_xlabel(f"gradient x input of {expl.objective}")
    save(fig, "explain_gradient_x_input.png", f"Gradient x input of {expl.objective}, per input variable")

    ranked = sorted(gxi.input.values, key=lambda k: -abs(float(gxi.sel(input=k))))[:top]
    fig, axes = plt.subplots(1, len(ranked), figsize=(3.6 * len(ranked), 3.0), squeeze=False)
    for ax, key in zip(axes[0], ranked):
        sal = expl.maps[f"{key}_saliency"]
        if "time" in sal.dims:
            sal = sal.isel(time=-1)
        if "level" in sal.dims:
            sal = sal.isel(level=int(sal.sum(("latitude", "longitude")).argmax()))
        title = f"{key}" + (f" @ {float(sal.level):g} hPa" if "level" in sal.coords and sal.level.ndim == 0 else "")
        im = ax.pcolormesh(sal.longitude, sal.latitude, sal.values, cmap="magma", shading="auto")
        if expl.region:
            lat_min, lat_max, lon_min, lon_max = expl.region
            ax.plot([lon_min, lon_max, lon_max, lon_min, lon_min], [lat_min, lat_min, lat_max, lat_max, lat_min],
                    color="cyan", lw=1)
        ax.set_title(title, fontsize=9)
        fig.colorbar(im, ax=ax, shrink=0.8)
    save(fig, "explain_saliency.png", f"Saliency |dJ/dx| of {expl.objective} for the {len(ranked)} inputs with the "
         "largest gradient x input (last history step)")

    first = [a for a in expl.attention if a.rollout_step == 0]
    if first:
        fig, axes = plt.subplots(1, len(first), figsize=(3.0 * len(first), 2.6), squeeze=False)
        for ax, a in zip(axes[0], first):
            im = ax.imshow(a.received[0].numpy(), cmap="cividis", aspect="auto")
            ax.set_title(a.block.replace("backbone.", "").replace(".blocks.", " b"), fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
            fig.colorbar(im, ax=ax, shrink=0.8)
        save(fig, "explain_attention.png", "Attention received per token in each Swin block (lowest latent level; "
             "1/N is the even share in a window of N tokens)")
    return figures
