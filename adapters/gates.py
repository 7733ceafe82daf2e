"""Promotion gates: does a challenger beat the champion and the baselines where it matters?

A gate names a score (metric, variable, level, region) at some lead times. Scores come as
the evaluation's JSON records

    {"forecast": "model", "variable": "z", "level": 500.0, "region": "global",
     "lead_hours": 72.0, "metric": "rmse", "value": 310.2}

where `model` is the challenger and every other `forecast` a comparator. Every gate compares
the challenger with persistence, with the climatology (unless the evaluation left it out
and said why, or the metric is ACC, which a climatology forecast has not), with the
champion once there is one, and with any forecast the gate adds in `against`. A first model
faces the baselines like any other: nothing passes because there is nothing to compare.

A model record is compared with the comparator record that agrees on every other key (so
records that carry more keys, e.g. a threshold, are compared like for like). Missing
evidence fails: a gate whose records are absent, or NaN, does not pass.

This module knows nothing of MLflow: `adapters.registry.promote` applies its verdict.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from model_code.errors import ConfigError, DataError
from model_code.evaluation.regions import WHOLE_GRID
from model_code.evaluation.score import ABS_LOWER_IS_BETTER, HIGHER_IS_BETTER, LOWER_IS_BETTER
from model_code.storage import local_copy
from model_code.variants import get_variant

CHAMPION, PERSISTENCE, CLIMATOLOGY = "champion", "persistence", "climatology"
ALWAYS_AGAINST = (CHAMPION, PERSISTENCE, CLIMATOLOGY)
"""What every gate compares with (the champion once there is one; the climatology where the
evaluation had one)."""
MODEL = "model"
ALL_LEADS = "all"
GATED_METRICS = frozenset({"rmse", "mae", "bias", "crps", "acc", "csi", "ets"})


@dataclass(frozen=True)
class Gate:
    """One condition a challenger must meet before it may become champion."""

    metric: str
    """`rmse`, `mae`, `bias` (by magnitude), `crps` (lower is better) or `acc`, `csi`, `ets`."""
    variable: str
    """Dataset name, e.g. `z`, `t2m`, `swh`."""
    level: float | None = None
    """Pressure level in hPa for atmospheric variables; None for surface variables."""
    region: str | None = None
    """A region of the evaluation; None: the whole grid (`global`, or `domain` on a regional grid)."""
    lead_hours: tuple[float, ...] | str = ALL_LEADS
    """Lead times in hours, or `all`: every lead time the challenger was scored at."""
    against: tuple[str, ...] = ()
    """Forecasts to beat besides the champion, persistence and climatology (`ALWAYS_AGAINST`),
    e.g. another model's output given to the evaluation as a baseline."""
    margin: float = 0.0
    """Required improvement as a fraction of the comparator's score (0.02 = 2 % better)."""

    def __post_init__(self) -> None:
        if self.metric not in GATED_METRICS:
            raise ConfigError(f"metric '{self.metric}' cannot be gated; expected one of {sorted(GATED_METRICS)}",
                              field="metric")
        if MODEL in self.against:
            raise ConfigError(f"'{MODEL}' is the challenger itself, not a comparator", field="against")
        if not 0.0 <= self.margin < 1.0:
            raise ConfigError(f"margin must be in [0, 1); got {self.margin}", field="margin")
        if isinstance(self.lead_hours, str) and self.lead_hours != ALL_LEADS:
            raise ConfigError(f"lead_hours must be a list of hours or '{ALL_LEADS}'; "
                              f"got '{self.lead_hours}'", field="lead_hours")

    @property
    def comparators(self) -> tuple[str, ...]:
        """Every forecast this gate compares with (ACC has no climatology to beat)."""
        always = tuple(a for a in ALWAYS_AGAINST if not (a == CLIMATOLOGY and self.metric == "acc"))
        return tuple(dict.fromkeys((*always, *self.against)))

    @property
    def target(self) -> str:
        """`rmse z500 (global)`: how results and messages name the score."""
        level = "" if self.level is None else f"{self.level:g}"
        return f"{self.metric} {self.variable}{level} ({self.region or 'whole grid'})"


def _gates(metrics: Sequence[str], variables: Sequence[tuple[str, float | None]], leads,
           region: str | None = None) -> list[Gate]:
    return [Gate(m, v, lvl, region, tuple(leads)) for m in metrics for v, lvl in variables]


# The evaluation targets of each variant (docs/registry.md): skill at the lead times the
# variant is used for, against the champion and the baselines.
# An ensemble is gated on fair CRPS alone: its spread-skill ratio and rank histogram are
# diagnostics, and the CRPS of the deterministic baselines is their MAE (`score.target_options`).
_MEDIUM_RANGE = [("z", 500.0), ("t", 850.0), ("t2m", None), ("u10", None), ("v10", None)]
_MEDIUM_RANGE_GATES = tuple(_gates(["rmse"], _MEDIUM_RANGE, (72, 96, 120))
                            + _gates(["acc"], _MEDIUM_RANGE[:2], (72, 96, 120)))
DEFAULT_GATES: dict[str, tuple[Gate, ...]] = {
    "medium-range": _MEDIUM_RANGE_GATES,
    "medium-range-v1.5": _MEDIUM_RANGE_GATES,
    "ensemble-v1.5": tuple(_gates(["crps"], _MEDIUM_RANGE[:3], (72, 96, 120))),
    "high-res": tuple(_gates(["rmse"], [("t2m", None), ("u10", None), ("v10", None)], (6, 12, 24))
                      + _gates(["csi", "ets"], [("t2m", None), ("u10", None)], (6, 12, 24))),
    "air-pollution": tuple(_gates(["rmse", "bias"], [("pm2p5", None), ("pm10", None), ("tcno2", None),
                                                     ("gtco3", None)], (12, 24, 48))),
    "wave": tuple(_gates(["mae"], [("swh", None), ("mwp", None)], (6, 24, 48), region="coastal")),
}


def default_gates(variant: str) -> tuple[Gate, ...]:
    return DEFAULT_GATES[get_variant(variant).name]


_GATE_KEYS = {"metric", "variable", "level", "region", "lead_hours", "against", "margin"}


def gate_from_dict(data: Mapping[str, Any], where: str = "gates[0]") -> Gate:
    """A `Gate` from plain data, naming the offending key (`gates[2].margin`) on error."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"expected a mapping, got {type(data).__name__}", field=where)
    unknown = sorted(set(data) - _GATE_KEYS)
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown}; expected {sorted(_GATE_KEYS)}", field=where)
    for key in ("metric", "variable"):
        if not isinstance(data.get(key), str):
            raise ConfigError("required, a string", field=f"{where}.{key}")
    kwargs: dict[str, Any] = {"metric": data["metric"], "variable": data["variable"]}
    try:
        if data.get("level") is not None:
            kwargs["level"] = float(data["level"])
        if data.get("region") is not None:
            kwargs["region"] = str(data["region"])
        if "lead_hours" in data:
            leads = data["lead_hours"]
            kwargs["lead_hours"] = leads if isinstance(leads, str) else tuple(float(h) for h in leads)
        if "against" in data:
            against = data["against"]
            kwargs["against"] = (against,) if isinstance(against, str) else tuple(map(str, against))
        if "margin" in data:
            kwargs["margin"] = float(data["margin"])
    except (TypeError, ValueError) as e:
        raise ConfigError(f"bad value ({e})", field=where) from None
    try:
        return Gate(**kwargs)
    except ConfigError as e:
        raise ConfigError(str(e).split(": ", 1)[-1], field=f"{where}.{e.field}") from None


def load_gates(source: str | Path | Mapping[str, Any]) -> tuple[Gate, ...]:
    """Gates from a YAML file (path or s3:// URI) or its parsed content: `{gates: [...]}`.

    A gate file replaces the variant's defaults as a whole, so what is checked is exactly
    what the file says (and, for every gate, the comparators of `ALWAYS_AGAINST`).
    """
    name = None if isinstance(source, Mapping) else str(source)
    if isinstance(source, Mapping):
        data = source
    else:
        with local_copy(str(source)) as path:
            try:
                data = yaml.safe_load(Path(path).read_text())
            except yaml.YAMLError as e:
                raise ConfigError(f"not valid YAML ({e})", source=name) from None
    if not isinstance(data, Mapping) or set(data) != {"gates"} or not isinstance(data["gates"], list):
        raise ConfigError("a gate file holds one key, `gates`, a list of gates", source=name)
    if not data["gates"]:
        raise ConfigError("at least one gate is needed", field="gates", source=name)
    try:
        return tuple(gate_from_dict(g, f"gates[{i}]") for i, g in enumerate(data["gates"]))
    except ConfigError as e:
        raise ConfigError(str(e).split(": ", 1)[-1], field=e.field, source=name) from None


def read_scores(scores: str | Path | Mapping[str, Any] | Any) -> dict[str, Any]:
    """The evaluation's scores as `{"variant", "records", "notes", "subject"}`.

    Accepts the JSON file `Scores.to_json` writes (path or s3:// URI), its parsed content,
    or any object with a `records` list (a `Scores`).
    """
    if hasattr(scores, "records"):
        return {"variant": getattr(scores, "variant", None), "records": list(scores.records),
                "notes": list(getattr(scores, "notes", [])), "subject": dict(getattr(scores, "subject", {}))}
    if isinstance(scores, Mapping):
        data, name = scores, "scores"
    else:
        name = str(scores)
        with local_copy(name) as path:
            try:
                data = json.loads(Path(path).read_text())
            except json.JSONDecodeError as e:
                raise DataError(f"scores are not valid JSON ({e})", source=name) from None
    records = data.get("records") if isinstance(data, Mapping) else None
    if not isinstance(records, list):
        raise DataError("scores hold no `records` list (expected the evaluation's metrics JSON)",
                        source=name)
    needed = {"forecast", "variable", "region", "lead_hours", "metric", "value"}
    for i, r in enumerate(records):
        if not isinstance(r, Mapping) or not needed <= set(r):
            raise DataError(f"record {i} lacks {sorted(needed - set(r or {}))}", source=name)
    return {"variant": data.get("variant"), "records": records, "notes": list(data.get("notes") or []),
            "subject": dict(data.get("subject") or {})}


@dataclass(frozen=True)
class Comparison:
    """The challenger against one comparator at one lead time of one gate."""

    gate: str
    against: str
    lead_hours: float
    model: float | None
    other: float | None
    passed: bool
    note: str = ""


@dataclass(frozen=True)
class GateReport:
    """Every comparison made, the verdict (passed only if none failed), and what was judged:
    `subject` is the scores' (model and champion checkpoints and versions, data hash, leads)."""

    passed: bool
    comparisons: tuple[Comparison, ...] = field(default_factory=tuple)
    subject: Mapping[str, Any] = field(default_factory=dict)

    @property
    def reasons(self) -> list[str]:
        """One line per failed comparison, e.g. `rmse z500 (global) at 72h: 312 vs persistence 298`."""
        return [c.note for c in self.comparisons if not c.passed]

    def to_json(self) -> str:
        return json.dumps({"passed": self.passed, "subject": dict(self.subject),
                           "comparisons": [asdict(c) for c in self.comparisons]}, separators=(",", ":"))


def beats(metric: str, model: float, other: float, margin: float = 0.0) -> bool:
    """Whether `model` is strictly better than `other` by at least `margin` of |other|
    (directions from `model_code.evaluation.score`; bias by its magnitude)."""
    if metric not in HIGHER_IS_BETTER | LOWER_IS_BETTER | ABS_LOWER_IS_BETTER:
        raise DataError(f"no ordering known for metric '{metric}'")
    if metric in ABS_LOWER_IS_BETTER:
        model, other = abs(model), abs(other)
    gain = model - other if metric in HIGHER_IS_BETTER else other - model
    return gain > 0 and gain >= margin * abs(other)


def gate_matches(record: Mapping[str, Any], gate: Gate) -> bool:
    """Whether `record` scores what `gate` names (any lead time, any forecast)."""
    level = record.get("level")
    region_ok = record["region"] in WHOLE_GRID if gate.region is None else record["region"] == gate.region
    return (record["metric"] == gate.metric and record["variable"] == gate.variable and region_ok
            and (level is None if gate.level is None else level is not None and float(level) == gate.level))


def _key(record: Mapping[str, Any]) -> tuple:
    """Everything that says what was scored: every key but the forecast and the value."""
    return tuple(sorted((k, json.dumps(v, sort_keys=True)) for k, v in record.items()
                        if k not in ("forecast", "value")))


def _value(record: Mapping[str, Any] | None) -> float | None:
    if record is None or record["value"] is None:
        return None
    value = float(record["value"])
    return None if math.isnan(value) else value


def judge(scores, gates: Sequence[Gate], *, champion: str | None) -> GateReport:
    """Judge the challenger (`forecast == "model"`) of `scores` on every gate; nothing short-circuits.

    `champion` is the variant's champion version (None before the first). Accepts what
    `read_scores` does.
    """
    doc = read_scores(scores)
    by_forecast: dict[str, dict[tuple, Mapping[str, Any]]] = {}
    for r in doc["records"]:
        by_forecast.setdefault(str(r["forecast"]), {})[_key(r)] = r
    left_out = next((n.split(": ", 1)[1] for n in doc["notes"] if n.startswith("climatology: left out")), None)
    model = by_forecast.get(MODEL, {})
    comparisons: list[Comparison] = []
    for gate in gates:
        mine = [r for r in model.values() if gate_matches(r, gate)]
        leads = (sorted({float(r["lead_hours"]) for r in mine}) if gate.lead_hours == ALL_LEADS
                 else list(gate.lead_hours))
        if not leads:
            comparisons.append(Comparison(gate.target, ",".join(gate.comparators), math.nan, None, None, False,
                                          f"{gate.target}: the challenger has no scores"))
        for lead in leads:
            at_lead = [r for r in mine if float(r["lead_hours"]) == lead]
            if not at_lead:
                comparisons.append(Comparison(gate.target, ",".join(gate.comparators), lead, None, None, False,
                                              f"{gate.target} at {lead:g}h: the challenger has no score"))
            for against in gate.comparators:
                for r in at_lead:
                    comparisons.append(_compare(gate, lead, against, r, by_forecast, champion, left_out))
    return GateReport(all(c.passed for c in comparisons), tuple(comparisons), doc["subject"])


def _compare(gate: Gate, lead: float, against: str, record: Mapping[str, Any],
             by_forecast: Mapping[str, Mapping[tuple, Mapping[str, Any]]], champion: str | None,
             climatology_left_out: str | None) -> Comparison:
    where = f"{gate.target} at {lead:g}h"
    if against == CHAMPION and champion is None:
        return Comparison(gate.target, against, lead, _value(record), None, True,
                          f"{where}: no champion yet; judged on the baselines")
    if against == CLIMATOLOGY and against not in by_forecast and climatology_left_out:
        return Comparison(gate.target, against, lead, _value(record), None, True,
                          f"{where}: no climatology to compare with ({climatology_left_out})")
    if against not in by_forecast:
        return Comparison(gate.target, against, lead, _value(record), None, False,
                          f"{where}: no scores of '{against}' (evaluate against it)")
    mine, theirs = _value(record), _value(by_forecast[against].get(_key(record)))
    if mine is None or theirs is None:
        missing = "the challenger" if mine is None else f"'{against}'"
        return Comparison(gate.target, against, lead, mine, theirs, False,
                          f"{where}: no finite score of {missing}")
    ok = beats(gate.metric, mine, theirs, gate.margin)
    margin = f" by {gate.margin:.0%}" if gate.margin else ""
    verdict = "beats" if ok else "does not beat"
    return Comparison(gate.target, against, lead, mine, theirs, ok,
                      f"{where}: {mine:.6g} {verdict} {against} {theirs:.6g}{margin}")
