"""The training loop: rollout curriculum, accumulation, clipping, precision, validation, checkpoints.

One optimiser step: for each of `accumulate` batches, roll the model out for the
curriculum's current number of steps (gradients flow through every step), compare each
prediction with its target, and backpropagate; then clip, step, schedule. Every
`val_every` steps: validate at `early_stopping.lead_steps`, keep the best / top-k /
last checkpoints, stop early when the validation loss stops improving. A run killed at
any moment resumes from `last/` with the same losses it would have had.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from aurora import Aurora

from model_code.checkpoint import load_weights, save_checkpoint
from model_code.data.deseasonalised import climatology_argument
from model_code.data.emissions import model_overrides as emission_overrides
from model_code.data.emissions import records as emission_records
from model_code.data.samples import Sample, pair_predictions
from model_code.errors import DataError
from model_code.training import state as run_state
from model_code.training.callbacks import Callback, CallbackList, JsonLinesLog, ProgressBar
from model_code.training.config import TrainConfig, save_config
from model_code.training.data import open_data, train_loader, val_loader
from model_code.training.diagnose import TrainingDiverged, TrainingStopped, contract_variable, suspects
from model_code.training.distillation import Distiller, check_teacher
from model_code.training.distributed import Distributed, RolloutModule
from model_code.training.ensemble import write_averaged_checkpoint
from model_code.training.losses import DensityRecorder, LossResult, NonFiniteLoss, build_loss
from model_code.training.loss_config import kept_non_negative
from model_code.training.optim import apply_lora_mode, build_optimizer, build_scheduler
from model_code.training.schema import to_dict
from model_code.training.search_space import tuning_score
from model_code.variants import build_model

__all__ = ["TrainResult", "Trainer", "TrainingDiverged", "TrainingStopped", "train"]

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    out_dir: str
    history: list[dict[str, float]]
    """One entry per optimiser step (`step`, `loss`, `loss/<var>`, `loss_term/<term>`, `lr`, `grad_norm`
    when clipping or logging that step, ...), with the validation metrics (`val_loss`, ...) merged into
    the steps they were taken at; step 0 is the start."""
    best_metric: float | None
    best_step: int | None
    best_checkpoint: str | None
    last_checkpoint: str | None
    stop_reason: str
    """`max_steps` or `early_stopping`."""
    steps: int
    averaged_checkpoint: str | None = None
    averaged_metric: float | None = None


def train(cfg: TrainConfig, callbacks: Sequence[Callback] = (), *, resume: str | Path | None = None) -> TrainResult:
    """Train as `cfg` says; `resume`: a run directory (or its `last/`) to continue from."""
    trainer = Trainer(cfg, callbacks, resume=resume)
    try:
        return trainer.fit()
    finally:
        trainer.close()


def _device(name: str, local_rank: int, world: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and world > 1:
        name = f"cuda:{local_rank}"
    return torch.device(name)


def _seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _zero_output_heads(model: Aurora) -> None:
    """Zero the decoder's per-variable output layers: the model then predicts every variable's
    normalisation location until training moves them."""
    heads = [*model.decoder.surf_heads.values(), *model.decoder.atmos_heads.values()]
    with torch.no_grad():
        for p in (p for head in heads for p in head.parameters()):
            p.zero_()


class Trainer:
    """Everything a run needs, built and checked in order: config, data, model, optimiser."""

    def __init__(self, cfg: TrainConfig, callbacks: Sequence[Callback] = (), *, resume: str | Path | None = None):
        self.cfg = cfg.validate()
        teacher = check_teacher(self.cfg)  # `distil.teacher`: refused before any work
        world = int(os.environ.get("WORLD_SIZE", "1"))
        self.device = _device(cfg.train.device, int(os.environ.get("LOCAL_RANK", "0")), world)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.dist = Distributed.from_env(str(self.device))
        self.out_dir = Path(cfg.checkpoint.out_dir)
        _seed(cfg.train.seed)

        self.data = open_data(cfg)  # config errors that need the times, then the data checks
        self.spec = self.data.spec
        self._filled = {v.name for v in self.spec.inputs() if v.dataset_name in self.data.provenance.filled}
        self.model = self._build_model(resume)
        self.distiller = Distiller.for_run(teacher, cfg, self.device)  # the teacher, loaded once
        self.loss_fn = build_loss(self.spec, cfg.loss)
        self.optimizer = build_optimizer(self.model, cfg.optim)
        self._trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.scheduler = build_scheduler(self.optimizer, cfg.schedule, total_steps=cfg.train.max_steps)
        self.scaler = torch.amp.GradScaler("cuda", enabled=cfg.train.precision == "fp16")
        self.rollout = RolloutModule(self.model)
        self.wrapped = self.dist.wrap(self.rollout, self.device)
        # The wave density heads get their gradient from logits the outputs do not show.
        self.density = DensityRecorder(self.model) if self.loss_fn.cfg.density_weight > 0 else None
        self.loader, self.sampler = train_loader(self.data, cfg, self.dist.rank, self.dist.world_size)
        self.val_loader = val_loader(self.data, cfg, self.dist.rank, self.dist.world_size)

        self.step = self.epoch = self.batch_in_epoch = 0
        self.history: list[dict[str, float]] = []
        self.best_metric: float | None = None
        self.best_step: int | None = None
        self.bad_validations = 0
        self.topk: list[tuple[float, int, str]] = []  # (val_loss, step, path), best first
        self.last_checkpoint: str | None = None
        self.last_step: int | None = None
        self.stop_reason = ""
        if resume is not None:
            self._resume(resume)

        logs = [JsonLinesLog(self.out_dir / "log.jsonl")]
        logs += [ProgressBar()] if cfg.train.progress else []
        self.callbacks = CallbackList([*logs, *callbacks])
        if self.is_main:
            save_config(cfg, self.out_dir / "config.yaml")

    # ---- building ------------------------------------------------------------------------

    @property
    def is_main(self) -> bool:
        return self.dist.is_main

    @property
    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @property
    def trainable_count(self) -> int:
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    def _build_model(self, resume) -> Aurora:
        cfg = self.cfg
        if cfg.weights and resume is None and str(cfg.weights).endswith(".safetensors"):
            from model_code.checkpoint import read_checkpoint_info
            from model_code.compression import is_compressed_for_inference
            from model_code.errors import ConfigError

            record = read_checkpoint_info(cfg.weights).compression  # metadata only, before any work
            if is_compressed_for_inference(record):
                raise ConfigError(f"'{cfg.weights}' is an {record['method']} quantised model, for inference "
                                  "only; train from the float checkpoint it was compressed from", field="weights")
        self.model_overrides = {**cfg.model, **cfg.model_inputs.overrides, **cfg.data.lags.overrides,
                                **emission_overrides(self.data.emissions)}
        """Constructor arguments as built and saved: the config's and those of its `model_inputs`,
        `data.lags`, `data.deseasonalise` and `data.emissions` (its new static inputs), with
        `surf_stats` from the training inputs when `data.normalisation` is `training` (and the config
        gives none); those of de-seasonalised variables are of their anomalies."""
        des = cfg.data.deseasonalise
        climatology = self.data.climatology(des.variables, des.groupings) if des.enabled else None
        if cfg.data.normalisation == "training" and "surf_stats" not in self.model_overrides:
            self.model_overrides["surf_stats"] = self.data.surface_stats(
                robust=cfg.data.robust, climatology=climatology, non_negative=kept_non_negative(self.spec, cfg.model))
        if climatology is not None:
            self.model_overrides["deseasonalise"] = climatology_argument(climatology, des.variables)
        model = build_model(self.spec, cfg.profile, seed=cfg.train.seed, overrides=self.model_overrides)
        if cfg.weights and resume is None:
            load_weights(model, cfg.weights)
        elif cfg.head_init == "zero" and resume is None:
            _zero_output_heads(model)
        if climatology is not None:  # this run's, whatever the starting weights held
            model.set_climatology(climatology)
        apply_lora_mode(model, cfg.optim)
        if resume is not None:  # after the LoRA rank is set: the saved adapters have it
            load_weights(model, str(run_state.find_last(resume) / run_state.WEIGHTS))
        if cfg.train.precision != "fp32":  # Aurora's own autocast of the backbone: model.to(bf16) fails
            model.autocast = model.autocast_backbone = True
            model.autocast_dtype = torch.bfloat16 if cfg.train.precision == "bf16" else torch.float16
            if cfg.train.precision == "fp16":
                for m in model.modules():
                    if hasattr(m, "use_fp16_safe_attention"):
                        m.use_fp16_safe_attention = True
        if cfg.train.activation_checkpointing:
            model.configure_activation_checkpointing()
        return model.to(self.device).train()

    # ---- the loop ------------------------------------------------------------------------

    def fit(self) -> TrainResult:
        self.callbacks.on_train_start(self)
        if self.step == 0 and self.cfg.train.val_at_start and not self.history:
            self._validate_and_checkpoint()
        batches = self._batches()
        while self.step < self.cfg.train.max_steps and not self.stop_reason:
            logs = self._train_step(batches)
            self.step += 1
            self.history.append({"step": self.step, **logs})
            self.callbacks.on_step_end(self, self.step, logs)
            if self.step % self.cfg.train.val_every == 0 or self.step == self.cfg.train.max_steps:
                self._validate_and_checkpoint()
        self.stop_reason = self.stop_reason or "max_steps"
        result = self._result()
        if self.cfg.checkpoint.ensemble == "average" and len(self.topk) >= 2:
            result.averaged_checkpoint, result.averaged_metric = self._average_topk()
        self.callbacks.on_train_end(self, result)
        return result

    def _batches(self) -> Iterator[Sample]:
        """Training batches across epochs, starting where the run (or resumed run) stands."""
        while True:
            self.sampler.set_epoch(self.epoch, self.batch_in_epoch)
            self.data.train.set_epoch(self.epoch)
            for sample in self.loader:
                self.batch_in_epoch += 1
                yield sample
            self.epoch += 1
            self.batch_in_epoch = 0

    def _train_step(self, batches: Iterator[Sample]) -> dict[str, float]:
        cfg = self.cfg.train
        steps = self.cfg.rollout.steps_at(self.step)
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.zero_grad(set_to_none=True)
        sums: dict[str, float] = {}
        for micro in range(cfg.accumulate):
            sample = self._next(batches)
            if self.distiller is not None:  # targets blended with the teacher's rollout (training only)
                sample = self.distiller.blend(sample, steps)
            last = micro == cfg.accumulate - 1
            sync = contextlib.nullcontext() if last or not self.dist.enabled else self.wrapped.no_sync()
            with sync:
                result, error = self._loss(sample, steps, self.wrapped)
                self._stop_if(error, sample, "train")
                self.scaler.scale(result.total / cfg.accumulate).backward()
            for key, value in [("loss", float(result.total.detach())), *(
                    (f"loss/{k}", v) for k, v in result.per_variable.items()), *(
                    (f"loss_term/{k}", v) for k, v in result.terms.items())]:
                sums[key] = sums.get(key, 0.0) + value / cfg.accumulate
        self.scaler.unscale_(self.optimizer)
        logs = self.dist.mean(sums)
        # The norm costs a pass over every gradient: taken when clipping, or for a logged step.
        if cfg.clip_grad_norm is not None or (self.step + 1) % cfg.log_every == 0:
            max_norm = cfg.clip_grad_norm if cfg.clip_grad_norm is not None else math.inf
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self._trainable, max_norm))
            if not math.isfinite(grad_norm) and not self.scaler.is_enabled():  # fp16 skips such steps itself
                self._diverged(f"the gradient norm is {grad_norm} with a finite loss", "gradients", None)
            logs["grad_norm"] = grad_norm
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return {**logs, "lr": lr, "rollout_steps": steps, "epoch": self.epoch}

    def _next(self, batches: Iterator[Sample]) -> Sample:
        """The next batch on the device; a batch that breaks the input contract stops the run here."""
        error = None
        try:
            sample = next(batches).to(self.device)
        except DataError as e:
            error = e
        if self.dist.any(error is not None, self.device):
            raise TrainingStopped(
                f"training stopped at step {self.step + 1}: a training batch cannot be used: "
                f"{error if error else 'another process could not load its batch'}; {self._kept()}",
                step=self.step + 1, variable=contract_variable(error) if error else None,
                checkpoint=self.last_checkpoint) from error
        return sample

    def _kept(self) -> str:
        if self.last_checkpoint:
            return f"the last good checkpoint is {self.last_checkpoint} (step {self.last_step}), untouched"
        return "no checkpoint had been written yet"

    def _loss(self, sample: Sample, steps: int, forward) -> tuple[LossResult | None, NonFiniteLoss | None]:
        """Roll out `steps` steps and compare with the targets up to that lead (no collectives)."""
        leads = tuple(k for k in sample.lead_steps if k <= steps)
        targets = tuple(t for k, t in zip(sample.lead_steps, sample.targets) if k <= steps)
        if self.density is not None:
            self.density.clear()
        try:
            predictions = forward(sample.inputs, max(leads))
            pairs = pair_predictions(predictions, Sample(sample.inputs, targets, leads))
            logits = self.density.logits if self.density is not None else None
            return self.loss_fn(pairs, leads, density_logits=logits), None
        except NonFiniteLoss as e:
            return None, e

    def _stop_if(self, error: NonFiniteLoss | None, sample: Sample | None, phase: str) -> None:
        """Stop every rank when any rank's loss is not finite: none waits forever in a collective."""
        if self.dist.any(error is not None, self.device):
            self._diverged(str(error) if error else "another process's loss is not finite",
                           error.variable if error else "unknown", sample if error else None, phase)

    def _diverged(self, detail: str, variable: str, sample: Sample | None, phase: str = "train") -> None:
        step = self.step + 1 if phase == "train" else self.step
        when = f"at step {step}" if phase == "train" else f"validating the weights of step {step}"
        where = ""
        if sample is not None:
            found = suspects(sample, self._filled)
            if found:
                variable, where = found[0][0], "; " + "; ".join(text for _, text in found)
        raise TrainingDiverged(f"training stopped {when}: {detail}{where}; {self._kept()}",
                               step=step, variable=variable, checkpoint=self.last_checkpoint)

    # ---- validation and checkpoints -----------------------------------------------------------

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """The loss at `early_stopping.lead_steps` over the validation set (`val_loss`), per
        variable (`val_loss/<var>`) and per lead step (`val_loss/lead<k>`), sample-weighted;
        and `val_score`, their unweighted mean over variables, the tuning objective (which
        the loss weights a search changes cannot move: `search_space.tuning_score`)."""
        self.model.eval()
        sums: dict[str, float] = {}
        error, bad = None, None  # ranks hold different numbers of batches: check once, after
        try:
            for sample in self.val_loader:
                sample = sample.to(self.device)
                result, error = self._loss(sample, max(sample.lead_steps), self.rollout)
                if error is not None:
                    bad = sample
                    break
                b = sample.batch_size
                parts = [("n", 1.0), ("val_loss", float(result.total))]
                parts += [(f"val_loss/{k}", v) for k, v in result.per_variable.items()]
                parts += [(f"val_loss/lead{k}", v) for k, v in result.per_lead.items()]
                for key, value in parts:
                    sums[key] = sums.get(key, 0.0) + b * value
        finally:
            self.model.train()
        self._stop_if(error, bad, "validation")
        sums = self.dist.sum_dicts(sums)
        n = sums.pop("n")
        metrics = {k: v / n for k, v in sums.items()}
        metrics["val_score"] = tuning_score(metrics, self.spec)
        return metrics

    def _validate_and_checkpoint(self) -> None:
        metrics = self.validate()
        value = metrics["val_loss"]
        es = self.cfg.early_stopping
        improved = self.best_metric is None or value < self.best_metric - es.min_delta
        if improved:
            self.best_metric, self.best_step, self.bad_validations = value, self.step, 0
        else:
            self.bad_validations += 1
        if self.history and self.history[-1]["step"] == self.step:
            self.history[-1].update(metrics)
        else:
            self.history.append({"step": self.step, **metrics})
        self.callbacks.on_validation_end(self, self.step, metrics)
        if es.patience and self.bad_validations >= es.patience:
            self.stop_reason = "early_stopping"
        if self.is_main:
            if improved:
                self._checkpoint("best", self._save(self.out_dir / run_state.BEST, value))
            self._update_topk(value)
            self._write_last()
        self.dist.barrier()

    def _save(self, path: Path, value: float | None) -> str:
        extra = {"step": str(self.step), "val_loss": "" if value is None else repr(value),
                 "training_config": json.dumps(to_dict(self.cfg), default=str),
                 **({"emissions": emission_records(self.data.emissions)} if self.data.emissions else {})}
        return save_checkpoint(self.model, self.spec, self.cfg.profile, str(path), extra=extra,
                               overrides=self.model_overrides, filled_inputs=self.data.filled_inputs,
                               compression=self.distiller.record(self.model) if self.distiller
                               else getattr(self.model, "compression_record", None))  # that of `cfg.weights`

    def _checkpoint(self, kind: str, path: str) -> None:
        self.callbacks.on_checkpoint(self, self.step, path, kind)

    def _update_topk(self, value: float) -> None:
        k = self.cfg.checkpoint.keep_top_k
        if not k or (len(self.topk) >= k and value >= self.topk[-1][0]):
            return
        path = self._save(self.out_dir / run_state.TOPK / f"step-{self.step:08d}.safetensors", value)
        self.topk = sorted([*self.topk, (value, self.step, path)])
        for _, _, dropped in self.topk[k:]:
            Path(dropped).unlink(missing_ok=True)
        self.topk = self.topk[:k]
        self._checkpoint("topk", path)

    def _write_last(self) -> None:
        state = {
            "step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(), "rng": run_state.capture_rng(),
            "history": self.history, "best_metric": self.best_metric, "best_step": self.best_step,
            "bad_validations": self.bad_validations, "topk": [list(t) for t in self.topk],
            "stop_reason": self.stop_reason, "saved_at": datetime.now().isoformat(timespec="seconds"),
        }
        path = run_state.write_last(self.out_dir, lambda p: self._save(Path(p), self.best_metric), state)
        self.last_checkpoint, self.last_step = str(path), self.step
        self._checkpoint("last", str(path))

    def _resume(self, path: str | Path) -> None:
        last = run_state.find_last(path)
        state = run_state.read_state(last)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        run_state.restore_rng(state["rng"])
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        self.history = list(state["history"])
        self.best_metric, self.best_step = state["best_metric"], state["best_step"]
        self.bad_validations = state["bad_validations"]
        self.topk = [(float(v), int(s), str(p)) for v, s, p in state["topk"]]
        self.stop_reason = state["stop_reason"]
        self.last_checkpoint, self.last_step = str(last / run_state.WEIGHTS), self.step
        logger.info("resumed from %s at step %d (epoch %d, batch %d)", last, self.step, self.epoch,
                    self.batch_in_epoch)

    def _average_topk(self) -> tuple[str | None, float | None]:
        """Average the top-k weights into `averaged.safetensors` and validate the average."""
        path = str(self.out_dir / "averaged.safetensors")
        if self.is_main:
            write_averaged_checkpoint([p for _, _, p in self.topk], path)
        self.dist.barrier()
        kept = {k: v.clone() for k, v in self.model.state_dict().items()}
        load_weights(self.model, path)
        metric = self.validate()["val_loss"]
        self.model.load_state_dict(kept)
        if self.is_main:
            self._checkpoint("averaged", path)
        return path, metric

    def _result(self) -> TrainResult:
        best = str(self.out_dir / run_state.BEST) if self.best_step is not None else None
        return TrainResult(str(self.out_dir), list(self.history), self.best_metric, self.best_step, best,
                           self.last_checkpoint, self.stop_reason, self.step)

    def close(self) -> None:
        if self.density is not None:
            self.density.close()
        self.dist.close()

