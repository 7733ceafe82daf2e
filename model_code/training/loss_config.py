"""The training loss's configuration: `LossConfig`, its checks and each variant's default.

This is the `loss:` section of the training config, kept apart from the tensors so the
config layer (`training.config`, tuning search spaces) can build and check a loss without
touching the loss itself. Aurora's own per-variable weights are the defaults here because
they are what an unconfigured run trains with (docs/losses.md says where they come from).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from model_code.errors import ConfigError
from model_code.variants import VariantSpec

__all__ = [
    "AURORA_ATMOS_WEIGHTS",
    "AURORA_SURFACE_WEIGHTS",
    "KINDS",
    "SMOOTHNESS_KINDS",
    "LossConfig",
    "SmoothnessConfig",
    "default_loss_config",
]

KINDS = ("mse", "mae", "huber", "mixture")
"""Elementwise losses: `mixture` is a weighted sum of the other three (`LossConfig.mixture`)."""
LEVEL_WEIGHTINGS = ("uniform", "pressure")
SMOOTHNESS_KINDS = ("laplacian", "tv")
"""Smoothness penalties: squared 5-point Laplacian, or total variation (`SmoothnessConfig.kind`)."""

AURORA_SURFACE_WEIGHTS = MappingProxyType({"msl": 1.5, "10u": 0.77, "10v": 0.66, "2t": 3.0})
"""Per-variable weights of Aurora's MAE training loss for surface variables (docs/losses.md)."""
AURORA_ATMOS_WEIGHTS = MappingProxyType({"z": 2.8, "q": 0.78, "t": 1.7, "u": 0.87, "v": 0.6})
"""Per-variable weights of Aurora's MAE training loss for atmospheric variables."""


@dataclass
class SmoothnessConfig:
    """Penalty on the roughness of predicted fields between neighbouring cells (`loss.smoothness`).

    Off while `weight` is 0. Computed on fields divided by their normalisation scale, so one
    weight is comparable across variables (docs/losses.md).
    """

    kind: str = "laplacian"
    """laplacian: squared 5-point Laplacian (curvature; a uniform gradient is free);
    tv: total variation, |difference| between neighbours (every gradient costs, edges stay sharp)."""
    weight: float = 0.0
    variables: tuple[str, ...] | None = None
    """Variables penalised; None: every predicted non-angle variable."""

    def __post_init__(self) -> None:
        if isinstance(self.variables, list):
            self.variables = tuple(self.variables)

    def validate(self, prefix: str = "loss.smoothness") -> None:
        """Raise `ConfigError` naming the first field whose value cannot be used."""
        if self.kind not in SMOOTHNESS_KINDS:
            raise ConfigError(f"unknown smoothness penalty '{self.kind}'; expected one of "
                              f"{', '.join(SMOOTHNESS_KINDS)}", field=f"{prefix}.kind")
        _non_negative(self.weight, f"{prefix}.weight")
        value = self.variables
        if value is not None and not (isinstance(value, tuple) and all(isinstance(v, str) for v in value)):
            raise ConfigError(f"expected a list of variable names, got {value!r}", field=f"{prefix}.variables")
        if value == () and self.weight > 0:
            raise ConfigError("a weight on no variable penalises nothing; name at least one, or null for "
                              "every predicted non-angle variable", field=f"{prefix}.variables")


@dataclass
class LossConfig:
    """What the training loss weighs and how; `default_loss_config(spec)` gives a variant's.

    Weights are relative: a variable absent from `surface_weights`/`atmos_weights` gets
    `default_weight`. Factors of 1 (and weights of 0) switch a refinement off.
    """

    kind: str = "mae"
    """Elementwise loss: mse | mae | huber | mixture (Aurora trains with MAE)."""
    mixture: dict[str, float] = field(default_factory=dict)
    """With kind "mixture": weight of each of mse, mae, huber, e.g. {"mae": 0.8, "mse": 0.2}."""
    huber_delta: float = 1.0
    """Huber threshold, in normalised units (multiples of the variable's scale)."""
    surface_weights: dict[str, float] = field(default_factory=lambda: dict(AURORA_SURFACE_WEIGHTS))
    atmos_weights: dict[str, float] = field(default_factory=lambda: dict(AURORA_ATMOS_WEIGHTS))
    default_weight: float = 1.0
    surface_scale: float = 0.25
    """Factor on all surface terms relative to atmospheric ones (Aurora: 1/4)."""
    atmos_scale: float = 1.0
    level_weighting: str = "uniform"
    """uniform (Aurora: levels averaged alike) or pressure (GraphCast: ∝ pressure, mean 1)."""
    level_weights: dict[int, float] = field(default_factory=dict)
    """Extra factor per pressure level in hPa, on top of `level_weighting`."""
    latitude_weighting: bool = True
    """Weigh each cell by its area, normalised to mean 1 over the grid (as WeatherBench 2)."""
    lead_weights: dict[int, float] = field(default_factory=dict)
    """Weight per lead step (model steps ahead); 1 where absent."""
    lead_emphasis_hours: tuple[float, float] | None = None
    """Lead times (hours, inclusive) whose weight is multiplied by `lead_emphasis_factor`."""
    lead_emphasis_factor: float = 1.0
    extremes_factor: float = 1.0
    """Weight of target pixels beyond the `extremes_quantile` of their field (either tail)."""
    extremes_quantile: float = 0.99
    extremes_variables: tuple[str, ...] | None = None
    """Variables that get the extremes weight; None: every predicted non-angle variable."""
    coastal_factor: float = 1.0
    """Weight of valid pixels within `coastal_width` cells of a NaN target (land for waves)."""
    coastal_width: int = 2
    spectral_weight: float = 0.0
    spectral_variables: tuple[str, ...] | None = None
    """Variables of the spectral term; None: every predicted non-angle variable."""
    spectral_eps: float = 1e-6
    """Floor added to normalised power spectra before the logarithm."""
    positivity_weight: float = 0.0
    positive_variables: tuple[str, ...] = ()
    log_weight: float = 0.0
    log_variables: tuple[str, ...] = ()
    log_eps: float = 1e-4
    """Added to concentrations in normalised units (x / scale) before the logarithm."""
    density_weight: float = 0.0
    """Wave presence term on the density logits (only with `DensityRecorder` logits)."""
    smoothness: SmoothnessConfig | None = field(default_factory=SmoothnessConfig)
    """Spatial smoothness penalty on the predictions; weight 0 or None: off."""

    def __post_init__(self) -> None:
        # YAML gives lists and (sometimes) string keys: bring them to the declared types
        # where that is unambiguous, and leave anything else for `validate` to name.
        for name in ("extremes_variables", "spectral_variables", "positive_variables", "log_variables"):
            value = getattr(self, name)
            if isinstance(value, list):
                setattr(self, name, tuple(value))
        if isinstance(self.lead_emphasis_hours, list):
            self.lead_emphasis_hours = tuple(self.lead_emphasis_hours)
        for name in ("level_weights", "lead_weights"):
            value = getattr(self, name)
            if isinstance(value, dict):
                setattr(self, name, {_int_key(k): v for k, v in value.items()})

    def validate(self, prefix: str = "loss") -> None:
        """Raise `ConfigError` naming the first field whose value cannot be used."""
        f = lambda name: f"{prefix}.{name}" if prefix else name  # noqa: E731
        if self.kind not in KINDS:
            raise ConfigError(f"unknown loss '{self.kind}'; expected one of {', '.join(KINDS)}", field=f("kind"))
        if self.kind == "mixture":
            if not isinstance(self.mixture, dict) or not self.mixture:
                raise ConfigError("a mixture needs the weight of each kind, e.g. {mae: 0.8, mse: 0.2}",
                                  field=f("mixture"))
            for k, w in self.mixture.items():
                if k not in KINDS[:3]:
                    raise ConfigError(f"unknown loss '{k}' in a mixture; expected {', '.join(KINDS[:3])}",
                                      field=f(f"mixture.{k}"))
                _non_negative(w, f(f"mixture.{k}"))
            if sum(self.mixture.values()) <= 0:
                raise ConfigError("the mixture weights sum to 0", field=f("mixture"))
        elif self.mixture:
            raise ConfigError(f"mixture weights are only used with kind 'mixture', not '{self.kind}'",
                              field=f("mixture"))
        _positive(self.huber_delta, f("huber_delta"))
        for group in ("surface_weights", "atmos_weights"):
            weights = getattr(self, group)
            if not isinstance(weights, dict):
                raise ConfigError(f"expected a mapping of variable name to weight, got {weights!r}", field=f(group))
            for name, w in weights.items():
                _non_negative(w, f(f"{group}.{name}"))
        for name in ("default_weight", "surface_scale", "atmos_scale", "lead_emphasis_factor",
                     "extremes_factor", "coastal_factor", "spectral_weight", "positivity_weight",
                     "log_weight", "density_weight"):
            _non_negative(getattr(self, name), f(name))
        if self.level_weighting not in LEVEL_WEIGHTINGS:
            raise ConfigError(f"unknown level weighting '{self.level_weighting}'; expected one of "
                              f"{', '.join(LEVEL_WEIGHTINGS)}", field=f("level_weighting"))
        for group in ("level_weights", "lead_weights"):
            weights = getattr(self, group)
            if not isinstance(weights, dict):
                raise ConfigError(f"expected a mapping, got {weights!r}", field=f(group))
            for key, w in weights.items():
                if not isinstance(key, int) or key <= 0:
                    what = "a pressure level in hPa" if group == "level_weights" else "a lead step (1, 2, ...)"
                    raise ConfigError(f"key {key!r} is not {what}", field=f(group))
                _non_negative(w, f(f"{group}.{key}"))
        if self.lead_emphasis_hours is not None:
            hours = self.lead_emphasis_hours
            if (not isinstance(hours, tuple) or len(hours) != 2
                    or not all(_is_number(h) and h >= 0 for h in hours) or hours[0] > hours[1]):
                raise ConfigError(f"expected [first, last] lead hours with 0 <= first <= last, got {hours!r}",
                                  field=f("lead_emphasis_hours"))
        if not (_is_number(self.extremes_quantile) and 0.5 < self.extremes_quantile < 1):
            raise ConfigError(f"must lie strictly between 0.5 and 1, got {self.extremes_quantile!r}",
                              field=f("extremes_quantile"))
        if not isinstance(self.coastal_width, int) or isinstance(self.coastal_width, bool) or self.coastal_width < 1:
            raise ConfigError(f"must be a whole number of grid cells >= 1, got {self.coastal_width!r}",
                              field=f("coastal_width"))
        _positive(self.spectral_eps, f("spectral_eps"))
        _positive(self.log_eps, f("log_eps"))
        if not isinstance(self.latitude_weighting, bool):
            raise ConfigError(f"expected true or false, got {self.latitude_weighting!r}", field=f("latitude_weighting"))
        for name in ("extremes_variables", "spectral_variables", "positive_variables", "log_variables"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, tuple) and all(isinstance(v, str) for v in value)):
                raise ConfigError(f"expected a list of variable names, got {value!r}", field=f(name))
        if self.smoothness is not None:
            if not isinstance(self.smoothness, SmoothnessConfig):
                raise ConfigError(f"expected a section of kind, weight and variables (or null), got "
                                  f"{self.smoothness!r}", field=f("smoothness"))
            self.smoothness.validate(f("smoothness"))

    def check_variables(self, spec: VariantSpec, prefix: str = "loss") -> None:
        """Raise `ConfigError` for a variable name the variant does not predict (a typo
        would otherwise weigh nothing, silently)."""
        f = lambda name: f"{prefix}.{name}" if prefix else name  # noqa: E731
        surface, atmos = set(spec.output_surf_vars), set(spec.output_atmos_vars)
        named = [("surface_weights", n, surface) for n in self.surface_weights]
        named += [("atmos_weights", n, atmos) for n in self.atmos_weights]
        for group in ("extremes_variables", "spectral_variables", "positive_variables", "log_variables"):
            named += [(group, n, surface | atmos) for n in getattr(self, group) or ()]
        smooth = (self.smoothness.variables if self.smoothness is not None else None) or ()
        named += [("smoothness.variables", n, surface | atmos) for n in smooth]
        for group, name, known in named:
            if name not in known:
                raise ConfigError(f"the {spec.name} variant predicts no variable '{name}'; it predicts "
                                  f"{', '.join(sorted(known))}", field=f(f"{group}.{name}"))
        for name in smooth:
            if any(v.name == name and v.units == "degree" for v in spec.outputs()):
                raise ConfigError(f"'{name}' is a direction in degrees, whose differences wrap at 360°; "
                                  "the smoothness penalty takes no directions", field=f(f"smoothness.variables.{name}"))
        levels = set(spec.levels)
        for level in self.level_weights:
            if level not in levels:
                raise ConfigError(f"{level} hPa is not a level of the {spec.name} variant "
                                  f"({', '.join(map(str, spec.levels))})", field=f(f"level_weights.{level}"))


def _int_key(key):
    if isinstance(key, str) and key.strip().lstrip("-").isdigit():
        return int(key)
    if isinstance(key, float) and key.is_integer():
        return int(key)
    return key


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _non_negative(x, name: str) -> None:
    if not _is_number(x) or x < 0:
        raise ConfigError(f"must be a finite number >= 0, got {x!r}", field=name)


def _positive(x, name: str) -> None:
    if not _is_number(x) or x <= 0:
        raise ConfigError(f"must be a finite number > 0, got {x!r}", field=name)


def kept_non_negative(spec: VariantSpec, model: Mapping[str, Any] | None = None) -> tuple[str, ...]:
    """Surface variables the model clamps at zero (`positive_surf_vars`: the air-pollution species),
    as the config's constructor arguments `model` set them or the class defaults them."""
    model = model or {}
    return tuple(model.get("positive_surf_vars", _class_default(spec.model_class, "positive_surf_vars")))


def _class_default(cls: type, name: str, fallback=()):
    for klass in cls.__mro__:
        params = inspect.signature(klass.__init__).parameters
        if name in params and params[name].default is not inspect.Parameter.empty:
            return params[name].default
    return fallback


def default_loss_config(spec: VariantSpec) -> LossConfig:
    """The loss a variant is fine-tuned with by default (docs/losses.md says why):

    - medium-range: lead times of 3 to 5 days weigh twice as much;
    - high-res: pixels beyond the 1 % tails of their field weigh twice as much;
    - air-pollution: positivity penalty and log-space MAE on the species the model keeps
      non-negative (its `positive_surf_vars`/`positive_atmos_vars`); the smoothness penalty,
      off (weight 0), lists the same species, so a weight alone turns it on for them;
    - wave: pixels within 2 cells of land (NaN targets) weigh twice as much, a spectral
      term on the wave periods, and the presence term on the density heads.
    """
    cfg = LossConfig()
    positive = tuple(_class_default(spec.model_class, "positive_surf_vars")) + tuple(
        _class_default(spec.model_class, "positive_atmos_vars"))
    if spec.name == "medium-range":
        cfg = dataclasses.replace(cfg, lead_emphasis_hours=(72.0, 120.0), lead_emphasis_factor=2.0)
    elif spec.name == "high-res":
        cfg = dataclasses.replace(cfg, extremes_factor=2.0, extremes_quantile=0.99)
    elif spec.name == "air-pollution" and positive:
        cfg = dataclasses.replace(cfg, positivity_weight=1.0, positive_variables=positive,
                                  log_weight=1.0, log_variables=positive,
                                  smoothness=SmoothnessConfig(variables=positive))
    elif spec.name == "wave":
        periods = tuple(v.name for v in spec.outputs() if v.kind == "surface" and v.units == "s")
        cfg = dataclasses.replace(cfg, coastal_factor=2.0, coastal_width=2, spectral_weight=0.1,
                                  spectral_variables=periods, density_weight=0.1)
    return cfg
