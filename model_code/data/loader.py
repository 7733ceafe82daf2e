"""Batches of training samples: their collation and seeded DataLoaders.

`aurora.Batch` is not a tensor and needs its own collate, which refuses samples that
cannot share a batch. A loader's order and worker seeds follow from one seed, so the
batches do not depend on the number of workers.
"""

from __future__ import annotations

import random
from functools import partial
from typing import Sequence

import numpy as np
import torch
from aurora import Batch, Metadata
from torch.utils.data import DataLoader, Dataset, Sampler

from model_code.data.samples import Sample
from model_code.errors import DataError

__all__ = ["collate", "make_loader"]


def collate(samples: Sequence[Sample]) -> Sample:
    """Stack samples along the batch dimension; they must share grid, levels, statics and leads."""
    if not samples:
        raise DataError("no samples to collate")
    first = samples[0]
    problems = [p for i, s in enumerate(samples[1:], 1) for p in _mismatches(first, s, i)]
    if problems:
        raise DataError(f"{len(samples)} samples cannot form one batch", problems=problems)
    inputs = _stack([s.inputs for s in samples])
    targets = tuple(_stack([s.targets[j] for s in samples]) for j in range(len(first.lead_steps)))
    return Sample(inputs, targets, first.lead_steps)


def _mismatches(a: Sample, b: Sample, i: int) -> list[str]:
    """Why sample `b` (element `i`) cannot join a batch with sample `a` (element 0)."""
    where = f"element {i} (init {b.inputs.metadata.time[0]:%Y-%m-%dT%H:%M}) differs from element 0"
    if a.lead_steps != b.lead_steps:
        return [f"{where} in lead steps: {b.lead_steps} vs {a.lead_steps}"]
    parts = [("inputs", a.inputs, b.inputs)]
    parts += [(f"target at lead {k}", x, y) for k, x, y in zip(a.lead_steps, a.targets, b.targets)]
    problems = []
    for what, x, y in parts:
        mx, my = x.metadata, y.metadata
        if not (torch.equal(mx.lat, my.lat) and torch.equal(mx.lon, my.lon)):
            problems.append(f"{where} in the grid of its {what}: {len(my.lat)}x{len(my.lon)} vs "
                            f"{len(mx.lat)}x{len(mx.lon)}")
            continue
        if tuple(mx.atmos_levels) != tuple(my.atmos_levels):
            problems.append(f"{where} in the levels of its {what}: {my.atmos_levels} vs {mx.atmos_levels}")
        for group in ("surf_vars", "atmos_vars"):
            gx, gy = getattr(x, group), getattr(y, group)
            if gx.keys() != gy.keys():
                problems.append(f"{where} in the {group} of its {what}: {sorted(gy)} vs {sorted(gx)}")
            else:
                problems += [f"{where} in the shape of {what} '{k}': {tuple(gy[k].shape)} vs {tuple(gx[k].shape)}"
                             for k in gx if gx[k].shape[1:] != gy[k].shape[1:]]
        if x.static_vars.keys() != y.static_vars.keys():
            problems.append(f"{where} in the static variables of its {what}: {sorted(y.static_vars)} vs "
                            f"{sorted(x.static_vars)}")
        else:
            problems += [f"{where} in static variable '{k}': a batch shares one set of statics"
                         for k in x.static_vars if not torch.equal(x.static_vars[k], y.static_vars[k])]
    return problems


def _stack(batches: Sequence[Batch]) -> Batch:
    first = batches[0]
    return Batch(
        surf_vars={k: torch.cat([b.surf_vars[k] for b in batches]) for k in first.surf_vars},  # (b, t, h, w)
        static_vars=dict(first.static_vars),  # (h, w), checked equal
        atmos_vars={k: torch.cat([b.atmos_vars[k] for b in batches]) for k in first.atmos_vars},  # (b, t, c, h, w)
        metadata=Metadata(
            lat=first.metadata.lat,
            lon=first.metadata.lon,
            time=tuple(t for b in batches for t in b.metadata.time),
            atmos_levels=first.metadata.atmos_levels,
            rollout_step=first.metadata.rollout_step,
        ),
    )


def _seed_worker(seed: int, worker_id: int) -> None:
    """Seed Python, NumPy and torch in a worker from the loader's seed and the worker's id.

    `torch.initial_seed()` is the per-epoch base seed the loader drew from its seeded
    generator, plus `worker_id`; mixing it in keeps the streams distinct across epochs.
    """
    state = np.random.SeedSequence([seed, worker_id, torch.initial_seed()]).generate_state(2, dtype=np.uint32)
    worker_seed = int(state[0]) << 32 | int(state[1])
    random.seed(worker_seed)
    np.random.seed(int(state[0]))
    torch.manual_seed(worker_seed)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool = False,
    num_workers: int = 0,
    seed: int = 0,
    sampler: Sampler | None = None,
    drop_last: bool = False,
    pin_memory: bool = False,
    multiprocessing_context: str | None = None,
) -> DataLoader:
    """A DataLoader of collated `Sample`s whose order and worker seeds follow from `seed`.

    The same seed gives the same batches in the same order with any `num_workers`
    (the dataset seeds augmentations from its own seed and the init times). A `sampler` given here should
    carry its own seeded `generator`. Workers are started afresh each epoch, so
    `dataset.set_epoch(e)` before an epoch reaches them.
    """
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        drop_last=drop_last,
        generator=torch.Generator().manual_seed(seed),
        worker_init_fn=partial(_seed_worker, seed),
        multiprocessing_context=multiprocessing_context if num_workers else None,
    )
