"""Hooks into a training run, so platform code (MLflow, Optuna) can watch it without model_code importing it.

Every method is a no-op; override the ones needed. Callbacks run on every rank; most
want `trainer.is_main` to act once. An exception raised by a callback stops training and
propagates to the caller of `train` (Optuna pruning stops a trial this way); checkpoints
already written stay, so the run can be resumed.
"""

from __future__ import annotations

import json
import math
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:  # the trainer imports this module
    from model_code.training.trainer import Trainer, TrainResult

__all__ = ["Callback", "CallbackList", "JsonLinesLog", "MetricLines", "ProgressBar"]


class Callback:
    """Base class of training callbacks; `logs` and `metrics` are plain floats by name."""

    def on_train_start(self, trainer: Trainer) -> None: ...

    def on_step_end(self, trainer: Trainer, step: int, logs: dict[str, float]) -> None:
        """After optimiser step `step` (1-based): loss, per-variable losses, lr, grad norm..."""

    def on_validation_end(self, trainer: Trainer, step: int, metrics: dict[str, float]) -> None:
        """After validating the weights of step `step` (0: the starting weights): `val_loss`, ..."""

    def on_checkpoint(self, trainer: Trainer, step: int, path: str, kind: str) -> None:
        """After a checkpoint is in place; `kind` is "best", "last", "topk" or "averaged"."""

    def on_train_end(self, trainer: Trainer, result: TrainResult) -> None: ...


class CallbackList(Callback):
    """Calls each callback in order."""

    def __init__(self, callbacks: Sequence[Callback]) -> None:
        self.callbacks = list(callbacks)

    def on_train_start(self, trainer):
        for c in self.callbacks:
            c.on_train_start(trainer)

    def on_step_end(self, trainer, step, logs):
        for c in self.callbacks:
            c.on_step_end(trainer, step, logs)

    def on_validation_end(self, trainer, step, metrics):
        for c in self.callbacks:
            c.on_validation_end(trainer, step, metrics)

    def on_checkpoint(self, trainer, step, path, kind):
        for c in self.callbacks:
            c.on_checkpoint(trainer, step, path, kind)

    def on_train_end(self, trainer, result):
        for c in self.callbacks:
            c.on_train_end(trainer, result)


def _plain(value: Any) -> Any:
    """JSON has no NaN or infinity: write them as strings a reader can still parse."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class JsonLinesLog(Callback):
    """One JSON object per line (`event`, `time`, `step`, ...): a record of the run that tools can read.

    Appends, so a resumed run continues the same file; each line is flushed as written.
    Written by the main rank only.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def write(self, event: str, **fields: Any) -> None:
        record = {"event": event, "time": round(time.time(), 3), **{k: _plain(v) for k, v in fields.items()}}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps(record, default=str) + "\n")

    def on_train_start(self, trainer):
        if trainer.is_main:
            self.write("start", step=trainer.step, variant=trainer.spec.name, profile=trainer.cfg.profile,
                       timestep_hours=trainer.spec.timestep_hours, world_size=trainer.dist.world_size,
                       train_samples=len(trainer.data.train), val_samples=len(trainer.data.val),
                       parameters=trainer.parameter_count, trainable=trainer.trainable_count,
                       provenance=trainer.data.provenance_record())

    def on_step_end(self, trainer, step, logs):
        if trainer.is_main and (step % trainer.cfg.train.log_every == 0 or step == trainer.cfg.train.max_steps):
            self.write("step", step=step, **logs)

    def on_validation_end(self, trainer, step, metrics):
        if trainer.is_main:
            self.write("validation", step=step, **metrics)

    def on_checkpoint(self, trainer, step, path, kind):
        if trainer.is_main:
            self.write("checkpoint", step=step, kind=kind, path=path)

    def on_train_end(self, trainer, result):
        if trainer.is_main:
            self.write("end", step=trainer.step, reason=result.stop_reason, best_step=result.best_step,
                       best_metric=result.best_metric, best_checkpoint=result.best_checkpoint)


class ProgressBar(Callback):
    """A tqdm bar on stderr (main rank) with the latest loss and validation loss."""

    def __init__(self, file=None) -> None:
        self.file = file or sys.stderr
        self.bar = None
        self.postfix: dict[str, str] = {}

    def on_train_start(self, trainer):
        if trainer.is_main:
            from tqdm import tqdm

            self.bar = tqdm(total=trainer.cfg.train.max_steps, initial=trainer.step, file=self.file,
                            unit="step", dynamic_ncols=True, desc=f"train {trainer.spec.name}")

    def on_step_end(self, trainer, step, logs):
        if self.bar is not None:
            self.postfix["loss"] = f"{logs['loss']:.4g}"
            self.bar.set_postfix(self.postfix, refresh=False)
            self.bar.update(step - self.bar.n)

    def on_validation_end(self, trainer, step, metrics):
        if self.bar is not None:
            self.postfix["val_loss"] = f"{metrics['val_loss']:.4g}"
            self.bar.set_postfix(self.postfix)

    def on_train_end(self, trainer, result):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class MetricLines(Callback):
    """At every validation, one stdout line `<RFC 3339 UTC time> step=N val_loss=X name=value ...`.

    The format Katib's StdOut metrics collector parses (names with `/` are written with
    `_`, e.g. `val_loss_10u`); also easy to grep. Main rank only.
    """

    def __init__(self, file=None) -> None:
        self.file = file

    def on_validation_end(self, trainer, step, metrics):
        if not trainer.is_main:
            return
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        pairs = " ".join(f"{k.replace('/', '_')}={v:.8g}" for k, v in metrics.items())
        print(f"{stamp} step={step} {pairs}", file=self.file or sys.stdout, flush=True)
