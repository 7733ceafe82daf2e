"""The loss's per-field pieces: elementwise errors, pixel factors and the physics terms.

Each function works on one variable's (b, t, c, h, w) prediction and target, already masked
by `Loss`, and knows nothing of variants or batches: wave directions compare on the unit
circle, air pollution gets the positivity and log-space terms, high-res the extremes factor,
wave the coastal, spectral and density terms; the smoothness penalty serves any variant
that asks for it. `Loss` decides which apply to which field, so a term can be read and tested
on its own (definitions in docs/losses.md).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from model_code.data.coastal import near
from model_code.training.loss_config import LossConfig

__all__ = [
    "TINY",
    "angle_error",
    "coastal_factor",
    "density_term",
    "elementwise_loss",
    "extremes_factor",
    "log_term",
    "positivity_term",
    "smoothness_term",
    "spectral_term",
]

TINY = 1e-12
"""Floor of every weighted-mean denominator, so a field with no valid pixel gives 0, not NaN."""


def _elementwise(kind: str, delta: float) -> Callable[[torch.Tensor], torch.Tensor]:
    if kind == "mse":
        return torch.square
    if kind == "mae":
        return torch.abs
    return lambda e: F.huber_loss(e, torch.zeros_like(e), reduction="none", delta=delta)


def elementwise_loss(cfg: LossConfig) -> Callable[[torch.Tensor], torch.Tensor]:
    """The elementwise loss of `cfg.kind` on a normalised error (a mixture sums its parts)."""
    if cfg.kind != "mixture":
        return _elementwise(cfg.kind, cfg.huber_delta)
    parts = [(w, _elementwise(k, cfg.huber_delta)) for k, w in cfg.mixture.items() if w > 0]
    return lambda e: sum(w * fn(e) for w, fn in parts)


def angle_error(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Error between two directions in degrees, on the unit circle where AuroraWave predicts them.

    The signed chord 2 sin(Δ/2) between the two unit vectors (sin, cos), Δ the difference
    wrapped to [-180, 180) degrees, so 359° and 1° are 2° apart.
    """
    delta = torch.remainder(p - t + 180.0, 360.0) - 180.0
    return 2 * torch.sin(torch.deg2rad(delta) / 2)


def extremes_factor(target: torch.Tensor, valid: torch.Tensor, cfg: LossConfig) -> torch.Tensor:
    """1 inside each field's [1 - q, q] quantile range, `extremes_factor` outside it."""
    q = cfg.extremes_quantile
    b, t, c, h, w = target.shape
    x = torch.where(valid, target, torch.full((), float("nan"), device=target.device)).reshape(b * t * c, h * w)
    qs = torch.tensor([1 - q, q], dtype=x.dtype, device=x.device)
    rows = max(1, (1 << 24) // (h * w))  # torch.nanquantile takes up to 2**24 values at once
    bounds = torch.cat([torch.nanquantile(x[i:i + rows], qs, dim=1) for i in range(0, x.shape[0], rows)], dim=1)
    lo, hi = (bounds[j].reshape(b, t, c, 1, 1) for j in range(2))
    extreme = (target < lo) | (target > hi)
    return 1.0 + (cfg.extremes_factor - 1.0) * (extreme & valid)


def coastal_factor(t_ok: torch.Tensor, valid: torch.Tensor, cfg: LossConfig) -> torch.Tensor:
    """`coastal_factor` on valid pixels within `coastal_width` cells of a NaN target (longitude wraps)."""
    return 1.0 + (cfg.coastal_factor - 1.0) * (near(~t_ok, cfg.coastal_width) & valid)


def positivity_term(pred: torch.Tensor, p_ok: torch.Tensor, scale: torch.Tensor,
                    lat_w: torch.Tensor) -> torch.Tensor:
    """Area-weighted mean of how far finite predictions fall below 0, in normalised units."""
    below = F.relu(-torch.where(p_ok, pred, torch.zeros((), dtype=pred.dtype, device=pred.device)) / scale)
    wp = lat_w * p_ok
    return (below * wp).sum() / wp.sum().clamp_min(TINY)


def log_term(p: torch.Tensor, t: torch.Tensor, scale: torch.Tensor, w: torch.Tensor,
             fn: Callable[[torch.Tensor], torch.Tensor], cfg: LossConfig) -> torch.Tensor:
    """Elementwise loss of log(x / scale + `log_eps`), so relative errors weigh alike in clean and polluted air."""
    eps = cfg.log_eps
    lp = torch.log((p / scale).clamp_min(0) + eps)
    lt = torch.log((t / scale).clamp_min(0) + eps)
    return (fn(lp - lt) * w).sum() / w.sum().clamp_min(TINY)


def spectral_term(p: torch.Tensor, t: torch.Tensor, lat_w: torch.Tensor, cfg: LossConfig) -> torch.Tensor:
    """Mean |log power spectrum difference| along longitude, rows weighted by area.

    Power at zonal wavenumber k = |FFT_k|² / W of each latitude row, k = 1 .. W/2 (the
    zonal mean, k = 0, is the pointwise loss's business).
    """
    eps = cfg.spectral_eps
    n = p.shape[-1]
    sp = torch.fft.rfft(p, dim=-1).abs().square()[..., 1:] / n  # (b, t, c, h, k)
    st = torch.fft.rfft(t, dim=-1).abs().square()[..., 1:] / n
    d = (torch.log(sp + eps) - torch.log(st + eps)).abs().mean(dim=-1)  # (b, t, c, h)
    row = lat_w.mean(dim=-1)  # (1, 1, 1, h)
    return (d * row).mean() / row.mean()


def density_term(logits: torch.Tensor, t_ok: torch.Tensor, lat_w: torch.Tensor) -> torch.Tensor:
    """Area-weighted BCE of the density logits against where the target has a wave.

    The wave outputs are NaN below a density cut with no gradient, so only this term trains
    the density heads.
    """
    presence = t_ok[:, -1, 0].to(logits.dtype)  # (b, h, w)
    bce = F.binary_cross_entropy_with_logits(logits, presence, reduction="none")
    return (bce * lat_w[0, 0, 0]).mean() / lat_w.mean()


def _neighbour(x: torch.Tensor, ok: torch.Tensor, dim: int, step: int,
               wraps: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """`x` and `ok` of the cell `step` (±1) along `dim`, with `ok` False where that cell
    lies beyond the edge of an axis that does not wrap."""
    x_n, ok_n = torch.roll(x, -step, dims=dim), torch.roll(ok, -step, dims=dim)
    if not wraps:
        n = x.shape[dim]
        inside = torch.arange(n, device=x.device) != (n - 1 if step > 0 else 0)
        shape = [1] * x.ndim
        shape[dim] = n
        ok_n = ok_n & inside.reshape(shape)
    return x_n, ok_n


def smoothness_term(x: torch.Tensor, valid: torch.Tensor, lat_w: torch.Tensor, kind: str,
                    periodic: bool) -> torch.Tensor:
    """Roughness of a normalised (b, t, c, h, w) field between neighbouring cells, area-weighted.

    laplacian: mean of L² with L = x[i-1, j] + x[i+1, j] + x[i, j-1] + x[i, j+1] - 4 x[i, j],
    at cells whose four neighbours are valid. tv: mean |x[i, j+1] - x[i, j]| over east-west
    pairs plus mean |x[i+1, j] - x[i, j]| over north-south pairs of valid cells, a pair
    weighing the mean of its two cells. Longitude wraps when `periodic` (a global grid);
    latitude never does: a pole row has no neighbour beyond it. Masked cells of `x` must
    be zero already, so nothing non-finite reaches a gradient.
    """
    lon, lat = -1, -2
    east, east_ok = _neighbour(x, valid, lon, 1, periodic)
    south, south_ok = _neighbour(x, valid, lat, 1, False)
    if kind == "laplacian":
        west, west_ok = _neighbour(x, valid, lon, -1, periodic)
        north, north_ok = _neighbour(x, valid, lat, -1, False)
        lap = east + west + north + south - 4 * x
        w = lat_w * (valid & east_ok & west_ok & north_ok & south_ok)
        return (lap.square() * w).sum() / w.sum().clamp_min(TINY)
    w_ew = 0.5 * (lat_w + torch.roll(lat_w, -1, dims=lon)) * (valid & east_ok)
    w_ns = 0.5 * (lat_w + torch.roll(lat_w, -1, dims=lat)) * (valid & south_ok)
    tv_ew = ((east - x).abs() * w_ew).sum() / w_ew.sum().clamp_min(TINY)
    tv_ns = ((south - x).abs() * w_ns).sum() / w_ns.sum().clamp_min(TINY)
    return tv_ew + tv_ns
