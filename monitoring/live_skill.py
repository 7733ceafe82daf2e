"""Skill of what was served, once the truth for it arrives: RMSE and MAE by lead time.

A served forecast is a job output directory (`<out>/job.json`, `step_NNN.nc`, `_SUCCESS`,
written by the predictor's job API) or a forecast file (`auroraops forecast`). The truth is
any analysis files the readers understand; steps whose valid time the truth does not hold
yet are left for a later run. Scores use `model_code.evaluation.metrics` (area-weighted,
WeatherBench 2 definitions), are set as `aurora_live_*` gauges, and are appended to a JSON
lines store, one record per (forecast, valid time, variable, level); a step already in the
store is not scored twice. `judge` reads the store to say whether skill degraded over a
window, for the retrain trigger.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import xarray as xr

from model_code.data.ingest import Field, merge_sources, read_source
from model_code.evaluation.metrics import mae, rmse
from model_code.errors import DataError
from model_code.storage import is_s3, local_copy, write_atomic
from monitoring import telemetry
from serving.jobs import JOB_STATE, MARKER


@dataclass(frozen=True)
class SkillRecord:
    variant: str
    forecast: str
    """The job output URI or forecast file."""
    init_time: str
    valid_time: str
    lead_hours: float
    variable: str
    level: float | None
    rmse: float
    mae: float
    scored_at: str

    @property
    def key(self) -> tuple:
        return (self.forecast, self.valid_time, self.variable, self.level)


def _step_files(uri: str) -> list[str]:
    """The forecast files of a job output directory (only a finished job), or `[uri]`."""
    with local_copy(uri) as path:
        path = Path(path)
        if not (path / JOB_STATE).exists():
            return [uri]
        state = json.loads((path / JOB_STATE).read_text())
        if state.get("status") != "succeeded" or not (path / MARKER).exists():
            raise DataError(f"job {state.get('job_id')} is {state.get('status')}, not succeeded "
                            f"(no {MARKER} marker); only finished jobs are scored", source=uri)
        names = state.get("files") or sorted(p.name for p in path.glob("step_*"))
    return [f"{uri.rstrip('/')}/{name}" for name in names]


@contextlib.contextmanager
def _truth_fields(uris: Sequence[str]) -> Iterator[dict[str, Field]]:
    if not uris:
        raise DataError("no truth files given")
    with contextlib.ExitStack() as stack:
        sources = [read_source(u, stack.enter_context(local_copy(u))) for u in uris]
        fields, _ = merge_sources(sources)
        yield {k: f for k, f in fields.items() if "time" in f.data.dims}


def _truth_at(f: Field, time: np.datetime64, levels) -> xr.DataArray | None:
    if time not in f.data.indexes["time"]:
        return None
    sel = {"time": [time]}
    if levels is not None:
        missing = [lv for lv in levels if lv not in f.data.indexes["level"]]
        if missing:
            return None
        sel["level"] = list(levels)
    return f.values(**sel)


def _on_forecast_grid(truth: xr.DataArray, forecast: xr.DataArray, where: str) -> xr.DataArray:
    """The truth at the forecast's grid points: the same grid or a superset of it (a forecast
    cropped to the patch size); anything else is an error."""
    picks = {}
    for axis in ("latitude", "longitude"):
        want, have = forecast[axis].values, truth[axis].values
        nearest = np.abs(have[None, :] - want[:, None]).argmin(axis=1)
        if not np.allclose(have[nearest], want, atol=1e-4):
            raise DataError(f"forecast and truth grids differ for '{forecast.name}' ({axis}: {len(want)} values "
                            f"{want.min():g}..{want.max():g} vs {len(have)} values {have.min():g}..{have.max():g}); "
                            "give truth on the forecast's grid", source=where)
        picks[axis] = nearest
    return truth.isel(**picks).assign_coords(latitude=forecast.latitude.values, longitude=forecast.longitude.values)


def _iso(t) -> str:
    return str(np.datetime64(t, "s"))


def score(forecasts: Iterable[str], truth: Sequence[str], *, variables: Sequence[str] | None = None,
          done: set[tuple] = frozenset()) -> list[SkillRecord]:
    """Records for every forecast step whose valid time the truth holds (skipping `done` keys)."""
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    records = []
    with _truth_fields(truth) as fields:
        for forecast in forecasts:
            for uri in _step_files(forecast):
                with local_copy(uri) as path, xr.open_dataset(path) as ds:
                    records += _score_file(ds, forecast, fields, variables, done, now)
    return records


def _score_file(ds: xr.Dataset, forecast: str, fields: dict[str, Field], variables, done, now) -> list[SkillRecord]:
    variant = ds.attrs.get("aurora_variant", "unknown")
    if "lead_time" not in ds.coords or "forecast_reference_time" not in ds.coords:
        raise DataError("not a forecast of this project: no lead_time / forecast_reference_time coordinates",
                        source=forecast)
    init = _iso(ds.forecast_reference_time.values)
    out = []
    for name, da in ds.data_vars.items():
        name = str(name)
        if name not in fields or (variables and name not in variables) or "time" not in da.dims:
            continue
        levels = [float(v) for v in da.level.values] if "level" in da.dims else None
        for k, t in enumerate(da.time.values):
            valid = _iso(t)
            if all((forecast, valid, name, lv) in done for lv in (levels or [None])):
                continue
            truth = _truth_at(fields[name], t, levels)
            if truth is None:
                continue  # truth for this step has not arrived
            f = da.isel(time=[k]).astype("float64")
            if "member" in f.dims:  # an ensemble is watched by the error of its mean
                f = f.mean("member")
            truth = _on_forecast_grid(truth, f, forecast).assign_coords(time=f.time.values)
            if levels is not None:
                truth = truth.assign_coords(level=f.level.values)
            r = np.atleast_1d(rmse(f, truth, time_dim="time").values)
            m = np.atleast_1d(mae(f, truth, time_dim="time").values)
            lead = float(da.lead_time.values[k] / np.timedelta64(1, "h"))
            for j, lv in enumerate(levels or [None]):
                out.append(SkillRecord(variant, forecast, init, valid, lead, name, lv, float(r[j]), float(m[j]), now))
    return out


def publish(records: Iterable[SkillRecord]) -> None:
    """Set the `aurora_live_*` gauges (latest value per variant, variable, level, lead)."""
    for r in records:
        labels = (r.variant, r.variable, "" if r.level is None else f"{r.level:g}", f"{r.lead_hours:g}")
        telemetry.LIVE_RMSE.labels(*labels).set(r.rmse)
        telemetry.LIVE_MAE.labels(*labels).set(r.mae)
        telemetry.LIVE_SCORED.labels(r.variant).inc()
        telemetry.LIVE_LAST.labels(r.variant).set_to_current_time()


def read_store(uri: str) -> list[SkillRecord]:
    if not is_s3(uri) and not Path(uri).exists():
        return []
    try:
        with local_copy(uri) as path:
            lines = Path(path).read_text().splitlines()
    except DataError as e:
        if "not found" in e.message:
            return []
        raise
    try:
        return [SkillRecord(**json.loads(line)) for line in lines if line.strip()]
    except (json.JSONDecodeError, TypeError) as e:
        raise DataError(f"not a live-skill store ({e})", source=uri) from None


def append_store(uri: str, records: Sequence[SkillRecord]) -> str:
    """Rewrite the store with `records` added (atomic: a reader sees the old or the new file)."""
    text = "".join(json.dumps(asdict(r)) + "\n" for r in read_store(uri) + list(records))
    return write_atomic(uri, lambda p: Path(p).write_text(text))


def update(forecasts: Sequence[str], truth: Sequence[str], *, store: str | None = None,
           variables: Sequence[str] | None = None) -> list[SkillRecord]:
    """Score what is new, publish it as metrics and append it to `store`; return the new records."""
    done = {r.key for r in read_store(store)} if store else set()
    records = score(forecasts, truth, variables=variables, done=done)
    if records and store:
        append_store(store, records)
    publish(records)
    return records


@dataclass(frozen=True)
class SkillRule:
    """When live skill counts as degraded: the RMSE of the last `recent` days against the
    `baseline` days before them."""

    tolerance: float = 0.25
    """RMSE this much above its baseline (0.25: 25% higher) is degraded."""
    recent: timedelta = timedelta(days=7)
    baseline: timedelta = timedelta(days=28)
    min_records: int = 28
    """Records needed in the recent period and in the baseline for a comparison (28: a week
    of six-hourly steps): fewer make a ratio that weather alone pushes past the tolerance."""

    def __post_init__(self):
        if not self.tolerance > 0:
            raise DataError(f"skill tolerance must be positive, got {self.tolerance}")
        if self.min_records < 1:
            raise DataError(f"min_records must be at least 1, got {self.min_records}")


@dataclass
class SkillVerdict:
    degraded: bool
    detail: str
    ratios: dict[str, float] = field(default_factory=dict)
    """Recent RMSE over baseline RMSE, per `variable[@level] +lead h`."""


def _rms(values: list[float]) -> float:
    return float(np.sqrt(np.mean(np.square(values))))


def _days(t: timedelta) -> str:
    return f"{t / timedelta(days=1):g} days"


def judge(records: Sequence[SkillRecord], variant: str, end, rule: SkillRule = SkillRule()) -> SkillVerdict:
    """Did the skill of `variant` degrade in the `rule.recent` days up to `end` (a valid time)?

    Per variable, level and lead time with `min_records` records in both periods, the RMSE
    of the recent records (root of their mean squared RMSE, as WeatherBench 2 averages) is
    compared with the baseline's; skill degraded when any ratio reaches 1 + `tolerance`.
    Weather alone moves an RMSE: the tolerance must stay above that (see docs/monitoring.md).
    """
    end = np.datetime64(end, "s")
    start = end - np.timedelta64(int(rule.recent.total_seconds()), "s")
    first = start - np.timedelta64(int(rule.baseline.total_seconds()), "s")
    recent: dict[str, list[float]] = {}
    baseline: dict[str, list[float]] = {}
    for r in records:
        if r.variant != variant:
            continue
        valid = np.datetime64(r.valid_time, "s")
        key = f"{r.variable}{'' if r.level is None else f'@{r.level:g}'} +{r.lead_hours:g} h"
        if start < valid <= end:
            recent.setdefault(key, []).append(r.rmse)
        elif first < valid <= start:
            baseline.setdefault(key, []).append(r.rmse)
    ratios = {k: _rms(recent[k]) / _rms(baseline[k]) for k in sorted(recent.keys() & baseline.keys())
              if min(len(recent[k]), len(baseline[k])) >= rule.min_records and _rms(baseline[k]) > 0}
    if not ratios:
        return SkillVerdict(False, f"no skill to judge: fewer than {rule.min_records} scored steps of {variant} "
                                   f"in the {_days(rule.recent)} to {end} or in the {_days(rule.baseline)} before")
    worst = max(ratios, key=ratios.get)
    degraded = ratios[worst] >= 1 + rule.tolerance
    detail = (f"RMSE of {worst} over the {_days(rule.recent)} to {end}: {ratios[worst]:.2f}x the "
              f"{_days(rule.baseline)} before ({'at or above' if degraded else 'below'} the "
              f"{1 + rule.tolerance:.2f}x that is degraded)")
    return SkillVerdict(degraded, detail, ratios)
