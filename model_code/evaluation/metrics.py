"""Verification metrics as WeatherBench 2 defines them, vectorised and NaN-aware.

Conventions (WeatherBench 2, Rasp et al. 2024):

- Arrays are in the forecast layout: a time dimension (``init_time``) first, then any
  other dimensions (``lead_time``, ``level``, ``member``), then ``latitude`` and
  ``longitude``. The truth has the same layout (see `forecasts.truth_like`).
- Latitude weights are proportional to the area of each grid cell,
  ``w_j ∝ sin(φ_j + Δφ/2) − sin(φ_j − Δφ/2)`` (bounds clipped to ±90°), normalised so that
  their mean over latitudes is 1.
- Spatial means are area-weighted over *valid* points only: with ``v`` = 1 where forecast
  and truth are finite, ``⟨x⟩ = Σ w v x / Σ w v``; a region without valid points has no
  mean (NaN), and the scorer reports it as an exclusion instead of a number.
- Deterministic scores average spatial means over initialisation times, then (for RMSE)
  take the square root: ``RMSE = sqrt(mean_t ⟨(f − o)²⟩)``.

Every metric takes ``regions``: 0/1 masks with dims (region, latitude, longitude). The
spatial sums of all regions come from one matrix product per quantity, so a field is read
once whatever the number of regions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

import numpy as np
import xarray as xr

from model_code.errors import DataError
from model_code.data.grid import cell_edges

LAT, LON = "latitude", "longitude"
TIME = "init_time"
MEMBER = "member"

DETERMINISTIC = ("rmse", "mae", "bias", "acc")
ENSEMBLE = ("crps", "spread_skill", "rank_histogram")
RANK = "rank"
CATEGORICAL = ("hit_rate", "far", "csi", "ets")


# ---- weights --------------------------------------------------------------------------------

def area_weights(latitude) -> xr.DataArray:
    """Cell-area latitude weights, mean 1 (`grid.cell_edges`: a pole row weighs its polar cap, not zero)."""
    lat = np.asarray(latitude, dtype="float64")
    if lat.ndim != 1 or not len(lat):
        raise DataError(f"latitude must be a non-empty 1-D coordinate; got shape {lat.shape}")
    if len(lat) == 1:
        w = np.ones(1)
    else:
        w = np.abs(np.diff(np.sin(np.deg2rad(cell_edges(lat, clip=90.0)))))
        if not w.sum() > 0:
            raise DataError(f"latitudes {lat[0]}..{lat[-1]} span no area")
        w = w / w.mean()
    return xr.DataArray(w, dims=(LAT,), coords={LAT: lat}, name="area_weight")


def global_region(latitude, longitude) -> xr.DataArray:
    """The one-region mask (``global``) used when a metric is called without regions."""
    return xr.DataArray(np.ones((1, len(latitude), len(longitude))), dims=("region", LAT, LON),
                        coords={"region": ["global"], LAT: np.asarray(latitude), LON: np.asarray(longitude)})


@dataclass(frozen=True)
class RegionWeights:
    """Area weight × region mask of every region, split by shape for fast spatial sums.

    A zonal region (a latitude band: global, tropics, extra-tropics) weights whole rows, so
    its sum is a row sum over longitudes followed by a (Y, R) product; other regions
    (boxes, land, coasts) take a (Y·X, R) matrix product.
    """

    zonal: np.ndarray  # (Y, Rz) weights of the zonal regions
    zonal_at: np.ndarray  # their positions among all regions
    general: np.ndarray  # (Y·X, Rg)
    general_at: np.ndarray
    total: np.ndarray  # (R,) Σ w of each region, for fields without NaN

    @property
    def n_regions(self) -> int:
        return len(self.total)


def region_weights(regions: xr.DataArray, latitude) -> RegionWeights:
    """The `RegionWeights` of `regions` (region, latitude, longitude) on `latitude`."""
    w = area_weights(latitude).values
    masks = regions.transpose("region", LAT, LON).values.astype("float64")
    zonal = np.array([bool((mk == mk[:, :1]).all()) for mk in masks], dtype=bool)
    full = masks * w[None, :, None]
    return RegionWeights(zonal=full[zonal][:, :, 0].T.copy(), zonal_at=np.flatnonzero(zonal),
                         general=full[~zonal].reshape((~zonal).sum(), full[0].size).T.copy(), general_at=np.flatnonzero(~zonal),
                         total=full.sum(axis=(1, 2)))


def _wsum(x: np.ndarray, wm: RegionWeights) -> np.ndarray:
    """Σ_yx w_r(y, x) x(..., y, x) for every region r: (..., Y, X) -> (..., R), float64."""
    out = np.empty(x.shape[:-2] + (wm.n_regions,))
    if len(wm.zonal_at):
        out[..., wm.zonal_at] = x.sum(axis=-1, dtype="float64") @ wm.zonal
    if len(wm.general_at):
        out[..., wm.general_at] = x.reshape(*x.shape[:-2], -1).astype("float64", copy=False) @ wm.general
    return out


def _over_inits(per_init: np.ndarray) -> np.ndarray:
    """Mean over axis 0 of the inits that have a value; NaN where none has."""
    ok = np.isfinite(per_init)
    n = ok.sum(axis=0)
    total = np.where(ok, per_init, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


# ---- fused cores on numpy arrays (init, ..., lat, lon) ---------------------------------------

def deterministic_np(f: np.ndarray, o: np.ndarray, wm: np.ndarray, metrics: Iterable[str],
                     clim: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """RMSE, MAE, bias and ACC from one pass over the error; arrays (T, ..., Y, X) -> (..., R).

    - ``RMSE = sqrt(mean_t ⟨(f − o)²⟩)``
    - ``MAE = mean_t ⟨|f − o|⟩``
    - ``bias = mean_t ⟨f − o⟩``
    - ``ACC = mean_t [⟨f′ o′⟩ / sqrt(⟨f′²⟩ ⟨o′²⟩)]`` with anomalies ``f′ = f − c``,
      ``o′ = o − c`` against the climatology ``c`` at the valid time (uncentred, as in
      WeatherBench 2).

    Also returns ``valid_weight``: the per-init weight of valid points, (T, ..., R).
    """
    metrics = set(metrics)
    err = f - o
    valid = np.isfinite(err)
    if "acc" in metrics:
        if clim is None:
            raise DataError("ACC needs a climatology; pass climatology= (see baselines.climatology)")
        valid &= np.isfinite(clim)
    complete = bool(valid.all())
    if complete:  # no NaN: every weight counts, and no masking pass is needed
        n = np.broadcast_to(wm.total, err.shape[:-2] + wm.total.shape)
    else:
        err = np.where(valid, err, 0)
        n = _wsum(valid.astype(err.dtype), wm)
    out: dict[str, np.ndarray] = {"valid_weight": n}
    if "bias" in metrics:
        out["bias"] = _over_inits(_ratio(_wsum(err, wm), n))
    if "mae" in metrics:
        out["mae"] = _over_inits(_ratio(_wsum(np.abs(err), wm), n))
    if "rmse" in metrics:
        np.square(err, out=err)
        out["rmse"] = np.sqrt(_over_inits(_ratio(_wsum(err, wm), n)))
    del err
    if "acc" in metrics:
        fa = f - clim
        oa = o - clim
        if not complete:
            fa[~valid] = 0
            oa[~valid] = 0
        cov = _wsum(fa * oa, wm)
        np.square(fa, out=fa)
        np.square(oa, out=oa)
        den = np.sqrt(_wsum(fa, wm) * _wsum(oa, wm))
        out["acc"] = _over_inits(_ratio(cov, den))
    return out


def ensemble_np(f: np.ndarray, o: np.ndarray, wm: np.ndarray, metrics: Iterable[str]) -> dict[str, np.ndarray]:
    """Fair CRPS and spread-skill ratio; `f` is (T, M, ..., Y, X), `o` is (T, ..., Y, X).

    - fair CRPS (Ferro 2014) at a point: ``(1/M) Σ_m |x_m − o| − 1/(2M(M−1)) Σ_m Σ_k |x_m − x_k|``,
      then ``CRPS = mean_t ⟨crps⟩``. The pair sum uses the sorted members:
      ``Σ_m Σ_k |x_m − x_k| = 2 Σ_i (2i − M − 1) x_(i)``, i = 1..M.
    - spread-skill ratio: ``sqrt(mean_t ⟨s²⟩) / sqrt(mean_t ⟨(x̄ − o)²⟩)``, with ``s²`` the
      member variance (ddof 1) and ``x̄`` the ensemble mean; 1 for a reliable ensemble.

    A point counts only where the truth and every member are finite. Needs M >= 2.
    """
    metrics = set(metrics)
    m = f.shape[1]
    if m < 2:
        raise DataError(f"ensemble metrics need at least 2 members along '{MEMBER}'; got {m}")
    valid = np.isfinite(o) & np.isfinite(f).all(axis=1)
    n = _wsum(valid.astype("float64"), wm)
    out: dict[str, np.ndarray] = {"valid_weight": n}
    if "crps" in metrics:
        skill = np.abs(f - o[:, None]).mean(axis=1)
        ranks = (2 * np.arange(1, m + 1) - m - 1).reshape((1, m) + (1,) * (f.ndim - 2))
        pairs = 2 * (np.sort(f, axis=1) * ranks).sum(axis=1)
        crps = np.where(valid, skill - pairs / (2 * m * (m - 1)), 0.0)
        out["crps"] = _over_inits(_ratio(_wsum(crps, wm), n))
    if "spread_skill" in metrics:
        var = np.where(valid, f.var(axis=1, ddof=1), 0.0)
        err = np.where(valid, f.mean(axis=1) - o, 0.0)
        spread = _over_inits(_ratio(_wsum(var, wm), n))
        skill = _over_inits(_ratio(_wsum(err * err, wm), n))
        out["spread_skill"] = _ratio(np.sqrt(spread), np.sqrt(skill))
    return out


def rank_histogram_np(f: np.ndarray, o: np.ndarray, wm: RegionWeights,
                      rng: np.random.Generator | int | None = 0) -> dict[str, np.ndarray]:
    """Area-weighted rank histogram; `f` is (T, M, ..., Y, X), `o` is (T, ..., Y, X) -> (..., M + 1, R).

    The rank of the truth at a point is the number of members below it, 0..M (Talagrand
    1997; Hamill 2001). Where the truth equals k members, its rank is drawn uniformly from
    the k + 1 ranks it shares with them (a seeded `rng`), so a reliable ensemble stays flat
    on discrete or clipped fields. Per init, each rank's frequency is its area-weighted
    share of the valid points, ``⟨[rank = r]⟩``; frequencies are averaged over inits like
    every other score and sum to 1 per region. A point counts only where the truth and
    every member are finite; a region without one is NaN.
    """
    members = f.shape[1]
    if members < 1:
        raise DataError(f"a rank histogram needs at least 1 member along '{MEMBER}'; got {members}")
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    valid = np.isfinite(o) & np.isfinite(f).all(axis=1)
    rank = (f < o[:, None]).sum(axis=1, dtype=np.int32)
    ties = (f == o[:, None]).sum(axis=1, dtype=np.int32)
    tied = np.nonzero(valid & (ties > 0))
    if tied[0].size:
        rank[tied] += gen.integers(0, ties[tied] + 1, dtype=np.int32)
    n = _wsum(valid.astype("float64"), wm)
    hist = np.empty(o.shape[1:-2] + (members + 1, wm.n_regions))
    for r in range(members + 1):
        hist[..., r, :] = _over_inits(_ratio(_wsum((valid & (rank == r)).astype("float64"), wm), n))
    return {"valid_weight": n, "rank_histogram": _ratio(hist, hist.sum(axis=-2, keepdims=True))}


def contingency_np(f: np.ndarray, o: np.ndarray, wm: np.ndarray, threshold: np.ndarray | float,
                   *, below: bool = False) -> dict[str, np.ndarray]:
    """Area-weighted 2x2 contingency table of events ``x >= threshold`` (``<=`` when `below`).

    Counts are summed over init times and space: hits ``a``, false alarms ``b``, misses
    ``c``, correct negatives ``d`` (each Σ w over valid points), then

    - hit rate ``H = a / (a + c)``; false-alarm ratio ``FAR = b / (a + b)``;
    - critical success index ``CSI = a / (a + b + c)``;
    - equitable threat score ``ETS = (a − a_r) / (a + b + c − a_r)``, ``a_r = (a + b)(a + c) / n``,
      ``n = a + b + c + d``.

    A score whose denominator is zero (no event forecast or observed) is NaN.
    """
    valid = np.isfinite(f) & np.isfinite(o) & np.isfinite(threshold)
    fe = (f <= threshold) if below else (f >= threshold)
    oe = (o <= threshold) if below else (o >= threshold)
    fe &= valid
    oe &= valid

    def total(x: np.ndarray) -> np.ndarray:
        return _wsum(x.astype("float32"), wm).sum(axis=0)

    a, fsum, osum, n = total(fe & oe), total(fe), total(oe), total(valid)
    b, c = fsum - a, osum - a
    a_r = _ratio(fsum * osum, n)
    return {"valid_weight": n, "hit_rate": _ratio(a, osum), "far": _ratio(b, fsum),
            "csi": _ratio(a, a + b + c), "ets": _ratio(a - a_r, a + b + c - a_r)}


# ---- xarray front ends -----------------------------------------------------------------------

def _check_pair(forecast: xr.DataArray, truth: xr.DataArray, time_dim: str, member: bool) -> list[str]:
    for name, da in (("forecast", forecast), ("truth", truth)):
        for d in (LAT, LON):
            if d not in da.dims:
                raise DataError(f"{name} '{da.name}' has no '{d}' dimension; dims {da.dims}")
    want = [d for d in forecast.dims if d != MEMBER] if member else list(forecast.dims)
    if sorted(want) != sorted(truth.dims):
        raise DataError(f"forecast dims {forecast.dims} and truth dims {truth.dims} differ"
                        + (f" (apart from '{MEMBER}')" if member else ""))
    for d in want:
        if d in forecast.coords and d in truth.coords and forecast.sizes[d] != truth.sizes[d]:
            raise DataError(f"'{d}' has {forecast.sizes[d]} values in the forecast, {truth.sizes[d]} in the truth")
    rest = [d for d in want if d not in (time_dim, LAT, LON)]
    return ([time_dim] if time_dim in want else []) + rest + [LAT, LON]


def _arrays(forecast, truth, time_dim, member=False):
    order = _check_pair(forecast, truth, time_dim, member)
    timed = time_dim in order
    f_order = ([order[0], MEMBER, *order[1:]] if timed else [MEMBER, *order]) if member else order
    f = forecast.transpose(*f_order).values.astype("float64")
    o = truth.transpose(*order).values.astype("float64")
    if not timed:  # a single time: the time mean is that time
        f, o = f[None], o[None]
    return order, f, o


def _wrap(values: np.ndarray, forecast: xr.DataArray, dims: list[str], regions: xr.DataArray, name: str,
          time_dim: str, inner: Mapping[str, np.ndarray] | None = None):
    """`values` (kept dims..., inner dims..., region) as a DataArray; `inner` are dims the metric adds."""
    kept = [d for d in dims if d not in (time_dim, LAT, LON)]
    coords = {d: forecast[d].values for d in kept if d in forecast.coords}
    inner = dict(inner or {})
    return xr.DataArray(values, dims=kept + list(inner) + ["region"],
                        coords={**coords, **inner, "region": regions.region.values}, name=name)


def _regions_or_global(regions, forecast) -> xr.DataArray:
    return regions if regions is not None else global_region(forecast[LAT].values, forecast[LON].values)


def _squeeze(da: xr.DataArray, regions: xr.DataArray | None) -> xr.DataArray:
    return da.isel(region=0, drop=True) if regions is None else da


def _deterministic(metric: str, forecast, truth, regions, time_dim, climatology=None) -> xr.DataArray:
    dims, f, o = _arrays(forecast, truth, time_dim)
    regs = _regions_or_global(regions, forecast)
    clim = None
    if climatology is not None:
        clim = climatology.broadcast_like(truth).transpose(*dims).values.astype("float64")
        clim = clim[None] if time_dim not in dims else clim
    values = deterministic_np(f, o, region_weights(regs, forecast[LAT].values), [metric], clim)[metric]
    return _squeeze(_wrap(values, forecast, dims, regs, metric, time_dim), regions)


def rmse(forecast: xr.DataArray, truth: xr.DataArray, *, regions: xr.DataArray | None = None,
         time_dim: str = TIME) -> xr.DataArray:
    """``sqrt(mean_t ⟨(f − o)²⟩)``: area-weighted, square root after the time mean."""
    return _deterministic("rmse", forecast, truth, regions, time_dim)


def mae(forecast: xr.DataArray, truth: xr.DataArray, *, regions: xr.DataArray | None = None,
        time_dim: str = TIME) -> xr.DataArray:
    """``mean_t ⟨|f − o|⟩``, area-weighted."""
    return _deterministic("mae", forecast, truth, regions, time_dim)


def bias(forecast: xr.DataArray, truth: xr.DataArray, *, regions: xr.DataArray | None = None,
         time_dim: str = TIME) -> xr.DataArray:
    """``mean_t ⟨f − o⟩``, area-weighted: positive when the forecast is too high."""
    return _deterministic("bias", forecast, truth, regions, time_dim)


def acc(forecast: xr.DataArray, truth: xr.DataArray, climatology: xr.DataArray, *,
        regions: xr.DataArray | None = None, time_dim: str = TIME) -> xr.DataArray:
    """``mean_t [⟨f′o′⟩ / sqrt(⟨f′²⟩⟨o′²⟩)]``, anomalies against `climatology` at the valid time.

    `climatology` must broadcast against the truth (e.g. already selected at the valid
    times by `baselines.climatology_at`).
    """
    return _deterministic("acc", forecast, truth, regions, time_dim, climatology)


def crps(forecast: xr.DataArray, truth: xr.DataArray, *, regions: xr.DataArray | None = None,
         time_dim: str = TIME) -> xr.DataArray:
    """Fair CRPS ``mean_t ⟨(1/M)Σ|x_m − o| − Σ_mΣ_k|x_m − x_k| / (2M(M−1))⟩`` over ``member``."""
    return _ensemble("crps", forecast, truth, regions, time_dim)


def spread_skill(forecast: xr.DataArray, truth: xr.DataArray, *, regions: xr.DataArray | None = None,
                 time_dim: str = TIME) -> xr.DataArray:
    """``sqrt(mean_t ⟨var_m(x)⟩) / sqrt(mean_t ⟨(x̄ − o)²⟩)`` (member variance with ddof 1)."""
    return _ensemble("spread_skill", forecast, truth, regions, time_dim)


def _ensemble(metric, forecast, truth, regions, time_dim):
    if MEMBER not in forecast.dims:
        raise DataError(f"{metric} needs an ensemble forecast with a '{MEMBER}' dimension; dims {forecast.dims}")
    dims, f, o = _arrays(forecast, truth, time_dim, member=True)
    regs = _regions_or_global(regions, forecast)
    values = ensemble_np(f, o, region_weights(regs, forecast[LAT].values), [metric])[metric]
    return _squeeze(_wrap(values, forecast, dims, regs, metric, time_dim), regions)


def rank_histogram(forecast: xr.DataArray, truth: xr.DataArray, *, regions: xr.DataArray | None = None,
                   time_dim: str = TIME, rng: np.random.Generator | int | None = 0) -> xr.DataArray:
    """Frequency of each rank 0..M of the truth among the ``member`` values (dim ``rank``),
    area-weighted, ties shared at random (seeded by `rng`); flat at 1/(M+1) for a reliable
    ensemble, U-shaped when it is under-dispersed, peaked when over-dispersed."""
    if MEMBER not in forecast.dims:
        raise DataError(f"rank_histogram needs an ensemble forecast with a '{MEMBER}' dimension; "
                        f"dims {forecast.dims}")
    dims, f, o = _arrays(forecast, truth, time_dim, member=True)
    regs = _regions_or_global(regions, forecast)
    values = rank_histogram_np(f, o, region_weights(regs, forecast[LAT].values), rng)["rank_histogram"]
    ranks = {RANK: np.arange(forecast.sizes[MEMBER] + 1)}
    return _squeeze(_wrap(values, forecast, dims, regs, "rank_histogram", time_dim, ranks), regions)


def quantile_threshold(truth: xr.DataArray, q: float, dim: str | Iterable[str] = "time") -> xr.DataArray:
    """The `q`-quantile of `truth` at each grid point over `dim`: thresholds for local extremes."""
    if not 0 < q < 1:
        raise DataError(f"quantile thresholds must lie in (0, 1); got {q}")
    return truth.quantile(q, dim=dim, skipna=True).drop_vars("quantile")


def zonal_spectrum(field: xr.DataArray, *, mean_dims: Iterable[str] = ()) -> xr.DataArray:
    """Power per zonal wavenumber ``k``: ``E(k) = c_k |X_k|² / N²`` averaged over latitude.

    ``X_k`` is the discrete Fourier transform of each latitude circle (N longitudes),
    ``c_k = 2`` for 0 < k < N/2 (one-sided spectrum), else 1, so ``Σ_k E(k)`` is the mean
    square of the circle (Parseval). Circles are averaged with the area weights; circles
    holding any NaN are left out (weights renormalised over the others). Spectra of a
    regional grid are of the periodic extension of the box. `mean_dims` are averaged too.
    """
    if LON not in field.dims or LAT not in field.dims:
        raise DataError(f"zonal_spectrum needs '{LAT}' and '{LON}' dims; got {field.dims}")
    x = field.transpose(..., LAT, LON)
    values = x.values.astype("float64")
    nlon = values.shape[-1]
    power = np.abs(np.fft.rfft(np.nan_to_num(values), axis=-1)) ** 2 / nlon**2
    power[..., 1:(nlon + 1) // 2] *= 2
    complete = np.isfinite(values).all(axis=-1)
    w = area_weights(x[LAT].values).values * complete
    wsum = w.sum(axis=-1)
    if not (wsum > 0).any():
        raise DataError(f"zonal_spectrum of '{field.name}': every latitude circle holds NaN")
    spec = (power * w[..., None]).sum(axis=-2) / np.where(wsum > 0, wsum, np.nan)[..., None]
    dims = [d for d in x.dims if d not in (LAT, LON)] + ["wavenumber"]
    out = xr.DataArray(spec, dims=dims, coords={d: x[d].values for d in dims[:-1] if d in x.coords},
                       name=f"{field.name}_spectrum" if field.name else "spectrum")
    out = out.assign_coords(wavenumber=np.arange(spec.shape[-1]))
    mean_dims = list(mean_dims)
    return out.mean(mean_dims) if mean_dims else out
