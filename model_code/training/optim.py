"""AdamW with parameter groups, LoRA modes and learning-rate schedules for fine-tuning Aurora.

Fine-tuning a 1.3 B parameter model either trains everything or only the low-rank adapters
Aurora's attention layers carry (`lora_only`, a few MB of state instead of ~15 GB). New
parts (a new variable's embedding) learn faster than pretrained ones, so learning rates are
set per parameter group by name pattern; biases and normalisation scales get no weight
decay. Schedules are pure functions of the step (`lr_factor`), so a resumed run continues
on exactly the same curve from the scheduler's state_dict.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import torch
from aurora.model.lora import LoRA, LoRARollout

from model_code.errors import ConfigError

__all__ = [
    "LORA_MODES",
    "SCHEDULES",
    "OptimConfig",
    "ScheduleConfig",
    "apply_lora_mode",
    "build_optimizer",
    "build_scheduler",
    "lora_parameters",
    "lr_factor",
    "parameter_groups",
    "set_lora_rank",
]

LORA_MODES = ("full", "lora_only")
SCHEDULES = ("cosine", "cosine_restarts", "constant")


def _f(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _whole(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


@dataclass
class OptimConfig:
    """AdamW settings and which parameters train (defaults: PyTorch's AdamW, lr 3e-4)."""

    lr: float = 3e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    lr_multipliers: dict[str, float] = field(default_factory=dict)
    """Regular expression (searched in the parameter name) -> learning-rate multiplier; the
    first pattern that matches wins, e.g. {"encoder\\\\..*embed": 10.0}."""
    lora: str = "full"
    """full: train every parameter; lora_only: train the LoRA adapters only."""
    lora_rank: int | None = None
    """Rank of the LoRA adapters; None keeps the model's (Aurora builds rank 8)."""

    def __post_init__(self) -> None:
        if isinstance(self.betas, list):
            self.betas = tuple(self.betas)

    def validate(self, prefix: str = "optim") -> None:
        """Raise `ConfigError` naming the first field whose value cannot be used."""
        if not _number(self.lr) or self.lr <= 0:
            raise ConfigError(f"the learning rate must be a finite number > 0, got {self.lr!r}", field=_f(prefix, "lr"))
        if not _number(self.weight_decay) or self.weight_decay < 0:
            raise ConfigError(f"must be a finite number >= 0, got {self.weight_decay!r}",
                              field=_f(prefix, "weight_decay"))
        if (not isinstance(self.betas, tuple) or len(self.betas) != 2
                or not all(_number(b) and 0 <= b < 1 for b in self.betas)):
            raise ConfigError(f"expected two numbers in [0, 1), got {self.betas!r}", field=_f(prefix, "betas"))
        if not _number(self.eps) or self.eps <= 0:
            raise ConfigError(f"must be a finite number > 0, got {self.eps!r}", field=_f(prefix, "eps"))
        if not isinstance(self.lr_multipliers, dict):
            raise ConfigError(f"expected a mapping of name pattern to multiplier, got {self.lr_multipliers!r}",
                              field=_f(prefix, "lr_multipliers"))
        for pattern, mult in self.lr_multipliers.items():
            where = _f(prefix, f"lr_multipliers.{pattern}")
            try:
                re.compile(pattern)
            except (re.error, TypeError) as e:
                raise ConfigError(f"not a regular expression ({e})", field=where) from None
            if not _number(mult) or mult < 0:
                raise ConfigError(f"the multiplier must be a finite number >= 0, got {mult!r}", field=where)
        if self.lora not in LORA_MODES:
            raise ConfigError(f"unknown LoRA mode '{self.lora}'; expected one of {', '.join(LORA_MODES)}",
                              field=_f(prefix, "lora"))
        if self.lora_rank is not None and (not _whole(self.lora_rank) or self.lora_rank < 1):
            raise ConfigError(f"the LoRA rank must be a whole number >= 1, got {self.lora_rank!r}",
                              field=_f(prefix, "lora_rank"))


@dataclass
class ScheduleConfig:
    """Learning-rate schedule: linear warmup, then cosine decay, cosine with warm restarts,
    or constant. Factors multiply each group's learning rate (so multipliers are kept)."""

    name: str = "cosine"
    warmup_steps: int = 0
    """Steps of linear warmup: step s (from 0) runs at (s + 1) / warmup_steps of the rate."""
    min_lr_ratio: float = 0.1
    """Lowest rate as a fraction of the peak (cosine and cosine_restarts)."""
    restart_period: int = 1000
    """cosine_restarts: steps of the first cycle after warmup (PyTorch's T_0)."""
    restart_mult: int = 1
    """cosine_restarts: each cycle is this many times longer than the one before (T_mult)."""

    def validate(self, prefix: str = "schedule", total_steps: int | None = None) -> None:
        """Raise `ConfigError` naming the first field whose value cannot be used; with
        `total_steps`, also a warmup that leaves no step for the cosine decay."""
        if self.name not in SCHEDULES:
            raise ConfigError(f"unknown scheduler '{self.name}'; expected one of {', '.join(SCHEDULES)}",
                              field=_f(prefix, "name"))
        if not _whole(self.warmup_steps) or self.warmup_steps < 0:
            raise ConfigError(f"must be a whole number >= 0, got {self.warmup_steps!r}",
                              field=_f(prefix, "warmup_steps"))
        if not _number(self.min_lr_ratio) or not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError(f"must lie in [0, 1], got {self.min_lr_ratio!r}", field=_f(prefix, "min_lr_ratio"))
        if not _whole(self.restart_period) or self.restart_period < 1:
            raise ConfigError(f"must be a whole number of steps >= 1, got {self.restart_period!r}",
                              field=_f(prefix, "restart_period"))
        if not _whole(self.restart_mult) or self.restart_mult < 1:
            raise ConfigError(f"must be a whole number >= 1 (as PyTorch's T_mult), got {self.restart_mult!r}",
                              field=_f(prefix, "restart_mult"))
        if total_steps is not None and self.name == "cosine" and self.warmup_steps >= total_steps:
            raise ConfigError(f"a warmup of {self.warmup_steps} steps leaves none of the {total_steps} training "
                              "steps for the cosine decay", field=_f(prefix, "warmup_steps"))


# --------------------------------------------------------------------------------------
# LoRA


def lora_parameters(model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    """(name, parameter) of every LoRA adapter in `model` (Aurora's `LoRA` modules)."""
    names = {}
    for prefix, module in model.named_modules():
        if isinstance(module, LoRA):
            for name, p in module.named_parameters(recurse=False):
                names[id(p)] = (f"{prefix}.{name}" if prefix else name, p)
    return list(names.values())


def set_lora_rank(model: torch.nn.Module, rank: int) -> int:
    """Give every LoRA adapter rank `rank`; returns how many adapters were rebuilt.

    Aurora's constructor does not pass a rank to its attention layers (they build rank 8
    with alpha 8), so the adapters are rebuilt here after construction. A rebuilt adapter
    starts like a new one (A random, B zero: the model computes the same function) and
    keeps alpha, so its scale alpha / rank changes as in the LoRA paper. Adapters already of
    `rank` are kept with their weights. Rebuild before loading a checkpoint trained with
    that rank; rebuilding after loading one of another rank discards its adapters.
    """
    if not _whole(rank) or rank < 1:
        raise ConfigError(f"the LoRA rank must be a whole number >= 1, got {rank!r}", field="optim.lora_rank")
    rebuilt = 0
    for module in model.modules():
        if not isinstance(module, LoRARollout):
            continue
        for i, old in enumerate(module.loras):
            if old.r == rank:
                continue
            new = LoRA(old.lora_A.shape[1], old.lora_B.shape[0], r=rank, alpha=old.lora_alpha,
                       dropout=old.lora_dropout.p)
            module.loras[i] = new.to(device=old.lora_A.device, dtype=old.lora_A.dtype)
            rebuilt += 1
    return rebuilt


def apply_lora_mode(model: torch.nn.Module, cfg: OptimConfig) -> int:
    """Set the LoRA rank (if `cfg.lora_rank`) and which parameters train; returns the number
    of trainable parameter values.

    `lora_only` freezes everything but the adapters and fails when the model has none
    (built with use_lora=False); `full` unfreezes every parameter.
    """
    cfg.validate()
    if cfg.lora_rank is not None:
        if not lora_parameters(model):
            raise ConfigError(f"a LoRA rank of {cfg.lora_rank} was asked for, but the model has no LoRA "
                              "adapters (it was built with use_lora=False)", field="optim.lora_rank")
        set_lora_rank(model, cfg.lora_rank)
    adapters = {id(p) for _, p in lora_parameters(model)}
    if cfg.lora == "lora_only":
        if not adapters:
            raise ConfigError("lora_only trains the LoRA adapters only, but the model has none (it was "
                              "built with use_lora=False); use lora: full or a variant with LoRA",
                              field="optim.lora")
        for p in model.parameters():
            p.requires_grad_(id(p) in adapters)
    else:
        for p in model.parameters():
            p.requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# --------------------------------------------------------------------------------------
# Optimiser


def _decays(name: str, p: torch.nn.Parameter) -> bool:
    """Weight decay shrinks matrices towards 0; biases and norm scales are not such weights."""
    return p.ndim >= 2 and not name.endswith(".bias")


def parameter_groups(model: torch.nn.Module, cfg: OptimConfig) -> list[dict]:
    """AdamW parameter groups of the trainable parameters: one per (multiplier, decay).

    Each group carries `lr` (cfg.lr × multiplier), `weight_decay` (0 for biases and
    parameters of fewer than 2 dimensions: norm scales) and `lr_multiplier`.
    """
    patterns = [(p, re.compile(p), m) for p, m in cfg.lr_multipliers.items()]
    used: set[str] = set()
    groups: dict[tuple[float, bool], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        mult = 1.0
        for text, regex, m in patterns:
            if regex.search(name):
                mult = float(m)
                used.add(text)
                break
        decay = _decays(name, param)
        group = groups.setdefault((mult, decay), {
            "params": [], "lr": cfg.lr * mult, "weight_decay": cfg.weight_decay if decay else 0.0,
            "lr_multiplier": mult,
        })
        group["params"].append(param)
    unused = [p for p in cfg.lr_multipliers if p not in used]
    if unused:
        raise ConfigError(f"pattern '{unused[0]}' matches no trainable parameter name (e.g. "
                          f"'{next(iter(n for n, _ in model.named_parameters()), '')}')",
                          field=f"optim.lr_multipliers.{unused[0]}")
    if not groups:
        raise ConfigError("the model has no trainable parameter", field="optim.lora")
    return list(groups.values())


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    """AdamW over `parameter_groups(model, cfg)` (call `apply_lora_mode` first)."""
    cfg.validate()
    return torch.optim.AdamW(parameter_groups(model, cfg), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps,
                             weight_decay=cfg.weight_decay)


# --------------------------------------------------------------------------------------
# Schedules


def lr_factor(step: int, cfg: ScheduleConfig, total_steps: int | None = None) -> float:
    """Factor on the peak learning rate at optimiser step `step` (from 0).

    Warmup: (step + 1) / warmup_steps. Then, with s = step - warmup_steps and m = min_lr_ratio:
    cosine: m + (1 - m)(1 + cos(π s / (total_steps - warmup_steps))) / 2, m after the end;
    cosine_restarts: the same within each cycle, cycles restart_period × restart_mult^i long
    (PyTorch's CosineAnnealingWarmRestarts with eta_min = m × peak); constant: 1.
    """
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    s = step - cfg.warmup_steps
    m = cfg.min_lr_ratio
    if cfg.name == "constant":
        return 1.0
    if cfg.name == "cosine":
        if total_steps is None:
            raise ValueError("the cosine schedule needs the total number of steps")
        progress = min(s / max(total_steps - cfg.warmup_steps, 1), 1.0)
        return m + (1 - m) * 0.5 * (1 + math.cos(math.pi * progress))
    period = cfg.restart_period
    while s >= period:  # integer arithmetic: restarts land on exact steps
        s -= period
        period *= cfg.restart_mult
    return m + (1 - m) * 0.5 * (1 + math.cos(math.pi * s / period))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: ScheduleConfig,
                    total_steps: int | None = None) -> torch.optim.lr_scheduler.LambdaLR:
    """A `LambdaLR` following `lr_factor`; call `.step()` after each optimiser step.

    Its state_dict holds only the step and base rates (the factor is a plain function of
    the step), so a scheduler rebuilt from the same config and loaded with it continues
    exactly where the first stopped.
    """
    cfg.validate(total_steps=total_steps)
    if cfg.name == "cosine" and total_steps is None:
        raise ConfigError("the cosine schedule needs the number of training steps", field="train.max_steps")

    def factor(step: int) -> float:
        return lr_factor(step, cfg, total_steps)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
