"""Drift of incoming fields against a reference window: Evidently tests of anomalies, with
thresholds calibrated on the reference itself.

1. Both windows' summaries become features on a common scale, as anomalies from the
   reference's own hour-of-day (and day-of-year) cycle (`monitoring.anomalies`).
2. **Calibration.** Stretches as long as the current window (at most an eighth of the
   reference, so there are several) are cut from the reference at up to `blocks` places,
   and each is tested against the rest of the reference with the same Evidently stat test.
   For each feature, the strongest result any variable-level reached in any stretch is the
   reference's natural band: what weather alone does within the reference. A column's
   threshold is `margin` times that band, never more sensitive than Evidently's default for
   the method. Taking the largest over all variable-levels of a feature is the correction
   for the number of columns: the more columns, the wider the band.
3. **Tests.** One Evidently `ValueDrift` per tested column with its threshold, in one
   `Report(...).run(current, reference)`; the Snapshot's tests say which columns drifted,
   and the same Snapshot is the report's HTML, so the verdict and the report cannot disagree.
4. **Verdict.** A window drifted when any column did; `monitoring.reasons` names why.

Evidently is imported on first use: it takes seconds, and most commands never need it.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from model_code.errors import DataError
from model_code.storage import write_atomic
from monitoring.anomalies import Anomalies, anomalies
from monitoring.reasons import Reason, explain
from monitoring.summaries import Summaries, parse_column, summarise

REPORT_HTML = "drift.html"
SNAPSHOT_JSON = "snapshot.json"
RESULT_JSON = "drift.json"

P_VALUE_METHODS = ("anderson", "cramer_von_mises", "empirical_mmd", "es", "ks", "mannw", "t_test")
"""Evidently's numerical stat tests whose score is a p-value: drift below the threshold."""
DISTANCE_METHODS = ("ed", "hellinger", "jensenshannon", "kl_div", "psi", "wasserstein")
"""Evidently's numerical stat tests whose score is a distance: drift at or above the threshold."""
MIN_REFERENCE_ROWS = 8
SMALLEST_P = 1e-300


@dataclass(frozen=True)
class DriftRule:
    """How a column, and so a window, counts as drifted."""

    method: str = "wasserstein"
    """Evidently stat test for every column (see P_VALUE_METHODS and DISTANCE_METHODS)."""
    margin: float = 3.0
    """Threshold = margin x the reference's natural band of the feature (in drift strength)."""
    blocks: int = 32
    """Most stretches of the reference tested in the calibration."""

    def __post_init__(self):
        if self.method not in P_VALUE_METHODS + DISTANCE_METHODS:
            raise DataError(f"unknown drift method '{self.method}'; expected one of Evidently's numerical tests "
                            f"{', '.join(sorted(P_VALUE_METHODS + DISTANCE_METHODS))}")
        if not self.margin >= 1.0:
            raise DataError(f"drift margin must be at least 1 (a threshold no tighter than the reference's own "
                            f"band), got {self.margin}")
        if self.blocks < 2:
            raise DataError(f"calibration needs at least 2 stretches of the reference, got {self.blocks}")

    @property
    def p_value(self) -> bool:
        return self.method in P_VALUE_METHODS

    def strength(self, score: float) -> float:
        """How strongly a score says drift, on a scale where larger is stronger: the distance,
        or -log10 of the p-value."""
        return -math.log10(max(score, SMALLEST_P)) if self.p_value else score

    def score(self, strength: float) -> float:
        """The score of a strength (inverse of `strength`): what Evidently is given as threshold."""
        return 10.0 ** -strength if self.p_value else strength

    def exceedance(self, score: float, threshold: float) -> float:
        """Strength of `score` over that of `threshold`: 1 at the threshold, whatever the test kind."""
        return self.strength(score) / max(self.strength(threshold), 1e-12)


@dataclass(frozen=True)
class ColumnDrift:
    column: str
    variable: str
    level: float | None
    statistic: str
    method: str
    score: float
    """The test's p-value (p-value methods) or distance, from Evidently's snapshot."""
    threshold: float
    drifted: bool
    """Evidently's test status for the column (failed: drifted)."""
    exceedance: float
    """Drift strength over the threshold's (1 at the threshold): comparable across methods, the sort key."""


@dataclass
class DriftResult:
    """The outcome of one comparison, with the evidence a person or a policy needs."""

    drifted: bool
    reasons: list[Reason]
    columns: list[ColumnDrift]
    """Every tested column, strongest exceedance first."""
    untested: dict[str, str]
    """Columns that could not be tested, and why (e.g. no complete row for a spectrum)."""
    rule: DriftRule
    calibration: dict[str, Any]
    reference: dict[str, Any]
    current: dict[str, Any]
    artifacts: dict[str, str] = field(default_factory=dict)
    snapshot: Any = field(default=None, repr=False)
    """Evidently's Snapshot the verdict was read from (not serialised)."""
    anomalies: Anomalies | None = field(default=None, repr=False)
    """The tested features of both windows (not serialised)."""

    @property
    def drifted_columns(self) -> list[str]:
        return [c.column for c in self.columns if c.drifted]

    @property
    def share(self) -> float:
        return len(self.drifted_columns) / len(self.columns) if self.columns else 0.0

    @property
    def variable_shares(self) -> dict[str, float]:
        """Share of drifted columns of each variable (dataset name, all its levels)."""
        flags: dict[str, list[bool]] = {}
        for c in self.columns:
            flags.setdefault(c.variable, []).append(c.drifted)
        return {v: sum(f) / len(f) for v, f in sorted(flags.items())}

    @property
    def drifted_variables(self) -> list[str]:
        return sorted({c.variable for c in self.columns if c.drifted})

    def worst(self, top: int | None = None) -> list[ColumnDrift]:
        """The columns that moved most, first, whatever the test kind (`columns` is in this order)."""
        return self.columns[:top]

    def evidence(self, top: int = 10) -> dict[str, Any]:
        """A compact account for decision records: verdict, reasons, worst columns, report location."""
        return {
            "drifted": self.drifted, "reasons": [r.describe() for r in self.reasons],
            "share": round(self.share, 4), "drifted_variables": self.drifted_variables,
            "n_columns": len(self.columns), "n_drifted": len(self.drifted_columns),
            "worst": {c.column: c.score for c in self.worst(top) if c.drifted},
            "current_window": self.current.get("window"), "reference_window": self.reference.get("window"),
            "report": self.artifacts.get("html"),
        }

    def to_dict(self) -> dict[str, Any]:
        doc = {k: getattr(self, k) for k in ("drifted", "rule", "calibration", "reference", "current", "untested",
                                             "artifacts")}
        doc.update(rule=asdict(self.rule), reasons=[asdict(r) for r in self.reasons],
                   columns=[asdict(c) for c in self.columns])
        doc.update(share=self.share, drifted_columns=self.drifted_columns, drifted_variables=self.drifted_variables,
                   variable_shares=self.variable_shares)
        return doc


def _describe(s: Summaries) -> dict[str, Any]:
    step = s.step()
    return {"sources": s.sources, "window": s.window(), "rows": len(s.table), "grid": s.grid.describe(),
            "step_hours": None if step is None else step / pd.Timedelta(hours=1), "units": s.units}


def _hours(hours) -> str:
    return ", ".join(f"{h:02d}" for h in sorted(set(hours)))


def check_comparable(reference: Summaries, current: Summaries) -> None:
    """Raise a `DataError` naming what differs unless the windows can be compared: both have
    rows, one grid, the same variables in the same units, the same time step, and every hour
    of day of the current window occurs in the reference."""
    for name, s in (("reference", reference), ("current", current)):
        if s.table.empty or s.table.shape[1] == 0:
            raise DataError(f"empty {name} window: no time steps to compare", source=", ".join(s.sources) or None)
    if len(reference.table) < MIN_REFERENCE_ROWS:
        raise DataError(f"the reference has {len(reference.table)} time steps; at least {MIN_REFERENCE_ROWS} are "
                        "needed to learn its cycle and calibrate the thresholds",
                        source=", ".join(reference.sources) or None)
    if not reference.grid.matches(current.grid):
        raise DataError(f"mismatched grids: reference {reference.grid.describe()}, current "
                        f"{current.grid.describe()}; regrid one window to the other's grid first")
    ref_vars, cur_vars = set(reference.variables), set(current.variables)
    if ref_vars != cur_vars:
        problems = []
        if ref_vars - cur_vars:
            problems.append(f"only in reference: {sorted(ref_vars - cur_vars)}")
        if cur_vars - ref_vars:
            problems.append(f"only in current: {sorted(cur_vars - ref_vars)}")
        raise DataError("mismatched variables between reference and current windows "
                        "(pass --variables to compare the ones both have)", problems=problems)
    differ = sorted(set(reference.table.columns) ^ set(current.table.columns))
    if differ:
        raise DataError(f"mismatched summary columns: {differ[:5]}; summarise both windows with this version")
    units = [f"'{k}': reference in '{reference.units[k]}', current in '{current.units[k]}'"
             for k in sorted(set(reference.units) & set(current.units)) if reference.units[k] != current.units[k]]
    if units:
        raise DataError("mismatched units between reference and current windows", problems=units)
    ref_step, cur_step = reference.step(), current.step()
    if ref_step is not None and cur_step is not None and ref_step != cur_step:
        raise DataError(f"mismatched time steps: reference every {ref_step}, current every {cur_step}; a field's "
                        "change between time steps depends on the step: give the current window at the reference's")
    missing = set(current.table.index.hour) - set(reference.table.index.hour)
    if missing:
        raise DataError(f"the current window has times at hours (UTC) {_hours(missing)} that the reference never "
                        f"has (its hours: {_hours(reference.table.index.hour)}); an anomaly needs the reference's "
                        "mean at the same hour of day")


def _stat_test(method: str):
    """(score function, default threshold) of the stat test Evidently's ValueDrift runs for `method`:
    the same test from its registry, without the plots, for calibration and ordering."""
    from evidently.legacy.calculations.stattests.registry import get_registered_stattest
    from evidently.legacy.core import ColumnType

    test = get_registered_stattest(method, ColumnType.Numerical)
    return lambda ref, cur: float(test(ref, cur, ColumnType.Numerical, None).drift_score), test.default_threshold


def _strengths(test, rule: DriftRule, reference: pd.DataFrame, current: pd.DataFrame) -> pd.Series:
    """Drift strength of every column of `current` against `reference` (both NaN-free columns)."""
    out = {}
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        for name in current.columns:
            ref, cur = reference[name].dropna(), current[name].dropna()
            out[name] = rule.strength(test(ref, cur)) if len(ref) > 1 and len(cur) else float("nan")
    return pd.Series(out, dtype="float64")


def calibrate(reference: pd.DataFrame, current_rows: int, rule: DriftRule) -> tuple[dict[str, float], dict[str, Any]]:
    """The reference's natural band of each feature, in drift strength, and how it was found.

    Stretches of min(current_rows, rows / 8) rows are cut from the reference at up to
    `rule.blocks` evenly spaced places and tested against the rest; a feature's band is the
    largest strength any of its columns reached in any stretch.
    """
    test, _ = _stat_test(rule.method)
    n = len(reference)
    length = max(1, min(current_rows, n // 8))
    starts = np.unique(np.linspace(0, n - length, min(rule.blocks, n - length + 1)).round().astype(int))
    band: dict[str, float] = {}
    features = [parse_column(c)[2] for c in reference.columns]
    for start in starts:
        inside = np.zeros(n, dtype=bool)
        inside[start:start + length] = True
        strengths = _strengths(test, rule, reference[~inside], reference[inside])
        for feature, value in zip(features, strengths.to_numpy()):
            if np.isfinite(value):
                band[feature] = max(band.get(feature, 0.0), float(value))
    return band, {"stretch_rows": int(length), "stretches": int(len(starts)), "band": band}


def _run_report(anoms: Anomalies, columns: list[str], thresholds: dict[str, float], rule: DriftRule):
    """Evidently's Report of one ValueDrift per column (in this order), run on the anomalies."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    definition = DataDefinition(numerical_columns=columns)
    ref = Dataset.from_pandas(anoms.reference[columns].reset_index(drop=True), data_definition=definition)
    cur = Dataset.from_pandas(anoms.current[columns].reset_index(drop=True), data_definition=definition)
    metrics = [ValueDrift(column=c, method=rule.method, threshold=thresholds[c]) for c in columns]
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return Report(metrics, include_tests=True).run(cur, ref)


def _read_snapshot(snapshot, rule: DriftRule) -> list[ColumnDrift]:
    """One ColumnDrift per ValueDrift of the snapshot: score and threshold from the metric,
    drifted from its test's status."""
    doc = snapshot.dict()
    failed = {t["bound_test"]["metric_fingerprint"]: getattr(t["status"], "value", t["status"]) == "FAIL"
              for t in doc["tests"]}
    out = []
    for m in doc["metrics"]:
        config = m["config"]
        score, threshold = float(m["value"]), float(config["threshold"])
        var, level, stat = parse_column(config["column"])
        out.append(ColumnDrift(config["column"], var, level, stat, config["method"], score, threshold,
                               failed[m["id"]], rule.exceedance(score, threshold)))
    return sorted(out, key=lambda c: -c.exceedance)


def compare(reference: Summaries, current: Summaries, rule: DriftRule = DriftRule()) -> DriftResult:
    """Evidently drift tests of every feature of two comparable windows, thresholds calibrated on the reference."""
    check_comparable(reference, current)
    anoms = anomalies(reference, current)
    band, calibration = calibrate(anoms.reference, len(current.table), rule)
    test, default = _stat_test(rule.method)
    floor = rule.strength(default)
    untested = {}
    for name in anoms.current.columns:
        if not anoms.current[name].notna().any():
            untested[name] = "no value in the current window"
        elif anoms.reference[name].notna().sum() < 2:
            untested[name] = "fewer than two values in the reference"
    tested = [c for c in anoms.current.columns if c not in untested]
    thresholds = {c: rule.score(max(rule.margin * band.get(parse_column(c)[2], 0.0), floor)) for c in tested}
    # Worst first in the report: the same test, run here without plots, orders the columns.
    strengths = _strengths(test, rule, anoms.reference[tested], anoms.current[tested])
    order = sorted(tested, key=lambda c: -(strengths[c] / rule.strength(thresholds[c])))
    snapshot = _run_report(anoms, order, thresholds, rule)
    columns = _read_snapshot(snapshot, rule)
    reasons = explain([c for c in columns if c.drifted], reference, current, anoms)
    calibration.update(climatology=anoms.climatology, margin=rule.margin, floor=floor)
    return DriftResult(any(c.drifted for c in columns), reasons, columns, untested, rule, calibration,
                       _describe(reference), _describe(current), snapshot=snapshot, anomalies=anoms)


def save(result: DriftResult, reference: Summaries, current: Summaries, out: str,
         report_limit: int = 24) -> DriftResult:
    """Write `drift.html` (for a person), `snapshot.json` (Evidently's) and `drift.json` (ours).

    `out` is a directory path or an `s3://` prefix; every file is written atomically, and
    `drift.json` is written last, so it always has its report beside it.
    """
    from monitoring.report import render

    out = str(out).rstrip("/")
    page = render(result, reference, current, report_limit)
    html = write_atomic(f"{out}/{REPORT_HTML}", lambda p: Path(p).write_text(page, encoding="utf-8"))
    doc = write_atomic(f"{out}/{SNAPSHOT_JSON}", lambda p: Path(p).write_text(result.snapshot.json()))
    result.artifacts = {"html": html, "snapshot": doc, "result": f"{out}/{RESULT_JSON}"}
    write_atomic(result.artifacts["result"],
                 lambda p: Path(p).write_text(json.dumps(result.to_dict(), indent=1, allow_nan=True)))
    return result


def detect_drift(
    reference: Sequence[str] | Summaries, current: Sequence[str] | Summaries, *, out: str | None = None,
    rule: DriftRule = DriftRule(), variables: Sequence[str] | None = None, report_limit: int = 24,
) -> DriftResult:
    """Summarise both windows (files, a stored `*.summaries.json`, or `Summaries`), compare, save."""
    if not isinstance(reference, Summaries) and not reference:
        raise DataError("missing reference: give the reference window's files or its .summaries.json")
    ref = reference if isinstance(reference, Summaries) else summarise(reference, variables=variables)
    cur = current if isinstance(current, Summaries) else summarise(current, variables=variables)
    result = compare(ref, cur, rule)
    return save(result, ref, cur, out, report_limit) if out is not None else result
