"""Structured pruning of the Swin backbone: fewer MLP hidden units and attention heads per block.

`prune` scores, in every `Swin3DTransformerBlock` of the backbone, each MLP hidden unit (the
L2 norm of its `fc1` row and bias times the L2 norm of its `fc2` column) and each attention
head (the norm of its query, key and value rows of `qkv` times the norm of its columns of
`proj`, LoRA adapters included), drops the lowest `mlp_fraction` / `head_fraction` of them
(rounded half up per block, at least one kept) and replaces the Linear layers (and the LoRA
adapters of `qkv` / `proj`) by smaller ones holding the kept rows and columns. The attention
keeps its head dimension and scale; only its head count changes.

The record, `{"method": "prune", "mlp_fraction", "head_fraction", "importance", "kept":
{block name: {"mlp_hidden": n, "heads": h}}}`, is what `before_load` needs to give a freshly
built model the same shapes (the weights are loaded after it); `after_load` has nothing to do.
A pruned model computes a different function: fine-tune it (`train(cfg)` with `cfg.weights`
the pruned checkpoint) to recover its skill.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import TYPE_CHECKING, Any, Mapping

from model_code.errors import DataError

if TYPE_CHECKING:
    import torch
    from aurora import Aurora

__all__ = ["IMPORTANCE", "after_load", "before_load", "blocks", "prune"]

IMPORTANCE = ("magnitude",)
"""How units and heads are scored: `magnitude`, the product of the weight norms that feed and
read them (no data needed)."""


def prune(
    model: Aurora, *, mlp_fraction: float = 0.3, head_fraction: float = 0.0, importance: str = "magnitude"
) -> tuple[Aurora, dict[str, Any]]:
    """Remove the least important `mlp_fraction` of each block's MLP hidden units and
    `head_fraction` of its attention heads, in place; returns `(model, record)`.

    Fractions are of the block's current widths, in [0, 1); a fraction of 0 leaves the block
    as it is. Refused with `DataError` before any work when a fraction or `importance` is
    not one this accepts, or when the model has no Swin backbone blocks.
    """
    mlp_fraction = _fraction("mlp_fraction", mlp_fraction)
    head_fraction = _fraction("head_fraction", head_fraction)
    if importance not in IMPORTANCE:
        raise DataError(f"unknown pruning importance {importance!r}; expected one of {', '.join(IMPORTANCE)}")
    found = blocks(model)
    if not found:
        raise DataError(f"{type(model).__name__} has no Swin3D backbone blocks to prune")

    import torch

    kept: dict[str, dict[str, int]] = {}
    with torch.no_grad():
        for name, block in found.items():
            hidden, heads = block.mlp.fc1.out_features, block.attn.num_heads
            n_units, n_heads = _keep(hidden, mlp_fraction), _keep(heads, head_fraction)
            if n_units < hidden:
                _shrink_mlp(block, _top(_unit_scores(block), n_units))
            if n_heads < heads:
                _shrink_heads(block, _top(_head_scores(block), n_heads))
            kept[name] = {"mlp_hidden": block.mlp.fc1.out_features, "heads": block.attn.num_heads}
    record = {"method": "prune", "mlp_fraction": mlp_fraction, "head_fraction": head_fraction,
              "importance": importance, "kept": kept}
    return model, record


def before_load(model: Aurora, record: Mapping[str, Any]) -> Aurora:
    """Shrink a freshly built `model`, in place, to the widths and head counts `record` kept
    (the first units and heads: their values are the loaded weights'). Blocks already of
    those shapes are left alone, so loading a pruned checkpoint into a pruned model works."""
    import torch

    kept = record.get("kept")
    if not isinstance(kept, Mapping):
        raise DataError("the prune record has no 'kept' mapping of block widths")
    found = blocks(model)
    problems = [f"no Swin3D block '{name}' in {type(model).__name__}" for name in kept if name not in found]
    for name, widths in kept.items():
        if name not in found:
            continue
        block = found[name]
        for key, have in (("mlp_hidden", block.mlp.fc1.out_features), ("heads", block.attn.num_heads)):
            want = widths.get(key) if isinstance(widths, Mapping) else None
            if not isinstance(want, int) or isinstance(want, bool) or not 1 <= want <= have:
                problems.append(f"{name}: {key} {want!r} is not a whole number in [1, {have}]")
    if problems:
        raise DataError("the prune record does not fit this model", problems=problems[:10])
    with torch.no_grad():
        for name, widths in kept.items():
            block = found[name]
            if widths["mlp_hidden"] < block.mlp.fc1.out_features:
                _shrink_mlp(block, torch.arange(widths["mlp_hidden"]))
            if widths["heads"] < block.attn.num_heads:
                _shrink_heads(block, torch.arange(widths["heads"]))
    return model


def after_load(model: Aurora, record: Mapping[str, Any]) -> Aurora:
    """Nothing to do: a pruned model's weights are ordinary float weights."""
    return model


def blocks(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """`{qualified name: block}` of every Swin3D transformer block, in module order
    (`backbone.encoder_layers.0.blocks.0`, ...)."""
    from aurora.model.swin3d import Swin3DTransformerBlock

    return {name: m for name, m in model.named_modules() if isinstance(m, Swin3DTransformerBlock)}


# ---- choosing ---------------------------------------------------------------------------------

def _fraction(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not 0 <= float(value) < 1:
        raise DataError(f"{name} must be a number in [0, 1), got {value!r}")
    return float(value)


def _keep(n: int, fraction: float) -> int:
    """How many of `n` remain when `fraction` of them is removed (rounded half up), at least one."""
    return max(1, n - math.floor(n * fraction + 0.5))


def _top(scores: torch.Tensor, n: int) -> torch.Tensor:
    """Indices of the `n` highest scores, ascending (the kept units keep their order)."""
    import torch

    return torch.sort(torch.topk(scores.float(), n, sorted=False).indices).values


def _effective(linear: torch.nn.Linear, lora: Any) -> torch.Tensor:
    """The weight `linear` acts with at roll-out step 0, its first LoRA adapter added."""
    weight = linear.weight.float()
    loras = getattr(lora, "loras", None)
    if loras:
        weight = weight + loras[0].scaling * (loras[0].lora_B.float() @ loras[0].lora_A.float())
    return weight


def _unit_scores(block: torch.nn.Module) -> torch.Tensor:
    fc1, fc2 = block.mlp.fc1, block.mlp.fc2
    rows = fc1.weight.float().pow(2).sum(1)
    if fc1.bias is not None:
        rows = rows + fc1.bias.float().pow(2)
    return rows.sqrt() * fc2.weight.float().norm(dim=0)


def _head_scores(block: torch.nn.Module) -> torch.Tensor:
    attn = block.attn
    heads, head_dim = attn.num_heads, attn.head_dim
    qkv = _effective(attn.qkv, attn.lora_qkv).reshape(3, heads, head_dim, -1)  # rows "(qkv H D)"
    incoming = qkv.pow(2).sum(dim=(0, 2, 3))
    if attn.qkv.bias is not None:
        incoming = incoming + attn.qkv.bias.float().reshape(3, heads, head_dim).pow(2).sum(dim=(0, 2))
    proj = _effective(attn.proj, attn.lora_proj).reshape(-1, heads, head_dim)  # columns "(H D)"
    return incoming.sqrt() * proj.pow(2).sum(dim=(0, 2)).sqrt()


# ---- shrinking --------------------------------------------------------------------------------

def _linear(old: torch.nn.Linear, rows: torch.Tensor | None = None, cols: torch.Tensor | None = None):
    """A Linear holding `old`'s `rows` (outputs) and `cols` (inputs), trainable as `old` was."""
    import torch

    weight = old.weight.detach()
    weight = weight if rows is None else weight.index_select(0, rows.to(weight.device))
    weight = weight if cols is None else weight.index_select(1, cols.to(weight.device))
    new = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=old.bias is not None,
                          device=weight.device, dtype=weight.dtype)
    new.weight.copy_(weight)
    new.weight.requires_grad_(old.weight.requires_grad)
    if old.bias is not None:
        bias = old.bias.detach()
        new.bias.copy_(bias if rows is None else bias.index_select(0, rows.to(bias.device)))
        new.bias.requires_grad_(old.bias.requires_grad)
    new.train(old.training)
    return new


def _slice_parameter(owner: torch.nn.Module, name: str, dim: int, index: torch.Tensor) -> None:
    import torch

    old = getattr(owner, name)
    value = old.detach().index_select(dim, index.to(old.device)).clone()
    setattr(owner, name, torch.nn.Parameter(value, requires_grad=old.requires_grad))


def _shrink_mlp(block: torch.nn.Module, units: torch.Tensor) -> None:
    mlp = block.mlp
    mlp.fc1 = _linear(mlp.fc1, rows=units)
    mlp.fc2 = _linear(mlp.fc2, cols=units)


def _shrink_heads(block: torch.nn.Module, heads: torch.Tensor) -> None:
    """Keep `heads` of the block's attention: their q, k and v rows of `qkv` (laid out
    "(qkv H D)") and their columns of `proj` (laid out "(H D)"), LoRA adapters alike."""
    import torch

    attn = block.attn
    n, d, heads = attn.num_heads, attn.head_dim, heads.cpu()
    within = (heads.unsqueeze(1) * d + torch.arange(d)).reshape(-1)  # "(H D)" indices of the kept heads
    qkv_rows = (torch.arange(3).unsqueeze(1) * n * d + within).reshape(-1)
    attn.qkv = _linear(attn.qkv, rows=qkv_rows)
    attn.proj = _linear(attn.proj, cols=within)
    for lora in getattr(attn.lora_qkv, "loras", ()):
        _slice_parameter(lora, "lora_B", 0, qkv_rows)
    for lora in getattr(attn.lora_proj, "loras", ()):
        _slice_parameter(lora, "lora_A", 1, within)
    attn.num_heads = block.num_heads = len(heads)  # head_dim, and so the attention scale, unchanged
