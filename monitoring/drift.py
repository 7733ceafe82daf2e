"""Drift of incoming fields against a reference window, tested by Evidently on summaries.

Each summary column (`monitoring.summaries`) is one Evidently drift test between the
reference rows (e.g. the training period) and the current rows; the default for numbers is
the two-sample Kolmogorov-Smirnov test at p < 0.05. A window has drifted when the share
of drifted columns reaches `share`, or when one variable's share does (`variable_share`):
a unit change or a broken feed touches one variable only, and among hundreds of columns
its share of the whole would go unnoticed.

Evidently is imported on first use: it takes seconds, and most commands never need it.
"""

from __future__ import annotations

import json
import warnings
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from model_code.errors import DataError
from model_code.storage import write_atomic
from monitoring.summaries import Region, REGIONS, Summaries, parse_column, summarise

REPORT_HTML = "drift.html"
SNAPSHOT_JSON = "snapshot.json"
RESULT_JSON = "drift.json"


@dataclass(frozen=True)
class DriftThresholds:
    """When a column, and when a window, counts as drifted."""

    share: float = 0.3
    """Share of all columns that must drift for the window to drift."""
    variable_share: float = 0.4
    """Share of one variable's columns (all its levels, regions, statistics) that suffices."""
    method: str = "ks"
    """Evidently stat test for every column (`ks`, `wasserstein`, `psi`, ...)."""
    column_threshold: float = 0.05
    """The test's threshold: a p-value below it, or a distance at or above it, is drift."""

    def __post_init__(self):
        for name in ("share", "variable_share"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise DataError(f"drift threshold '{name}' must be in (0, 1], got {value}")


@dataclass(frozen=True)
class ColumnDrift:
    column: str
    variable: str
    level: float | None
    region: str
    statistic: str
    method: str
    score: float
    """The test's p-value (p-value methods) or distance."""
    threshold: float
    drifted: bool


@dataclass
class DriftResult:
    """The outcome of one comparison, with the evidence a person or a policy needs."""

    drifted: bool
    share: float
    drifted_columns: list[str]
    variable_shares: dict[str, float]
    columns: list[ColumnDrift]
    thresholds: DriftThresholds
    reference: dict[str, Any]
    current: dict[str, Any]
    artifacts: dict[str, str] = field(default_factory=dict)

    @property
    def drifted_variables(self) -> list[str]:
        return sorted(v for v, s in self.variable_shares.items() if s >= self.thresholds.variable_share)

    def evidence(self, top: int = 10) -> dict[str, Any]:
        """A compact account for decision records: shares, worst columns, report location."""
        worst = sorted((c for c in self.columns if c.drifted), key=lambda c: c.score)[:top]
        return {
            "drifted": self.drifted, "share": round(self.share, 4),
            "drifted_variables": self.drifted_variables,
            "n_columns": len(self.columns), "n_drifted": len(self.drifted_columns),
            "worst": {c.column: c.score for c in worst},
            "current_window": self.current.get("window"), "reference_window": self.reference.get("window"),
            "report": self.artifacts.get("html"),
        }

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["drifted_variables"] = self.drifted_variables
        return doc


def _describe(s: Summaries) -> dict[str, Any]:
    return {"sources": s.sources, "window": s.window(), "rows": len(s.table), "grid": s.grid.describe()}


def check_comparable(reference: Summaries, current: Summaries) -> None:
    """Raise a `DataError` unless both windows have rows, one grid and the same columns."""
    for name, s in (("reference", reference), ("current", current)):
        if s.table.empty or s.table.shape[1] == 0:
            raise DataError(f"empty {name} window: no time steps to compare", source=", ".join(s.sources) or None)
    if not reference.grid.matches(current.grid):
        raise DataError(f"mismatched grids: reference {reference.grid.describe()}, current "
                        f"{current.grid.describe()}; regrid one window to the other's grid first")
    ref_cols, cur_cols = set(reference.table.columns), set(current.table.columns)
    if ref_cols != cur_cols:
        ref_vars, cur_vars = set(reference.variables), set(current.variables)
        problems = []
        if ref_vars - cur_vars:
            problems.append(f"only in reference: {sorted(ref_vars - cur_vars)}")
        if cur_vars - ref_vars:
            problems.append(f"only in current: {sorted(cur_vars - ref_vars)}")
        if not problems:
            problems.append(f"regions differ: {sorted(ref_cols ^ cur_cols)[:5]}")
        raise DataError("mismatched variables between reference and current windows "
                        "(pass --variables to compare the ones both have)", problems=problems)


def _tests(reference: Summaries, current: Summaries, thresholds: DriftThresholds) -> list[ColumnDrift]:
    """One Evidently stat test per column (the tests DataDriftPreset runs, without its plots)."""
    from evidently.legacy.calculations.stattests import get_stattest
    from evidently.legacy.core import ColumnType

    out = []
    for name in reference.table.columns:
        ref, cur = reference.table[name], current.table[name]
        test = get_stattest(ref, cur, ColumnType.Numerical, thresholds.method)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # constant columns (a NaN share of 0)
            res = test(ref, cur, ColumnType.Numerical, thresholds.column_threshold)
        var, level, region, stat = parse_column(name)
        out.append(ColumnDrift(name, var, level, region, stat, test.display_name, float(res.drift_score),
                               float(res.actual_threshold), bool(res.drifted)))
    return out


def compare(reference: Summaries, current: Summaries, thresholds: DriftThresholds = DriftThresholds()) -> DriftResult:
    """Evidently drift tests of every summary column of two comparable windows."""
    check_comparable(reference, current)
    return _result(_tests(reference, current, thresholds), thresholds, reference, current)


def report_columns(result: DriftResult, limit: int = 24) -> list[str]:
    """Columns worth a person's look: drifted ones (strongest first), then global means."""
    drifted = sorted((c for c in result.columns if c.drifted), key=lambda c: c.score)
    means = [c for c in result.columns if c.region == "global" and c.statistic == "mean"]
    chosen = dict.fromkeys(c.column for c in drifted[:limit // 2] + means + drifted[limit // 2:])
    return list(chosen)[:limit]


def snapshot(reference: Summaries, current: Summaries, columns: Sequence[str], thresholds: DriftThresholds):
    """Evidently's DataDriftPreset report (a Snapshot) on `columns` of both windows.

    Its plots cost about half a second per column, which is why the report holds the
    chosen columns and `drift.json` holds them all.
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    cols = list(columns)
    # Declared numerical: a column with few distinct values (a NaN share of 0) would
    # otherwise be taken as categorical.
    definition = DataDefinition(numerical_columns=cols)
    ref = Dataset.from_pandas(reference.table[cols].reset_index(drop=True), data_definition=definition)
    cur = Dataset.from_pandas(current.table[cols].reset_index(drop=True), data_definition=definition)
    preset = DataDriftPreset(columns=cols, method=thresholds.method, threshold=thresholds.column_threshold,
                             drift_share=thresholds.share)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return Report([preset]).run(cur, ref)


def _result(columns: list[ColumnDrift], thresholds: DriftThresholds, reference: Summaries,
            current: Summaries) -> DriftResult:
    by_var: dict[str, list[bool]] = defaultdict(list)
    for c in columns:
        by_var[c.variable].append(c.drifted)
    variable_shares = {v: sum(flags) / len(flags) for v, flags in sorted(by_var.items())}
    drifted_columns = [c.column for c in columns if c.drifted]
    share = len(drifted_columns) / len(columns)
    drifted = share >= thresholds.share or any(s >= thresholds.variable_share for s in variable_shares.values())
    return DriftResult(drifted, share, drifted_columns, variable_shares, columns, thresholds,
                       _describe(reference), _describe(current))


def save(result: DriftResult, reference: Summaries, current: Summaries, out: str,
         report_limit: int = 24) -> DriftResult:
    """Write `drift.html` (for a person), `snapshot.json` (Evidently's) and `drift.json` (ours).

    `out` is a directory path or an `s3://` prefix; every file is written atomically, and
    `drift.json` is written last, so it always has its report beside it.
    """
    out = str(out).rstrip("/")
    snap = snapshot(reference, current, report_columns(result, report_limit), result.thresholds)
    html = write_atomic(f"{out}/{REPORT_HTML}", lambda p: snap.save_html(str(p)))
    doc = write_atomic(f"{out}/{SNAPSHOT_JSON}", lambda p: Path(p).write_text(snap.json()))
    result.artifacts = {"html": html, "snapshot": doc, "result": f"{out}/{RESULT_JSON}"}
    write_atomic(result.artifacts["result"],
                 lambda p: Path(p).write_text(json.dumps(result.to_dict(), indent=1, allow_nan=True)))
    return result


def detect_drift(
    reference: Sequence[str] | Summaries, current: Sequence[str] | Summaries, *, out: str | None = None,
    thresholds: DriftThresholds = DriftThresholds(), variables: Sequence[str] | None = None,
    regions: Sequence[Region] = REGIONS,
) -> DriftResult:
    """Summarise both windows (files, a stored `*.summaries.json`, or `Summaries`), compare, save."""
    if not isinstance(reference, Summaries) and not reference:
        raise DataError("missing reference: give the reference window's files or its .summaries.json")
    ref = reference if isinstance(reference, Summaries) else summarise(reference, variables=variables, regions=regions)
    cur = current if isinstance(current, Summaries) else summarise(current, variables=variables, regions=regions)
    result = compare(ref, cur, thresholds)
    return save(result, ref, cur, out) if out is not None else result
