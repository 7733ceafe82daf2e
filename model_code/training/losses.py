"""The training loss callers build: `Loss` for one variant, `build_loss`, and what it reports.

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
                 + smoothness.weight · smoothness

and the loss of a sample is the lead-weighted mean over its lead steps. This module masks,
weighs and combines; the configuration is `loss_config`, cell and level weights
`loss_weights`, the per-field terms `loss_terms`. Definitions, defaults and their sources:
docs/losses.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import torch
from aurora import Batch
from aurora.normalisation import level_to_str
from aurora.normalisation import scales as AURORA_SCALES

from model_code.data.grid import wraps_in_longitude
from model_code.errors import DataError
from model_code.training.loss_config import LossConfig, default_loss_config
from model_code.training.loss_terms import (
    TINY,
    angle_error,
    coastal_factor,
    density_term,
    elementwise_loss,
    extremes_factor,
    log_term,
    positivity_term,
    smoothness_term,
    spectral_term,
)
from model_code.training.loss_weights import latitude_weights, level_weights
from model_code.variables import Variable
from model_code.variants import VariantSpec

__all__ = [
    "DensityRecorder",
    "Loss",
    "LossResult",
    "NonFiniteLoss",
    "build_loss",
]


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
        self._fn = elementwise_loss(cfg)
        self._vars: dict[tuple[str, str], Variable] = {
            (v.kind, v.name): v for v in spec.outputs()
        }
        every = {v.name for v in spec.outputs() if v.units != "degree"}
        self._extremes = set(every if cfg.extremes_variables is None else cfg.extremes_variables)
        self._spectral = set(every if cfg.spectral_variables is None else cfg.spectral_variables)
        self._positive = set(cfg.positive_variables)
        self._log = set(cfg.log_variables)
        smooth = cfg.smoothness
        self._smooth = set(every if smooth.variables is None else smooth.variables) if smooth is not None else set()
        self._term_weights = {"spectral": cfg.spectral_weight, "positivity": cfg.positivity_weight,
                              "log": cfg.log_weight, "density": cfg.density_weight,
                              "smoothness": smooth.weight if smooth is not None else 0.0}
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
               lw: torch.Tensor | None, logits: torch.Tensor | None, wraps: bool) -> _Field:
        """pred/target: (b, t, c, h, w) with c = 1 for surface variables; `wraps`: the
        longitudes go all the way round (a global grid)."""
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
            elem = self._fn(angle_error(p, t))
        else:
            elem = self._fn((p - t) / scale)

        pixel = w
        if self.cfg.extremes_factor != 1.0 and name in self._extremes and not angle:
            pixel = pixel * extremes_factor(target, valid, self.cfg)
        if self.cfg.coastal_factor != 1.0:
            pixel = pixel * coastal_factor(t_ok, valid, self.cfg)

        den = pixel.sum(dim=(0, 1, 3, 4))  # (c,)
        per_level = (elem * pixel).sum(dim=(0, 1, 3, 4)) / den.clamp_min(TINY)
        has_level = den > 0
        if lw is None:
            value, has = per_level[0], has_level[0]
        else:
            lwh = lw * has_level
            value = (per_level * lwh).sum() / lwh.sum().clamp_min(TINY)
            has = has_level.any()

        terms: dict[str, torch.Tensor] = {}
        if self.cfg.positivity_weight > 0 and name in self._positive and not angle:
            terms["positivity"] = positivity_term(pred, p_ok, scale, lat_w)
        if self.cfg.log_weight > 0 and name in self._log and not angle:
            terms["log"] = log_term(p, t, scale, w, self._fn, self.cfg)
        if self.cfg.spectral_weight > 0 and name in self._spectral and not angle:
            terms["spectral"] = spectral_term(p / scale, t / scale, lat_w, self.cfg)
        if self.cfg.density_weight > 0 and logits is not None:
            terms["density"] = density_term(logits, t_ok, lat_w)
        if self._term_weights["smoothness"] > 0 and name in self._smooth and not angle:
            terms["smoothness"] = smoothness_term(p / scale, valid, lat_w, self.cfg.smoothness.kind, wraps)
        return _Field(name, kind, per_level, has_level, value, has, bad, detail, terms)

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
        wraps = self._term_weights["smoothness"] > 0 and wraps_in_longitude(
            target.metadata.lon.detach().cpu().double().numpy())
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
                                          lat_w, None if kind == "surface" else lw, logit, wraps))
        if not fields:
            raise DataError("the targets hold none of the variables the model predicts")
        weights = torch.tensor([self.variable_weight(fl.kind, fl.name) for fl in fields], device=device)
        has = torch.stack([fl.has for fl in fields]).to(weights.dtype)
        value = torch.stack([torch.where(fl.has, fl.value, torch.zeros((), device=device)) for fl in fields])
        base = (weights * has * value).sum() / has.sum().clamp_min(1.0)
        terms: dict[str, torch.Tensor] = {}
        for term, weight in self._term_weights.items():
            parts = [fl.terms[term] for fl in fields if term in fl.terms]
            if parts and weight > 0:
                terms[term] = torch.stack(parts).mean()
        total = base + sum(self._term_weights[term] * v for term, v in terms.items())
        return total, base, terms, fields


def build_loss(spec: VariantSpec, cfg: LossConfig | None = None, *, timestep_hours: float | None = None) -> Loss:
    """The loss of `spec` under `cfg` (default: `default_loss_config(spec)`), checked first.

    `timestep_hours`: hours per model step when it is not the variant's (e.g. a model built
    with a 1 h step for hourly data); lead-time emphasis is defined in hours.
    """
    return Loss(spec, cfg if cfg is not None else default_loss_config(spec), timestep_hours=timestep_hours)
