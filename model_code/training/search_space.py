"""The one hyperparameter search space, as plain data that Optuna and Katib both render.

A `Param` names a training-config key (dotted, as `load_config(..., overrides=...)` takes
it), its range and its scale. Local tuning asks an Optuna trial for a value of each
(`suggest`); a cluster run lists the same params in a Katib Experiment, whose trials pass
the values back as `--set KEY=VALUE` arguments (`set_arguments`). Keeping both renderings
on one definition means a range changed here changes on both sides.

Both minimise `val_score` (`tuning_score`), a validation metric the searched loss weights
cannot move. This module imports neither Optuna nor Katib: `suggest` only needs an object
with Optuna's `suggest_float/suggest_int/suggest_categorical` methods.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, Mapping, Protocol, Sequence

from model_code.errors import ConfigError
from model_code.variants import VariantSpec

Kind = Literal["float", "int", "choice"]

OBJECTIVE = "val_score"
"""The metric both engines minimise (see `tuning_score`)."""


class Suggester(Protocol):
    """What `suggest` needs from a trial (`optuna.Trial` has these methods)."""

    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float: ...
    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int: ...
    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any: ...


@dataclass(frozen=True)
class Param:
    """One searched hyperparameter.

    `name` is short and identifier-like: the Optuna parameter, the Katib parameter and the
    Katib trial parameter all carry it. `keys` are the config keys the value is written to;
    with `repeat` > 0 each key gets a list of `repeat` copies (one depth for every stage).
    """

    name: str
    keys: tuple[str, ...]
    kind: Kind
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: int | None = None
    choices: tuple[Any, ...] = ()
    repeat: int = 0
    help: str = ""

    def __post_init__(self) -> None:
        where = f"search space '{self.name}'"
        if not self.name.isidentifier():
            raise ConfigError(f"{where}: name must be an identifier", field=self.name)
        if self.kind == "choice":
            if len(self.choices) < 2:
                raise ConfigError(f"{where}: a choice needs at least two values, got {self.choices}")
        elif self.low is None or self.high is None or not self.low < self.high:
            raise ConfigError(f"{where}: needs low < high, got low={self.low}, high={self.high}")
        elif self.log and self.low <= 0:
            raise ConfigError(f"{where}: a log scale needs low > 0, got {self.low}")

    def suggest(self, trial: Suggester) -> Any:
        """A value for this parameter from an Optuna trial."""
        if self.kind == "float":
            return trial.suggest_float(self.name, self.low, self.high, log=self.log)
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=self.step or 1)
        return trial.suggest_categorical(self.name, list(self.choices))

    def overrides(self, value: Any) -> dict[str, Any]:
        """Config overrides (dotted key -> value) that set this parameter to `value`."""
        value = [value] * self.repeat if self.repeat else value
        return {key: value for key in self.keys}

    def set_arguments(self, placeholder: str) -> list[str]:
        """`KEY=VALUE` strings with `placeholder` (e.g. `${trialParameters.lr}`) as the value."""
        value = "[" + ",".join([placeholder] * self.repeat) + "]" if self.repeat else placeholder
        return [f"{key}={value}" for key in self.keys]

    def parse(self, text: str) -> Any:
        """The typed value of a Katib parameter assignment, which arrives as a string."""
        try:
            if self.kind == "float":
                return float(text)
            if self.kind == "int":
                return int(float(text))
        except ValueError:
            raise ConfigError(f"'{text}' is not a number", field=self.name) from None
        for choice in self.choices:
            if str(choice) == str(text):
                return choice
        raise ConfigError(f"'{text}' is not one of {list(self.choices)}", field=self.name)


_OPTIM = (
    Param("lr", ("optim.lr",), "float", 1e-5, 1e-3, log=True,
          help="peak learning rate of AdamW"),
    Param("weight_decay", ("optim.weight_decay",), "float", 1e-4, 1e-1, log=True,
          help="AdamW weight decay (not applied to norms and biases)"),
    Param("min_lr_ratio", ("schedule.min_lr_ratio",), "float", 0.0, 0.2,
          help="final learning rate as a fraction of the peak"),
    Param("lora", ("optim.lora",), "choice", choices=("full", "lora_only"),
          help="train every weight, or the LoRA adapters only"),
    Param("lora_rank", ("optim.lora_rank",), "choice", choices=(4, 8, 16, 32),
          help="rank of the LoRA adapters"),
    Param("surface_scale", ("loss.surface_scale",), "float", 0.1, 1.0,
          help="weight of all surface-variable terms against the atmospheric ones (Aurora: 0.25)"),
)

_TINY = (
    Param("depth", ("model.encoder_depths", "model.decoder_depths"), "choice", choices=(1, 2),
          repeat=3, help="Swin blocks per stage of the tiny backbone (encoder and decoder)"),
    Param("heads", ("model.num_heads",), "choice", choices=(2, 4, 8),
          help="attention heads of the tiny profile's Perceiver encoder and decoder"),
)


def search_space(profile: str = "tiny", max_steps: int = 2500) -> tuple[Param, ...]:
    """The searched parameters for a model profile and run length.

    Warmup is searched up to a fifth of the run (`max_steps` optimiser steps), so that every
    value leaves steps for the decay. Architecture (depth, heads) is searched for the tiny
    profile only: the full profile's architecture is fixed by the weights it starts from.
    """
    if profile not in ("tiny", "full"):
        raise ConfigError(f"unknown profile '{profile}'; expected tiny or full", field="profile")
    step = max(1, max_steps // 50)  # about ten values
    warmup_max = max_steps // 5 // step * step
    warmup = () if warmup_max < 1 else (
        Param("warmup_steps", ("schedule.warmup_steps",), "int", 0, warmup_max, step=step,
              help="linear warmup steps before the cosine decay"),)
    return _OPTIM + warmup + (_TINY if profile == "tiny" else ())


def suggest(trial: Suggester, space: Sequence[Param]) -> dict[str, Any]:
    """Ask `trial` for one value per parameter; returns {param name: value}."""
    return {p.name: p.suggest(trial) for p in space}


def to_overrides(values: Mapping[str, Any], space: Sequence[Param]) -> dict[str, Any]:
    """{param name: value} -> {dotted config key: value}, rejecting unknown names."""
    by_name = {p.name: p for p in space}
    unknown = sorted(set(values) - set(by_name))
    if unknown:
        raise ConfigError(f"unknown search parameters {unknown}; expected some of {sorted(by_name)}")
    out: dict[str, Any] = {}
    for name, value in values.items():
        out.update(by_name[name].overrides(value))
    return out


def tuning_score(metrics: Mapping[str, float], spec: VariantSpec) -> float:
    """The tuning objective: the unweighted mean of the per-variable validation losses.

    `val_loss` is the weighted training loss; a search over loss weights would only find the
    weights that make that number small. Each `val_loss/<var>` is a variable's loss before
    any weight, in normalised units, so their plain mean over the predicted variables ranks
    trials the same whatever weights they trained with. Variables without a finite value
    (no targets in the data) are left out; NaN when none has one.
    """
    names = dict.fromkeys((*spec.output_surf_vars, *spec.output_atmos_vars))
    values = [metrics[f"val_loss/{v}"] for v in names if math.isfinite(metrics.get(f"val_loss/{v}", math.nan))]
    return sum(values) / len(values) if values else math.nan
