"""Training losses for the four Aurora variants: weighted, NaN-masked, with physics terms.

Every term is computed on the model's physical outputs, what `Aurora.forward` returns after
un-normalisation: air pollution's difference heads have already added the previous step,
wave directions are degrees again and wave fields are NaN where the density head says "no
wave". Errors are divided by Aurora's own normalisation scale of each variable (and level),
so 2 m temperature in K and pressure in Pa weigh alike, as in Aurora's training.

One lead step's loss, with `L_v` the area-weighted, masked mean of the elementwise loss of
variable v (levels averaged with the level weights):

    base  = (surface_scale · Σ_s w_s L_s + atmos_scale · Σ_a w_a L_a) / (number of variables)
    total = base + spectral_weight · spectral + positivity_weight · positivity
                 + log_weight · log + density_weight · density

and the loss of a sample is the lead-weighted mean over its lead steps. Definitions,
defaults and their sources: docs/losses.md.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from aurora import Batch
from aurora.normalisation import level_to_str
from aurora.normalisation import scales as AURORA_SCALES

from model_code.data.grid import cell_areas
from model_code.errors import ConfigError, DataError
from model_code.variables import Variable, variable
from model_code.variants import VariantSpec

__all__ = [
    "AURORA_ATMOS_WEIGHTS",
    "AURORA_SURFACE_WEIGHTS",
    "KINDS",
    "DensityRecorder",
    "Loss",
    "LossConfig",
    "LossResult",
    "NonFiniteLoss",
    "build_loss",
    "default_loss_config",
    "latitude_weights",
    "level_weights",
]

KINDS = ("mse", "mae", "huber", "mixture")
"""Elementwise losses: `mixture` is a weighted sum of the other three (`LossConfig.mixture`)."""
LEVEL_WEIGHTINGS = ("uniform", "pressure")

AURORA_SURFACE_WEIGHTS = MappingProxyType({"msl": 1.5, "10u": 0.77, "10v": 0.66, "2t": 3.0})
"""Per-variable weights of Aurora's MAE training loss for surface variables (docs/losses.md)."""
AURORA_ATMOS_WEIGHTS = MappingProxyType({"z": 2.8, "q": 0.78, "t": 1.7, "u": 0.87, "v": 0.6})
"""Per-variable weights of Aurora's MAE training loss for atmospheric variables."""

_TINY = 1e-12


# --------------------------------------------------------------------------------------
# Configuration


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

    def check_variables(self, spec: VariantSpec, prefix: str = "loss") -> None:
        """Raise `ConfigError` for a variable name the variant does not predict (a typo
        would otherwise weigh nothing, silently)."""
        f = lambda name: f"{prefix}.{name}" if prefix else name  # noqa: E731
        surface, atmos = set(spec.output_surf_vars), set(spec.output_atmos_vars)
        named = [("surface_weights", n, surface) for n in self.surface_weights]
        named += [("atmos_weights", n, atmos) for n in self.atmos_weights]
        for group in ("extremes_variables", "spectral_variables", "positive_variables", "log_variables"):
            named += [(group, n, surface | atmos) for n in getattr(self, group) or ()]
        for group, name, known in named:
            if name not in known:
                raise ConfigError(f"the {spec.name} variant predicts no variable '{name}'; it predicts "
                                  f"{', '.join(sorted(known))}", field=f(f"{group}.{name}"))
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
      non-negative (its `positive_surf_vars`/`positive_atmos_vars`);
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
                                  log_weight=1.0, log_variables=positive)
    elif spec.name == "wave":
        periods = tuple(v.name for v in spec.outputs() if v.kind == "surface" and v.units == "s")
        cfg = dataclasses.replace(cfg, coastal_factor=2.0, coastal_width=2, spectral_weight=0.1,
                                  spectral_variables=periods, density_weight=0.1)
    return cfg


# --------------------------------------------------------------------------------------
# Weights


def latitude_weights(lat: torch.Tensor, lon: torch.Tensor) -> torch.Tensor:
    """(h, w) cell areas normalised to mean 1 over the grid (WeatherBench 2's weighting).

    Uses `grid.cell_areas`, exact on cropped and regional grids and at the poles, where a
    plain cos(latitude) gives a pole row zero weight.
    """
    areas = torch.from_numpy(cell_areas(lat.detach().cpu().double().numpy(), lon.detach().cpu().double().numpy()))
    return (areas / areas.mean()).to(torch.float32)


def level_weights(levels: Sequence[float], cfg: LossConfig) -> torch.Tensor:
    """(c,) weight per pressure level: uniform or ∝ pressure (mean 1), times `cfg.level_weights`."""
    p = torch.tensor([float(lv) for lv in levels], dtype=torch.float64)
    w = p / p.mean() if cfg.level_weighting == "pressure" else torch.ones_like(p)
    extra = torch.tensor([float(cfg.level_weights.get(int(lv), 1.0)) if float(lv).is_integer() else 1.0
                          for lv in levels], dtype=torch.float64)
    return (w * extra).to(torch.float32)


# --------------------------------------------------------------------------------------
# Results and errors


@dataclass
class LossResult:
    """A training loss and its parts, as plain floats for logging.

    `per_variable` keys: a surface variable's Aurora name ("2t", "msl", "pm2p5", "swh"); an
    atmospheric variable's name for its level-weighted mean ("z", "q") and name + level in
    hPa for one level ("z500", "t850", "co1000"). Each value is the variable's loss before
    its weight and the surface/atmos scale: the area-weighted mean elementwise loss in
    normalised units, lead-weighted over the sample's lead steps. `per_lead` maps a lead
    step to its total, `terms` gives "base" and each physics term, both lead-weighted.
    """

    total: torch.Tensor
    per_variable: dict[str, float]
    per_lead: dict[int, float]
    terms: dict[str, float] = field(default_factory=dict)


class NonFiniteLoss(DataError):
    """A prediction or loss term is NaN or infinite where the target is finite.

    `variable` names the variable (per_variable key style) and `lead_step` the lead step,
    so a training run can stop saying what blew up instead of training on NaN.
    """

    def __init__(self, variable: str, lead_step: int, detail: str):
        self.variable = variable
        self.lead_step = lead_step
        super().__init__(f"the loss of '{variable}' at lead step {lead_step} is not finite: {detail}",
                         check="non_finite_loss")


class DensityRecorder:
    """Keeps the density logits of `AuroraWave`'s decoder, one dict per forward call.

    The wave model's outputs are NaN where sigmoid(density logit) < 0.5, a cut with no
    gradient, so a loss on the outputs alone never trains the density heads. The recorder
    is a forward hook on `model.decoder`; pass `recorder.logits` (entry k - 1 for lead k)
    to `Loss(..., density_logits=...)` and `clear()` it before each rollout. Logits are
    (b, h, w) per surface variable name.
    """

    SUFFIX = "_density"

    def __init__(self, model: torch.nn.Module):
        model = getattr(model, "module", model)  # DistributedDataParallel wraps the model
        if not isinstance(getattr(model, "decoder", None), torch.nn.Module):
            raise DataError(f"{type(model).__name__} has no decoder whose density logits could be recorded")
        self.logits: list[dict[str, torch.Tensor]] = []
        self._handle = model.decoder.register_forward_hook(self._record)

    def _record(self, module, inputs, output: Batch) -> None:
        n = len(self.SUFFIX)
        found = {k[:-n]: v for k, v in output.surf_vars.items() if k.endswith(self.SUFFIX)}
        if found:
            self.logits.append(found)

    def clear(self) -> None:
        self.logits = []

    def close(self) -> None:
        self._handle.remove()

    def __enter__(self) -> DensityRecorder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --------------------------------------------------------------------------------------
# Elementwise losses


def _elementwise(kind: str, delta: float) -> Callable[[torch.Tensor], torch.Tensor]:
    if kind == "mse":
        return torch.square
    if kind == "mae":
        return torch.abs
    return lambda e: F.huber_loss(e, torch.zeros_like(e), reduction="none", delta=delta)


def _loss_fn(cfg: LossConfig) -> Callable[[torch.Tensor], torch.Tensor]:
    if cfg.kind != "mixture":
        return _elementwise(cfg.kind, cfg.huber_delta)
    parts = [(w, _elementwise(k, cfg.huber_delta)) for k, w in cfg.mixture.items() if w > 0]
    return lambda e: sum(w * fn(e) for w, fn in parts)


# --------------------------------------------------------------------------------------
# The loss


@dataclass
class _Field:
    """One variable at one lead step: per-level losses and the checks behind them."""

    name: str
    kind: str  # surface | atmos
    per_level: torch.Tensor  # (c,)
    has_level: torch.Tensor  # (c,) bool
    value: torch.Tensor  # scalar, level-weighted
    has: torch.Tensor  # scalar bool
    bad: torch.Tensor  # scalar bool: non-finite prediction where the target is finite
    bad_detail: str
    terms: dict[str, torch.Tensor]  # physics terms of this variable


class Loss:
    """The training loss of one variant, built once (`build_loss`) and called every step."""

    def __init__(self, spec: VariantSpec, cfg: LossConfig, *, timestep_hours: float | None = None):
        cfg.validate()
        cfg.check_variables(spec)
        self.spec = spec
        self.cfg = cfg
        self.timestep_hours = float(timestep_hours if timestep_hours is not None else spec.timestep_hours)
        self._fn = _loss_fn(cfg)
        self._vars: dict[tuple[str, str], Variable] = {
            (v.kind, v.name): v for v in spec.outputs()
        }
        every = {v.name for v in spec.outputs() if v.units != "degree"}
        self._extremes = set(every if cfg.extremes_variables is None else cfg.extremes_variables)
        self._spectral = set(every if cfg.spectral_variables is None else cfg.spectral_variables)
        self._positive = set(cfg.positive_variables)
        self._log = set(cfg.log_variables)
        self._lat_cache: dict[tuple, torch.Tensor] = {}
        self._scales: dict[tuple, torch.Tensor] = {}
        self._level_cache: dict[tuple, torch.Tensor] = {}

    # ---- weights ---------------------------------------------------------------------

    def lead_weight(self, lead_step: int) -> float:
        """Weight of a lead step: `lead_weights`, times the emphasis factor inside the window."""
        w = float(self.cfg.lead_weights.get(int(lead_step), 1.0))
        window = self.cfg.lead_emphasis_hours
        if window is not None and window[0] <= lead_step * self.timestep_hours <= window[1]:
            w *= self.cfg.lead_emphasis_factor
        return w

    def variable_weight(self, kind: str, name: str) -> float:
        weights = self.cfg.surface_weights if kind == "surface" else self.cfg.atmos_weights
        scale = self.cfg.surface_scale if kind == "surface" else self.cfg.atmos_scale
        return scale * float(weights.get(name, self.cfg.default_weight))

    def _latitude(self, batch: Batch, device: torch.device) -> torch.Tensor:
        lat, lon = batch.metadata.lat, batch.metadata.lon
        h, w = batch.spatial_shape
        if not self.cfg.latitude_weighting:
            return torch.ones(h, w, device=device)
        key = (h, w, float(lat[0]), float(lat[-1]), float(lon[0]), float(lon[-1]), str(device))
        if key not in self._lat_cache:
            self._lat_cache[key] = latitude_weights(lat, lon).to(device)
        return self._lat_cache[key]

    def _scale(self, kind: str, name: str, levels: Sequence[float], device) -> torch.Tensor:
        """(c, 1, 1) Aurora normalisation scale of a variable at `levels` (c = 1 for surface)."""
        key = (kind, name, tuple(levels) if kind == "atmos" else (), str(device))
        if key not in self._scales:
            self._scales[key] = self._read_scale(kind, name, levels, device)
        return self._scales[key]

    @staticmethod
    def _read_scale(kind: str, name: str, levels: Sequence[float], device) -> torch.Tensor:
        keys = [name] if kind == "surface" else [f"{name}_{level_to_str(lv)}" for lv in levels]
        missing = [k for k in keys if k not in AURORA_SCALES]
        if missing:
            raise DataError(f"Aurora has no normalisation scale for {', '.join(missing)}; the loss of "
                            f"'{name}' cannot weigh it against the other variables")
        return torch.tensor([AURORA_SCALES[k] for k in keys], dtype=torch.float32, device=device)[:, None, None]

    # ---- one variable -----------------------------------------------------------------

    def _field(self, kind: str, name: str, pred: torch.Tensor, target: torch.Tensor, levels, lat_w,
               lw: torch.Tensor | None, logits: torch.Tensor | None) -> _Field:
        """pred/target: (b, t, c, h, w) with c = 1 for surface variables."""
        var = self._vars[(kind, name)]
        angle = var.units == "degree"
        t_ok = torch.isfinite(target)
        p_ok = torch.isfinite(pred)
        if var.nan_by_design:
            # NaN where the density head says "no wave" is an answer, not a failure; an
            # infinite value, or NaN at every pixel the truth has, is a failure.
            valid = t_ok & p_ok
            bad = (torch.isinf(pred) & t_ok).any() | (t_ok.any() & ~valid.any())
            detail = "the prediction is infinite, or NaN at every pixel where the target has a value"
        else:
            valid = t_ok
            bad = (~p_ok & t_ok).any()
            detail = "the prediction is NaN or infinite where the target is finite"
        # Zero the masked pixels before any arithmetic, so no NaN reaches a gradient.
        p = torch.where(valid, pred, torch.zeros((), dtype=pred.dtype, device=pred.device))
        t = torch.where(valid, target, torch.zeros((), dtype=target.dtype, device=target.device))
        scale = None if angle else self._scale(kind, name, levels, pred.device)
        w = lat_w * valid  # (b, t, c, h, w)

        if angle:
            # Directions compare on the unit circle, where AuroraWave predicts them (sin, cos):
            # the error is the signed chord 2 sin(Δ/2) between the two unit vectors, Δ the
            # difference wrapped to [-180, 180) degrees, so 359° and 1° are 2° apart.
            delta = torch.remainder(p - t + 180.0, 360.0) - 180.0
            elem = self._fn(2 * torch.sin(torch.deg2rad(delta) / 2))
        else:
            elem = self._fn((p - t) / scale)

        pixel = w
        if self.cfg.extremes_factor != 1.0 and name in self._extremes and not angle:
            pixel = pixel * self._extremes_factor(target, valid)
        if self.cfg.coastal_factor != 1.0:
            pixel = pixel * self._coastal_factor(t_ok, valid)

        den = pixel.sum(dim=(0, 1, 3, 4))  # (c,)
        per_level = (elem * pixel).sum(dim=(0, 1, 3, 4)) / den.clamp_min(_TINY)
        has_level = den > 0
        if lw is None:
            value, has = per_level[0], has_level[0]
        else:
            lwh = lw * has_level
            value = (per_level * lwh).sum() / lwh.sum().clamp_min(_TINY)
            has = has_level.any()

        terms: dict[str, torch.Tensor] = {}
        if self.cfg.positivity_weight > 0 and name in self._positive and not angle:
            below = F.relu(-torch.where(p_ok, pred, torch.zeros((), dtype=pred.dtype, device=pred.device)) / scale)
            wp = lat_w * p_ok
            terms["positivity"] = (below * wp).sum() / wp.sum().clamp_min(_TINY)
        if self.cfg.log_weight > 0 and name in self._log and not angle:
            eps = self.cfg.log_eps
            lp = torch.log((p / scale).clamp_min(0) + eps)
            lt = torch.log((t / scale).clamp_min(0) + eps)
            terms["log"] = (self._fn(lp - lt) * w).sum() / w.sum().clamp_min(_TINY)
        if self.cfg.spectral_weight > 0 and name in self._spectral and not angle:
            terms["spectral"] = self._spectral_term(p / scale, t / scale, lat_w)
        if self.cfg.density_weight > 0 and logits is not None:
            presence = t_ok[:, -1, 0].to(logits.dtype)  # (b, h, w)
            bce = F.binary_cross_entropy_with_logits(logits, presence, reduction="none")
            terms["density"] = (bce * lat_w[0, 0, 0]).mean() / lat_w.mean()
        return _Field(name, kind, per_level, has_level, value, has, bad, detail, terms)

    def _extremes_factor(self, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """1 inside each field's [1 - q, q] quantile range, `extremes_factor` outside it."""
        q = self.cfg.extremes_quantile
        b, t, c, h, w = target.shape
        x = torch.where(valid, target, torch.full((), float("nan"), device=target.device)).reshape(b * t * c, h * w)
        qs = torch.tensor([1 - q, q], dtype=x.dtype, device=x.device)
        rows = max(1, (1 << 24) // (h * w))  # torch.nanquantile takes up to 2**24 values at once
        bounds = torch.cat([torch.nanquantile(x[i:i + rows], qs, dim=1) for i in range(0, x.shape[0], rows)], dim=1)
        lo, hi = (bounds[j].reshape(b, t, c, 1, 1) for j in range(2))
        extreme = (target < lo) | (target > hi)
        return 1.0 + (self.cfg.extremes_factor - 1.0) * (extreme & valid)

    def _coastal_factor(self, t_ok: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """`coastal_factor` on valid pixels within `coastal_width` cells of a NaN target."""
        r = self.cfg.coastal_width
        b, t, c, h, w = t_ok.shape
        missing = (~t_ok).to(torch.float32).reshape(b * t * c, 1, h, w)
        missing = F.pad(missing, (r, r, 0, 0), mode="circular")  # longitude wraps
        missing = F.pad(missing, (0, 0, r, r))  # latitude does not
        near = F.max_pool2d(missing, kernel_size=2 * r + 1, stride=1).reshape(b, t, c, h, w) > 0
        return 1.0 + (self.cfg.coastal_factor - 1.0) * (near & valid)

    def _spectral_term(self, p: torch.Tensor, t: torch.Tensor, lat_w: torch.Tensor) -> torch.Tensor:
        """Mean |log power spectrum difference| along longitude, rows weighted by area.

        Power at zonal wavenumber k = |FFT_k|² / W of each latitude row, k = 1 .. W/2 (the
        zonal mean, k = 0, is the pointwise loss's business).
        """
        eps = self.cfg.spectral_eps
        n = p.shape[-1]
        sp = torch.fft.rfft(p, dim=-1).abs().square()[..., 1:] / n  # (b, t, c, h, k)
        st = torch.fft.rfft(t, dim=-1).abs().square()[..., 1:] / n
        d = (torch.log(sp + eps) - torch.log(st + eps)).abs().mean(dim=-1)  # (b, t, c, h)
        row = lat_w.mean(dim=-1)  # (1, 1, 1, h)
        return (d * row).mean() / row.mean()

    # ---- the call -----------------------------------------------------------------------

    def __call__(
        self,
        pairs: Sequence[tuple[Batch, Batch]],
        lead_steps: Sequence[int],
        *,
        density_logits: Sequence[Mapping[str, torch.Tensor]] | None = None,
    ) -> LossResult:
        """The loss of (prediction, target) pairs at `lead_steps` (`pair_predictions` order).

        `density_logits`: `DensityRecorder.logits` of the same rollout (wave variant), entry
        k - 1 for lead k. Raises `NonFiniteLoss` naming the first variable whose prediction
        or loss is NaN/inf where its target is finite.
        """
        if len(pairs) != len(lead_steps):
            raise ValueError(f"{len(pairs)} (prediction, target) pair(s) for {len(lead_steps)} lead step(s)")
        if not pairs:
            raise ValueError("no (prediction, target) pairs to compute a loss on")
        leads: list[tuple[int, float, torch.Tensor, torch.Tensor, dict, list[_Field]]] = []
        for (pred, target), k in zip(pairs, lead_steps):
            logits = density_logits[k - 1] if density_logits is not None and len(density_logits) >= k else None
            leads.append((k, self.lead_weight(k), *self._lead(pred, target, logits)))

        # One transfer from the device for every number reported or checked.
        parts: list[torch.Tensor] = []
        for _, _, total, base, terms, fields in leads:
            parts += [total, base, *terms.values()]
            for fl in fields:
                parts += [fl.bad, fl.has, fl.value, *fl.terms.values(), fl.has_level, fl.per_level]
        it = iter(torch.cat([x.detach().reshape(-1).to(torch.float32) for x in parts]).cpu().tolist())

        sum_w = sum(lw for _, lw, *_ in leads)
        total = sum(lw * tot for _, lw, tot, *_ in leads) / sum_w
        per_lead: dict[int, float] = {}
        terms_out: dict[str, float] = {}
        acc: dict[str, list[tuple[float, float]]] = {}  # key -> [(lead weight, value)]
        for k, lw, _, _, terms, fields in leads:
            lead_total, lead_base = next(it), next(it)
            lead_terms = {name: next(it) for name in terms}
            for fl in fields:
                bad, has, value = next(it), next(it), next(it)
                fterms = {name: next(it) for name in fl.terms}
                c = fl.per_level.numel()
                has_level = [next(it) for _ in range(c)]
                per_level = [next(it) for _ in range(c)]
                if bad:
                    raise NonFiniteLoss(fl.name, k, fl.bad_detail)
                for term, v in fterms.items():
                    if not math.isfinite(v):
                        raise NonFiniteLoss(fl.name, k, f"its {term} term is {v}")
                if has and not math.isfinite(value):
                    raise NonFiniteLoss(fl.name, k, f"the loss is {value} (overflow in the error?)")
                if has:
                    acc.setdefault(fl.name, []).append((lw, value))
                if fl.kind == "atmos":
                    for lv, h, v in zip(self._levels(pairs), has_level, per_level):
                        if h:
                            acc.setdefault(f"{fl.name}{level_to_str(lv)}", []).append((lw, v))
            if not math.isfinite(lead_total):
                raise NonFiniteLoss("total", k, f"the total is {lead_total} with every variable finite")
            per_lead[k] = lead_total
            for name, v in [("base", lead_base), *lead_terms.items()]:
                terms_out[name] = terms_out.get(name, 0.0) + lw * v / sum_w
        per_variable = {key: sum(w * v for w, v in items) / sum(w for w, _ in items) for key, items in acc.items()}
        return LossResult(total=total, per_variable=per_variable, per_lead=per_lead, terms=terms_out)

    @staticmethod
    def _levels(pairs) -> tuple:
        return tuple(pairs[0][1].metadata.atmos_levels)

    def _lead(self, pred: Batch, target: Batch, logits: Mapping[str, torch.Tensor] | None):
        """Total, base loss, averaged physics terms and per-variable fields of one lead step."""
        if tuple(pred.spatial_shape) != tuple(target.spatial_shape):
            raise ValueError(f"prediction on a {tuple(pred.spatial_shape)} grid, target on "
                             f"{tuple(target.spatial_shape)}")
        device = next(iter(pred.surf_vars.values())).device
        lat_w = self._latitude(target, device)[None, None, None]  # (1, 1, 1, h, w)
        levels = tuple(target.metadata.atmos_levels)
        lw = None
        if levels:
            key = (levels, str(device))
            if key not in self._level_cache:
                self._level_cache[key] = level_weights(levels, self.cfg).to(device)
            lw = self._level_cache[key]
        fields: list[_Field] = []
        for kind, group in (("surface", "surf_vars"), ("atmos", "atmos_vars")):
            names = self.spec.output_surf_vars if kind == "surface" else self.spec.output_atmos_vars
            for name in names:
                p, t = getattr(pred, group).get(name), getattr(target, group).get(name)
                if t is None:
                    continue  # not observed: nothing to learn from
                if p is None:
                    raise DataError(f"the prediction has no {kind} variable '{name}' that its target has")
                if p.shape != t.shape:
                    raise ValueError(f"prediction of '{name}' has shape {tuple(p.shape)}, its target "
                                     f"{tuple(t.shape)}")
                if kind == "surface":
                    p, t = p[:, :, None], t[:, :, None]
                logit = logits.get(name) if logits is not None and kind == "surface" else None
                fields.append(self._field(kind, name, p, t.to(p.dtype), levels,
                                          lat_w, None if kind == "surface" else lw, logit))
        if not fields:
            raise DataError("the targets hold none of the variables the model predicts")
        weights = torch.tensor([self.variable_weight(fl.kind, fl.name) for fl in fields], device=device)
        has = torch.stack([fl.has for fl in fields]).to(weights.dtype)
        value = torch.stack([torch.where(fl.has, fl.value, torch.zeros((), device=device)) for fl in fields])
        base = (weights * has * value).sum() / has.sum().clamp_min(1.0)
        terms: dict[str, torch.Tensor] = {}
        for term, weight in (("spectral", self.cfg.spectral_weight), ("positivity", self.cfg.positivity_weight),
                             ("log", self.cfg.log_weight), ("density", self.cfg.density_weight)):
            parts = [fl.terms[term] for fl in fields if term in fl.terms]
            if parts and weight > 0:
                terms[term] = torch.stack(parts).mean()
        total = base + sum(getattr(self.cfg, f"{term}_weight") * v for term, v in terms.items())
        return total, base, terms, fields


def build_loss(spec: VariantSpec, cfg: LossConfig | None = None, *, timestep_hours: float | None = None) -> Loss:
    """The loss of `spec` under `cfg` (default: `default_loss_config(spec)`), checked first.

    `timestep_hours`: hours per model step when it is not the variant's (e.g. a model built
    with a 1 h step for hourly data); lead-time emphasis is defined in hours.
    """
    return Loss(spec, cfg if cfg is not None else default_loss_config(spec), timestep_hours=timestep_hours)
