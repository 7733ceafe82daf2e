"""Normalisation statistics from the training period only, robust to outliers, in Aurora's form."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Sequence

import numpy as np
import xarray as xr

from model_code.data.grid import cell_areas
from model_code.errors import DataError
from model_code.variables import VARIABLES, variable
from model_code.data.preprocess.period import _as_dataset, _training
from model_code.data.preprocess.angles import ANGLE_VARS, _angles_present, angles_to_sincos
from model_code.data.preprocess.climatology import deseasonalise


MAD_TO_SIGMA = 1.4826
"""1 / Φ⁻¹(3/4): scales a median absolute deviation to the standard deviation of a normal."""
IQR_TO_SIGMA = 1.349
"""Φ⁻¹(3/4) - Φ⁻¹(1/4): the interquartile range of a unit normal."""


@dataclass(frozen=True)
class LocationScale:
    """Normalisation of one variable (at one level): z = (x - location) / scale."""

    location: float
    scale: float
    estimator: str
    """How they were computed, e.g. `median, 1.4826 MAD` (with any fallback)."""


Robust = Literal["mad", "iqr"]


@dataclass(frozen=True)
class NormalisationStats:
    """Location and scale of every variable, learnt from a training period.

    `surface` holds surface and static variables (dataset names; directions as `{name}_sin`
    and `{name}_cos`), `atmos` pressure-level variables per level (hPa).
    """

    surface: Mapping[str, LocationScale]
    atmos: Mapping[str, Mapping[float, LocationScale]]
    train_period: tuple[str, str]
    robust: str
    """`mad`, `iqr` or `none` (mean and standard deviation)."""
    area_weighted: bool
    deseasonalised: bool = False
    notes: tuple[str, ...] = field(default=())

    FORMAT = "aurora-mlops/normalisation-stats"
    VERSION = 1

    def get(self, key: str, level: float | None = None) -> LocationScale:
        """Statistics of dataset variable `key` (and `level` for atmospheric ones)."""
        try:
            return self.surface[key] if level is None else self.atmos[key][float(level)]
        except KeyError:
            where = f" at {level:g} hPa" if level is not None else ""
            raise DataError(f"no normalisation statistics for '{key}'{where}") from None

    def to_json(self) -> str:
        """A JSON document that `from_json` reads back exactly (floats keep all digits)."""
        def entry(s: LocationScale) -> dict:
            return {"location": s.location, "scale": s.scale, "estimator": s.estimator}

        doc = {
            "format": self.FORMAT,
            "version": self.VERSION,
            "train_period": list(self.train_period),
            "robust": self.robust,
            "area_weighted": self.area_weighted,
            "deseasonalised": self.deseasonalised,
            "notes": list(self.notes),
            "surface": {k: entry(v) for k, v in self.surface.items()},
            "atmos": {k: {repr(float(lv)): entry(s) for lv, s in levels.items()} for k, levels in self.atmos.items()},
        }
        return json.dumps(doc, indent=1)

    @classmethod
    def from_json(cls, text: str | bytes) -> NormalisationStats:
        try:
            doc = json.loads(text)
            if doc.get("format") != cls.FORMAT:
                raise ValueError(f"format {doc.get('format')!r}")
            if doc.get("version") != cls.VERSION:
                raise ValueError(f"version {doc.get('version')!r}")

            def entry(d: dict) -> LocationScale:
                return LocationScale(float(d["location"]), float(d["scale"]), str(d["estimator"]))

            return cls(
                surface={k: entry(v) for k, v in doc["surface"].items()},
                atmos={k: {float(lv): entry(s) for lv, s in levels.items()} for k, levels in doc["atmos"].items()},
                train_period=tuple(doc["train_period"]),
                robust=str(doc["robust"]),
                area_weighted=bool(doc["area_weighted"]),
                deseasonalised=bool(doc["deseasonalised"]),
                notes=tuple(doc.get("notes", ())),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise DataError(
                f"not a normalisation statistics document ({exc}); expected JSON written by "
                f"NormalisationStats.to_json (format '{cls.FORMAT}', version {cls.VERSION})"
            ) from exc


def weighted_quantiles(x: np.ndarray, w: np.ndarray, qs: Sequence[float]) -> np.ndarray:
    """Quantiles of values `x` with weights `w`: the sorted values placed at cumulative
    weight p_i = (Σ_{k≤i} w_k - w_i / 2) / Σ w, interpolated linearly (with equal weights,
    the Hazen definition, whose median is the usual median)."""
    order = np.argsort(x, kind="stable")
    xs, ws = x[order], w[order]
    cw = np.cumsum(ws)
    p = (cw - 0.5 * ws) / cw[-1]
    return np.interp(np.asarray(qs, dtype="float64"), p, xs)


def _location_scale(x: np.ndarray, w: np.ndarray, robust: str) -> LocationScale:
    if robust == "mad":
        loc = float(weighted_quantiles(x, w, [0.5])[0])
        scale = MAD_TO_SIGMA * float(weighted_quantiles(np.abs(x - loc), w, [0.5])[0])
        estimator = "median, 1.4826 MAD"
    elif robust == "iqr":
        q25, loc, q75 = weighted_quantiles(x, w, [0.25, 0.5, 0.75])
        loc, scale = float(loc), float(q75 - q25) / IQR_TO_SIGMA
        estimator = "median, IQR / 1.349"
    else:
        loc = float(np.sum(w * x) / np.sum(w))
        scale = float(np.sqrt(np.sum(w * (x - loc) ** 2) / np.sum(w)))
        estimator = "mean, standard deviation"
    if not (np.isfinite(scale) and scale > 0) and robust != "none":
        mean = float(np.sum(w * x) / np.sum(w))
        scale = float(np.sqrt(np.sum(w * (x - mean) ** 2) / np.sum(w)))
        estimator += " (robust scale is 0: standard deviation instead)"
    if not (np.isfinite(scale) and scale > 0):
        scale = 1.0
        estimator += " (constant field: scale 1)"
    return LocationScale(loc, scale, estimator)


def _robust_name(robust: bool | str) -> str:
    if robust is True:
        return "mad"
    if robust is False or robust == "none":
        return "none"
    if robust in ("mad", "iqr"):
        return str(robust)
    raise DataError(f"robust = {robust!r}; expected True ('mad'), 'iqr' or False")


def normalisation_stats(
    ds: xr.Dataset,
    train_period: Sequence[Any],
    robust: bool | Robust = True,
    *,
    climatology: xr.Dataset | None = None,
    area_weighted: bool = True,
) -> NormalisationStats:
    """Location and scale of every variable (per level), from the training period only.

    robust: True or ``mad``: median and 1.4826 · median(|x - median|); ``iqr``: median and
    (q75 - q25) / 1.349; False: mean and standard deviation. All are consistent estimates of
    the mean and standard deviation of a normal distribution. NaN (land in wave fields) is
    left out; with `area_weighted` every value weighs its cell area (≈ cos latitude, see
    `grid.cell_areas`). Statics are included. Directions in `ANGLE_VARS` get statistics of
    their sine and cosine. With `climatology` (computed over a period inside `train_period`),
    the statistics are those of the anomalies (`deseasonalise`). A robust scale of zero (a
    mostly-constant field such as a land-sea mask) falls back to the standard deviation, and
    a zero standard deviation to 1; `estimator` says so.
    """
    method = _robust_name(robust)
    ds = _as_dataset(ds)
    train, period = _training(ds, train_period)
    if climatology is not None:
        clim_period = json.loads(climatology.attrs.get("train_period", "null"))
        if clim_period is None or not (period[0] <= clim_period[0] and clim_period[1] <= period[1]):
            raise DataError(
                f"the climatology was computed over {clim_period}; expected a period inside the "
                f"training period {period[0]} .. {period[1]} (otherwise other dates leak in)"
            )
        train = deseasonalise(train, climatology)
    train = angles_to_sincos(train, _angles_present(train))
    surface: dict[str, LocationScale] = {}
    atmos: dict[str, dict[float, LocationScale]] = {}
    for key, da in train.data_vars.items():
        key = str(key)
        if "latitude" not in da.dims or "longitude" not in da.dims:
            raise DataError(f"variable '{key}' has dims {tuple(da.dims)}; expected 'latitude' and 'longitude'")
        if area_weighted:
            area = xr.DataArray(cell_areas(da.latitude.values, da.longitude.values), dims=("latitude", "longitude"))
        else:
            area = xr.DataArray(np.ones((da.sizes["latitude"], da.sizes["longitude"])), dims=("latitude", "longitude"))
        levels = da.level.values if "level" in da.dims else [None]
        for level in levels:
            part = da.sel(level=level) if level is not None else da
            x = part.values.astype("float64").ravel()
            w = area.broadcast_like(part).transpose(*part.dims).values.ravel()
            ok = np.isfinite(x)
            if not ok.any():
                where = f" at {level:g} hPa" if level is not None else ""
                raise DataError(
                    f"variable '{key}'{where} has no finite value in the training period {period[0]} .. {period[1]}"
                )
            stats = _location_scale(x[ok], w[ok], method)
            if level is None:
                surface[key] = stats
            else:
                atmos.setdefault(key, {})[float(level)] = stats
    return NormalisationStats(surface, atmos, period, method, area_weighted, climatology is not None)


def _skipped_for_aurora(key: str) -> bool:
    """Aurora never normalises these with `surf_stats`: angle components (AuroraWave takes
    sine and cosine after normalising the raw angle by (0, 1)) and `dwi` (split into
    10u_wave and 10v_wave before normalisation)."""
    base, _, part = key.rpartition("_")
    return (part in ("sin", "cos") and base in ANGLE_VARS) or key == "dwi" or key in ANGLE_VARS


def aurora_surf_stats(stats: NormalisationStats, *, allow_anomalies: bool = False) -> dict[str, tuple[float, float]]:
    """`{aurora_name: (location, scale)}` for `Aurora(surf_stats=...)`: surface and static
    variables under Aurora's names (`t2m` -> `2t`, `z_surface` -> `z`).

    Left out: directions and their components and `dwi` (see `_skipped_for_aurora`), and
    keys outside the catalogue. Statistics of anomalies are refused unless
    `allow_anomalies` (Aurora normalises the fields it is given, not their anomalies).
    """
    if stats.deseasonalised and not allow_anomalies:
        raise DataError(
            "these statistics are of de-seasonalised anomalies; Aurora normalises raw fields. "
            "Pass allow_anomalies=True only if the model is fed anomalies"
        )
    keys = {v.dataset_name: v for v in VARIABLES if v.kind in ("surface", "static")}
    return {
        keys[k].name: (s.location, s.scale)
        for k, s in stats.surface.items()
        if k in keys and not _skipped_for_aurora(k)
    }


def aurora_atmos_stats(stats: NormalisationStats) -> dict[str, tuple[float, float]]:
    """`{f"{name}_{level}": (location, scale)}`, the keys of `aurora.normalisation.locations`
    and `scales` for pressure-level variables (levels written by `level_to_str`)."""
    from aurora.normalisation import level_to_str

    return {
        f"{variable('atmos', k).name}_{level_to_str(lv)}": (s.location, s.scale)
        for k, levels in stats.atmos.items()
        for lv, s in levels.items()
    }
