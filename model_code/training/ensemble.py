"""Ensembles of the best checkpoints of a run: averaged weights, or averaged forecasts.

Averaging the weights of the top-k checkpoints of one run (which lie in one basin of the
loss) gives one model that usually scores at least as well as the best of them, at the cost
of one model. Averaging the members' forecasts costs k forward passes and smooths the
forecast the way an ensemble mean does.
"""

from __future__ import annotations

import json
from typing import Sequence

import torch
from aurora import Aurora, Batch
from safetensors.torch import save_file

from model_code.checkpoint import FORMAT, _read_safetensors, load_checkpoint
from model_code.errors import DataError
from model_code.storage import local_copy, write_atomic
from model_code.variables import Variable, variable

__all__ = ["OutputEnsemble", "average_checkpoints", "write_averaged_checkpoint"]

_SAME = ("format", "variant", "profile", "model_class", "model_kwargs", "timestep_hours", "lora_rank")
"""Metadata that checkpoints must share to be averaged: they describe one architecture."""


def _read(uri: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if not str(uri).endswith(".safetensors"):
        raise DataError("only this project's .safetensors checkpoints can be averaged", source=str(uri))
    with local_copy(uri) as path:
        state, metadata = _read_safetensors(path, str(uri))
    if metadata.get("format") != FORMAT:
        raise DataError(f"checkpoint metadata has format {metadata.get('format')!r}; expected {FORMAT!r}",
                        source=str(uri))
    return state, metadata


def _average(paths: Sequence[str]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if not paths:
        raise DataError("no checkpoints to average")
    first_state, first_meta = _read(paths[0])
    sums = {k: v.to(torch.float64 if v.dtype == torch.float64 else torch.float32).clone()
            if v.is_floating_point() else v for k, v in first_state.items()}
    for uri in paths[1:]:
        state, meta = _read(uri)
        differ = [f"{key}: {meta.get(key)!r} here, {first_meta.get(key)!r} in {paths[0]}"
                  for key in _SAME if meta.get(key) != first_meta.get(key)]
        if differ:
            raise DataError("checkpoints of different models cannot be averaged", source=str(uri), problems=differ)
        if state.keys() != first_state.keys():
            extra, missing = sorted(state.keys() - first_state.keys()), sorted(first_state.keys() - state.keys())
            raise DataError("the checkpoints hold different weights", source=str(uri),
                            problems=[f"not in {paths[0]}: {k}" for k in extra[:5]]
                            + [f"missing: {k}" for k in missing[:5]])
        for k, v in state.items():
            ref = first_state[k]
            if v.shape != ref.shape or v.dtype != ref.dtype:
                raise DataError(f"weight {k} is {v.dtype} {tuple(v.shape)} here, {ref.dtype} {tuple(ref.shape)} "
                                f"in {paths[0]}", source=str(uri))
            if v.is_floating_point():
                sums[k] += v.to(sums[k].dtype)
            elif not torch.equal(v, ref):
                raise DataError(f"integer buffer {k} differs from {paths[0]}'s and cannot be averaged",
                                source=str(uri))
    n = len(paths)
    state = {k: (s / n).to(first_state[k].dtype) if s.is_floating_point() else s for k, s in sums.items()}
    return state, first_meta


def average_checkpoints(paths: Sequence[str]) -> dict[str, torch.Tensor]:
    """The element-wise mean of the weights of `paths` (this project's checkpoints of one
    variant, profile and architecture), as a state_dict in the checkpoints' dtypes.

    Sums are kept in float32 (float64 for float64 weights). Integer buffers must agree.
    """
    return _average(paths)[0]


def write_averaged_checkpoint(paths: Sequence[str], uri: str) -> str:
    """Average `paths` and write the result to `uri` as a checkpoint of the same model
    (metadata of the first, plus `averaged_from`: the JSON list of `paths`), atomically."""
    if not str(uri).endswith(".safetensors"):
        raise DataError(f"checkpoint '{uri}' must end in .safetensors")
    state, metadata = _average(paths)
    metadata = {**metadata, "averaged_from": json.dumps([str(p) for p in paths])}
    state = {k: v.contiguous() for k, v in state.items()}
    return write_atomic(uri, lambda path: save_file(state, str(path), metadata=metadata))


def _catalogue(name: str) -> Variable | None:
    try:
        return variable("surface", name)
    except KeyError:
        return None


class OutputEnsemble(torch.nn.Module):
    """Mean forecast of several models of one variant, usable wherever one model is.

    `forward(batch)` returns a `Batch` like `Aurora.forward`, and the attributes
    `aurora.rollout` reads are the members', so `rollout(OutputEnsemble(models), batch, n)`
    works. Directions (wave variables in degrees) are averaged on the circle. For variables
    NaN by design (no wave), a pixel holds the mean of the members that give a value when at
    least half of them do, and NaN otherwise, as the density heads' 0.5 threshold would.
    """

    def __init__(self, models: Sequence[Aurora]):
        super().__init__()
        if not models:
            raise DataError("an output ensemble needs at least one model")
        first = models[0]
        for i, m in enumerate(models[1:], 1):
            differ = [attr for attr in ("surf_vars", "atmos_vars", "static_vars", "patch_size", "timestep",
                                        "max_history_size") if getattr(m, attr) != getattr(first, attr)]
            if type(m) is not type(first):
                differ.insert(0, f"class {type(m).__name__} vs {type(first).__name__}")
            if differ:
                raise DataError(f"member {i} is not the same kind of model as member 0", problems=differ)
        self.members = torch.nn.ModuleList(models)

    @classmethod
    def from_checkpoints(cls, paths: Sequence[str], *, device: str = "cpu") -> OutputEnsemble:
        """Members loaded from this project's checkpoints (`load_checkpoint`), in eval mode."""
        return cls([load_checkpoint(p, device=device)[0] for p in paths]).eval()

    # The attributes and hooks `aurora.rollout` and forecast code use.
    @property
    def first(self) -> Aurora:
        return self.members[0]

    @property
    def patch_size(self) -> int:
        return self.first.patch_size

    @property
    def timestep(self):
        return self.first.timestep

    @property
    def variable_lead_time(self) -> bool:
        return getattr(self.first, "variable_lead_time", False)

    @property
    def max_history_size(self) -> int:
        return self.first.max_history_size

    @property
    def surf_vars(self) -> tuple[str, ...]:
        return self.first.surf_vars

    @property
    def atmos_vars(self) -> tuple[str, ...]:
        return self.first.atmos_vars

    @property
    def static_vars(self) -> tuple[str, ...]:
        return self.first.static_vars

    def batch_transform_hook(self, batch: Batch) -> Batch:
        return self.first.batch_transform_hook(batch)

    def apply_rollout_input_clipping(self, pred: Batch) -> Batch:
        return self.first.apply_rollout_input_clipping(pred)

    def set_noise_accumulation(self, n: int = 0) -> None:
        for m in self.members:
            m.set_noise_accumulation(n)

    def forward(self, batch: Batch, lead_times: torch.Tensor | None = None) -> Batch:
        preds = [m(batch, lead_times=lead_times) for m in self.members]
        head = preds[0]
        surf = {}
        for k in head.surf_vars:
            var = _catalogue(k)
            surf[k] = _mean([p.surf_vars[k] for p in preds],
                            angle=var is not None and var.units == "degree",
                            vote=var is not None and var.nan_by_design)
        atmos = {k: _mean([p.atmos_vars[k] for p in preds]) for k in head.atmos_vars}
        return Batch(surf_vars=surf, static_vars=head.static_vars, atmos_vars=atmos, metadata=head.metadata)


def _mean(xs: list[torch.Tensor], *, angle: bool = False, vote: bool = False) -> torch.Tensor:
    x = torch.stack(xs)  # (members, ...)
    if not vote:
        if angle:
            r = torch.deg2rad(x)
            return torch.rad2deg(torch.atan2(torch.sin(r).mean(0), torch.cos(r).mean(0))) % 360
        return x.mean(0)
    finite = torch.isfinite(x)
    count = finite.sum(0)
    zero = torch.zeros((), dtype=x.dtype, device=x.device)
    if angle:
        r = torch.deg2rad(torch.where(finite, x, zero))
        s = torch.where(finite, torch.sin(r), zero).sum(0)
        c = torch.where(finite, torch.cos(r), zero).sum(0)
        mean = torch.rad2deg(torch.atan2(s, c)) % 360
    else:
        mean = torch.where(finite, x, zero).sum(0) / count.clamp_min(1)
    return torch.where(2 * count >= len(xs), mean, torch.full((), float("nan"), dtype=x.dtype, device=x.device))
