"""The one hyperparameter search space, as plain data that Optuna and Katib both render.

A `Param` names a training-config key (dotted, as `load_config(..., overrides=...)` takes
it), its range and its scale. Local tuning asks an Optuna trial for a value of each
(`suggest`); a cluster run lists the same params in a Katib Experiment, whose trials pass
the values back as `--set KEY=VALUE` arguments (`set_arguments`). Keeping both renderings
on one definition means a range changed here changes on both sides.

The space depends on the profile, the run length and, when the model's shape is searched
(`architecture`), the variant: its own constructor arguments (the medium-range history, the
high-res patch size). Callers holding a training config take its space from `config_space`.

Both minimise `val_score` (`tuning_score`), a validation metric the searched loss weights
cannot move. This module imports neither Optuna nor Katib: `suggest` only needs an object
with Optuna's `suggest_float/suggest_int/suggest_categorical` methods.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Mapping, Protocol, Sequence

from model_code.errors import ConfigError
from model_code.variants import VARIANTS, VariantSpec

if TYPE_CHECKING:
    from model_code.training.config import TrainConfig

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
    A choice may be among tuples (a window size): Optuna and Katib hold only scalars, so
    both record such a value as its text, the YAML list `[2,6,12]` (`text`), which `--set`
    reads back as the list and `parse` as the tuple.
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
        if self.listed:
            return self.parse(trial.suggest_categorical(self.name, [self.text(c) for c in self.choices]))
        return trial.suggest_categorical(self.name, list(self.choices))

    @property
    def listed(self) -> bool:
        """Whether the choices are tuples, recorded by both engines as text."""
        return any(isinstance(c, tuple) for c in self.choices)

    def text(self, value: Any) -> str:
        """`value` as a Katib assignment and a `--set` value: a tuple as the YAML list `[2,6,12]`."""
        return "[" + ",".join(map(str, value)) + "]" if isinstance(value, tuple) else str(value)

    def overrides(self, value: Any) -> dict[str, Any]:
        """Config overrides (dotted key -> value) that set this parameter to `value` (for a
        choice among tuples, the tuple or its text, as an Optuna trial records it)."""
        if self.listed and isinstance(value, str):
            value = self.parse(value)
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
            if self.text(choice) == str(text):
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

_FULL_ARCHITECTURE = (
    Param("window_size", ("model.window_size",), "choice", choices=((2, 4, 8), (2, 6, 12), (2, 8, 16)),
          help="Swin window in latent levels, latitude and longitude patches (Aurora: 2, 6, 12)"),
    Param("latent_levels", ("model.latent_levels",), "choice", choices=(4, 6, 8),
          help="latent levels of the Perceiver encoder, the surface one included (Aurora: 4)"),
    Param("depth", ("model.encoder_depths", "model.decoder_depths"), "choice", choices=(4, 6, 8),
          repeat=3, help="Swin blocks per stage of the encoder and decoder (Aurora: 6, 10, 8 and 8, 10, 6)"),
)
"""The backbone's shape, searched for a full-profile model trained from scratch."""

_HISTORY = Param("history", ("model.max_history_size", "data.history"), "choice", choices=(2, 3, 4),
                 help="input times the model takes and every sample gives it (published weights: 2)")

_VARIANT_ARCHITECTURE: Mapping[str, Mapping[str, tuple[Param, ...]]] = {
    "medium-range": {"tiny": (_HISTORY,), "full": (_HISTORY,)},
    "high-res": {
        # Tiny: divisors of 10, which fit every grid the loader takes for the variant; full: sizes
        # that fit its native 1801x3600 grid.
        "tiny": (Param("patch_size", ("model.patch_size",), "choice", choices=(2, 5, 10),
                       help="patch size of the encoder and decoder (published: 10)"),),
        "full": (Param("patch_size", ("model.patch_size",), "choice", choices=(8, 10, 12),
                       help="patch size of the encoder and decoder (published: 10)"),
                 Param("heads", ("model.num_heads",), "choice", choices=(8, 16, 32),
                       help="attention heads of the Perceiver encoder and decoder (published: 16)")),
    },
}
"""The shape a variant adds to the search, by profile (the tiny profile searches heads already)."""


def search_space(profile: str = "tiny", max_steps: int = 2500, *, variant: str | None = None,
                 architecture: bool = False) -> tuple[Param, ...]:
    """The searched parameters for a model profile, run length and variant.

    Warmup is searched up to a fifth of the run (`max_steps` optimiser steps), so that every
    value leaves steps for the decay. Depth and heads of the tiny profile are always searched.
    The rest of the model's shape only with `architecture`, since weights a run starts from
    fix the shape of the model they load into (`config_space` refuses the two together): the
    full profile's window size, latent levels and depth, and what `variant` adds, the
    medium-range input history (2 to 4 times) and the high-res patch size and (full profile)
    heads. Without `architecture` the variant changes nothing.
    """
    if profile not in ("tiny", "full"):
        raise ConfigError(f"unknown profile '{profile}'; expected tiny or full", field="profile")
    if variant is not None and variant not in VARIANTS:
        raise ConfigError(f"unknown variant '{variant}'; expected one of: {', '.join(VARIANTS)}", field="variant")
    step = max(1, max_steps // 50)  # about ten values
    warmup_max = max_steps // 5 // step * step
    warmup = () if warmup_max < 1 else (
        Param("warmup_steps", ("schedule.warmup_steps",), "int", 0, warmup_max, step=step,
              help="linear warmup steps before the cosine decay"),)
    shape: tuple[Param, ...] = ()
    if architecture:
        shape = _FULL_ARCHITECTURE if profile == "full" else ()
        shape += _VARIANT_ARCHITECTURE.get(variant, {}).get(profile, ())
    return _OPTIM + warmup + (_TINY if profile == "tiny" else ()) + shape


def config_space(cfg: TrainConfig, *, architecture: bool = False) -> tuple[Param, ...]:
    """The space of a training config: its profile, run length (`train.max_steps`) and variant.

    `architecture` searches the model's shape too, which only a model trained from scratch
    can take: with starting `weights` it is refused before any trial runs.
    """
    if architecture and cfg.weights:
        raise ConfigError(f"the starting weights {cfg.weights} fix the model's shape; search the architecture "
                          "of a model trained from scratch (no weights), or leave the architecture out",
                          field="weights")
    return search_space(cfg.profile, cfg.train.max_steps, variant=cfg.variant, architecture=architecture)


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
