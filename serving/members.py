"""Ensemble members as `model_code.forecast.forecast` makes them, for the predictor and its jobs.

Member m of a forecast seeded `seed` draws the model's noise from torch's global generator
seeded `seed + m` (`torch.manual_seed`, which seeds the CPU and every CUDA generator), so a
served ensemble equals `auroraops forecast --members M --seed S` for the same checkpoint,
window, steps and device. Aurora draws that noise with `torch.randn` on the device of its
activations: a job that interleaves members, or resumes after a restart, carries each
member's generator state from one step to the next (`rng_state`, `set_rng_state`) instead
of re-seeding, so its steps are those of the uninterrupted forecast.
"""

from __future__ import annotations

import base64
import contextlib
import json
from typing import Iterator, Sequence

import numpy as np
import torch
import xarray as xr


def _cuda_devices(device: torch.device) -> list[int]:
    return [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []


@contextlib.contextmanager
def forked_rng(device: torch.device | str) -> Iterator[None]:
    """Global generators (CPU, and `device`'s when it is a GPU) as they were before, afterwards:
    a seeded forward leaves the process's own random stream where it was."""
    with torch.random.fork_rng(devices=_cuda_devices(torch.device(device))):
        yield


@contextlib.contextmanager
def seeded(seed: int, device: torch.device | str) -> Iterator[None]:
    """Run the body on generators seeded `seed`, as `forecast` runs one member."""
    with forked_rng(device):
        torch.manual_seed(seed)
        yield


def rng_state(device: torch.device | str) -> dict[str, str]:
    """The generator state a member's next forward draws from on `device` (base64 text, for a job
    record): the CPU generator's, and the GPU's where the noise is drawn on one."""
    device = torch.device(device)
    state = {"cpu": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode()}
    if device.type == "cuda":
        (index,) = _cuda_devices(device)
        state["cuda"] = base64.b64encode(torch.cuda.get_rng_state(index).numpy().tobytes()).decode()
    return state


def set_rng_state(state: dict[str, str], device: torch.device | str) -> None:
    """Restore what `rng_state` captured (inside `forked_rng`, so the caller's stream survives)."""
    device = torch.device(device)

    def tensor(text: str) -> torch.Tensor:
        return torch.from_numpy(np.frombuffer(base64.b64decode(text), dtype=np.uint8).copy())

    torch.set_rng_state(tensor(state["cpu"]))
    if device.type == "cuda":
        (index,) = _cuda_devices(device)
        torch.cuda.set_rng_state(tensor(state["cuda"]), index)


def initial_states(seed: int, members: int, device: torch.device | str) -> list[dict[str, str]]:
    """Each member's generator state before its first step: seeded `seed + m`."""
    states = []
    for m in range(members):
        with seeded(seed + m, device):
            states.append(rng_state(device))
    return states


def stack_members(runs: Sequence[xr.Dataset], seed: int) -> xr.Dataset:
    """One dataset with a `member` dimension from one forecast dataset per member (member m
    seeded `seed + m`), laid out as `model_code.forecast.forecast` lays out an ensemble:
    the clipped-value counts of all members summed."""
    out = xr.concat(list(runs), dim="member", combine_attrs="override")
    out = out.assign_coords(member=("member", np.arange(len(runs)), {"long_name": "ensemble member",
                                                                     "seeds": f"{seed} + member"}))
    counts: dict[str, int] = {}
    for ds in runs:
        for key, n in json.loads(ds.attrs.get("clipped_values", "{}")).items():
            counts[key] = counts.get(key, 0) + n
    out.attrs["clipped_values"] = json.dumps(counts, sort_keys=True)
    return out


def add_counts(total: dict[str, int], more: dict[str, int]) -> dict[str, int]:
    """Clipped-value counts of two parts of one forecast, by dataset name."""
    return {k: total.get(k, 0) + more.get(k, 0) for k in sorted({*total, *more})}
