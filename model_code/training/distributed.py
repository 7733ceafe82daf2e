"""Data-parallel training under torchrun: process group, the rollout as one DDP module, reductions.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; without them the run is one process and
every helper here is a no-op. Backend: nccl on CUDA, gloo on CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.distributed as dist
from aurora import Aurora, Batch, rollout

__all__ = ["Distributed", "RolloutModule"]


class RolloutModule(torch.nn.Module):
    """`aurora.rollout` as one module call, so DDP sees a forward and its backward.

    DDP hooks into a module's `forward`; Aurora's rollout calls the model several times
    from outside, which DDP's wrapper does not expose. Gradients flow through every step.
    """

    def __init__(self, model: Aurora) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: Batch, steps: int) -> list[Batch]:
        return list(rollout(self.model, batch, steps=steps))


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialised_here: bool = False

    @classmethod
    def from_env(cls, device: str) -> Distributed:
        """Join the process group torchrun describes in the environment, if any."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        here = False
        if not dist.is_initialized():
            backend = "nccl" if device.startswith("cuda") else "gloo"
            dist.init_process_group(backend=backend, rank=rank, world_size=world)
            here = True
        return cls(rank, world, local, here)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        if not self.enabled:
            return module
        ids = [device.index] if device.type == "cuda" else None
        # find_unused_parameters: some weights sit out some steps (LoRA from the second step
        # on in the wave variant, heads of variables whose targets are all NaN).
        return torch.nn.parallel.DistributedDataParallel(module, device_ids=ids, find_unused_parameters=True)

    def sum(self, values: Sequence[float], device: torch.device) -> list[float]:
        """Element-wise sum over ranks (float64, so sums of many samples stay exact enough)."""
        if not self.enabled:
            return [float(v) for v in values]
        t = torch.tensor(list(values), dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return t.tolist()

    def sum_dicts(self, values: dict[str, float]) -> dict[str, float]:
        """Key-wise sum over ranks of dicts that may differ in their keys."""
        if not self.enabled:
            return dict(values)
        gathered: list[dict[str, float]] = [{} for _ in range(self.world_size)]
        dist.all_gather_object(gathered, values)
        keys = dict.fromkeys(k for g in gathered for k in g)
        return {k: sum(g.get(k, 0.0) for g in gathered) for k in keys}

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """Key-wise mean over the ranks that report each key."""
        if not self.enabled:
            return dict(values)
        gathered: list[dict[str, float]] = [{} for _ in range(self.world_size)]
        dist.all_gather_object(gathered, values)
        keys = dict.fromkeys(k for g in gathered for k in g)
        return {k: sum(g[k] for g in gathered if k in g) / sum(k in g for g in gathered) for k in keys}

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every rank when any rank says True: all stop together instead of hanging."""
        return self.sum([1.0 if flag else 0.0], device)[0] > 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.initialised_here and dist.is_initialized():
            dist.destroy_process_group()
