"""Why a window drifted, in words: the drifted columns of each variable-level grouped into named reasons.

Each tested feature belongs to one family, and the direction it moved names the fault:

- `nan_share`: `missing`, a share of the cells is missing (or no longer is);
- `tendency` down / up: `frozen`, the field stopped changing / `erratic`, it changes faster;
- `profile`: `profile`, the north-south shape changed (a flipped or shifted grid);
- `grad`, `spec_fine`, `spec_mid` down / up: `smoother`, a smoother or coarser source /
  `noisier`, a noisier or finer one;
- `std`: `spread`, the field's spatial spread changed;
- `mean`, `q05`, `q95`: `units` when a unit the readers know turns the current mean into the
  reference's (°C read as K, hPa as Pa, ...), `range` when the values leave the variable's
  plausible range, else `bias`.

A reason's strength is the largest exceedance (score over threshold) of its columns; the
strongest reason comes first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

from model_code.data.units import convertible_units
from model_code.variables import by_key
from monitoring.anomalies import LOCATION, Anomalies
from monitoring.summaries import Summaries

UNIT_TOLERANCE = 3.0
"""A unit mix-up explains a shift when the converted mean lands within this many spatial
spreads of the reference mean."""

STRUCTURE_NAMES = {"grad": "mean gradient per 100 km", "spec_fine": "zonal variance at 2-4 grid lengths over 4-8",
                   "spec_mid": "zonal variance at 4-8 grid lengths over 8-16"}


@dataclass(frozen=True)
class Reason:
    variable: str
    """Variable-level, e.g. `t2m` or `t@850`."""
    kind: str
    """`missing`, `frozen`, `erratic`, `profile`, `smoother`, `noisier`, `spread`, `units`, `range` or `bias`."""
    detail: str
    """What moved, in the variable's units, against the reference."""
    strength: float
    """Largest exceedance (score over threshold) among its drifted columns."""
    columns: tuple[str, ...]

    def describe(self) -> str:
        return f"{self.variable}: {self.kind} ({self.detail})"


def _median(values) -> float:
    values = np.asarray(values, dtype="float64")
    values = values[np.isfinite(values)]
    return float(np.median(values)) if len(values) else float("nan")


class _Windows:
    """Raw and anomaly values of both windows, for one variable-level."""

    def __init__(self, var: str, reference: Summaries, current: Summaries, anomalies: Anomalies):
        self.var, self.key = var, var.split("@")[0]
        self.reference, self.current, self.anomalies = reference.table, current.table, anomalies
        self.units = current.units.get(self.key) or reference.units.get(self.key, "")
        self.spread = anomalies.spread[var]

    def raw(self, stat: str) -> tuple[float, float]:
        """(reference, current) medians of a raw statistic."""
        column = f"{self.var}/{stat}"
        return _median(self.reference[column]), _median(self.current[column])

    def moved_up(self, feature: str) -> bool:
        column = f"{self.var}/{feature}"
        return _median(self.anomalies.current[column]) > _median(self.anomalies.reference[column])

    def value(self, x: float, sign: bool = False) -> str:
        return f"{x:{'+' if sign else ''}.4g} {self.units}".rstrip()


def _location(w: _Windows) -> tuple[str, str]:
    ref_mean, cur_mean = w.raw("mean")
    tolerance = UNIT_TOLERANCE * w.spread
    for name, convert in convertible_units(w.units).items():
        if abs(float(convert(np.float64(cur_mean))) - ref_mean) <= tolerance:
            return "units", (f"values look like {name} read as {w.units}: mean {w.value(cur_mean)}, "
                             f"reference {w.value(ref_mean)}")
        if abs(float(convert(np.float64(ref_mean))) - cur_mean) <= tolerance:
            return "units", (f"values look like {w.units} converted from {name} once too often: mean "
                             f"{w.value(cur_mean)}, reference {w.value(ref_mean)}")
    try:
        low, high = by_key(w.key).bounds
    except KeyError:
        low = high = None
    (_, q05), (_, q95) = w.raw("q05"), w.raw("q95")
    if (low is not None and q05 < low) or (high is not None and q95 > high):
        plausible = " .. ".join("" if b is None else f"{b:g}" for b in (low, high))
        return "range", (f"5-95% of the area at {w.value(q05)} .. {w.value(q95)}, outside the plausible "
                         f"{plausible} {w.units}".rstrip())
    shift = (_median(w.anomalies.current[f"{w.var}/mean"]) - _median(w.anomalies.reference[f"{w.var}/mean"])) * w.spread
    return "bias", (f"mean {w.value(shift, sign=True)} from the reference at the same hours "
                    f"(typical spatial spread {w.value(w.spread)})")


def _reason(w: _Windows, feature: str) -> tuple[str, str]:
    if feature in LOCATION:
        return _location(w)
    if feature == "nan_share":
        ref, cur = w.raw("nan_share")
        return "missing", f"{100 * cur:.3g}% of the area missing, reference {100 * ref:.3g}%"
    if feature == "tendency":
        ref, cur = w.raw("tendency")
        kind = "erratic" if w.moved_up(feature) else "frozen"
        return kind, f"RMS change between time steps {w.value(cur)}, reference {w.value(ref)}"
    if feature == "profile":
        ref, cur = _median(w.anomalies.reference[f"{w.var}/profile"]), _median(w.anomalies.current[f"{w.var}/profile"])
        return "profile", (f"latitude profile unlike the reference's (correlation anomaly {cur:+.2f}, "
                           f"reference {ref:+.2f}): a flipped or shifted grid?")
    if feature == "std":
        ref, cur = w.raw("std")
        return "spread", f"spatial spread {w.value(cur)}, reference {w.value(ref)}"
    ref, cur = w.raw(feature)
    kind = "noisier" if w.moved_up(feature) else "smoother"
    return kind, f"{STRUCTURE_NAMES[feature]} {cur:.3g}, reference {ref:.3g}"


def explain(drifted: Iterable, reference: Summaries, current: Summaries, anomalies: Anomalies) -> list[Reason]:
    """Reasons for the drifted columns (`ColumnDrift`s), strongest first."""
    groups: dict[tuple[str, str], dict] = {}
    windows: dict[str, _Windows] = {}
    for c in drifted:
        var, feature = c.column.split("/")
        w = windows.setdefault(var, _Windows(var, reference, current, anomalies))
        kind, detail = _reason(w, feature)
        group = groups.setdefault((var, kind), {"detail": detail, "strength": c.exceedance, "columns": []})
        if c.exceedance > group["strength"]:
            group.update(detail=detail, strength=c.exceedance)
        group["columns"].append(c.column)
    reasons = [Reason(var, kind, g["detail"], g["strength"], tuple(g["columns"])) for (var, kind), g in groups.items()]
    return sorted(reasons, key=lambda r: -r.strength)
