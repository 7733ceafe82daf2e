"""Summaries made comparable across weather: features on a common scale, as anomalies from
the reference's own cycle.

Raw summaries move with the time of day and the weather regime: a test on them asks whether
this week's weather resembles the reference fortnight's, which it rarely does. Each field's
statistics become features whose natural movement is small and comparable across variables:

- `mean`, `q05`, `q95`: the value over the field's typical spatial spread in the reference
  (median `std`): a shift in units of the field's own variation, whatever its physical units;
- `std`, `grad`, `spec_fine`, `spec_mid`, `tendency`: log10 of the ratio to the reference's
  median, within 1e-6..1e6: spread, structure and change are scales, they change by factors
  (a frozen field's tendency: -6);
- `nan_share`: as is, a share of the area;
- `profile`: correlation of the row's latitude profile (`lat00`, ...) with the reference's
  mean profile at the same hour: the north-south shape, whatever the mean.

Then each feature becomes an anomaly from the reference's mean at the same hour of day, and
the same day of year for a reference of a year or more (31-day window), with
`model_code.data.preprocess.climatology`: a change of weather regime or of season is then not
a change of distribution.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import xarray as xr

from model_code.data.preprocess.climatology import climatology, deseasonalise
from monitoring.summaries import Summaries, profile_statistics

LOCATION = ("mean", "q05", "q95")
RATIO = ("std", "grad", "spec_fine", "spec_mid", "tendency")
SHARE = ("nan_share",)
PROFILE = "profile"
FEATURES = LOCATION + RATIO + SHARE + (PROFILE,)
"""The statistics tested for each variable-level, in this order."""
RATIO_LIMIT = 1e6
YEAR_DAYS = 365
SMOOTHING_DAYS = 31


@dataclass
class Anomalies:
    """Tested features of both windows (rows: times; columns: `<variable>[@<level>]/<feature>`)."""

    reference: pd.DataFrame
    current: pd.DataFrame
    climatology: str
    """What the anomalies are taken from, for reports: "hour of day" or "day of year and hour"."""
    spread: dict[str, float]
    """Each variable-level's typical spatial spread in the reference (physical units): the unit of
    its location features."""


def _typical(values: pd.Series) -> float:
    """Median of the positive finite values (1 when there is none): a scale to divide by."""
    positive = values[np.isfinite(values) & (values > 0)]
    return float(positive.median()) if len(positive) else 1.0


def _profile_correlation(profiles: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row of `profiles` (t, bands) with the same row of `expected`,
    over the bands both have; NaN where either is flat."""
    both = np.isfinite(profiles) & np.isfinite(expected)
    n = both.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        a = np.where(both, profiles, 0.0)
        b = np.where(both, expected, 0.0)
        a = np.where(both, a - a.sum(axis=1, keepdims=True) / n[:, None], 0.0)
        b = np.where(both, b - b.sum(axis=1, keepdims=True) / n[:, None], 0.0)
        r = (a * b).sum(axis=1) / np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    return np.where(n >= 3, r, np.nan)


def _features(s: Summaries, reference: Summaries, spread: dict[str, float], n_rows: int) -> pd.DataFrame:
    """The tested features of `s`, on the scales `reference` sets (see the module docstring)."""
    table, ref = s.table, reference.table
    bands = profile_statistics(n_rows)
    ref_hours = ref.index.hour
    out = {}
    for var in s.variables:
        for stat in LOCATION:
            out[f"{var}/{stat}"] = table[f"{var}/{stat}"] / spread[var]
        for stat in RATIO:
            scale = _typical(ref[f"{var}/{stat}"])
            ratio = (table[f"{var}/{stat}"] / scale).clip(1 / RATIO_LIMIT, RATIO_LIMIT)
            out[f"{var}/{stat}"] = np.log10(ratio)
        out[f"{var}/nan_share"] = table[f"{var}/nan_share"]
        columns = [f"{var}/{b}" for b in bands]
        by_hour = ref[columns].groupby(ref_hours).mean()
        expected = by_hour.reindex(table.index.hour).to_numpy()
        correlation = _profile_correlation(table[columns].to_numpy(), expected)
        out[f"{var}/{PROFILE}"] = pd.Series(correlation, index=table.index)
    return pd.DataFrame(out, index=table.index)[[f"{v}/{f}" for v in s.variables for f in FEATURES]]


def _as_dataset(features: pd.DataFrame) -> xr.Dataset:
    return xr.Dataset({"features": (("time", "column"), features.to_numpy(dtype="float64"))},
                      coords={"time": features.index.values, "column": list(features.columns)})


def anomalies(reference: Summaries, current: Summaries) -> Anomalies:
    """Features of both windows as anomalies from the reference's cycle.

    Both must be comparable (`drift.check_comparable`): same grid and columns, and every hour
    of day of the current window present in the reference.
    """
    n_rows = reference.grid.shape[0]
    spread = {var: _typical(reference.table[f"{var}/std"]) for var in reference.variables}
    ref_features = _features(reference, reference, spread, n_rows)
    cur_features = _features(current, reference, spread, n_rows)
    times = reference.table.index
    long = (times[-1] - times[0]) >= pd.Timedelta(days=YEAR_DAYS)
    by, smoothing, kind = ((("dayofyear", "hour"), SMOOTHING_DAYS, "day of year and hour") if long
                           else (("hour",), None, "hour of day"))
    clim = climatology(_as_dataset(ref_features), (times[0], times[-1]), by=by, smoothing_days=smoothing)

    def anomaly(features: pd.DataFrame) -> pd.DataFrame:
        values = deseasonalise(_as_dataset(features), clim)["features"].values
        return pd.DataFrame(values, index=features.index, columns=features.columns)

    return Anomalies(anomaly(ref_features), anomaly(cur_features), kind, spread)
