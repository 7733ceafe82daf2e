"""What a run writes to resume exactly and to keep its best weights, each file atomically.

Layout of a run directory:

    config.yaml            the checked config, as loaded
    log.jsonl              structured log (callbacks.JsonLinesLog)
    last/model.safetensors weights of the latest checkpoint (checkpoint.py format)
    last/state.pt          optimiser, scheduler, scaler, RNG states, step, epoch, position
    best.safetensors       weights with the lowest validation loss so far
    topk/step-NNNNNNNN.safetensors   the k best (for averaging)

`last/` is written as one directory and moved into place whole, so the weights and the
state beside them always belong to the same step, whatever moment a run is killed at.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model_code.errors import DataError
from model_code.storage import write_atomic

__all__ = ["capture_rng", "find_last", "read_state", "restore_rng", "write_last"]

LAST = "last"
WEIGHTS = "model.safetensors"
STATE = "state.pt"
BEST = "best.safetensors"
TOPK = "topk"


def capture_rng() -> dict[str, Any]:
    """Python, NumPy and torch (CPU and CUDA) generator states, as plain containers and tensors."""
    np_state = np.random.get_state(legacy=False)
    np_state["state"] = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in np_state["state"].items()}
    return {
        "python": random.getstate(),
        "numpy": np_state,
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng(state: dict[str, Any]) -> None:
    random.setstate(_tuples(state["python"]))
    np_state = dict(state["numpy"])
    np_state["state"] = {k: (np.array(v, dtype=np.uint32) if isinstance(v, list) else v)
                         for k, v in np_state["state"].items()}
    np.random.set_state(np_state)
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples(x):
    """`random.setstate` wants the nested tuples `getstate` gave."""
    return tuple(_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x


def write_last(out_dir: Path, save_weights, state: dict[str, Any]) -> Path:
    """Write `last/` (weights through `save_weights(path)`, then `state`) and swap it in whole."""

    def write(tmp: Path) -> None:
        tmp.mkdir(parents=True)
        save_weights(str(tmp / WEIGHTS))
        torch.save(state, tmp / STATE)

    return Path(write_atomic(out_dir / LAST, write)) / WEIGHTS


def find_last(path: str | Path) -> Path:
    """The `last/` directory a resume path means: a run directory, `last/` itself or a file in it."""
    p = Path(path)
    # A kill between the two renames that swap `last/` leaves only the old one, set aside.
    aside = sorted(p.glob(f".{LAST}.old-*"), key=lambda d: d.stat().st_mtime) if p.is_dir() else []
    for candidate in (p / LAST, p, p.parent, *aside[-1:]):
        if (candidate / STATE).is_file() and (candidate / WEIGHTS).is_file():
            return candidate
    raise DataError(f"no checkpoint to resume from: expected a run directory holding {LAST}/{STATE} "
                    f"and {LAST}/{WEIGHTS}, or that {LAST}/ directory", source=str(path))


def read_state(last: Path) -> dict[str, Any]:
    """The training state beside the weights; plain containers and tensors only (weights_only)."""
    try:
        return torch.load(last / STATE, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated or foreign files
        raise DataError(f"not a readable training state ({type(e).__name__}: {e})", source=str(last / STATE)) from None
