"""One compression from a checkpoint to a checkpoint: the typed job behind `auroraops compress`
and the pipeline's `compress` step, so the two cannot drift apart.

Every method starts from an uncompressed checkpoint of this project and writes one whose
record (`model_code.compression`) says how it was made. What a reader of the registry needs
to weigh the result is measured on the spot, on a real input window: the weights' bytes and
the median time of a one-step forward, of the compressed model beside the model it came from.
Whether it still forecasts well is the evaluation's to say (the same gates as any model).
"""

from __future__ import annotations

import json
import shutil
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

from model_code.compression import METHODS
from model_code.errors import ConfigError, DataError


@dataclass(frozen=True)
class CompressJob:
    """What to compress, how, and with which real data."""

    checkpoint: str
    """This project's `.safetensors` checkpoint (path or s3://), uncompressed."""
    method: str
    out: str
    """Where the compressed checkpoint goes (`.safetensors`, path or s3://)."""
    variant: str | None = None
    """Refuse a checkpoint of another variant (default: the checkpoint's own)."""
    data: tuple[str, ...] = ()
    """Real files: calibration (int8-static), recovery fine-tune (prune), student training
    (distil), and the window the latency is timed on (every method)."""
    calibration_windows: int = 8
    mlp_fraction: float = 0.3
    head_fraction: float = 0.0
    steps: int = 0
    """Training steps: the recovery fine-tune after pruning (0: none), or the student's (distil)."""
    alpha: float = 0.5
    """distil: weight of the truth in the student's targets (the teacher's is 1 - alpha)."""
    depth_factor: float = 0.5
    embed_factor: float = 0.5
    config: Mapping[str, Any] = field(default_factory=dict)
    """Training config sections that replace the teacher's own (recovery and distil runs)."""
    work_dir: str | None = None
    """Where training runs write (default: a temporary directory)."""


@dataclass
class CompressResult:
    out: str
    record: dict[str, Any]
    parameters: int
    reference_parameters: int
    weight_bytes: int
    reference_weight_bytes: int
    latency_ms: float
    reference_latency_ms: float
    timed_on: str

    @property
    def speedup(self) -> float:
        return self.reference_latency_ms / self.latency_ms

    def summary(self) -> dict[str, Any]:
        """The figures the registry records beside the compressed version."""
        return {**{k: v for k, v in asdict(self).items() if k != "record"}, "method": self.record["method"],
                "speedup": round(self.speedup, 3), "teacher": self.record.get("teacher")}


def check_job(job: CompressJob) -> None:
    """Refuse what cannot work before any model is loaded: an unknown method, missing data,
    impossible fractions or weights, a checkpoint that is not this project's."""
    if job.method not in METHODS:
        raise ConfigError(f"unknown compression method {job.method!r}; expected one of {', '.join(METHODS)}",
                          field="method")
    for name, value in (("checkpoint", job.checkpoint), ("out", job.out)):
        if not str(value).endswith(".safetensors"):
            raise ConfigError(f"{name} must be this project's .safetensors checkpoint; got {value!r}", field=name)
    if not job.data:
        raise ConfigError("compression needs real input files (calibration, training, or the window the latency "
                          "is timed on)", field="data")
    if job.method == "int8-static" and job.calibration_windows < 1:
        raise ConfigError(f"int8-static needs at least one calibration window; got {job.calibration_windows}",
                          field="calibration_windows")
    if job.method == "prune":
        for name in ("mlp_fraction", "head_fraction"):
            if not 0.0 <= getattr(job, name) < 1.0:
                raise ConfigError(f"{name} must be in [0, 1); got {getattr(job, name)}", field=name)
    if job.method == "distil" and job.steps < 1:
        raise ConfigError("a distilled student needs training steps (steps >= 1)", field="steps")
    if job.steps < 0:
        raise ConfigError(f"steps must be >= 0; got {job.steps}", field="steps")


def compress_checkpoint(job: CompressJob) -> CompressResult:
    """Compress `job.checkpoint` as `job.method` says, write it to `job.out`, measure it."""
    from model_code.checkpoint import read_checkpoint_info

    check_job(job)
    info = read_checkpoint_info(job.checkpoint)  # metadata only: refusals before the model is built
    if job.variant is not None and info.variant != job.variant:
        raise DataError(f"checkpoint holds variant '{info.variant}', not '{job.variant}'", source=job.checkpoint)
    if info.compression is not None:
        raise DataError(f"the checkpoint is already compressed ({info.compression['method']}); compress the model "
                        "it was made from", source=job.checkpoint)
    with tempfile.TemporaryDirectory(prefix="auroraops-compress-") as tmp:
        work = Path(job.work_dir or tmp)
        if job.method in ("prune", "distil"):
            out = _trained(job, info, work)
        else:
            out = _quantised(job, info)
        return _measured(job, out)


def _windows(job: CompressJob, info, count: int):
    """Up to `count` real input windows of `job.data`, spread over the series, cut as the
    checkpoint's training cut them (its fills, crop and levels)."""
    import numpy as np

    from model_code.data.windows import WindowDataset

    trained = info.training_data
    data = WindowDataset.from_files(
        list(job.data), info.spec, validate=False, lead_steps=[1], crop=bool(trained.get("crop")),
        fill_missing=trained.get("fill_missing"), fill_missing_dynamic=trained.get("fill_missing_dynamic"),
        levels=info.training_levels)
    if not len(data):
        raise DataError(f"no input window of {info.spec.name} in {list(job.data)}")
    pick = np.unique(np.linspace(0, len(data) - 1, min(count, len(data))).round().astype(int))
    return [data.window(int(i)) for i in pick]


def _save(model, info, record: Mapping[str, Any], out: str) -> str:
    from model_code.checkpoint import save_checkpoint

    extra = {k: info.metadata[k] for k in ("training_config", "emissions") if k in info.metadata}
    return save_checkpoint(model, info.spec, info.profile, out, overrides=json.loads(
        info.metadata.get("model_overrides", "{}")), filled_inputs=info.filled_inputs or None, extra=extra,
        compression=record)


def _quantised(job: CompressJob, info) -> str:
    from model_code.checkpoint import load_checkpoint
    from model_code.compression.quantise import quantise_dynamic, quantise_static, to_bf16
    from model_code.data.batch import window_to_batch

    model, _ = load_checkpoint(job.checkpoint)
    if job.method == "int8-dynamic":
        model, record = quantise_dynamic(model, inplace=True)
    elif job.method == "bf16":
        model, record = to_bf16(model, inplace=True)
    else:
        windows = _windows(job, info, job.calibration_windows)
        batches = [window_to_batch(w, info.spec) for w in windows]
        source = f"{len(batches)} window(s) of {', '.join(Path(p).name for p in job.data)}"
        model, record = quantise_static(model, batches, info.spec, source=source, inplace=True)
    return _save(model, info, record, job.out)


def _trained(job: CompressJob, info, work: Path) -> str:
    """Prune (then fine-tune to recover) or distil a student: both train with `train`."""
    from model_code.checkpoint import load_checkpoint
    from model_code.training.distillation import distil_config
    from model_code.compression.prune import prune
    from model_code.training.config import config_from_dict
    from model_code.training.trainer import train

    base = json.loads(info.metadata.get("training_config", "{}"))
    if not base:
        raise DataError("the checkpoint records no training config; pruning with recovery and distillation "
                        "train with the teacher's own settings", source=job.checkpoint)
    base = _merged(base, job.config)
    base["data"] = {**base.get("data", {}), "paths": list(job.data)}
    base["checkpoint"] = {**base.get("checkpoint", {}), "out_dir": str(work / "run")}
    base.pop("weights", None)
    base = _short_run(base, job.steps)
    if job.method == "prune":
        model, _ = load_checkpoint(job.checkpoint)
        model, record = prune(model, mlp_fraction=job.mlp_fraction, head_fraction=job.head_fraction)
        pruned = _save(model, info, record, str(work / "pruned.safetensors"))
        if job.steps == 0:
            return _copied(pruned, job.out)
        cfg = {**base, "weights": pruned}
    else:
        cfg = distil_config(base, job.checkpoint, job.alpha, depth_factor=job.depth_factor,
                            embed_factor=job.embed_factor)
    result = train(config_from_dict(cfg))
    best = result.best_checkpoint or result.last_checkpoint
    if best is None:
        raise DataError(f"the {job.method} run wrote no checkpoint ({result.stop_reason})")
    return _copied(best, job.out)


def _copied(source: str, out: str) -> str:
    from model_code.storage import local_copy, write_atomic

    with local_copy(source) as path:
        return write_atomic(out, lambda dst: shutil.copyfile(path, dst))


def _short_run(cfg: dict, steps: int) -> dict:
    """The teacher's schedule fitted to a run of `steps`: its warm-up at most a fifth of the run,
    validation at least once (a recovery fine-tune is far shorter than the training it follows)."""
    cfg = dict(cfg)
    schedule, run = dict(cfg.get("schedule", {})), dict(cfg.get("train", {}))
    if schedule.get("warmup_steps", 0) * 5 > steps:
        schedule["warmup_steps"] = steps // 5
    run["max_steps"] = steps
    run["val_every"] = max(1, min(int(run.get("val_every", steps)), steps))
    return {**cfg, "schedule": schedule, "train": run}


def _merged(base: dict, changes: Mapping[str, Any]) -> dict:
    out = dict(base)
    for key, value in changes.items():
        out[key] = {**out.get(key, {}), **value} if isinstance(value, Mapping) and isinstance(out.get(key), dict) \
            else value
    return out


def _measured(job: CompressJob, out: str, repeat: int = 7) -> CompressResult:
    """Weights and one-step latency of the compressed model and of the model it came from, on
    the first real window of `job.data`: both warmed up, then timed in turns (so other work on
    the machine falls on both alike), medians of `repeat` forwards each."""
    import torch

    from model_code.checkpoint import load_checkpoint, read_checkpoint_info
    from model_code.compression.quantise import weight_bytes
    from model_code.data.batch import window_to_batch
    from model_code.forecast import forward_hours

    reference, _ = load_checkpoint(job.checkpoint)
    compressed, compressed_info = load_checkpoint(out)
    window = _windows(job, read_checkpoint_info(out), 1)[0]
    batch = window_to_batch(window, compressed_info.spec)
    models = {"reference": reference, "compressed": compressed}
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        for k in range(repeat + 2):  # two warm-up rounds
            for name, model in models.items():
                start = time.perf_counter()
                forward_hours(model, batch, model.timestep.total_seconds() / 3600)
                if k >= 2:
                    times[name].append(1000 * (time.perf_counter() - start))
    return CompressResult(
        out=out, record=compressed_info.compression or {},
        parameters=sum(p.numel() for p in compressed.parameters()) + _int8_weights(compressed),
        reference_parameters=sum(p.numel() for p in reference.parameters()),
        weight_bytes=weight_bytes(compressed), reference_weight_bytes=weight_bytes(reference),
        latency_ms=statistics.median(times["compressed"]), reference_latency_ms=statistics.median(times["reference"]),
        timed_on=f"{window.sizes['latitude']}x{window.sizes['longitude']} window of {Path(job.data[0]).name}, "
                 f"{torch.get_num_threads()} thread(s)")


def _int8_weights(model) -> int:
    """Weights int8 layers hold outside `parameters()` (packed), so counts compare like for like."""
    from torch.ao.nn.quantized import Linear as StaticLinear
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    layers = [m for m in model.modules() if isinstance(m, (StaticLinear, DynamicLinear))]
    return sum(m.weight().numel() + (0 if m.bias() is None else m.bias().numel()) for m in layers)
