"""The best checkpoints of a run averaged into one model.

Averaging the weights of the top-k checkpoints of one run (which lie in one basin of the
loss) gives one model that usually scores at least as well as the best of them, at the cost
of one model.
"""

from __future__ import annotations

import json
from typing import Sequence

import torch
from safetensors.torch import save_file

from model_code.checkpoint import FORMAT, _read_safetensors
from model_code.errors import DataError
from model_code.storage import local_copy, write_atomic

__all__ = ["average_checkpoints", "write_averaged_checkpoint"]

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
