"""Faster models at a known cost in skill: post-training int8 quantisation, bf16 weights,
structured pruning and knowledge distillation, each a function from a model to a model.

A compressed model is saved as any other checkpoint, with its `compression` record (JSON in
the checkpoint's metadata: the method and what it chose). `load_checkpoint` rebuilds the
same model from it in two steps: `before_load` gives the freshly built model the shapes and
dtypes the saved weights have (pruned widths, bf16), `after_load` redoes what is computed from
the weights rather than stored (int8 packing, from the saved float weights and calibration).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Callable, Mapping

from model_code.errors import DataError

if TYPE_CHECKING:
    from aurora import Aurora

METHODS = ("int8-dynamic", "int8-static", "bf16", "prune", "distil")
"""What `auroraops compress --method` and the pipeline's `compress` step accept."""

RECORD_KEY = "compression"
"""The checkpoint metadata key holding the record (JSON)."""


def record_of(metadata: Mapping[str, str]) -> dict[str, Any] | None:
    """The compression record a checkpoint carries, or None for an uncompressed model."""
    text = metadata.get(RECORD_KEY)
    if not text:
        return None
    record = json.loads(text)
    if record.get("method") not in METHODS:
        raise DataError(f"checkpoint compression method {record.get('method')!r} is unknown; "
                        f"expected one of {', '.join(METHODS)}")
    return record


def _steps(method: str) -> tuple[Callable[[Aurora, Mapping], Aurora], Callable[[Aurora, Mapping], Aurora]]:
    """(before_load, after_load) of `method`, imported where used (they need torch)."""
    if method in ("int8-dynamic", "int8-static", "bf16"):
        from model_code.compression import quantise as module
    elif method == "prune":
        from model_code.compression import prune as module
    else:
        from model_code.compression import distil as module
    return module.before_load, module.after_load


def before_load(model: Aurora, record: Mapping[str, Any] | None) -> Aurora:
    """`model` with the shapes and dtypes of the saved weights of a `record` checkpoint."""
    return model if record is None else _steps(record["method"])[0](model, record)


def after_load(model: Aurora, record: Mapping[str, Any] | None) -> Aurora:
    """`model` with what is computed from its loaded weights (int8 packing) redone."""
    return model if record is None else _steps(record["method"])[1](model, record)


def is_compressed_for_inference(record: Mapping[str, Any] | None) -> bool:
    """Quantised models run inference only: training them is refused before any work."""
    return record is not None and record["method"] in ("int8-dynamic", "int8-static")
