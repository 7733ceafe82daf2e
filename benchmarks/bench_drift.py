"""Drift check of one day of 6-hourly 0.25° global data: streaming summaries against loading it all.

The data: the medium-range variant's dynamic inputs from `synthetic_window` on the 0.25°
global grid (721 x 1440): t2m, u10, v10, msl and z, u, v, t, q on 13 levels (69 fields per
time). The current window is the first day of the store `bench_validate` builds
(`outputs/bench/synthetic_0p25.zarr`: 4 times, 2024-01-01 00-18 UTC, 1.15 GB as float32), cut
into its own Zarr store; the reference is the summary table of the two days after it
(8 times, generated one time step at a time into a store of their own), computed once (not
timed). Both stores and the reference summaries are cached beside the validation store.

Two programs, each in a fresh Python process per run (its peak resident memory is its own):

- ours: `summarise([day])`, reading one block of times at a time (64 MiB), then `compare`
  (anomalies, calibration on the reference, one Evidently ValueDrift per tested column in one
  Report) against the stored reference summaries;
- naive: `xr.open_zarr(day).load()` (every field in memory), then the same reductions and
  the same comparison.

Run one program on its own (prints one JSON line):

    .venv/bin/python benchmarks/bench_drift.py child ours|naive
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from timing import status_kib

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BENCH = ROOT / "outputs" / "bench"
DAY = BENCH / "drift_day_0p25.zarr"
LATER = BENCH / "drift_reference_0p25.zarr"
REFERENCE = BENCH / "drift_reference_0p25.summaries.json"
DAY_TIMES = 4
REFERENCE_TIMES = 8


def _write_later(path: Path, first, times: int) -> None:
    """Synthetic medium-range inputs at `times` six-hourly steps from `first`, appended one time
    step at a time (memory: one step), dynamic fields only."""
    import shutil

    import numpy as np

    from benchmarks.bench_validate import RESOLUTION, STEP_HOURS
    from model_code.data.synthetic import regular_grid, synthetic_window
    from model_code.variants import VARIANTS

    lat, lon = regular_grid(RESOLUTION)
    partial = path.with_name(path.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    for k in range(times):
        t = np.datetime64(first, "ns") + np.timedelta64(STEP_HOURS * k, "h")
        ds = synthetic_window(VARIANTS["medium-range"], lat, lon, np.array([t]))
        ds = ds[[n for n, da in ds.data_vars.items() if "time" in da.dims]]
        if k == 0:
            ds.to_zarr(partial, mode="w", zarr_format=2, consolidated=True,
                       encoding={"time": {"units": f"hours since {first}", "dtype": "int64"}})
        else:
            ds.to_zarr(partial, append_dim="time", zarr_format=2, consolidated=True)
    partial.rename(path)


def _reference_ready() -> bool:
    from model_code.errors import DataError
    from monitoring.summaries import Summaries

    try:
        return len(Summaries.load(str(REFERENCE)).table) == REFERENCE_TIMES
    except DataError:  # none yet, or of an older format
        return False


def prepare() -> dict:
    """The day's store and the reference summaries, built once."""
    import numpy as np
    import xarray as xr

    from benchmarks.bench_validate import STORE, build_dataset
    from monitoring.summaries import summarise

    build_dataset()
    src = xr.open_zarr(STORE)
    if not DAY.exists():
        dynamic = [n for n, da in src.data_vars.items() if "time" in da.dims]
        part = DAY.with_name(DAY.name + ".partial")
        src[dynamic].isel(time=slice(0, DAY_TIMES)).to_zarr(part, mode="w", zarr_format=2, consolidated=True)
        part.rename(DAY)
    if not _reference_ready():
        if not LATER.exists():
            after = src.time.values[DAY_TIMES - 1] + (src.time.values[1] - src.time.values[0])
            _write_later(LATER, str(np.datetime_as_string(after, unit="m")), REFERENCE_TIMES)
        summarise([str(LATER)]).save(str(REFERENCE))
    ds = xr.open_zarr(DAY)
    return {"times": ds.sizes["time"], "grid": [ds.sizes["latitude"], ds.sizes["longitude"]],
            "fields_per_time": sum(da.sizes.get("level", 1) for da in ds.data_vars.values()),
            "bytes": int(sum(da.nbytes for da in ds.data_vars.values())), "reference_times": REFERENCE_TIMES}


def child(program: str) -> dict:
    import numpy as np
    import xarray as xr

    from model_code.data.ingest import Field
    from model_code.variables import by_key
    from monitoring.drift import compare
    from monitoring.summaries import Summaries, summarise, summarise_fields

    reference = Summaries.load(str(REFERENCE))
    import evidently.metrics  # noqa: F401  (import cost is not the check's)
    import evidently.legacy.calculations.stattests  # noqa: F401

    after_imports = status_kib("VmRSS")  # torch (through model_code), xarray, Evidently
    start = time.perf_counter()
    if program == "ours":
        current = summarise([str(DAY)])
    elif program == "naive":
        ds = xr.open_zarr(DAY).load()
        fields = {k: Field(by_key(k), da.astype(np.float32), str(DAY)) for k, da in ds.data_vars.items()}
        current = summarise_fields(fields, sources=[str(DAY)])
    else:
        raise SystemExit(f"unknown program {program!r}")
    summarised = time.perf_counter()
    result = compare(reference, current)
    done = time.perf_counter()
    return {"program": program, "summarise_s": summarised - start, "compare_s": done - summarised,
            "total_s": done - start, "peak_kib": status_kib("VmHWM"), "after_imports_kib": after_imports,
            "summary_columns": current.table.shape[1], "columns": len(result.columns),
            "rows": len(current.table), "drifted": result.drifted}


def run_child(program: str) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, __file__, "child", program], capture_output=True, text=True,
                          cwd=ROOT, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"child {program} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


@dataclass
class DriftBench:
    data: dict
    runs: dict[str, list[dict]]

    def median(self, program: str, key: str) -> float:
        if key == "above_kib":
            return statistics.median(r["peak_kib"] - r["after_imports_kib"] for r in self.runs[program])
        return statistics.median(r[key] for r in self.runs[program])


def run(repeat: int = 3, log=print) -> DriftBench:
    data = prepare()
    runs: dict[str, list[dict]] = {"ours": [], "naive": []}
    for k in range(repeat):  # alternate, so other work on the machine slows both alike
        for program in ("ours", "naive"):
            runs[program].append(run_child(program))
            log(f"run {k + 1}/{repeat} {program}: {runs[program][-1]}")
    return DriftBench(data, runs)


def table(results: DriftBench) -> str:
    d = results.data
    lines = [
        f"One day ({d['times']} times, 6-hourly) of {d['fields_per_time']} fields on the {d['grid'][0]}x"
        f"{d['grid'][1]} grid ({d['bytes'] / 2**30:.2f} GiB as float32); medians of "
        f"{len(results.runs['ours'])} fresh-process runs.",
        "",
        "| program | summarise (s) | compare (s) | drift check (s) | peak memory (GiB) | peak above imports (GiB) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for program, label in (("ours", "streaming summaries (64 MiB blocks)"), ("naive", "load all, then summarise")):
        lines.append(f"| {label} | {results.median(program, 'summarise_s'):.1f} | "
                     f"{results.median(program, 'compare_s'):.2f} | {results.median(program, 'total_s'):.1f} | "
                     f"{results.median(program, 'peak_kib') / 2**20:.2f} | "
                     f"{results.median(program, 'above_kib') / 2**20:.2f} |")
    first = results.runs["ours"][0]
    lines += ["", f"Summary table: {first['rows']} rows x {first['summary_columns']} columns (9 statistics and a "
                  f"latitude profile of 16 bands per field); {first['columns']} tested columns (10 features per "
                  f"field), each an Evidently ValueDrift in one Report, against a reference of "
                  f"{d['reference_times']} times."]
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "child":
        print(json.dumps(child(sys.argv[2])))
    else:
        print(table(run(int(sys.argv[1]) if len(sys.argv) > 1 else 3)))
