"""Gridded fields reduced to a table Evidently can compare: one row per time step.

Evidently tests tables column by column; a 721x1440 field is not a column. Each field
(variable and level) is reduced, per time step, to area-weighted numbers over the whole grid
that describe the feed as much as the weather:

- `mean`, `std`, `q05`, `q95`: where the values lie and how far they spread (a bias, a unit
  mix-up, a range no real field has);
- `grad` (mean horizontal gradient magnitude, per 100 km), `spec_fine` and `spec_mid` (the
  zonal variance at wavelengths of 2-4 grid lengths over that at 4-8, and at 4-8 over
  8-16: the slope of the spectrum at its fine end, which the weather's total variance does
  not move): spatial structure, which a smoother or coarser source lacks;
- `tendency` (RMS change since the previous time step): zero for a frozen field;
- `nan_share`: the share of the area that is missing;
- `lat00` .. `lat15`: the latitude profile, area-weighted means of 16 bands of rows, north
  to south (fewer on grids of fewer rows), which a flipped or shifted grid changes.

Columns are named `<variable>[@<level>]/<statistic>`, e.g. `t@850/q95` or `t2m/lat03`.

The pass is streaming: fields are read lazily through the project's readers and reduced a
block of time steps at a time (`chunk_bytes`), so memory stays bounded whatever the length
of the window. Static fields (orography, land-sea mask) have no time axis and are left out.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import pandas as pd

from model_code.data.grid import cell_areas
from model_code.data.ingest import Field, merge_sources, read_source
from model_code.errors import DataError
from model_code.storage import local_copy, write_atomic

EARTH_RADIUS_KM = 6371.0
STATISTICS = ("mean", "std", "q05", "q95", "grad", "spec_fine", "spec_mid", "tendency", "nan_share")
QUANTILES = {"q05": 0.05, "q95": 0.95}
PROFILE_BANDS = 16
"""Latitude bands of the profile; a grid of fewer rows has one band per row."""
HIST_BINS = 4096
"""Quantiles come from an area-weighted histogram between a field's min and max, so they
are exact to (max - min) / 4096: 0.02 K for a 80 K temperature range."""
CHUNK_BYTES = 64 * 2**20
SUFFIX = ".summaries.json"
"""Stored summary tables (e.g. of the training period) end in this suffix."""
FORMAT = 2
"""Version of the stored table; version 1 (no structure, tendency or profile) cannot be compared."""


@dataclass(frozen=True)
class GridExtent:
    """What two windows must share to be compared: shape and extent (degrees)."""

    shape: tuple[int, int]
    latitude: tuple[float, float]
    longitude: tuple[float, float]

    def describe(self) -> str:
        return (f"{self.shape[0]}x{self.shape[1]} (lat {self.latitude[0]:g}..{self.latitude[1]:g}, "
                f"lon {self.longitude[0]:g}..{self.longitude[1]:g})")

    def matches(self, other: GridExtent) -> bool:
        return (self.shape == other.shape
                and np.allclose(self.latitude + self.longitude, other.latitude + other.longitude, atol=1e-3))


@dataclass
class Summaries:
    """Summary table of one window (rows: valid times), its grid, units and sources."""

    table: pd.DataFrame
    grid: GridExtent
    sources: list[str] = field(default_factory=list)
    units: dict[str, str] = field(default_factory=dict)
    """Units of each variable (dataset name) after the readers' conversions, e.g. {'t2m': 'K'}."""

    @property
    def variables(self) -> list[str]:
        """`t@850`, `t2m`, ...: every variable-level in the table."""
        return sorted({c.split("/")[0] for c in self.table.columns})

    def window(self) -> str:
        """`first .. last` valid time, the window's identity in decisions and reports."""
        if self.table.empty:
            return "empty"
        return f"{_iso(self.table.index[0])} .. {_iso(self.table.index[-1])}"

    def step(self) -> pd.Timedelta | None:
        """The most common time between rows (None for fewer than two rows)."""
        step = _modal_step(self.table.index.values)
        return None if step is None else pd.Timedelta(step)

    def save(self, uri: str) -> str:
        """Write as JSON (atomic; path or s3://), readable with `Summaries.load`."""
        doc = {
            "format": FORMAT,
            "grid": {"shape": list(self.grid.shape), "latitude": list(self.grid.latitude),
                     "longitude": list(self.grid.longitude)},
            "sources": self.sources,
            "units": self.units,
            "times": [_iso(t) for t in self.table.index],
            "columns": list(self.table.columns),
            "values": self.table.to_numpy().tolist(),
        }
        return write_atomic(uri, lambda p: p.write_text(json.dumps(doc, allow_nan=True)))

    @classmethod
    def load(cls, uri: str) -> Summaries:
        with local_copy(uri) as path:
            try:
                doc = json.loads(Path(path).read_text())
                if doc.get("format") != FORMAT:
                    raise DataError(f"summaries of format {doc.get('format', 1)}, expected {FORMAT} (with "
                                    "structure, tendency and the latitude profile); summarise the reference "
                                    "again with `auroraops monitor summarise`", source=str(uri))
                grid = GridExtent(tuple(doc["grid"]["shape"]), tuple(doc["grid"]["latitude"]),
                            tuple(doc["grid"]["longitude"]))
                table = pd.DataFrame(doc["values"], columns=doc["columns"],
                                     index=pd.DatetimeIndex(doc["times"], name="time"), dtype="float64")
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                if isinstance(e, DataError):
                    raise
                raise DataError(f"not a summaries file written by auroraops ({type(e).__name__}: {e})",
                                source=str(uri)) from None
        return cls(table, grid, list(doc.get("sources", [])), dict(doc.get("units", {})))


def _iso(t) -> str:
    return str(np.datetime64(t, "s"))


def column(variable: str, level: float | None, stat: str) -> str:
    return f"{variable}{'' if level is None else f'@{level:g}'}/{stat}"


def parse_column(name: str) -> tuple[str, float | None, str]:
    """`t@850/q95` -> ('t', 850.0, 'q95')."""
    var_level, stat = name.split("/")
    var, _, level = var_level.partition("@")
    return var, float(level) if level else None, stat


def profile_statistics(n_rows: int) -> list[str]:
    """Names of the latitude profile's bands on a grid of `n_rows` rows: `lat00`, `lat01`, ..."""
    return [f"lat{k:02d}" for k in range(min(PROFILE_BANDS, n_rows))]


class _Reducer:
    """Per-grid constants (weights, spacing, profile bands, taper) and the reduction of one 2-D field."""

    def __init__(self, lat: np.ndarray, lon: np.ndarray):
        areas = cell_areas(lat, lon)  # (H, W) steradians
        uniform = np.allclose(areas, areas[:, :1])
        self.w = areas[:, :1] if uniform else areas  # (H, 1) or (H, W): broadcasts either way
        self.row_w = np.broadcast_to(self.w, areas.shape).sum(axis=1)  # (H,), as the statistics weigh cells
        lat_rad, lon_rad = np.deg2rad(lat), np.deg2rad(lon)
        self.y_km = EARTH_RADIUS_KM * lat_rad
        self.lon_rad = lon_rad
        coslat = np.cos(lat_rad)
        # No east-west gradient at the poles: the cells there have no width.
        self.x_scale = np.where(coslat > 1e-6, 1.0 / (EARTH_RADIUS_KM * np.maximum(coslat, 1e-6)), np.nan)[:, None]
        self.bands = np.array_split(np.arange(len(lat)), min(PROFILE_BANDS, len(lat)))
        n = len(lon)
        step = float(np.median(np.diff(lon))) if n > 1 else 0.0
        periodic = n > 1 and lon[-1] - lon[0] + step >= 360 - 1e-6
        # A regional row is not periodic: remove its linear trend and taper it (Hann), so
        # its two ends do not meet in a jump that would pass for fine-scale energy.
        self.taper = None if periodic else np.hanning(n)
        self.ramp = np.arange(n) - (n - 1) / 2
        k = np.arange(n // 2 + 1)
        wavelength = n / np.maximum(k, 1)  # in grid lengths
        self.octaves = [(k > 0) & (wavelength >= lo) & (wavelength < 2 * lo) for lo in (2, 4, 8)]

    def gradient(self, x: np.ndarray) -> np.ndarray:
        """|∇x| per 100 km, (H, W); NaN where a neighbour is NaN or at the poles."""
        if x.shape[0] < 2 or x.shape[1] < 2:
            return np.full(x.shape, np.nan, dtype=np.float32)
        dy = np.gradient(x, self.y_km, axis=0)
        dx = np.gradient(x, self.lon_rad, axis=1) * self.x_scale
        return (100.0 * np.hypot(dx, dy)).astype(np.float32, copy=False)

    def spectrum(self, x: np.ndarray) -> tuple[float, float]:
        """(spec_fine, spec_mid): zonal variance of the complete rows (no NaN), rows weighted by
        their area, at wavelengths of 2-4 grid lengths over 4-8, and at 4-8 over 8-16."""
        complete = ~np.isnan(x).any(axis=1)
        if x.shape[1] < 8 or not complete.any():
            return float("nan"), float("nan")
        rows = x[complete].astype(np.float64)  # (R, W)
        rows -= rows.mean(axis=1, keepdims=True)
        if self.taper is not None:
            slope = rows @ self.ramp / (self.ramp @ self.ramp)
            rows = (rows - slope[:, None] * self.ramp) * self.taper
        power = self.row_w[complete] @ (np.abs(np.fft.rfft(rows, axis=1)) ** 2)  # (W//2 + 1,)
        fine, mid, coarse = (float(power[octave].sum()) for octave in self.octaves)
        return fine / mid if mid > 0 else float("nan"), mid / coarse if coarse > 0 else float("nan")

    def reduce(self, x: np.ndarray, previous: np.ndarray | None) -> tuple[dict[str, float], list[float]]:
        """Statistics of one (H, W) field and its latitude profile; `previous` is the field one
        time step earlier (None when there is none), for the tendency."""
        valid = ~np.isnan(x)
        wv = np.where(valid, self.w, 0.0)  # (H, W) float64 area of valid cells
        x0 = np.where(valid, x, 0.0)
        row_w = wv.sum(axis=1)
        n = float(row_w.sum())
        stats = {"nan_share": max(0.0, 1.0 - n / float(self.row_w.sum()))}
        profile = [float((x0[rows] * wv[rows]).sum() / row_w[rows].sum()) if row_w[rows].sum() > 0 else float("nan")
                   for rows in self.bands]
        if n > 0:
            lo, hi = float(np.nanmin(x)), float(np.nanmax(x))
            shift = float((x0 * wv).sum() / n)
            d = np.where(valid, x0 - shift, 0.0)
            m = float((d * wv).sum() / n)
            stats["mean"] = shift + m
            stats["std"] = float(np.sqrt(max(float((d * d * wv).sum()) / n - m * m, 0.0)))
            span = hi - lo
            bins = np.zeros(x.shape, dtype=np.int32) if span == 0 else np.clip(
                ((x0 - lo) * (HIST_BINS / span)).astype(np.int32), 0, HIST_BINS - 1)
            cdf = np.cumsum(np.bincount(bins.ravel(), weights=wv.ravel(), minlength=HIST_BINS)) / n
            edges = lo + span * np.arange(1, HIST_BINS + 1) / HIST_BINS
            for stat, q in QUANTILES.items():
                stats[stat] = float(np.interp(q, np.concatenate([[0.0], cdf]), np.concatenate([[lo], edges])))
        grad = self.gradient(x)
        gw = np.where(np.isnan(grad), 0.0, self.w)
        if gw.sum() > 0:
            stats["grad"] = float((np.where(gw > 0, grad, 0.0) * gw).sum() / gw.sum())
        stats["spec_fine"], stats["spec_mid"] = self.spectrum(x)
        if previous is not None:
            both = valid & ~np.isnan(previous)
            bw = np.where(both, self.w, 0.0)
            if bw.sum() > 0:
                change = np.where(both, x - previous, 0.0).astype(np.float64)
                stats["tendency"] = float(np.sqrt((change * change * bw).sum() / bw.sum()))
        return stats, profile


def _time_blocks(f: Field, chunk_bytes: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(times, values (t, level, H, W)) blocks of at most `chunk_bytes` of float32."""
    per_time = 4 * int(np.prod([n for d, n in f.data.sizes.items() if d != "time"]))
    step = max(1, chunk_bytes // per_time)
    times = f.data.time.values
    for start in range(0, len(times), step):
        block = f.chunk(time=slice(start, start + step)).values
        if "level" not in f.data.dims:
            block = block[:, None]
        yield times[start:start + step], block


def _modal_step(times: np.ndarray) -> np.timedelta64 | None:
    """The most common time between consecutive `times` (None for fewer than two)."""
    gaps = np.diff(times)
    if not len(gaps):
        return None
    values, counts = np.unique(gaps, return_counts=True)
    return values[counts.argmax()]


def summarise_fields(fields: dict[str, Field], *, chunk_bytes: int = CHUNK_BYTES,
                     sources: Sequence[str] = ()) -> Summaries:
    """Summaries of already-read fields, streamed time block by time block.

    The tendency of a time step is its change since the previous one when the two are one
    regular step apart (the window's most common step), else NaN.
    """
    dynamic = {k: f for k, f in fields.items() if "time" in f.data.dims}
    if not dynamic:
        raise DataError("no time-dependent variable to summarise (only static fields or none recognised)",
                        source=", ".join(sources) or None)
    first = next(iter(dynamic))
    lat, lon = dynamic[first].grid
    for key, f in dynamic.items():
        la, lo = f.grid
        if la.shape != lat.shape or lo.shape != lon.shape or not (np.allclose(la, lat) and np.allclose(lo, lon)):
            raise DataError(f"variables on different grids in one window: '{first}' {len(lat)}x{len(lon)}, "
                            f"'{key}' {len(la)}x{len(lo)}; regrid the sources to one grid first")
    reducer = _Reducer(lat, lon)
    bands = profile_statistics(len(lat))
    columns: dict[str, dict[np.datetime64, float]] = {}
    for key, f in dynamic.items():
        levels = [float(v) for v in f.data.level.values] if "level" in f.data.dims else [None]
        step = _modal_step(f.data.time.values)
        previous: tuple[np.datetime64, np.ndarray] | None = None
        for times, block in _time_blocks(f, chunk_bytes):
            for t, per_time in zip(times, block):
                regular = previous is not None and t - previous[0] == step
                for j, (level, x) in enumerate(zip(levels, per_time)):
                    stats, profile = reducer.reduce(x, previous[1][j] if regular else None)
                    for stat in STATISTICS:
                        columns.setdefault(column(key, level, stat), {})[t] = stats.get(stat, np.nan)
                    for band, value in zip(bands, profile):
                        columns.setdefault(column(key, level, band), {})[t] = value
                previous = (t, per_time)
    table = pd.DataFrame(columns).sort_index()
    table.index = pd.DatetimeIndex(table.index, name="time")
    grid = GridExtent((len(lat), len(lon)), (float(lat.min()), float(lat.max())), (float(lon.min()), float(lon.max())))
    return Summaries(table, grid, list(sources), {k: f.var.units for k, f in dynamic.items()})


def summarise(uris: Iterable[str], *, variables: Sequence[str] | None = None,
              chunk_bytes: int = CHUNK_BYTES) -> Summaries:
    """Summaries of data files (GRIB/NetCDF/Zarr, paths or s3://), or of a stored `*.summaries.json`.

    `variables` keeps only those dataset names (e.g. `t2m`, `t`); a name the files do not
    hold is an error naming what they do hold.
    """
    uris = [str(u) for u in uris]
    if not uris:
        raise DataError("empty window: no data files given")
    stored = [u for u in uris if u.endswith(SUFFIX)]
    if stored:
        if len(uris) > 1:
            raise DataError(f"a stored summaries file ({stored[0]}) cannot be combined with other files")
        summaries = Summaries.load(stored[0])
        if variables:
            keep = [c for c in summaries.table.columns if c.split("/")[0].split("@")[0] in variables]
            summaries.table = summaries.table[keep]
            summaries.units = {k: u for k, u in summaries.units.items() if k in variables}
        return summaries
    with contextlib.ExitStack() as stack:
        sources = [read_source(u, stack.enter_context(local_copy(u))) for u in uris]
        fields, _ = merge_sources(sources)
        if variables:
            missing = sorted(set(variables) - set(fields))
            if missing:
                raise DataError(f"variables {missing} not in the data; it holds {sorted(fields)}",
                                source=", ".join(uris))
            fields = {k: fields[k] for k in variables}
        return summarise_fields(fields, chunk_bytes=chunk_bytes, sources=uris)
