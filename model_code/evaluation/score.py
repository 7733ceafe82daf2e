"""Score forecasts against a truth: every metric, region and lead time in one pass per chunk.

`evaluate` takes the model's forecast and its baselines (persistence, climatology, a
champion, another model's output) in the stacked layout, checks each against the truth
(`forecasts.align`), and reads every variable in chunks of lead times: the error of a
chunk is formed once and feeds all metrics and regions (`metrics.deterministic_np`), so
memory stays bounded by the chunk, not by the whole forecast.

What cannot be scored is never a silent number: a variable the truth lacks, a region or
lead time without a valid point, a threshold no event reaches — each is an entry of
`Scores.excluded` with its reason.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import xarray as xr

from model_code.errors import DataError
from model_code.evaluation import metrics as m
from model_code.evaluation.baselines import climatology_values
from model_code.evaluation.forecasts import INIT, LEAD, MEMBER, _on_grid_of, align, check_leads, truth_like
from model_code.evaluation.metric_names import DEFAULT_METRICS
from model_code.evaluation.regions import WHOLE_GRID, describe_grid, region_masks, sea_from_data, whole_grid_region
from model_code.storage import local_copy, write_atomic

LOWER_IS_BETTER = frozenset({"rmse", "mae", "crps", "far", "rmse_log", "mae_log"})
ABS_LOWER_IS_BETTER = frozenset({"bias", "bias_log"})
HIGHER_IS_BETTER = frozenset({"acc", "csi", "ets", "hit_rate"})
CLOSER_TO_ONE = frozenset({"spread_skill"})
DESCRIPTIVE = frozenset({"rank_histogram"})
"""Metrics that describe a forecast and have no better or worse value: never gated or ranked."""
TIE_SEED = 0
"""Seed of the generator that breaks ties of the truth with members in rank histograms."""
CHUNK_BYTES = 64 * 2**20
"""Bytes of forecast values (lead times of one variable) read per chunk; at least one lead
time is read, and the work arrays of a chunk take about six times its size."""


def _refuse_descriptive(metric: str) -> None:
    if metric in DESCRIPTIVE:
        raise DataError(f"'{metric}' is descriptive: a frequency per rank, flat when the ensemble is reliable, "
                        "so no value of it is better than another; compare crps or spread_skill instead")


def better(metric: str, a: float, b: float) -> bool:
    """True when score `a` is strictly better than `b` for `metric`.

    Lower is better for rmse, mae, crps, far (and their log-space forms); smaller |bias|
    is better; higher is better for acc, csi, ets, hit_rate; a spread-skill ratio closer
    to 1 is better. A NaN is never better. A descriptive metric (rank_histogram) has no
    order: asking is a `DataError`.
    """
    _refuse_descriptive(metric)
    if not (math.isfinite(a) and math.isfinite(b)):
        return math.isfinite(a) and not math.isfinite(b)
    if metric in LOWER_IS_BETTER:
        return a < b
    if metric in ABS_LOWER_IS_BETTER:
        return abs(a) < abs(b)
    if metric in HIGHER_IS_BETTER:
        return a > b
    if metric in CLOSER_TO_ONE:
        return abs(a - 1) < abs(b - 1)
    raise DataError(f"no ordering known for metric '{metric}'")


def skill(metric: str, model: float | None, reference: float | None) -> float | None:
    """How much better `model` is than `reference` at `metric` (positive: better; 0: as good).

    A form that stays finite when the reference is near its perfect value, unlike a
    percentage of it:

    - rmse, rmse_log: the MSE skill score ``1 - rmse² / rmse_ref²`` (1 perfect, < 0 worse);
    - mae, mae_log, crps: ``1 - x / x_ref``;
    - bias, bias_log: the reduction of the bias's magnitude, ``(|b_ref| - |b|) / max(|b_ref|, |b|)``,
      in [-1, 1];
    - spread_skill: the same on the distance from 1, ``|1 - s_ref|`` against ``|1 - s|``;
    - acc, csi, ets, hit_rate: the difference ``x - x_ref``; far: ``far_ref - far``.

    None when a value is missing or not finite, or a ratio's reference is 0 (perfect). A
    descriptive metric (rank_histogram) has no skill: asking is a `DataError`.
    """
    _refuse_descriptive(metric)
    if model is None or reference is None or not (math.isfinite(model) and math.isfinite(reference)):
        return None
    if metric in ("rmse", "rmse_log"):
        return None if reference == 0 else 1.0 - (model / reference) ** 2
    if metric in ("mae", "mae_log", "crps"):
        return None if reference == 0 else 1.0 - model / reference
    if metric in ABS_LOWER_IS_BETTER | CLOSER_TO_ONE:
        a, b = (abs(reference), abs(model)) if metric in ABS_LOWER_IS_BETTER else (abs(1 - reference), abs(1 - model))
        return 0.0 if max(a, b) == 0 else (a - b) / max(a, b)
    if metric in HIGHER_IS_BETTER:
        return model - reference
    if metric in LOWER_IS_BETTER:
        return reference - model
    raise DataError(f"no ordering known for metric '{metric}'")


@dataclass(frozen=True)
class Threshold:
    """Events ``x >= value`` (``<=`` when `below`); `quantile` instead takes the truth's local quantile.

    A quantile threshold is the `quantile` of the truth at each grid point over its time
    axis (local extremes). `level` restricts it to one pressure level (hPa).
    """

    variable: str
    value: float | None = None
    quantile: float | None = None
    below: bool = False
    level: float | None = None

    def __post_init__(self):
        if (self.value is None) == (self.quantile is None):
            raise DataError(f"threshold for '{self.variable}': give exactly one of value or quantile")

    @property
    def label(self) -> str:
        op = "<=" if self.below else ">="
        return f"{op}q{self.quantile:g}" if self.quantile is not None else f"{op}{self.value:g}"


@dataclass
class Scores:
    """Score records of one evaluation and what was left out (with reasons).

    A record: ``{"forecast", "variable", "level" (hPa or None), "region", "lead_hours",
    "metric", "value"}``, plus ``"threshold"`` for threshold metrics and ``"rank"`` (0..M)
    for ``rank_histogram``, which has one record per rank (the value: its frequency).
    """

    records: list[dict]
    excluded: list[dict] = field(default_factory=list)
    variant: str | None = None
    truth: str | None = None
    notes: list[str] = field(default_factory=list)
    """What a reader must know to trust the numbers: where the climatology came from (or why
    it was left out), the domain the regions cover, cuts of the truth."""
    subject: dict = field(default_factory=dict)
    """What was scored against what: `model` and `champion` (`checkpoint_sha256`, registry
    `version` when known), `data_hash`, `leads_hours`, `inits` (first, last, count). The
    registry refuses to promote on scores whose subject is another model or champion."""

    def to_json(self, uri: str) -> str:
        """Write ``{"variant", "truth", "subject", "notes", "records", "excluded"}`` atomically (local or s3://)."""
        text = json.dumps({"variant": self.variant, "truth": self.truth, "subject": self.subject,
                           "notes": self.notes, "records": self.records, "excluded": self.excluded},
                          indent=1, allow_nan=False)
        return write_atomic(uri, lambda path: Path(path).write_text(text))

    @classmethod
    def from_json(cls, uri: str) -> Scores:
        with local_copy(uri) as path:
            try:
                doc = json.loads(Path(path).read_text())
                return cls(list(doc["records"]), list(doc.get("excluded", [])), doc.get("variant"), doc.get("truth"),
                           list(doc.get("notes", [])), dict(doc.get("subject") or {}))
            except (ValueError, KeyError, TypeError) as err:
                raise DataError(f"not a scores file ({err})", source=str(uri)) from err

    def select(self, **where) -> list[dict]:
        """Records whose fields equal the given values (e.g. ``forecast="model", metric="rmse"``)."""
        return [r for r in self.records if all(r.get(k) == v for k, v in where.items())]

    def value(self, forecast: str, variable: str, metric: str, lead_hours: float, level: float | None = None,
              region: str | None = None, threshold: str | None = None, rank: int | None = None) -> float:
        """The one value of a (forecast, variable, level, region, lead, metric[, threshold][, rank])
        cell; `region` None is the whole grid (`global` or `domain`)."""
        where = dict(forecast=forecast, variable=variable, metric=metric, lead_hours=float(lead_hours),
                     level=None if level is None else float(level))
        if region is not None:
            where["region"] = region
        if threshold is not None:
            where["threshold"] = threshold
        if rank is not None:
            where["rank"] = int(rank)
        found = [r for r in self.select(**where) if region is not None or r["region"] in WHOLE_GRID]
        if len(found) != 1:
            raise self._not_one(found, where, region)
        return found[0]["value"]

    def _not_one(self, found: list[dict], where: dict, region: str | None) -> DataError:
        """The error for a cell that holds `found` records instead of one, with why it was excluded."""
        reasons = [e["reason"] for e in self.excluded
                   if e["forecast"] == where["forecast"] and e["variable"] in (where["variable"], "*")
                   and e["region"] in ((region, None) if region else (*WHOLE_GRID, None))
                   and e["metric"] in (where["metric"], None)]
        return DataError(f"{len(found)} score(s) for {where}" + (f"; excluded: {reasons[0]}" if reasons else ""))

    def rank_histogram(self, forecast: str, variable: str, lead_hours: float, level: float | None = None,
                       region: str | None = None) -> list[float]:
        """The frequencies of ranks 0..M of one cell, in rank order (`region` None: the whole grid)."""
        where = dict(forecast=forecast, variable=variable, metric="rank_histogram", lead_hours=float(lead_hours),
                     level=None if level is None else float(level))
        if region is not None:
            where["region"] = region
        found = [r for r in self.select(**where) if region is not None or r["region"] in WHOLE_GRID]
        if not found:
            raise self._not_one(found, where, region)
        ranks = sorted(found, key=lambda r: r["rank"])
        if [r["rank"] for r in ranks] != list(range(len(ranks))):
            raise DataError(f"ranks {[r['rank'] for r in ranks]} for {where} are not 0..M once each")
        return [r["value"] for r in ranks]

    def forecasts(self) -> list[str]:
        return list(dict.fromkeys(r["forecast"] for r in self.records))


# ---- evaluation -------------------------------------------------------------------------------

def _level(v) -> float | None:
    return None if v is None else float(v)


class _Collector:
    """Turns metric arrays (lead, [level], region) into records and exclusions."""

    def __init__(self, regions: Sequence[str]):
        self.regions = list(regions)
        self.records: list[dict] = []
        self.excluded: list[dict] = []

    def exclude(self, forecast, variable, reason, *, level=None, region=None, lead_hours=None, metric=None):
        self.excluded.append({"forecast": forecast, "variable": variable, "level": _level(level), "region": region,
                              "lead_hours": lead_hours, "metric": metric, "reason": reason})

    def add(self, forecast: str, variable: str, levels, lead_hours, values: Mapping[str, np.ndarray],
            extra: dict | None = None):
        """`values[metric]` has shape (lead, level, region); NaN cells become exclusions."""
        for metric, arr in values.items():
            for k, lev in enumerate(levels):
                for r, region in enumerate(self.regions):
                    cells = arr[:, k, r]
                    if not np.isfinite(cells).any():
                        self.exclude(forecast, variable, "no valid value at any lead time (all NaN, no valid "
                                     "point in the region, or no event)", level=lev, region=region, metric=metric)
                        continue
                    for i, lead in enumerate(lead_hours):
                        if np.isfinite(cells[i]):
                            self.records.append({"forecast": forecast, "variable": variable, "level": _level(lev),
                                                 "region": region, "lead_hours": float(lead), "metric": metric,
                                                 "value": float(cells[i]), **(extra or {})})
                        else:
                            self.exclude(forecast, variable, "no valid value at this lead time", level=lev,
                                         region=region, lead_hours=float(lead), metric=metric)

    def add_ranked(self, forecast: str, variable: str, levels, lead_hours, metric: str, values: np.ndarray):
        """`values` has shape (lead, level, rank, region): one record per rank, with a ``rank`` field."""
        for k, lev in enumerate(levels):
            for r, region in enumerate(self.regions):
                cells = values[:, k, :, r]
                if not np.isfinite(cells).any():
                    self.exclude(forecast, variable, "no valid value at any lead time (all NaN, or no valid "
                                 "point in the region)", level=lev, region=region, metric=metric)
                    continue
                for i, lead in enumerate(lead_hours):
                    if not np.isfinite(cells[i]).all():
                        self.exclude(forecast, variable, "no valid value at this lead time", level=lev,
                                     region=region, lead_hours=float(lead), metric=metric)
                        continue
                    self.records += [{"forecast": forecast, "variable": variable, "level": _level(lev),
                                      "region": region, "lead_hours": float(lead), "metric": metric,
                                      "value": float(v), "rank": j} for j, v in enumerate(cells[i])]


def _with_derived(ds: xr.Dataset) -> xr.Dataset:
    """Adds ``wind10`` = sqrt(u10² + v10²) (m s-1) where both components are present."""
    if "u10" in ds and "v10" in ds and "wind10" not in ds:
        ds = ds.assign(wind10=np.hypot(ds["u10"], ds["v10"]).assign_attrs(
            units=ds["u10"].attrs.get("units", "m s-1"), long_name="10 metre wind speed"))
    return ds


def _lead_chunks(da: xr.DataArray, budget: int) -> list[slice]:
    per_lead = da.dtype.itemsize * da.size // max(da.sizes[LEAD], 1)
    step = max(1, budget // max(per_lead, 1))
    return [slice(i, i + step) for i in range(0, da.sizes[LEAD], step)]


def _log(x: np.ndarray, floor: float) -> np.ndarray:
    return np.log(np.maximum(x, 0.0) + floor)


def _floating(x: np.ndarray) -> np.ndarray:
    """Float32 stays float32 (sums are still taken in float64), anything else becomes float64."""
    return x if x.dtype in (np.float32, np.float64) else x.astype("float64")


def _levels_axis(x: np.ndarray, has_level: bool) -> np.ndarray:
    """Insert a level axis of size 1 for surface fields: (T, L, [M], Y, X) -> (T, L, [M], 1, Y, X)."""
    return x if has_level else np.expand_dims(x, -3)


def _score_variable(col: _Collector, name: str, var: str, fc: xr.DataArray, truth: xr.DataArray, wm: np.ndarray,
                    metric_set: set[str], clim: xr.DataArray | None, log_floor: float | None,
                    thresholds: Sequence[tuple[Threshold, np.ndarray | float]], chunk_bytes: int,
                    point_crps: bool = False) -> None:
    member = MEMBER in fc.dims
    has_level = "level" in fc.dims
    order = [INIT, LEAD] + ([MEMBER] if member else []) + (["level"] if has_level else []) + ["latitude", "longitude"]
    fc = fc.transpose(*order)
    levels = list(fc["level"].values) if has_level else [None]
    inits, leads = fc[INIT].values, fc[LEAD].values
    lead_hours = leads / np.timedelta64(1, "h")
    det = [k for k in ("rmse", "mae", "bias", "acc") if k in metric_set and (k != "acc" or clim is not None)]
    ens = [k for k in ("crps", "spread_skill") if k in metric_set and member]
    ranked = member and "rank_histogram" in metric_set
    point = point_crps and not member and "crps" in metric_set
    ties = np.random.default_rng(TIE_SEED)
    histograms: list[np.ndarray] = []
    logm = [k for k in ("rmse", "bias") if log_floor is not None and k in metric_set]
    results: dict[str, list[np.ndarray]] = {}
    cats: dict[str, dict[str, list[np.ndarray]]] = {t.label: {} for t, _ in thresholds}

    for sl in _lead_chunks(fc, chunk_bytes):
        f = _levels_axis(_floating(fc.isel({LEAD: sl}).values), has_level)
        o = _levels_axis(_floating(truth_like(truth, inits, leads[sl])), has_level)
        fd = f.mean(axis=2) if member else f  # deterministic scores of an ensemble: its mean
        c = None
        if "acc" in det:
            valid = (inits[:, None] + leads[sl][None, :]).ravel()
            c = climatology_values(clim, valid)
            c = _levels_axis(c.reshape(len(inits), -1, *c.shape[1:]), has_level)
        parts = m.deterministic_np(fd, o, wm, det, c) if det else {}
        if ens:
            parts.update(m.ensemble_np(np.moveaxis(f, 2, 1), o, wm, ens))
        if ranked:
            histograms.append(m.rank_histogram_np(np.moveaxis(f, 2, 1), o, wm, ties)["rank_histogram"])
        if point:  # the CRPS of a point forecast is its absolute error
            parts["crps"] = parts["mae"] if "mae" in parts else m.deterministic_np(fd, o, wm, ["mae"])["mae"]
        if logm:
            logs = m.deterministic_np(_log(fd, log_floor), _log(o, log_floor), wm, logm)
            parts.update({f"{k}_log": logs[k] for k in logm})
        for k, v in parts.items():
            if k != "valid_weight":
                results.setdefault(k, []).append(v)
        for t, thr in thresholds:  # counts summed over inits: (lead, level, region)
            out = m.contingency_np(fd, o, wm, thr, below=t.below)
            for k in m.CATEGORICAL:
                cats[t.label].setdefault(k, []).append(out[k])
    col.add(name, var, levels, lead_hours, {k: np.concatenate(v, axis=0) for k, v in results.items()})
    if histograms:
        col.add_ranked(name, var, levels, lead_hours, "rank_histogram", np.concatenate(histograms, axis=0))
    for label, vals in cats.items():
        col.add(name, var, levels, lead_hours, {k: np.concatenate(v, axis=0) for k, v in vals.items()},
                extra={"threshold": label})


def _threshold_fields(thresholds: Iterable[Threshold], truth: xr.Dataset, var: str, fc: xr.DataArray):
    """(Threshold, value or (level, lat, lon) field) pairs that apply to `var`."""
    out = []
    for t in thresholds:
        if t.variable != var:
            continue
        if t.quantile is None:
            out.append((t, float(t.value)))
            continue
        q = m.quantile_threshold(truth[var], t.quantile)
        q = q.transpose(*(["level"] if "level" in q.dims else []), "latitude", "longitude").values
        out.append((t, q if q.ndim == 3 else q[None]))
    return out


def _climatology_on(clim: xr.Dataset, model: xr.Dataset) -> xr.Dataset:
    """`clim` on the model's grid and levels; raises naming what differs."""
    clim = _on_grid_of(clim, model, "the model")
    if "level" in clim.dims and "level" in model.dims and not (
            clim.sizes["level"] == model.sizes["level"] and np.allclose(clim["level"], model["level"])):
        lost = [float(x) for x in model["level"].values if x not in clim["level"].values]
        if lost:
            raise DataError(f"the climatology lacks level(s) {lost} hPa; it has {clim['level'].values.tolist()}")
        clim = clim.sel(level=model["level"].values)
    return clim


def evaluate(
    forecasts: Mapping[str, xr.Dataset],
    truth: xr.Dataset,
    *,
    climatology: xr.Dataset | None = None,
    regions: Sequence[str] | None = None,
    metrics: Sequence[str] = DEFAULT_METRICS,
    thresholds: Sequence[Threshold] | None = None,
    variables: Sequence[str] | None = None,
    lsm: xr.DataArray | None = None,
    log_floors: Mapping[str, float] | None = None,
    variant: str | None = None,
    truth_name: str | None = None,
    derived: bool = True,
    chunk_bytes: int = CHUNK_BYTES,
    point_crps: bool = False,
) -> Scores:
    """Score each forecast of `forecasts` (the first is the model) against `truth`.

    - `forecasts`: name -> stacked dataset (init_time, lead_time, [member], [level], lat, lon);
      a per-init `forecast()` output is accepted too. Baselines must cover the model's
      init and lead times.
    - `truth`: dataset with a ``time`` axis of valid times, on the forecasts' grid.
    - `climatology`: from `baselines.climatology`; needed for ``acc`` (else ACC is excluded).
    - `regions`: names understood by `regions.region_mask` (default: the whole grid, `global`
      or, for a regional grid, `domain`, whose box the notes give); land/sea/coastal regions use
      `lsm`, else an ``lsm`` variable of the truth, else (waves) the truth's NaN pattern.
    - `metrics`: any of rmse, mae, bias, acc, crps, spread_skill, rank_histogram (ensemble
      metrics apply to forecasts with a ``member`` dim; deterministic ones use the ensemble
      mean). A rank histogram is one record per rank, ties broken with seed `TIE_SEED`.
    - `thresholds`: `Threshold`s giving hit_rate, far, csi and ets records.
    - `log_floors`: variable -> floor ``ε``; adds rmse_log and bias_log on ``ln(max(x, 0) + ε)``.
    - `derived`: add ``wind10`` (10 m wind speed) when u10 and v10 are present.
    - `point_crps`: score ``crps`` of forecasts without a ``member`` dim too, as the CRPS of a
      point forecast, its mean absolute error (Gneiting & Raftery 2007), so that deterministic
      baselines (persistence, climatology) can be compared with an ensemble on CRPS.
    """
    if not forecasts:
        raise DataError("no forecast to evaluate")
    unknown = [k for k in metrics if k not in m.DETERMINISTIC + m.ENSEMBLE]
    if unknown:
        raise DataError(f"unknown metric(s) {unknown}; expected some of {m.DETERMINISTIC + m.ENSEMBLE} "
                        "(threshold metrics come from thresholds=)")
    metric_set = set(metrics)
    truth = _with_derived(truth) if derived else truth
    names = list(forecasts)
    aligned: dict[str, tuple[xr.Dataset, xr.Dataset, list[str]]] = {}
    model = None
    for name in names:
        fc = _with_derived(forecasts[name]) if derived else forecasts[name]
        fc, tr, missing = align(fc, truth, name=name, variables=[v for v in (variables or fc.data_vars) if v in fc])
        if model is None:
            model = fc
        else:
            fc = check_leads(fc, model, name)
        aligned[name] = (fc, tr, missing)

    ref = aligned[names[0]][1]
    if climatology is not None:
        climatology = _climatology_on(climatology, aligned[names[0]][0])
    lat, lon = ref["latitude"].values, ref["longitude"].values
    regions = list(regions) if regions else [whole_grid_region(lat, lon)]
    if lsm is None and "lsm" in ref:  # the truth's own mask, already on the forecast grid (align)
        lsm = ref["lsm"].isel(time=0, drop=True) if "time" in ref["lsm"].dims else ref["lsm"]
    needs_lsm = any(r.split(":")[0] in ("land", "sea", "coastal", "coastal-land") for r in regions)
    if needs_lsm and lsm is None:
        nan_vars = [v for v in ref.data_vars if np.isnan(ref[v].values).any()]
        if nan_vars:
            lsm = sea_from_data(ref[nan_vars[0]])
    masks = region_masks(regions, lat, lon, lsm=lsm)
    wm = m.region_weights(masks, lat)
    col = _Collector(regions)
    for r, region in enumerate(regions):
        if not masks.values[r].any():
            raise DataError(f"region '{region}' holds no point of the {len(lat)}x{len(lon)} grid "
                            f"(latitudes {lat.min():g}..{lat.max():g}, longitudes {lon.min():g}..{lon.max():g})")

    model_vars = list(aligned[names[0]][0].data_vars)
    for name in names:
        fc, tr, missing = aligned[name]
        for var in missing:
            col.exclude(name, var, "the truth has no such variable")
        for var in model_vars:
            if var not in fc.data_vars and var not in missing:
                col.exclude(name, var, "this forecast has no such variable")
        for var in fc.data_vars:
            clim = None
            if climatology is not None and var in climatology:
                clim = climatology[var]
            elif "acc" in metric_set and climatology is not None:
                col.exclude(name, var, "the climatology has no such variable", metric="acc")
            thr = _threshold_fields(thresholds or (), tr, var, fc[var])
            floor = (log_floors or {}).get(var)
            _score_variable(col, name, var, fc[var], tr[var], wm, metric_set, clim, floor, thr, chunk_bytes,
                            point_crps)
    if "acc" in metric_set and climatology is None:
        col.exclude(names[0], "*", "no climatology given, so no ACC", metric="acc")
    notes = [f"regions: {describe_grid(lat, lon)}"]
    return Scores(col.records, col.excluded, variant, truth_name, notes)


# ---- variant targets ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    """One headline score of a variant: what promotion gates and scorecards compare.

    `lead_hours` None means every scored lead time; `threshold` is a `Threshold.label`.
    """

    variable: str
    metric: str
    level: float | None = None
    lead_hours: tuple[float, ...] | None = None
    region: str | None = None
    """None: the whole grid (`global`, or `domain` on a regional grid)."""
    threshold: str | None = None

    @property
    def label(self) -> str:
        lev = f"{self.level:g}" if self.level is not None else ""
        thr = f" {self.threshold}" if self.threshold else ""
        return f"{self.variable}{lev} {self.metric}{thr} ({self.region or 'whole grid'})"


_DAYS_3_TO_5 = (72.0, 96.0, 120.0)
_SPECIES = ("pm1", "pm2p5", "pm10", "tcco", "tc_no", "tcno2", "gtco3", "tcso2")
LOG_FLOORS = {"pm1": 1e-11, "pm2p5": 1e-11, "pm10": 1e-11, "tcco": 1e-6, "tc_no": 1e-10, "tcno2": 1e-9,
              "gtco3": 1e-5, "tcso2": 1e-9}
"""ε of the log-space scores, ``ln(x + ε)``: about 1/1000 of a typical background value of each
species (kg m-3 for particulate matter, kg m-2 for total columns), so clean air does not
dominate the log error."""

_EXTREMES = (Threshold("wind10", quantile=0.99), Threshold("t2m", quantile=0.99),
             Threshold("t2m", quantile=0.01, below=True))


_MEDIUM_RANGE_FIELDS = (("z", 500.0), ("t", 850.0), ("t2m", None), ("wind10", None))
TARGET_VARIANTS = ("medium-range", "medium-range-v1.5", "ensemble-v1.5", "high-res", "air-pollution", "wave")
"""Every variant `targets` knows."""


def targets(variant: str) -> tuple[Target, ...]:
    """The target scores of `variant` (issue 5 item 3), in the order scorecards show them.

    - medium-range: z500, t850, 2 m temperature and 10 m wind speed RMSE and ACC at days
      3-5, and their CRPS when the forecast is an ensemble;
    - medium-range-v1.5: the same RMSE and ACC (a deterministic model: no CRPS);
    - ensemble-v1.5: fair CRPS (what gates compare) and the spread-skill ratio (a diagnostic)
      of the same fields at days 3-5;
    - high-res: CSI and ETS of local extremes (above the local 99th percentile of 10 m wind
      speed and 2 m temperature, below the 1st percentile of 2 m temperature);
    - air-pollution: RMSE and bias of every species in linear and log space;
    - wave: MAE of significant wave height and mean wave period in the coastal band.
    """
    medium_range = {"medium-range": ("rmse", "acc", "crps"), "medium-range-v1.5": ("rmse", "acc"),
                    "ensemble-v1.5": ("crps", "spread_skill")}
    if variant in medium_range:
        return tuple(Target(v, k, lev, _DAYS_3_TO_5)
                     for k in medium_range[variant] for v, lev in _MEDIUM_RANGE_FIELDS)
    if variant == "high-res":
        return tuple(Target(t.variable, k, threshold=t.label) for t in _EXTREMES for k in ("csi", "ets"))
    if variant == "air-pollution":
        return tuple(Target(v, k) for v in _SPECIES for k in ("rmse", "bias", "rmse_log", "bias_log"))
    if variant == "wave":
        return tuple(Target(v, "mae", region="coastal") for v in ("swh", "mwp"))
    raise DataError(f"no targets for variant '{variant}'; expected one of: {', '.join(TARGET_VARIANTS)}")


def target_options(variant: str, grid: xr.Dataset | None = None) -> dict:
    """`evaluate` keyword arguments that make every target of `variant` scorable on the
    latitudes and longitudes of `grid` (default: a global grid); for ensemble-v1.5, CRPS of
    the deterministic baselines too (`point_crps`), which its gates compare with."""
    ts = targets(variant)
    whole = "global" if grid is None else whole_grid_region(grid["latitude"].values, grid["longitude"].values)
    regions = tuple(dict.fromkeys((whole, *(t.region or whole for t in ts))))
    options: dict = {"regions": regions}
    if variant == "high-res":
        options["thresholds"] = _EXTREMES
    if variant == "air-pollution":
        options["log_floors"] = LOG_FLOORS
    if variant == "ensemble-v1.5":
        options["point_crps"] = True
    return options
