"""Skill-gated canary decisions: promote, hold or roll back a canary from the forecast skill of
both versions against ground truth, plus their request errors and latency.

Evidence. Skill comes as evaluation score records (`Scores.to_json` files: `{"records":
[{"forecast", "variable", "level", "region", "lead_hours", "metric", "value"}, ...]}`, or a
bare list of records) in which the canary and the stable version are two forecasts (by
default `model` and `champion`, as `evaluate({"model": canary, "champion": stable}, truth)`
names them). One *case* is one verified forecast: records pair up by their `init_time` when
they carry one, else each file is one case (e.g. one file per verified init time).

Rule, for each headline target (variable, level, region, lead time) of the metric:

- change = how much worse the canary is, relative to the stable version: for lower-is-better
  metrics (rmse, mae, crps, |bias|) mean(canary) / mean(stable) - 1, for acc
  1 - mean(canary) / mean(stable); positive is worse (the orderings of
  `model_code.evaluation.score`).
- A paired bootstrap over cases (the same cases resampled for both versions) gives one-sided
  `confidence` bounds [low, high] of the change.
- Verdict: fewer than `min_cases` cases: insufficient; high <= margin: not worse by more than
  the margin (`ok`, or `better` when high < 0); low > margin: `worse`; otherwise inconclusive.

Decision: **rollback** when any target is `worse`, or the canary's error rate exceeds the
stable's by more than `max_extra_error_rate`, or its p95 latency is more than
`max_latency_ratio` times the stable's; **promote** when every target is `ok`/`better` and
the operational figures (when given) rest on at least `min_requests` canary requests;
**hold** otherwise (not enough evidence yet either way).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from model_code.errors import DataError
from model_code.evaluation.regions import GLOBAL, WHOLE_GRID
from model_code.evaluation.score import ABS_LOWER_IS_BETTER, HIGHER_IS_BETTER, LOWER_IS_BETTER
from model_code.storage import local_copy

WHOLE = "whole-grid"
"""The target region of scores over every grid point (`global` or `domain`)."""

METRICS = LOWER_IS_BETTER | ABS_LOWER_IS_BETTER | (HIGHER_IS_BETTER & {"acc"})
"""Metrics the rule can gate on: one value per target and case. Threshold metrics (csi, ets,
...) have one per threshold, and spread-skill has no worse direction, so they are left out."""


@dataclass(frozen=True)
class Rule:
    """Thresholds of the decision (see the module docstring)."""

    metric: str = "rmse"
    margin: float = 0.02
    """Largest relative loss of skill a promoted canary may have (0.02: 2 % worse)."""
    min_cases: int = 10
    """Fewest verified forecasts per target before skill can decide anything."""
    confidence: float = 0.95
    """One-sided confidence of each bootstrap bound."""
    resamples: int = 2000
    seed: int = 0
    max_extra_error_rate: float = 0.005
    """Largest error rate (errors / requests) above the stable's the canary may have."""
    max_latency_ratio: float = 1.25
    min_requests: int = 200

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise DataError(f"--metric: cannot gate on {self.metric!r}; expected one of {sorted(METRICS)}")
        if not 0.5 < self.confidence < 1:
            raise DataError(f"confidence must be in (0.5, 1), got {self.confidence}")
        if self.min_cases < 2 or self.margin < 0:
            raise DataError(f"need min_cases >= 2 and margin >= 0, got {self.min_cases} and {self.margin}")


@dataclass(frozen=True, order=True)
class Target:
    """One headline target: a variable (dataset name), its level in hPa (None at the
    surface), the region and the lead time in hours."""

    variable: str
    level: float | None
    lead_hours: float
    region: str = WHOLE
    """`whole-grid` matches the scores of the whole grid, `global` or `domain` (regional)."""

    @classmethod
    def parse(cls, text: str) -> "Target":
        """`VARIABLE[@LEVEL]:LEAD_HOURS[:REGION]`, e.g. `z@500:120`, `t2m:24`, `t2m:24:europe`."""
        parts = text.split(":")
        if len(parts) not in (2, 3) or not parts[0]:
            raise DataError(f"--target {text!r}: expected VARIABLE[@LEVEL]:LEAD_HOURS[:REGION], e.g. z@500:120")
        variable, _, level = parts[0].partition("@")
        try:
            return cls(variable, float(level) if level else None, float(parts[1]),
                       parts[2] if len(parts) == 3 else WHOLE)
        except ValueError:
            raise DataError(f"--target {text!r}: level and lead time must be numbers") from None

    def label(self) -> str:
        level = f"@{self.level:g}hPa" if self.level is not None else ""
        region = "" if self.region == WHOLE else f" ({self.region})"
        return f"{self.variable}{level} +{self.lead_hours:g}h{region}"


@dataclass(frozen=True)
class TargetEvidence:
    target: str
    cases: int
    stable: float
    canary: float
    change: float
    """Relative loss of skill of the canary (positive: worse)."""
    low: float
    high: float
    verdict: str
    """`better`, `ok`, `inconclusive`, `worse` or `insufficient`."""


@dataclass(frozen=True)
class Ops:
    """Request counts and latency of one version over the same period (from Prometheus)."""

    requests: int
    errors: int
    latency_p95_s: float | None = None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class Decision:
    action: str
    """`promote`, `hold` or `rollback`."""
    reasons: tuple[str, ...]
    targets: tuple[TargetEvidence, ...] = field(default_factory=tuple)
    canary_ops: Ops | None = None
    stable_ops: Ops | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def load_skill(paths: Sequence[str]) -> list[dict]:
    """Score records of every file, each tagged with its case: `init_time` or the file's index."""
    records = []
    for index, path in enumerate(paths):
        with local_copy(path) as local:
            try:
                data = json.loads(Path(local).read_text())
            except json.JSONDecodeError as e:
                raise DataError(f"{path}: not JSON ({e})") from None
        rows = data.get("records") if isinstance(data, dict) else data
        if not isinstance(rows, list):
            raise DataError(f"{path}: expected a list of score records or an object with 'records'")
        for i, row in enumerate(rows):
            missing = {"forecast", "variable", "lead_hours", "metric", "value"} - set(row)
            if missing:
                raise DataError(f"{path}: record {i} lacks {sorted(missing)}")
            records.append({**row, "case": row.get("init_time", f"file{index}")})
    return records


def paired_cases(records: Iterable[Mapping], metric: str, canary: str, stable: str,
                 targets: Sequence[Target] | None = None) -> dict[Target, np.ndarray]:
    """{target: array (cases, 2) of (stable, canary) values}, over the cases both versions have.

    Without `targets`, every target of `metric` both versions were scored on."""
    values: dict[tuple[Target, str], dict[str, float]] = {}
    for r in records:
        if r["metric"] != metric or r["forecast"] not in (canary, stable) or r["value"] is None:
            continue
        value = float(r["value"])
        if not math.isfinite(value):
            continue
        level = r.get("level")
        region = r.get("region") or GLOBAL
        key = Target(r["variable"], float(level) if level is not None else None, float(r["lead_hours"]),
                     WHOLE if region in WHOLE_GRID else region)
        values.setdefault((key, r["case"]), {})[r["forecast"]] = abs(value) if metric in ABS_LOWER_IS_BETTER else value
    pairs: dict[Target, list[tuple[float, float]]] = {}
    for (target, _), both in sorted(values.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        if canary in both and stable in both:
            pairs.setdefault(target, []).append((both[stable], both[canary]))
    wanted = targets if targets is not None else sorted(pairs)
    return {t: np.asarray(pairs.get(t, []), dtype=float).reshape(-1, 2) for t in wanted}


def relative_change(stable: np.ndarray, canary: np.ndarray, metric: str) -> np.ndarray:
    """Loss of skill of the canary relative to the stable version along the last axis' means
    (positive: worse)."""
    s, c = stable.mean(axis=-1), canary.mean(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = c / s
    return 1 - ratio if metric in HIGHER_IS_BETTER else ratio - 1


def judge(pairs: np.ndarray, rule: Rule, target: Target) -> TargetEvidence:
    """The verdict on one target from its (stable, canary) pairs."""
    n = len(pairs)
    if n == 0:
        return TargetEvidence(target.label(), 0, math.nan, math.nan, math.nan, math.nan, math.nan, "insufficient")
    stable, canary = pairs[:, 0], pairs[:, 1]
    change = float(relative_change(stable, canary, rule.metric))
    rng = np.random.default_rng(rule.seed)
    index = rng.integers(0, n, size=(rule.resamples, n))  # (resamples, cases), the same for both
    changes = relative_change(stable[index], canary[index], rule.metric)
    low, high = (float(q) for q in np.nanquantile(changes, [1 - rule.confidence, rule.confidence]))
    if n < rule.min_cases:
        verdict = "insufficient"
    elif high <= rule.margin:
        verdict = "better" if high < 0 else "ok"
    elif low > rule.margin:
        verdict = "worse"
    else:
        verdict = "inconclusive"
    return TargetEvidence(target.label(), n, float(stable.mean()), float(canary.mean()), change, low, high, verdict)


def canary_decision(records: Iterable[Mapping], rule: Rule = Rule(), *, canary: str = "model",
                    stable: str = "champion", targets: Sequence[Target] | None = None,
                    canary_ops: Ops | None = None, stable_ops: Ops | None = None) -> Decision:
    """Promote, hold or roll back (see the module docstring for the rule)."""
    pairs = paired_cases(records, rule.metric, canary, stable, targets)
    evidence = tuple(judge(p, rule, t) for t, p in pairs.items())
    rollback, hold = [], []
    if not evidence:
        hold.append(f"no {rule.metric} scores of both {canary!r} and {stable!r} on any target")
    for e in evidence:
        if e.verdict == "worse":
            rollback.append(f"{e.target}: {rule.metric} {e.change:+.1%} (bounds {e.low:+.1%} .. {e.high:+.1%}), "
                            f"worse than the stable version by more than {rule.margin:.1%}")
        elif e.verdict == "insufficient":
            hold.append(f"{e.target}: {e.cases} verified forecasts, need {rule.min_cases}")
        elif e.verdict == "inconclusive":
            hold.append(f"{e.target}: {rule.metric} {e.change:+.1%}, bounds {e.low:+.1%} .. {e.high:+.1%} "
                        f"straddle the {rule.margin:.1%} margin")
    if canary_ops is not None and stable_ops is not None:
        if canary_ops.requests < rule.min_requests:
            hold.append(f"canary served {canary_ops.requests} requests, need {rule.min_requests}")
        elif canary_ops.error_rate > stable_ops.error_rate + rule.max_extra_error_rate:
            rollback.append(f"canary error rate {canary_ops.error_rate:.2%} against {stable_ops.error_rate:.2%} "
                            f"(allowed: +{rule.max_extra_error_rate:.2%})")
        if canary_ops.latency_p95_s and stable_ops.latency_p95_s:
            ratio = canary_ops.latency_p95_s / stable_ops.latency_p95_s
            if ratio > rule.max_latency_ratio:
                rollback.append(f"canary p95 latency {canary_ops.latency_p95_s:.3g} s is {ratio:.2f}x the "
                                f"stable's (allowed: {rule.max_latency_ratio:.2f}x)")
    if rollback:
        return Decision("rollback", tuple(rollback), evidence, canary_ops, stable_ops)
    if hold:
        return Decision("hold", tuple(hold), evidence, canary_ops, stable_ops)
    reasons = [f"{len(evidence)} targets not worse than the stable version by more than {rule.margin:.1%} "
               f"({', '.join(e.target for e in evidence)})"]
    if canary_ops is None or stable_ops is None:
        reasons.append("no request/latency figures given: judged on skill alone")
    return Decision("promote", tuple(reasons), evidence, canary_ops, stable_ops)


def load_ops(path: str) -> tuple[Ops, Ops]:
    """`{"canary": {"requests", "errors", "latency_p95_s"}, "stable": {...}}` from a JSON file."""
    with local_copy(path) as local:
        data = json.loads(Path(local).read_text())
    try:
        return tuple(Ops(int(data[k]["requests"]), int(data[k]["errors"]),
                         None if data[k].get("latency_p95_s") is None else float(data[k]["latency_p95_s"]))
                     for k in ("canary", "stable"))
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"{path}: expected {{'canary': {{'requests', 'errors', 'latency_p95_s'}}, "
                        f"'stable': {{...}}}} ({type(e).__name__}: {e})") from None


def table(decision: Decision, metric: str) -> str:
    """The decision and its evidence as Markdown."""
    lines = [f"decision: **{decision.action}**", ""]
    lines += [f"- {r}" for r in decision.reasons]
    if decision.targets:
        lines += ["", f"| target | cases | stable {metric} | canary {metric} | change | bounds | verdict |",
                  "|---|--:|--:|--:|--:|---|---|"]
        for e in decision.targets:
            lines.append(f"| {e.target} | {e.cases} | {e.stable:.4g} | {e.canary:.4g} | {e.change:+.1%} | "
                         f"{e.low:+.1%} .. {e.high:+.1%} | {e.verdict} |")
    for name, ops in (("canary", decision.canary_ops), ("stable", decision.stable_ops)):
        if ops is not None:
            p95 = f", p95 {ops.latency_p95_s:.3g} s" if ops.latency_p95_s else ""
            lines.append(f"\n{name}: {ops.requests} requests, {ops.errors} errors ({ops.error_rate:.2%}){p95}")
    return "\n".join(lines)
