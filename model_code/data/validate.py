"""Validate meteorological data before any compute is spent on it.

`validate(uris, spec)` opens every source the way ingest does and reports, as `Finding`s:

- structure: unreadable files, coordinates that cannot be fixed (errors) and those that
  are fixed on the way in (warnings: flipped latitudes, rolled longitudes, Pa levels);
- time: duplicates and order (errors), gaps listed with their dates, irregular steps;
- values, in one pass over the data chunk by chunk (memory bounded by the chunk, not the
  dataset): NaN share against each variable's policy, infinities, physical bounds,
  constant fields, robust outliers, and units that look wrong (K vs °C, Pa vs hPa,
  geopotential vs geopotential height, kg/kg vs g/kg, ...) with a hint how to fix them;
- with a variant: its input contract (variables, levels, grid against the patch size,
  history) on the merged inputs.

Statistics and coverage gathered in the pass go into the report for the audit.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
import xarray as xr

from model_code.data.contract import grid_fit_problem
from model_code.data.findings import Finding, Report
from model_code.data.ingest import Field, Source, merge_sources, read_source
from model_code.data.policy import Policy
from model_code.errors import DataError
from model_code.storage import local_copy
from model_code.variables import G0
from model_code.variants import VariantSpec


# --------------------------------------------------------------------------------------
# One pass over one variable


@dataclass
class _Accumulator:
    """Running statistics of one variable, per level, over chunks of time."""

    n_levels: int
    edges: np.ndarray | None = None  # histogram edges, fixed by the first chunk
    count: np.ndarray = None  # finite values per level
    nan: np.ndarray = None
    inf: np.ndarray = None
    total: np.ndarray = None
    sum: np.ndarray = None
    sumsq: np.ndarray = None
    min: np.ndarray = None
    max: np.ndarray = None
    argmin: list = None  # (time index, lat index, lon index) per level
    argmax: list = None
    hist: np.ndarray = None
    nan_by_time: list = field(default_factory=list)  # share of non-finite values per time
    constant_times: list = field(default_factory=list)  # (time index, level index)
    below: np.ndarray = None  # values under / over the physical bounds, per level
    above: np.ndarray = None
    first_out_of_bounds: tuple | None = None

    def __post_init__(self) -> None:
        n = self.n_levels
        self.count, self.nan, self.inf, self.total = (np.zeros(n, np.int64) for _ in range(4))
        self.sum, self.sumsq = np.zeros(n), np.zeros(n)
        self.min, self.max = np.full(n, np.inf), np.full(n, -np.inf)
        self.argmin, self.argmax = [None] * n, [None] * n
        self.below, self.above = np.zeros(n, np.int64), np.zeros(n, np.int64)

    def update(self, x: np.ndarray, t0: int, bounds: tuple, policy: Policy) -> None:
        """Add a chunk x of shape (t, levels, lat, lon), whose first time has index t0.

        Every reduction works per (time, level) slice and is then summed in float64, so the
        result does not depend on how the data were chunked. In the common all-finite case
        the chunk is read about five times: isfinite, min, max, sum, sum of squares.
        """
        nt, nl, h, w = x.shape
        finite = np.isfinite(x)  # (t, l, h, w)
        all_finite = bool(finite.all())
        per_slice = np.full((nt, nl), h * w) if all_finite else finite.sum(axis=(2, 3))  # (t, l)
        self.total += nt * h * w
        self.count += per_slice.sum(axis=0)
        zeros = x  # for sums: non-finite values as 0 (they are counted apart)
        if not all_finite:
            n_inf = np.isinf(x).sum(axis=(0, 2, 3))
            self.inf += n_inf
            self.nan += (~finite).sum(axis=(0, 2, 3)) - n_inf
            zeros = np.where(finite, x, np.float32(0))
            x = np.where(finite, x, np.float32(np.nan))  # for min/max, extremes, histogram, bounds
        del finite
        self.nan_by_time.extend((1.0 - per_slice.sum(axis=1) / (h * w * nl)).tolist())

        with warnings_off():  # all-NaN slices (land-only wave rows) are expected
            lo = x.min(axis=(2, 3)) if all_finite else np.nanmin(x, axis=(2, 3))  # (t, l)
            hi = x.max(axis=(2, 3)) if all_finite else np.nanmax(x, axis=(2, 3))
        flat = (lo == hi) & (per_slice > 1)
        self.constant_times.extend((t0 + int(t), int(l)) for t, l in zip(*np.nonzero(flat)))

        rows = zeros.reshape(nt * nl, h * w)  # one row per (time, level) slice
        self.sum += rows.sum(axis=1).reshape(nt, nl).sum(axis=0, dtype=np.float64)
        squares = np.fromiter((np.dot(row, row) for row in rows), np.float64, nt * nl)  # BLAS: one pass
        self.sumsq += squares.reshape(nt, nl).sum(axis=0)
        self._extremes(x, lo, hi, t0)
        self._histogram(x, bounds, policy)
        self._bounds(x, lo, hi, t0, bounds)

    def _extremes(self, x, lo, hi, t0) -> None:
        with warnings_off():
            chunk_min, chunk_max = np.nanmin(lo, axis=0), np.nanmax(hi, axis=0)  # (l,)
        for level in range(x.shape[1]):
            if chunk_min[level] < self.min[level]:
                self.min[level] = chunk_min[level]
                t = int(np.nanargmin(lo[:, level]))
                i, j = np.unravel_index(int(np.nanargmin(x[t, level])), x.shape[2:])
                self.argmin[level] = (t0 + t, int(i), int(j))
            if chunk_max[level] > self.max[level]:
                self.max[level] = chunk_max[level]
                t = int(np.nanargmax(hi[:, level]))
                i, j = np.unravel_index(int(np.nanargmax(x[t, level])), x.shape[2:])
                self.argmax[level] = (t0 + t, int(i), int(j))

    def _histogram(self, x, bounds, policy: Policy) -> None:
        sample = x[:, :, :: policy.subsample, :: policy.subsample]  # (t, l, h/s, w/s) view
        if self.edges is None:
            lo, hi = bounds
            if lo is None or hi is None:  # no physical range (some statics): the data's own
                with warnings_off():
                    lo, hi = float(np.nanmin(sample)), float(np.nanmax(sample))
                if not np.isfinite(lo):
                    return
                span = max(hi - lo, abs(hi) * 1e-6, 1e-12)
                lo, hi = lo - span, hi + span
            # Edges fixed by the physical range, not by the first chunk: the result does not
            # depend on how the data are chunked.
            self.edges = np.linspace(lo, hi, policy.histogram_bins + 1)
            self.hist = np.zeros((self.n_levels, policy.histogram_bins), np.int64)
        lo, n_bins = self.edges[0], len(self.edges) - 1
        scale = n_bins / (self.edges[-1] - lo)
        for level in range(x.shape[1]):
            values = sample[:, level].ravel()
            values = values[np.isfinite(values)]
            bins = np.clip(((values - lo) * scale).astype(np.int64), 0, n_bins - 1)  # uniform bins
            self.hist[level] += np.bincount(bins, minlength=n_bins)

    def _bounds(self, x, lo, hi, t0, bounds) -> None:
        low, high = bounds
        with warnings_off():
            outside_low = low is not None and np.nanmin(lo) < low
            outside_high = high is not None and np.nanmax(hi) > high
        if not (outside_low or outside_high):
            return
        below = x < low if outside_low else np.zeros(x.shape, bool)
        above = x > high if outside_high else np.zeros(x.shape, bool)
        self.below += below.sum(axis=(0, 2, 3))
        self.above += above.sum(axis=(0, 2, 3))
        if self.first_out_of_bounds is None:
            t, level, i, j = np.argwhere(below | above)[0]
            self.first_out_of_bounds = (t0 + int(t), int(level), int(i), int(j), float(x[t, level, i, j]))

    def robust(self, level: int) -> tuple[float, float]:
        """Median and MAD (from the subsampled histogram) of one level."""
        if self.hist is None or self.hist[level].sum() == 0:
            return float("nan"), float("nan")
        centres = 0.5 * (self.edges[1:] + self.edges[:-1])
        cdf = np.cumsum(self.hist[level]) / self.hist[level].sum()
        median = float(np.interp(0.5, cdf, centres))
        deviations = np.abs(centres - median)
        order = np.argsort(deviations)
        dev_cdf = np.cumsum(self.hist[level][order]) / self.hist[level].sum()
        mad = float(deviations[order][np.searchsorted(dev_cdf, 0.5)])
        width = self.edges[1] - self.edges[0]
        return median, max(mad, width / 2)


@contextlib.contextmanager
def warnings_off():
    """All-NaN slices are expected (wave fields over land); numpy's warnings are noise here."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def _as_4d(da: xr.DataArray) -> np.ndarray:
    """(time, level, lat, lon) view of a surface, atmospheric or static block."""
    x = da.values
    if "level" not in da.dims:
        x = x[:, None] if "time" in da.dims else x[None, None]
    elif "time" not in da.dims:
        x = x[None]
    return x


def _chunks(f: Field, chunk_bytes: int) -> Iterable[tuple[int, xr.DataArray]]:
    """Blocks of consecutive times of one field, each at most `chunk_bytes` in float32."""
    if "time" not in f.data.dims:
        yield 0, f.chunk()
        return
    per_time = 4 * int(np.prod([n for d, n in f.data.sizes.items() if d != "time"]))
    step = max(1, chunk_bytes // per_time)
    for start in range(0, f.data.sizes["time"], step):
        yield start, f.chunk(time=slice(start, start + step))


def _levels(f: Field) -> list[float | None]:
    return [float(lv) for lv in f.data.level.values] if "level" in f.data.dims else [None]


def _where(f: Field, t: int | None, i: int, j: int) -> str:
    parts = []
    if t is not None and "time" in f.data.dims:
        parts.append(f"time={str(f.data.time.values[t])[:16]}")
    parts.append(f"lat={float(f.data.latitude.values[i]):g}")
    parts.append(f"lon={float(f.data.longitude.values[j]):g}")
    return ", ".join(parts)


def _value_findings(f: Field, acc: _Accumulator, policy: Policy) -> tuple[list[Finding], dict]:
    v, findings, stats = f.var, [], {}
    levels = _levels(f)
    for k, level in enumerate(levels):
        n, total = int(acc.count[k]), int(acc.total[k])
        mean = acc.sum[k] / n if n else float("nan")
        std = float(np.sqrt(max(acc.sumsq[k] / n - mean**2, 0.0))) if n else float("nan")
        median, mad = acc.robust(k)
        stats["all" if level is None else f"{level:g}"] = {
            "count": n, "nan_share": float(acc.nan[k] / total) if total else 0.0,
            "inf": int(acc.inf[k]), "min": float(acc.min[k]), "max": float(acc.max[k]),
            "mean": float(mean), "std": std, "median": median, "mad": mad,
        }
        base = dict(source=f.source, variable=f.key, level=level)
        if acc.inf[k]:
            findings.append(Finding("non_finite", "error", f"{int(acc.inf[k])} infinite value(s)",
                                    expected="finite values", found="inf", **base))
        nan_share = acc.nan[k] / total if total else 0.0
        if n == 0 and total and not v.nan_by_design:
            findings.append(Finding(
                "missing_level" if level is not None else "nan_share", "error",
                "no values at all" + (" on this level" if level is not None else ""),
                expected="values", found="only NaN", hint="drop the level or the variable, or fill it upstream",
                **base))
        elif acc.nan[k] and not v.nan_by_design:
            first = next(t for t, s in enumerate(acc.nan_by_time) if s > 0) if acc.nan_by_time else None
            findings.append(Finding(
                "nan_share", "error", f"{nan_share:.2%} of values are NaN ({int(acc.nan[k])})",
                where=f"time={str(f.data.time.values[first])[:16]}" if first is not None and "time" in f.data.dims else None,
                expected="no NaN (one NaN input pixel turns Aurora's whole output field to NaN)",
                found=f"{nan_share:.2%} NaN",
                hint="fill or mask the gaps upstream, or drop the affected times", **base))
        elif v.nan_by_design and n == 0:
            findings.append(Finding("nan_share", "warning", "every value is NaN",
                                    expected="values over sea", found="100% NaN", **base))
        if n and np.isfinite(mad) and mad > 0 and v.kind != "static":  # statics are spiky by nature
            sigma = 1.4826 * mad
            worst = max(abs(acc.max[k] - median), abs(acc.min[k] - median)) / sigma
            if worst > policy.outlier_sigmas:
                at = acc.argmax[k] if abs(acc.max[k] - median) >= abs(acc.min[k] - median) else acc.argmin[k]
                value = acc.max[k] if at is acc.argmax[k] else acc.min[k]
                findings.append(Finding(
                    "outliers", "warning",
                    f"extreme value {value:.6g} is {worst:.0f} robust standard deviations from the median {median:.6g}",
                    where=_where(f, *at), expected=f"within {policy.outlier_sigmas:g} robust sigmas",
                    found=f"{value:.6g}", **base))
    findings += _bounds_findings(f, acc, levels)
    findings += _constant_findings(f, acc, levels)
    return findings, stats


def _bounds_findings(f: Field, acc: _Accumulator, levels) -> list[Finding]:
    low, high = f.var.bounds
    outside = int(acc.below.sum() + acc.above.sum())
    if not outside:
        return []
    t, k, i, j, value = acc.first_out_of_bounds
    expected = f"[{'-inf' if low is None else f'{low:g}'}, {'inf' if high is None else f'{high:g}'}] {f.var.units}"
    return [Finding(
        "physical_bounds", "error",
        f"{outside} value(s) outside the physical range ({int(acc.below.sum())} below, {int(acc.above.sum())} above)",
        source=f.source, variable=f.key, level=levels[k], where=_where(f, t, i, j),
        expected=expected, found=f"{value:.6g} (range {np.min(acc.min):.6g} to {np.max(acc.max):.6g})",
    )]


def _constant_findings(f: Field, acc: _Accumulator, levels) -> list[Finding]:
    if not acc.constant_times:
        return []
    t, k = acc.constant_times[0]
    static = f.var.kind == "static"
    return [Finding(
        "constant_field", "warning" if static else "error",
        f"field is constant over the whole grid at {len(acc.constant_times)} time/level slice(s)",
        source=f.source, variable=f.key, level=levels[k],
        where=None if static else f"time={str(f.data.time.values[t])[:16]}",
        expected="spatially varying values", found=f"every value {acc.min[k]:.6g}",
        hint=None if static else "a constant field is usually a fill value or a failed retrieval",
    )]


# --------------------------------------------------------------------------------------
# Units that look wrong


def _standard_height(level_hpa: float) -> float:
    """Height (m) of a pressure level in the ICAO standard atmosphere (troposphere)."""
    return 44330.8 * (1.0 - (level_hpa / 1013.25) ** 0.190263)


def _units_findings(f: Field, stats: dict) -> list[Finding]:
    """Values whose magnitude says the data are in other units than their label claims."""
    key = f.key
    mean = np.nanmean([s["mean"] for s in stats.values()])
    vmax = np.nanmax([s["max"] for s in stats.values()])
    vmin = np.nanmin([s["min"] for s in stats.values()])
    base = dict(check="units", severity="error", source=f.source, variable=key)

    def finding(found: str, hint: str, severity: str = "error") -> Finding:
        return Finding(message=f"values look like {found}, not {f.var.units}",
                       expected=f"{f.var.units}", found=f"{found} (mean {mean:.6g})", hint=hint,
                       **{**base, "severity": severity})

    if f.var.units == "K" and mean < 100 and vmax < 120:
        return [finding("degrees Celsius", "set the units attribute to 'degC' (converted on read) or add 273.15")]
    if key == "msl" and 500 < mean < 1200:
        return [finding("hPa", "set the units attribute to 'hPa' (converted on read) or multiply by 100")]
    if key == "q" and vmax > 0.1:
        return [finding("g/kg", "set the units attribute to 'g kg-1' (converted on read) or divide by 1000")]
    if key == "z" and f.var.kind == "atmos":
        ratios = [s["mean"] / _standard_height(float(lv)) for lv, s in stats.items()
                  if lv != "all" and 200 <= float(lv) <= 850]
        if ratios and all(0.7 < r < 1.3 for r in ratios):
            return [finding("geopotential height in m",
                            "set the units attribute to 'm' or 'gpm' (converted on read) or multiply by 9.80665")]
    if key == "z_surface" and 100 < vmax < 9000 and vmin > -500:
        return [finding("orography in m", "if so, set the units attribute to 'm' (converted on read) or "
                        f"multiply by {G0}", severity="warning")]
    if f.var.units == "degree" and 1.0 < vmax <= 2 * np.pi + 1e-3:
        return [finding("radians", "multiply by 180/pi")]
    if f.var.units == "kg m-3" and mean > 1e-4:
        return [finding("µg m-3", "set the units attribute to 'ug m-3' (converted on read) or multiply by 1e-9")]
    if key == "lsm" and 1.5 < vmax <= 100:
        return [finding("percent", "divide by 100 (the mask is a land fraction in [0, 1])")]
    return []


# --------------------------------------------------------------------------------------
# Time and contract


def _time_findings(f: Field) -> tuple[list[Finding], dict]:
    if "time" not in f.data.dims:
        return [], {}
    times = f.data.time.values
    coverage = {"first": str(times[0]), "last": str(times[-1]), "times": int(len(times)), "gaps": []}
    if len(times) < 2:
        return [], coverage
    diffs = np.diff(times)
    values, counts = np.unique(diffs, return_counts=True)
    step = values[np.argmax(counts)]
    coverage["step_hours"] = float(step / np.timedelta64(1, "h"))
    findings = []
    gaps = [(times[i], times[i + 1]) for i in np.nonzero(diffs > step)[0]]
    for start, end in gaps:
        missing = int((end - start) / step) - 1 if (end - start) % step == np.timedelta64(0) else None
        coverage["gaps"].append({"after": str(start), "before": str(end), "missing_steps": missing})
    if gaps:
        listed = "; ".join(
            f"{str(a + step)[:16]} to {str(b - step)[:16]}" for a, b in gaps[:5]
        ) + (f"; ... ({len(gaps)} gaps in all)" if len(gaps) > 5 else "")
        findings.append(Finding(
            "time_gaps", "warning", f"{len(gaps)} gap(s) in a {coverage['step_hours']:g}-hourly series: missing {listed}",
            source=f.source, variable=f.key, expected=f"every {coverage['step_hours']:g} h",
            found=f"{len(times)} of {int((times[-1] - times[0]) / step) + 1} times"))
    irregular = diffs[(diffs < step) | ((diffs > step) & (diffs % step != np.timedelta64(0)))]
    if len(irregular):
        findings.append(Finding(
            "time_step", "warning", f"{len(irregular)} irregular time step(s)", source=f.source, variable=f.key,
            expected=f"multiples of {coverage['step_hours']:g} h",
            found=", ".join(sorted({f"{d / np.timedelta64(1, 'h'):g} h" for d in irregular}))))
    return findings, coverage


def _contract_findings(fields: dict[str, Field], spec: VariantSpec) -> list[Finding]:
    findings: list[Finding] = []
    needed = {v.dataset_name: v for v in spec.inputs() if not v.computed}
    for key, v in needed.items():
        if key not in fields:
            hint = "or relative humidity 'r' with temperature 't'" if key == "q" else None
            findings.append(Finding(
                "contract_variables", "error", f"the {spec.name} variant needs {v.long_name}",
                variable=key, expected=f"{v.kind} variable '{v.name}' in {v.units}", found="absent",
                hint=hint or ("add a file that holds it, or fill it on purpose (--fill-missing)"
                              + ("; ECMWF's open data does not carry it, ERA5 and the archive do"
                                 if not v.open_data else ""))))
    present = [fields[k] for k in needed if k in fields]
    atmos = [f for f in present if f.var.kind == "atmos"]
    for f in atmos:
        known = [lv for lv in f.data.level.values if lv in spec.levels]
        if not known:
            findings.append(Finding(
                "contract_levels", "error", "no pressure level has normalisation statistics",
                source=f.source, variable=f.key, expected=", ".join(map(str, spec.levels)) + " hPa",
                found=", ".join(f"{lv:g}" for lv in f.data.level.values) + " hPa"))
        elif len(known) < len(spec.levels):
            findings.append(Finding(
                "contract_levels", "warning", f"{len(known)} of the {len(spec.levels)} levels the variant was trained on",
                source=f.source, variable=f.key, expected=", ".join(map(str, spec.levels)) + " hPa",
                found=", ".join(f"{lv:g}" for lv in known) + " hPa"))
    every_level = sorted({float(lv) for f in atmos for lv in f.data.level.values})
    for f in atmos:
        absent = [lv for lv in every_level if lv not in f.data.level.values]
        if absent:
            findings.append(Finding(
                "contract_levels", "warning",
                f"level(s) {', '.join(f'{lv:g}' for lv in absent)} hPa missing here but present in other "
                "atmospheric variables; forecasts use only the levels every variable has",
                source=f.source, variable=f.key, expected=", ".join(f"{lv:g}" for lv in every_level) + " hPa",
                found=", ".join(f"{lv:g}" for lv in f.data.level.values) + " hPa"))
    if present:
        shapes = {(f.data.sizes["latitude"], f.data.sizes["longitude"]) for f in present}
        if len(shapes) > 1:
            findings.append(Finding(
                "contract_grid", "error", "variables are on different grids", expected="one grid",
                found="; ".join(f"{f.key} {f.data.sizes['latitude']}x{f.data.sizes['longitude']}" for f in present),
                hint="regrid them to one grid (--regrid DEG)"))
        for h, w in sorted(shapes):
            if (problem := grid_fit_problem(h, w, spec.patch_size)) is not None:
                findings.append(Finding("contract_grid", "error", problem,
                                        expected=f"width multiple of {spec.patch_size}", found=f"{h}x{w}"))
    findings += _history_findings([f for f in present if f.var.kind != "static"], spec)
    return findings


def _history_findings(dynamic: list[Field], spec: VariantSpec) -> list[Finding]:
    if not dynamic:
        return []
    common = dynamic[0].data.time.values
    for f in dynamic[1:]:
        common = np.intersect1d(common, f.data.time.values)
    step = np.timedelta64(spec.timestep_hours, "h")
    available = set(common.tolist())

    def windows(history: int) -> int:
        return sum(all((t - k * step).tolist() in available for k in range(history)) for t in common)

    best = max((h for h in range(spec.min_history, spec.max_history + 1) if windows(h)), default=None)
    if best is None:
        return [Finding(
            "contract_history", "error",
            f"no {spec.min_history} consecutive time(s) {spec.timestep_hours} h apart shared by every variable",
            expected=f"{spec.min_history} to {spec.max_history} times {spec.timestep_hours} h apart",
            found=f"{len(common)} shared time(s)")]
    if best < spec.max_history:
        return [Finding(
            "contract_history", "warning", f"forecasts can start from {best} time(s) only",
            expected=f"{spec.max_history} times {spec.timestep_hours} h apart", found=f"{best}",
            hint=f"pass --history {best}")]
    return [Finding("contract_history", "info",
                    f"{windows(spec.max_history)} initialisation time(s) with a full history")]


# --------------------------------------------------------------------------------------
# The whole validation


def _read_sources(uris: Sequence[str], stack: contextlib.ExitStack, report: Report) -> list[Source]:
    sources = []
    for uri in uris:
        try:
            path = stack.enter_context(local_copy(uri))
            source = read_source(str(uri), path)
        except DataError as e:
            report.add(Finding(e.check or "readable", "error", e.message, source=str(uri)))
            continue
        report.extend(dict.fromkeys(source.notes))  # one note per fix, not per hypercube
        if not source.fields:
            report.add(Finding("variables", "warning", "no variable Aurora uses was recognised",
                               source=str(uri), found="; ".join(source.ignored[:8]) or "nothing"))
        sources.append(source)
    return sources


def validate_fields(
    fields: dict[str, Field], spec: VariantSpec | None = None, *, policy: Policy = Policy(),
    report: Report | None = None,
) -> Report:
    """Time, value and units checks of fields already read (and `spec`'s contract if given)."""
    report = report if report is not None else Report()
    for key, f in fields.items():
        time_findings, coverage = _time_findings(f)
        report.extend(time_findings)
        acc = _Accumulator(len(_levels(f)))
        for t0, block in _chunks(f, policy.chunk_bytes):
            acc.update(_as_4d(block), t0, f.var.bounds, policy)
        findings, stats = _value_findings(f, acc, policy)
        units = _units_findings(f, stats)
        if units:  # the units finding explains the out-of-range values better
            findings = [x for x in findings if x.check != "physical_bounds"]
        report.extend(units + findings)
        report.statistics[key] = {"units": f.var.units, "source": f.source, "levels": stats}
        report.coverage[key] = {**coverage, "nan_share_by_time": acc.nan_by_time}
    if spec is not None and fields:
        report.extend(_contract_findings(fields, spec))
    return report


def validate(uris: Sequence[str], spec: VariantSpec | None = None, *, policy: Policy = Policy()) -> Report:
    """Every finding about `uris` (paths or s3:// URIs), with `spec`'s contract if given.

    Reads each variable once, `policy.chunk_bytes` at a time.
    """
    report = Report(sources=[str(u) for u in uris])
    with contextlib.ExitStack() as stack:
        sources = _read_sources(uris, stack, report)
        try:
            fields, _ = merge_sources(sources)
        except DataError as e:
            report.add(Finding(e.check or "merge", "error", str(e)))
            fields = {f"{f.key} ({s.name})": f for s in sources for f in s.fields}
        validate_fields(fields, spec if sources else None, policy=policy, report=report)
    return report
