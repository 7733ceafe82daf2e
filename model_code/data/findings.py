"""Structured results of data checks: one `Finding` per problem, collected in a `Report`.

The same rules serve two callers. Ingest stops at the first error (`DataError`); the
validator and the audit collect every finding, so a user sees all that is wrong at once,
with the check that found it, where, what was expected and how to fix it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from model_code.errors import DataError

Severity = Literal["error", "warning", "info"]
SEVERITIES: tuple[Severity, ...] = ("error", "warning", "info")


@dataclass(frozen=True)
class Finding:
    """One result of one check: an error stops training or forecasting; a warning does not."""

    check: str
    """Name of the rule, e.g. `nan_share`, `physical_bounds`, `time_gaps`, `units`."""
    severity: Severity
    message: str
    source: str | None = None
    """File (or files) the data came from."""
    variable: str | None = None
    """Dataset name, e.g. `t2m`, `z`."""
    level: float | None = None
    """Pressure level in hPa, for atmospheric variables."""
    where: str | None = None
    """Time or index where the problem is (the first place, when it is in many)."""
    expected: str | None = None
    found: str | None = None
    hint: str | None = None
    """How to fix it."""

    def line(self) -> str:
        """The finding as one readable line."""
        place = ", ".join(
            p for p in (
                self.source,
                f"variable {self.variable}" if self.variable else None,
                f"level {self.level:g} hPa" if self.level is not None else None,
                f"at {self.where}" if self.where else None,
            ) if p
        )
        text = f"[{self.check}] {self.message}"
        if self.expected is not None or self.found is not None:
            text += f" (expected {self.expected}; found {self.found})"
        if place:
            text = f"{place}: {text}"
        return text + (f" — {self.hint}" if self.hint else "")


@dataclass
class Report:
    """Every finding of a validation or audit, and the statistics behind them."""

    sources: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    statistics: dict[str, Any] = field(default_factory=dict)
    """Per variable (and level): counts, NaN share, min/max, mean/std, median/MAD, extremes."""
    coverage: dict[str, Any] = field(default_factory=dict)
    """Per variable: first/last time, step, gaps, and the NaN share per time step."""

    def add(self, finding: Finding) -> None:
        self.findings.append(finding)

    def extend(self, findings) -> None:
        self.findings.extend(findings)

    def by_severity(self, severity: Severity) -> list[Finding]:
        return [f for f in self.findings if f.severity == severity]

    @property
    def ok(self) -> bool:
        """True when no check failed at error level."""
        return not self.by_severity("error")

    def summary(self) -> str:
        counts = {s: len(self.by_severity(s)) for s in SEVERITIES}
        return (f"{len(self.sources)} source(s): {counts['error']} error(s), "
                f"{counts['warning']} warning(s), {counts['info']} note(s)")

    def raise_for_errors(self) -> None:
        """Raise a `DataError` listing every error-level finding, if there is one."""
        errors = self.by_severity("error")
        if errors:
            raise DataError(
                f"data failed {len(errors)} check(s): {self.summary()}",
                problems=[f.line() for f in errors],
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "summary": self.summary(),
            "sources": self.sources,
            "findings": [asdict(f) for f in self.findings],
            "statistics": self.statistics,
            "coverage": self.coverage,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str)
