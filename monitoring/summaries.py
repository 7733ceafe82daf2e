"""Gridded fields reduced to a table Evidently can compare: one row per time step.

Evidently tests tables column by column; a 721x1440 field is not a column. Each field is
reduced, per time step, level and latitude band, to a few area-weighted numbers that move
when its inputs change: mean, standard deviation, 5/50/95% quantiles, mean horizontal
gradient magnitude (per 100 km; a change of resolution or smoothing shows here first) and
the share of the area that is NaN. Columns are named `<variable>[@<level>]/<region>/<stat>`,
e.g. `t@850/tropics/q95` or `t2m/global/mean`.

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
STATISTICS = ("mean", "std", "q05", "q50", "q95", "grad", "nan_share")
QUANTILES = {"q05": 0.05, "q50": 0.50, "q95": 0.95}
HIST_BINS = 4096
"""Quantiles come from an area-weighted histogram between a field's min and max, so they
are exact to (max - min) / 4096: 0.02 K for a 80 K temperature range."""
CHUNK_BYTES = 64 * 2**20
SUFFIX = ".summaries.json"
"""Stored summary tables (e.g. of the training period) end in this suffix."""


@dataclass(frozen=True)
class Region:
    """A latitude band in degrees north, inclusive at both ends."""

    name: str
    south: float
    north: float


REGIONS = (
    Region("global", -90.0, 90.0),
    Region("tropics", -20.0, 20.0),
    Region("nh_extratropics", 20.0, 90.0),
    Region("sh_extratropics", -90.0, -20.0),
)


@dataclass(frozen=True)
class Grid:
    """What two windows must share to be compared: shape and extent (degrees)."""

    shape: tuple[int, int]
    latitude: tuple[float, float]
    longitude: tuple[float, float]

    def describe(self) -> str:
        return (f"{self.shape[0]}x{self.shape[1]} (lat {self.latitude[0]:g}..{self.latitude[1]:g}, "
                f"lon {self.longitude[0]:g}..{self.longitude[1]:g})")

    def matches(self, other: Grid) -> bool:
        return (self.shape == other.shape
                and np.allclose(self.latitude + self.longitude, other.latitude + other.longitude, atol=1e-3))


@dataclass
class Summaries:
    """Summary table of one window (rows: valid times) and where it came from."""

    table: pd.DataFrame
    grid: Grid
    sources: list[str] = field(default_factory=list)

    @property
    def variables(self) -> list[str]:
        """`t@850`, `t2m`, ...: every variable-level in the table."""
        return sorted({c.split("/")[0] for c in self.table.columns})

    def window(self) -> str:
        """`first .. last` valid time, the window's identity in decisions and reports."""
        if self.table.empty:
            return "empty"
        return f"{_iso(self.table.index[0])} .. {_iso(self.table.index[-1])}"

    def save(self, uri: str) -> str:
        """Write as JSON (atomic; path or s3://), readable with `Summaries.load`."""
        doc = {
            "grid": {"shape": list(self.grid.shape), "latitude": list(self.grid.latitude),
                     "longitude": list(self.grid.longitude)},
            "sources": self.sources,
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
                grid = Grid(tuple(doc["grid"]["shape"]), tuple(doc["grid"]["latitude"]),
                            tuple(doc["grid"]["longitude"]))
                table = pd.DataFrame(doc["values"], columns=doc["columns"],
                                     index=pd.DatetimeIndex(doc["times"], name="time"), dtype="float64")
            except (ValueError, KeyError, TypeError) as e:
                raise DataError(f"not a summaries file written by auroraops ({type(e).__name__}: {e})",
                                source=str(uri)) from None
        return cls(table, grid, list(doc.get("sources", [])))


def _iso(t) -> str:
    return str(np.datetime64(t, "s"))


def column(variable: str, level: float | None, region: str, stat: str) -> str:
    return f"{variable}{'' if level is None else f'@{level:g}'}/{region}/{stat}"


def parse_column(name: str) -> tuple[str, float | None, str, str]:
    """`t@850/tropics/q95` -> ('t', 850.0, 'tropics', 'q95')."""
    var_level, region, stat = name.split("/")
    var, _, level = var_level.partition("@")
    return var, float(level) if level else None, region, stat


class _Reducer:
    """Per-grid constants (weights, gradient spacing, band rows) and the reduction of one 2-D field."""

    def __init__(self, lat: np.ndarray, lon: np.ndarray, regions: Sequence[Region]):
        areas = cell_areas(lat, lon)  # (H, W) steradians
        uniform = np.allclose(areas, areas[:, :1])
        self.w = areas[:, :1] if uniform else areas  # (H, 1) or (H, W): broadcasts either way
        lat_rad, lon_rad = np.deg2rad(lat), np.deg2rad(lon)
        self.y_km = EARTH_RADIUS_KM * lat_rad
        self.lon_rad = lon_rad
        coslat = np.cos(lat_rad)
        # No east-west gradient at the poles: the cells there have no width.
        self.x_scale = np.where(coslat > 1e-6, 1.0 / (EARTH_RADIUS_KM * np.maximum(coslat, 1e-6)), np.nan)[:, None]
        self.bands = [(r.name, np.flatnonzero((lat >= r.south) & (lat <= r.north))) for r in regions]
        self.bands = [(name, slice(rows[0], rows[-1] + 1)) for name, rows in self.bands if len(rows)]

    def gradient(self, x: np.ndarray) -> np.ndarray:
        """|∇x| per 100 km, (H, W); NaN where a neighbour is NaN or at the poles."""
        if x.shape[0] < 2 or x.shape[1] < 2:
            return np.full(x.shape, np.nan, dtype=np.float32)
        dy = np.gradient(x, self.y_km, axis=0)
        dx = np.gradient(x, self.lon_rad, axis=1) * self.x_scale
        return (100.0 * np.hypot(dx, dy)).astype(np.float32, copy=False)

    def reduce(self, x: np.ndarray) -> dict[str, dict[str, float]]:
        """Statistics of one (H, W) field per band: {region: {stat: value}}."""
        valid = ~np.isnan(x)
        wv = np.where(valid, self.w, 0.0)  # (H, W) float64 area of valid cells
        x0 = np.where(valid, x, 0.0)
        grad = self.gradient(x)
        gvalid = ~np.isnan(grad)
        gw = np.where(gvalid, self.w, 0.0)
        g0 = np.where(gvalid, grad, 0.0)
        lo, hi = (float(np.nanmin(x)), float(np.nanmax(x))) if valid.any() else (0.0, 0.0)
        span = hi - lo
        bins = np.zeros(x.shape, dtype=np.int32) if span == 0 else np.clip(
            ((x0 - lo) * (HIST_BINS / span)).astype(np.int32), 0, HIST_BINS - 1)
        # Row sums first: every band is a run of rows.
        row_w, row_all = wv.sum(axis=1), np.broadcast_to(self.w, x.shape).sum(axis=1)
        shift = float((x0 * wv).sum() / row_w.sum()) if row_w.sum() > 0 else 0.0
        d = np.where(valid, x0 - shift, 0.0)
        row_s, row_ss = (d * wv).sum(axis=1), (d * d * wv).sum(axis=1)
        row_gw, row_gs = gw.sum(axis=1), (g0 * gw).sum(axis=1)
        out = {}
        for name, rows in self.bands:
            total, n = row_all[rows].sum(), row_w[rows].sum()
            stats = {"nan_share": float(1.0 - n / total) if total > 0 else float("nan")}
            if n > 0:
                m = row_s[rows].sum() / n
                stats["mean"] = float(shift + m)
                stats["std"] = float(np.sqrt(max(row_ss[rows].sum() / n - m * m, 0.0)))
                hist = np.bincount(bins[rows].ravel(), weights=wv[rows].ravel(), minlength=HIST_BINS)
                cdf = np.cumsum(hist) / n
                edges = lo + span * np.arange(1, HIST_BINS + 1) / HIST_BINS
                for stat, q in QUANTILES.items():
                    stats[stat] = float(np.interp(q, np.concatenate([[0.0], cdf]),
                                                  np.concatenate([[lo], edges])))
            gn = row_gw[rows].sum()
            stats["grad"] = float(row_gs[rows].sum() / gn) if gn > 0 else float("nan")
            out[name] = stats
        return out


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


def summarise_fields(
    fields: dict[str, Field], *, regions: Sequence[Region] = REGIONS, chunk_bytes: int = CHUNK_BYTES,
    sources: Sequence[str] = (),
) -> Summaries:
    """Summaries of already-read fields, streamed time block by time block."""
    dynamic = {k: f for k, f in fields.items() if "time" in f.data.dims}
    if not dynamic:
        raise DataError("no time-dependent variable to summarise (only static fields or none recognised)",
                        source=", ".join(sources) or None)
    grids = {k: f.grid for k, f in dynamic.items()}
    first = next(iter(dynamic))
    lat, lon = grids[first]
    for key, (la, lo) in grids.items():
        if la.shape != lat.shape or lo.shape != lon.shape or not (np.allclose(la, lat) and np.allclose(lo, lon)):
            raise DataError(f"variables on different grids in one window: '{first}' {len(lat)}x{len(lon)}, "
                            f"'{key}' {len(la)}x{len(lo)}; regrid the sources to one grid first")
    reducer = _Reducer(lat, lon, regions)
    if not reducer.bands:
        raise DataError(f"no region covers the grid's latitudes {lat.min():g}..{lat.max():g}")
    columns: dict[str, dict[np.datetime64, float]] = {}
    for key, f in dynamic.items():
        levels = [float(v) for v in f.data.level.values] if "level" in f.data.dims else [None]
        for times, block in _time_blocks(f, chunk_bytes):
            for t, per_time in zip(times, block):
                for level, x in zip(levels, per_time):
                    for region, stats in reducer.reduce(x).items():
                        for stat in STATISTICS:
                            columns.setdefault(column(key, level, region, stat), {})[t] = stats.get(stat, np.nan)
    table = pd.DataFrame(columns).sort_index()
    table.index = pd.DatetimeIndex(table.index, name="time")
    grid = Grid((len(lat), len(lon)), (float(lat.min()), float(lat.max())), (float(lon.min()), float(lon.max())))
    return Summaries(table, grid, list(sources))


def summarise(
    uris: Iterable[str], *, variables: Sequence[str] | None = None, regions: Sequence[Region] = REGIONS,
    chunk_bytes: int = CHUNK_BYTES,
) -> Summaries:
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
        return summarise_fields(fields, regions=regions, chunk_bytes=chunk_bytes, sources=uris)
