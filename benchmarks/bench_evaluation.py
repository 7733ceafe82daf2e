"""Scoring a 0.25° global forecast: `evaluate` against a naive per-metric xarray implementation.

The data: 5 atmospheric variables (z, t, u, v, q) on 13 pressure levels on the 0.25° global
grid (721 x 1440), float32, one initialisation time, six-hourly lead times, with a truth at
every valid time and a climatology by hour of day (4 hours). Values are synthetic (a fixed
random pattern shifted per time, level and lead), generated on demand, the same for both
implementations. Scores: RMSE, MAE, bias and ACC per variable, level and lead time in 4
regions (global, tropics, northern and southern extra-tropics).

- head-to-head, 2 lead times (the inputs take 2 x 270 MB for the forecast and as much for
  the truth; the climatology is a broadcast view): ours (`evaluate`, lead-time chunks, one pass
  per chunk for all metrics and regions, matrix products for the area sums) against naive
  (each metric and region computed on its own with plain xarray: `(f - o) ** 2`,
  `.weighted(w).mean(...)`, ... on whole arrays). Naive gets the truth already laid out as
  (init_time, lead_time, ...), which spares it the valid-time lookup ours does.
- scale, 40 lead times (10 days): ours only, reading a lazily generated forecast and truth
  (10.8 GB each if materialised, which the naive implementation would need): time and peak
  traced memory (one run, under tracemalloc), to show memory is set by the chunk, not by
  the number of lead times.

Peak memory: tracemalloc's peak (numpy reports its buffers to it) during the scoring call,
inputs excluded, in a separate untimed run. Times: medians of alternating runs
(`benchmarks/timing.py`).
"""

from __future__ import annotations

import gc
import sys
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr
from xarray.backends import BackendArray
from xarray.core import indexing

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from timing import SPREAD_NOTE, paired_ms  # noqa: E402

from model_code.evaluation.metrics import area_weights  # noqa: E402
from model_code.evaluation.regions import region_masks  # noqa: E402
from model_code.evaluation.score import evaluate  # noqa: E402

GRID = (721, 1440)
VARIABLES = ("z", "t", "u", "v", "q")
LEVELS = (50, 100, 150, 200, 250, 300, 400, 500, 600, 700, 850, 925, 1000)
REGIONS = ("global", "tropics", "nh-extra-tropics", "sh-extra-tropics")
METRICS = ("rmse", "mae", "bias", "acc")
HEAD_TO_HEAD_LEADS = 2
SCALE_LEADS = 40
STEP_HOURS = 6
INIT = np.datetime64("2024-01-01T00:00", "ns")
MIB = 2**20


class _Synthetic(BackendArray):
    """A ([init], time-like, level, lat, lon) float32 array whose slices are generated when read.

    The truth (no init axis) at time k is a fixed random pattern shifted by k and the level;
    the forecast (one init) at lead k is that truth plus an error growing with k.
    """

    def __init__(self, n_times: int, seed: int, forecast: bool):
        self.forecast = forecast
        self.shape = (1,) * forecast + (n_times, len(LEVELS), *GRID)
        self.dtype = np.dtype("float32")
        self._pattern = np.random.default_rng(seed).standard_normal(GRID, dtype=np.float32)
        self._base = np.linspace(1.0, 2.0, len(LEVELS), dtype=np.float32)

    def _field(self, t: int, k: int) -> np.ndarray:
        x = np.roll(self._pattern, 7 * t + k, axis=1) + self._base[k]
        if self.forecast:
            x += 0.1 * (t + 1) * np.roll(self._pattern, 3 * (t + 1), axis=0)
        return x

    def _raw(self, key: tuple) -> np.ndarray:
        head, key = (key[:1], key[1:]) if self.forecast else ((), key)
        ts = range(*key[0].indices(self.shape[-4])) if isinstance(key[0], slice) else [key[0]]
        ks = range(*key[1].indices(self.shape[-3])) if isinstance(key[1], slice) else [key[1]]
        out = np.stack([np.stack([self._field(t, k) for k in ks]) for t in ts])
        out = out[(slice(None), slice(None), *key[2:])]
        out = out[tuple(0 if isinstance(k, int) else slice(None) for k in key[:2])]
        return out[(0 if isinstance(head[0], int) else None,)] if head else out

    def __getitem__(self, key):
        return indexing.explicit_indexing_adapter(key, self.shape, indexing.IndexingSupport.BASIC, self._raw)


def _coords(n_leads: int):
    lat = np.linspace(90, -90, GRID[0])
    lon = np.arange(GRID[1]) * 0.25
    leads = (np.arange(1, n_leads + 1) * STEP_HOURS * np.timedelta64(1, "h")).astype("timedelta64[ns]")
    return lat, lon, leads


def inputs(n_leads: int, lazy: bool) -> tuple[xr.Dataset, xr.Dataset, xr.Dataset]:
    """(forecast, truth, climatology); lazy: generated when read, else materialised."""
    lat, lon, leads = _coords(n_leads)
    fc, tr = {}, {}
    for i, v in enumerate(VARIABLES):
        f = xr.Variable(("init_time", "lead_time", "level", "latitude", "longitude"),
                        indexing.LazilyIndexedArray(_Synthetic(n_leads, seed=i, forecast=True)), {"units": "1"})
        t = xr.Variable(("time", "level", "latitude", "longitude"),
                        indexing.LazilyIndexedArray(_Synthetic(n_leads, seed=i, forecast=False)), {"units": "1"})
        fc[v] = f if lazy else f.load()
        tr[v] = t if lazy else t.load()
    coords = {"level": np.array(LEVELS, dtype="float64"), "latitude": lat, "longitude": lon}
    forecast = xr.Dataset(fc, coords={**coords, "init_time": [INIT], "lead_time": leads})
    truth = xr.Dataset(tr, coords={**coords, "time": INIT + leads})
    rng = np.random.default_rng(99)
    hours = np.array([0, 6, 12, 18])
    clim = xr.Dataset({v: (("hour", "level", "latitude", "longitude"),
                           np.broadcast_to(rng.standard_normal((4, len(LEVELS), 1, 1), dtype=np.float32),
                                           (4, len(LEVELS), *GRID)), {"units": "1"}) for v in VARIABLES},
                      coords={**coords, "hour": hours})
    return forecast, truth, clim


def ours(forecast, truth, clim):
    return evaluate({"model": forecast}, truth, climatology=clim, regions=REGIONS, metrics=METRICS, derived=False)


def naive(forecast, truth_stacked, clim_stacked):
    """Each metric and region on its own, with plain xarray operations on whole arrays."""
    w = area_weights(forecast.latitude)
    masks = region_masks(REGIONS, forecast.latitude.values, forecast.longitude.values)
    space = ("latitude", "longitude")
    out = {}
    for region in REGIONS:
        wr = w * masks.sel(region=region)
        for v in VARIABLES:
            f, o, c = forecast[v], truth_stacked[v], clim_stacked[v]
            out[region, v, "rmse"] = np.sqrt(((f - o) ** 2).weighted(wr).mean(space).mean("init_time"))
            out[region, v, "mae"] = abs(f - o).weighted(wr).mean(space).mean("init_time")
            out[region, v, "bias"] = (f - o).weighted(wr).mean(space).mean("init_time")
            fa, oa = f - c, o - c
            num = (fa * oa).weighted(wr).sum(space)
            den = np.sqrt((fa**2).weighted(wr).sum(space) * (oa**2).weighted(wr).sum(space))
            out[region, v, "acc"] = (num / den).mean("init_time")
    return out


def stacked_truth_and_clim(forecast, truth, clim):
    """The truth and climatology in the forecast layout, handed to naive ready-made."""
    t = truth.rename(time="lead_time").assign_coords(lead_time=forecast.lead_time).expand_dims(init_time=forecast.init_time)
    hours = ((forecast.lead_time.values / np.timedelta64(1, "h")) % 24).astype(int)
    c = clim.sel(hour=xr.DataArray(hours, dims="lead_time")).drop_vars("hour")
    return t, c.assign_coords(lead_time=forecast.lead_time).expand_dims(init_time=forecast.init_time)


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def peak_mib(fn) -> float:
    gc.collect()
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return (peak - base) / MIB


@dataclass
class Results:
    head_ours_ms: object
    head_naive_ms: object
    head_ours_mib: float
    head_naive_mib: float
    max_abs_diff: float
    scale_ms: float
    scale_generate_ms: float
    scale_mib: float
    records: int


def check_same(scores, naive_out) -> float:
    diff = 0.0
    for (region, v, metric), da in naive_out.items():
        for k, lead in enumerate(da.lead_time.values / np.timedelta64(1, "h")):
            for j, lev in enumerate(LEVELS):
                a = scores.value("model", v, metric, lead, level=lev, region=region)
                diff = max(diff, abs(a - float(da.isel(lead_time=k, level=j))))
    return diff


def run(repeat: int = 2) -> Results:
    forecast, truth, clim = inputs(HEAD_TO_HEAD_LEADS, lazy=False)
    t_st, c_st = stacked_truth_and_clim(forecast, truth, clim)
    c_st = c_st.load()
    found: dict = {}
    mib_ours = peak_mib(lambda: found.update(ours=ours(forecast, truth, clim)))
    mib_naive = peak_mib(lambda: found.update(naive=naive(forecast, t_st, c_st)))
    diff = check_same(found["ours"], found["naive"])
    _progress(f"peak MiB ours {mib_ours:.0f}, naive {mib_naive:.0f}; largest difference {diff:.2e}")
    timed_ours, timed_naive = paired_ms(lambda: ours(forecast, truth, clim), lambda: naive(forecast, t_st, c_st),
                                        repeat=repeat, warmup=0)
    _progress(f"ms ours {timed_ours.samples_ms}, naive {timed_naive.samples_ms}")
    del forecast, truth, t_st, c_st
    gc.collect()

    lazy_fc, lazy_truth, clim = inputs(SCALE_LEADS, lazy=True)
    start = time.perf_counter()
    for v in VARIABLES:  # the cost of generating the synthetic values alone
        for k in range(SCALE_LEADS):
            lazy_fc[v].isel(lead_time=k).values
            lazy_truth[v].isel(time=k).values
    generate_ms = (time.perf_counter() - start) * 1e3
    _progress(f"generating {SCALE_LEADS} leads: {generate_ms:.0f} ms")
    scale: list = []
    start = time.perf_counter()  # one run, traced: 40 leads take minutes
    scale_mib = peak_mib(lambda: scale.append(ours(lazy_fc, lazy_truth, clim)))
    scale_ms = (time.perf_counter() - start) * 1e3
    return Results(timed_ours, timed_naive, mib_ours, mib_naive, diff, scale_ms, generate_ms, scale_mib,
                   len(scale[0].records))


def table(r: Results) -> str:
    fields = len(VARIABLES) * len(LEVELS)
    rows = [
        "| case | implementation | time (s) | peak memory above inputs (MiB) | spread |",
        "|---|---|---|---|---|",
        f"| {HEAD_TO_HEAD_LEADS} leads x {fields} fields, 0.25° | ours (`evaluate`) | {r.head_ours_ms.median / 1e3:.1f} | "
        f"{r.head_ours_mib:.0f} | {r.head_ours_ms.spread:.2f} |",
        f"| {HEAD_TO_HEAD_LEADS} leads x {fields} fields, 0.25° | naive per-metric xarray | "
        f"{r.head_naive_ms.median / 1e3:.1f} | {r.head_naive_mib:.0f} | {r.head_naive_ms.spread:.2f} |",
        f"| {SCALE_LEADS} leads x {fields} fields, 0.25° (lazy inputs) | ours (`evaluate`) | {r.scale_ms / 1e3:.1f} "
        f"(of which generating the inputs {r.scale_generate_ms / 1e3:.1f}) | {r.scale_mib:.0f} | 1 run |",
    ]
    speed = r.head_naive_ms.median / r.head_ours_ms.median
    return "\n".join(rows) + (
        f"\n\nSpeed-up over naive: {speed:.1f}x; peak memory ratio naive/ours: "
        f"{r.head_naive_mib / r.head_ours_mib:.1f}x; largest difference between the two implementations' "
        f"scores: {r.max_abs_diff:.2e}. {r.records} records at {SCALE_LEADS} leads x 4 regions x 4 metrics. "
        f"{SPREAD_NOTE}")


if __name__ == "__main__":
    print(table(run(int(sys.argv[1]) if len(sys.argv) > 1 else 2)))
