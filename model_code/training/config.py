"""The one typed config of a training run: YAML in, checked before any data is read, saved with the run.

Sections and every key, with its default and why, are documented in docs/training.md.
Layering: the dataclass defaults (with the variant's own loss defaults), then the YAML
file, then dotted overrides (`{"optim.lr": 3e-4}`, `--set optim.lr=3e-4`). Mappings merge;
every other value replaces.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal, Mapping

import torch
import yaml

from model_code.data.deseasonalised import Deseasonalise
from model_code.data.emissions import EmissionInventory
from model_code.data.fill_modes import FillMode
from model_code.data.lags import Lags
from model_code.errors import ConfigError, DataError
from model_code.storage import write_atomic
from model_code.training.loss_config import LossConfig, default_loss_config
from model_code.training.optim import OptimConfig, ScheduleConfig
from model_code.training.sample_config import (AugmentConfig, ExtremeSamplingConfig, ModelInputsConfig,
                                               validate_augment, validate_deseasonalise, validate_emissions,
                                               validate_extreme_sampling, validate_lags, validate_model_inputs)
from model_code.training.schema import check, from_dict, set_dotted, to_dict
from model_code.variants import PROFILES, VariantSpec, get_variant, with_history, with_timestep

__all__ = [
    "CheckpointConfig",
    "DataConfig",
    "DistilConfig",
    "EarlyStoppingConfig",
    "RolloutConfig",
    "RunConfig",
    "TrainConfig",
    "config_from_dict",
    "load_config",
    "save_config",
    "with_overrides",
]

Precision = Literal["fp32", "bf16", "fp16"]


@dataclass(frozen=True)
class DataConfig:
    """Which files, how they are cut into samples and split in time, and how they are batched."""

    paths: tuple[str, ...] = ()
    """Local GRIB/NetCDF/Zarr files, merged into one dataset (`--data` replaces them)."""
    val_fraction: float | None = 0.2
    """The last fraction of the time span is held out for validation (ignored with `val_period`)."""
    val_period: tuple[str, str] | None = None
    """[start, end) of the validation period (ISO times); training uses the times outside it."""
    gap_hours: float = 0.0
    """Least separation between training and validation times (weather remembers a few days)."""
    batch_size: int = 1
    """Global batch: samples per step over all processes (split evenly between DDP ranks)."""
    num_workers: int = 0
    crop: bool = False
    """Crop the grid to the patch size instead of refusing a grid that does not fit."""
    fill_missing: FillMode | None = None
    """Fill missing static fields (zeros or synthetic), recorded in the provenance."""
    fill_missing_dynamic: FillMode | None = None
    """Fill missing time-dependent variables in the inputs only; their targets are NaN."""
    levels: tuple[float, ...] | None = None
    """Pressure levels (hPa); default all of the variant's that the data have."""
    history: int | None = None
    """Input times per sample; default the variant's maximum."""
    regrid: float | None = None
    """Regrid every field to this resolution (degrees) on reading."""
    validate: bool = True
    """Run the data validator over every field before training."""
    normalisation: Literal["aurora", "training"] = "aurora"
    """`aurora`: Aurora's own statistics (global ERA5; 2 m temperature scaled by 21 K).
    `training`: the median and scaled MAD of each surface variable over the training
    inputs, given to the model as `surf_stats` and saved in the checkpoint, so a regional
    model sees its own range (over the British Isles in March 2 m temperature spans ~2 K)."""
    robust: Literal["mad", "iqr", "none"] = "mad"
    """The estimator of the statistics `training` computes: `mad`, the median and 1.4826 times the
    median absolute deviation; `iqr`, the median and the interquartile range / 1.349; `none`, the
    mean and standard deviation (`preprocess.normalisation_stats`)."""
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    extreme_sampling: ExtremeSamplingConfig = field(default_factory=ExtremeSamplingConfig)
    lags: Lags = field(default_factory=Lags)
    """Lagged inputs: each of `variables` (Aurora names) `hours` before every input time, as one
    more input of the model, e.g. `{hours: [24, 48], variables: [pm2p5, 2t]}`; off by default."""
    emissions: tuple[EmissionInventory, ...] = ()
    """Emission inventories (air pollution only; model_code/data/emissions.py): each a flux map
    filling the statics of one species or a new static input, e.g. `[{path: edgar_nox.nc,
    variable: emi_nox, species: nox}]`; none by default."""
    deseasonalise: Deseasonalise = field(default_factory=Deseasonalise)
    """De-seasonalised variables: the model learns `variables` (Aurora names) as anomalies from
    their training period's mean per calendar group (`by`), e.g. `{variables: [2t], by: hour}`;
    off by default."""


@dataclass(frozen=True)
class RolloutConfig:
    """Curriculum of rollout lengths: `[from_step, rollout_steps]` pairs, from short to long."""

    curriculum: tuple[tuple[int, int], ...] = ((0, 1),)

    def steps_at(self, step: int) -> int:
        """Rollout length for optimiser step `step` (counted from 0)."""
        steps = self.curriculum[0][1]
        for start, n in self.curriculum:
            if step >= start:
                steps = n
        return steps

    @property
    def longest(self) -> int:
        return max(n for _, n in self.curriculum)


@dataclass(frozen=True)
class RunConfig:
    """The loop itself (YAML section `train`)."""

    max_steps: int = 100
    """Optimiser steps (each of `accumulate` batches)."""
    val_every: int = 25
    val_at_start: bool = True
    """Validate the starting weights too, so every run reports where it began."""
    log_every: int = 1
    accumulate: int = 1
    clip_grad_norm: float | None = 1.0
    precision: Precision = "fp32"
    activation_checkpointing: bool = False
    seed: int = 0
    device: str = "auto"
    """`auto` (CUDA when present), `cpu`, `cuda`; under torchrun each rank takes its own GPU."""
    progress: bool = True
    """Progress bar on stderr (rank 0)."""


@dataclass(frozen=True)
class EarlyStoppingConfig:
    lead_steps: tuple[int, ...] = (1,)
    """Lead steps (model steps ahead) whose weighted loss is `val_loss`, the metric minimised."""
    patience: int = 0
    """Validations without improvement before stopping; 0 never stops early."""
    min_delta: float = 0.0


@dataclass(frozen=True)
class CheckpointConfig:
    out_dir: str = "outputs/train"
    keep_top_k: int = 3
    """Best-k validated weights kept under `topk/` (for averaging); 0 keeps none."""
    ensemble: Literal["none", "average"] = "none"
    """`average`: at the end, average the top-k weights into `averaged.safetensors` and validate it."""


@dataclass(frozen=True)
class DistilConfig:
    """Knowledge distillation from a teacher (YAML section `distil`; off without a teacher)."""

    teacher: str | None = None
    """This project's `.safetensors` checkpoint (path or s3://) of the same variant and step, no
    smaller than the model trained and not quantised; each training step rolls it out on the
    same inputs and blends its forecast into the targets."""
    alpha: float = 0.5
    """Weight of the truth: targets are alpha * truth + (1 - alpha) * teacher where the truth is
    finite, the teacher's forecast where it is NaN. Validation judges the truth alone."""

    @property
    def enabled(self) -> bool:
        return self.teacher is not None


@dataclass(frozen=True)
class TrainConfig:
    variant: str = "medium-range"
    profile: Literal["tiny", "full"] = "tiny"
    model: Mapping[str, Any] = field(default_factory=dict)
    """Constructor arguments replacing the profile's (e.g. `embed_dim`, `encoder_depths`)."""
    weights: str | None = None
    """Starting weights: this project's `.safetensors` or a published Aurora `.ckpt` (path or s3://)."""
    head_init: Literal["aurora", "zero"] = "aurora"
    """Initial output heads of a model built from scratch: `aurora`, Aurora's random
    initialisation; `zero`, zeros, so before its first step the model predicts each variable's
    normalisation location (the training median with `data.normalisation: training`), a flat
    forecast no worse than the mean, where random heads start from noise."""
    timestep_hours: int | None = None
    """The data's natural step (e.g. 1 for hourly ERA5); default the variant's (6 h, 12 h)."""
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig | None = None
    """Default: the variant's own (`loss_config.default_loss_config`)."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    train: RunConfig = field(default_factory=RunConfig)
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    distil: DistilConfig = field(default_factory=DistilConfig)
    model_inputs: ModelInputsConfig = field(default_factory=ModelInputsConfig)

    def __post_init__(self) -> None:
        object.__setattr__(self, "model", {k: tuple(v) if isinstance(v, list) else v
                                           for k, v in dict(self.model).items()})
        if self.loss is None:
            object.__setattr__(self, "loss", default_loss_config(_variant(self.variant)))

    @property
    def spec(self) -> VariantSpec:
        """The variant, stepping by `timestep_hours` and taking `model.max_history_size`
        input times when given."""
        hours = self.timestep_hours
        spec = with_timestep(_variant(self.variant), None if hours is None else timedelta(hours=hours))
        history = self.model.get("max_history_size")
        return with_history(spec, history) if isinstance(history, int) else spec

    def validate(self) -> TrainConfig:
        """Raise `ConfigError` naming the first key whose value cannot work; return self."""
        _validate(self)
        return self


def _variant(name: str) -> VariantSpec:
    try:
        return get_variant(name)
    except DataError as e:
        raise ConfigError(e.message, field="variant") from None


def constructor_arguments(cls: type) -> set[str]:
    """Named arguments of `cls(...)`, following `**kwargs` up the class hierarchy, as
    `AuroraHighRes` hands everything but its patch size and depths on to `Aurora`."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        params = inspect.signature(klass.__init__).parameters.values()
        names |= {p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)} - {"self"}
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return names


def _validate(cfg: TrainConfig) -> None:
    spec = cfg.spec
    check(cfg.profile in PROFILES, "profile", f"must be one of {PROFILES}; got {cfg.profile!r}")
    accepted = constructor_arguments(spec.model_class) - {"timestep"}
    for key in cfg.model:
        check(key in accepted, f"model.{key}",
              f"not a constructor argument of {spec.class_name} (the step is set by timestep_hours)")
    history = cfg.model.get("max_history_size")
    check(history is None or (isinstance(history, int) and history >= spec.min_history), "model.max_history_size",
          f"must be a whole number of input times >= {spec.min_history}; got {history!r}")
    # The shape a search sets, checked before a model is built: the class checks only the names.
    def whole(x: Any, least: int = 1) -> bool:
        return isinstance(x, int) and not isinstance(x, bool) and x >= least

    for key, least, why in (("patch_size", 1, ""), ("num_heads", 1, ""),
                            ("latent_levels", 2, " (the surface and at least one atmospheric level)")):
        check(key not in cfg.model or whole(cfg.model[key], least), f"model.{key}",
              f"must be a whole number >= {least}{why}; got {cfg.model.get(key)!r}")
    window = cfg.model.get("window_size")
    check(window is None or (isinstance(window, tuple) and len(window) == 3 and all(whole(n) for n in window)),
          "model.window_size",
          f"must be three whole numbers >= 1 (latent levels, latitude and longitude patches), e.g. [2, 6, 12]; "
          f"got {window!r}")
    defaults = {p.name: p.default for klass in reversed(spec.model_class.__mro__) if "__init__" in vars(klass)
                for p in inspect.signature(klass.__init__).parameters.values()}
    shape = {**defaults, **spec.profiles[cfg.profile], **cfg.model}
    embed, heads = shape.get("embed_dim"), shape.get("num_heads")
    check(not (whole(embed) and whole(heads)) or embed % heads == 0, "model.num_heads",
          f"must divide the embedding dimension {embed} (model.embed_dim); got {heads}")
    check(cfg.timestep_hours is None or cfg.timestep_hours >= 1, "timestep_hours",
          f"must be a whole number of hours >= 1; got {cfg.timestep_hours}")

    d = cfg.data
    check(d.val_fraction is None or 0 < d.val_fraction < 1, "data.val_fraction",
          f"must lie strictly between 0 and 1; got {d.val_fraction}")
    check(d.val_fraction is not None or d.val_period is not None, "data.val_fraction",
          "give data.val_fraction or data.val_period: early stopping and checkpoints need a validation set")
    check(d.gap_hours >= 0, "data.gap_hours", f"must be >= 0; got {d.gap_hours}")
    check(d.batch_size >= 1, "data.batch_size", f"must be >= 1; got {d.batch_size}")
    check(d.num_workers >= 0, "data.num_workers", f"must be >= 0; got {d.num_workers}")
    check(d.history is None or spec.min_history <= d.history <= spec.max_history, "data.history",
          f"the {spec.name} variant takes {spec.min_history} to {spec.max_history} input times; got {d.history}")
    check(d.regrid is None or d.regrid > 0, "data.regrid", f"must be > 0 degrees; got {d.regrid}")
    check(d.levels is None or (len(d.levels) > 0 and all(lv in spec.levels for lv in d.levels)), "data.levels",
          f"levels need normalisation statistics: some of {', '.join(map(str, spec.levels))} hPa; got {d.levels}")
    check(d.robust == "mad" or d.normalisation == "training", "data.robust",
          f"chooses how data.normalisation: training estimates its statistics; with data.normalisation: "
          f"{d.normalisation} nothing is estimated, so leave it out (got {d.robust!r})")
    validate_augment(cfg)
    validate_extreme_sampling(cfg)
    validate_deseasonalise(cfg)

    cfg.loss.validate("loss")
    cfg.loss.check_variables(spec, "loss")
    cfg.optim.validate("optim")
    cfg.schedule.validate("schedule", total_steps=cfg.train.max_steps)

    cur = cfg.rollout.curriculum
    check(len(cur) > 0, "rollout.curriculum", "needs at least one [from_step, rollout_steps] pair")
    check(cur[0][0] == 0, "rollout.curriculum", f"the first stage must start at step 0; got {cur[0][0]}")
    check(all(a[0] < b[0] for a, b in zip(cur, cur[1:])), "rollout.curriculum",
          f"stages must start at increasing steps; got {[list(c) for c in cur]}")
    check(all(n >= 1 for _, n in cur), "rollout.curriculum",
          f"rollout lengths must be >= 1 step; got {[list(c) for c in cur]}")

    t = cfg.train
    check(t.max_steps >= 1, "train.max_steps", f"must be >= 1; got {t.max_steps}")
    check(t.val_every >= 1, "train.val_every", f"must be >= 1; got {t.val_every}")
    check(t.log_every >= 1, "train.log_every", f"must be >= 1; got {t.log_every}")
    check(t.accumulate >= 1, "train.accumulate", f"must be >= 1; got {t.accumulate}")
    check(t.clip_grad_norm is None or t.clip_grad_norm > 0, "train.clip_grad_norm",
          f"must be > 0 (or null for no clipping); got {t.clip_grad_norm}")
    check(t.device in ("auto", "cpu") or t.device.startswith("cuda"), "train.device",
          f"must be auto, cpu or cuda[:N]; got {t.device!r}")
    check(not t.device.startswith("cuda") or torch.cuda.is_available(), "train.device",
          "cuda was asked for but no CUDA device is available")
    on_cuda = t.device.startswith("cuda") or (t.device == "auto" and torch.cuda.is_available())
    check(t.precision != "fp16" or on_cuda, "train.precision",
          "fp16 needs a CUDA device (its gradient scaler is CUDA-only); on CPU use bf16 or fp32")

    es = cfg.early_stopping
    check(len(es.lead_steps) > 0 and all(k >= 1 for k in es.lead_steps), "early_stopping.lead_steps",
          f"must be model steps >= 1, e.g. [1, 2]; got {list(es.lead_steps)}")
    check(es.patience >= 0, "early_stopping.patience", f"must be >= 0; got {es.patience}")
    check(es.min_delta >= 0, "early_stopping.min_delta", f"must be >= 0; got {es.min_delta}")
    check(not cfg.checkpoint.out_dir.startswith("s3://"), "checkpoint.out_dir",
          "must be a local directory (checkpoints are swapped into place with renames); copy the run "
          "directory to object storage afterwards")
    check(cfg.checkpoint.keep_top_k >= 0, "checkpoint.keep_top_k", f"must be >= 0; got {cfg.checkpoint.keep_top_k}")
    check(cfg.checkpoint.ensemble == "none" or cfg.checkpoint.keep_top_k >= 2, "checkpoint.ensemble",
          f"averaging needs checkpoint.keep_top_k >= 2; got {cfg.checkpoint.keep_top_k}")

    validate_lags(cfg)  # after the rollout and early stopping, whose lengths lags can limit

    di = cfg.distil  # the teacher's file is checked when a run starts (`distillation.check_teacher`)
    check(di.teacher is None or (di.teacher.strip() != "" and di.teacher.endswith(".safetensors")),
          "distil.teacher", "must be one of this project's .safetensors checkpoints (path or s3://), which "
          f"name their variant and architecture; got {di.teacher!r}")
    check(0 <= di.alpha <= 1, "distil.alpha", f"the weight of the truth must lie in [0, 1]; got {di.alpha}")

    validate_model_inputs(cfg)
    validate_emissions(cfg)


def config_from_dict(data: Mapping[str, Any] | None, overrides: Mapping[str, Any] | None = None,
                     *, source: str | None = None) -> TrainConfig:
    """A checked `TrainConfig` from plain data (parsed YAML) and dotted overrides."""
    data = _nested_copy(data or {})
    if not isinstance(data, dict):
        raise ConfigError(f"a training config is a mapping of sections; got {type(data).__name__}", source=source)
    for key, value in (overrides or {}).items():
        set_dotted(data, key, value)
    try:
        variant = data.get("variant", TrainConfig.variant)
        if not isinstance(variant, str):
            raise ConfigError(f"expected a variant name, got {variant!r}", field="variant")
        return from_dict(TrainConfig, data, base=TrainConfig(variant=variant)).validate()
    except ConfigError as e:
        if source and not e.source:  # name the file too
            reason = e.message[len(e.field) + 2:] if e.field and e.message.startswith(f"{e.field}: ") else e.message
            raise ConfigError(reason, field=e.field, source=source) from None
        raise


def _nested_copy(data: Any) -> Any:
    if isinstance(data, Mapping):
        return {k: _nested_copy(v) for k, v in data.items()}
    return data


def load_config(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """Read, layer and check a training config; `path` None starts from the defaults."""
    if path is None:
        return config_from_dict({}, overrides)
    p = Path(path)
    if not p.is_file():
        raise ConfigError("config file not found", source=str(path))
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"not valid YAML ({e})", source=str(path)) from None
    return config_from_dict(data, overrides, source=str(path))


def save_config(cfg: TrainConfig, path: str | Path) -> str:
    """Write `cfg` as YAML (atomically) that `load_config` reads back to an equal config."""
    text = yaml.safe_dump(to_dict(cfg), sort_keys=False)
    return write_atomic(path, lambda tmp: Path(tmp).write_text(text))


def with_overrides(cfg: TrainConfig, overrides: Mapping[str, Any]) -> TrainConfig:
    """`cfg` with dotted overrides applied and checked again."""
    return config_from_dict(to_dict(cfg), overrides)

