"""Drift check of one day of 6-hourly 0.25° global data: streaming summaries against loading it all.

The data: the medium-range variant's dynamic inputs from `synthetic_window` on the 0.25°
global grid (721 x 1440): t2m, u10, v10, msl and z, u, v, t, q on 13 levels (69 fields per
time), from the store `bench_validate` builds (`outputs/bench/synthetic_0p25.zarr`). The
current window is its first day (4 times, 2024-01-01 00-18 UTC, 1.15 GB as float32); the
reference is the summary table of the times after it, computed once (not timed). Both
windows are cut from the store into their own Zarr stores, cached beside it.

Two programs, each in a fresh Python process per run (its peak resident memory is its own):

- ours: `summarise([day])`, reading one block of times at a time (64 MiB), then `compare`
  (one Evidently stat test per summary column) against the stored reference summaries;
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BENCH = ROOT / "outputs" / "bench"
DAY = BENCH / "drift_day_0p25.zarr"
REFERENCE = BENCH / "drift_reference_0p25.summaries.json"
DAY_TIMES = 4


def _status_kib(key: str) -> int:
    """`VmHWM` (resident high-water mark; see bench_validate._peak_kib) or `VmRSS` of this process."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
    return 0


def prepare() -> dict:
    """The day's store and the reference summaries, built once from bench_validate's store."""
    import xarray as xr

    from benchmarks.bench_validate import build_dataset, STORE
    from monitoring.summaries import summarise

    build_dataset()
    if not DAY.exists():
        src = xr.open_zarr(STORE)
        dynamic = [n for n, da in src.data_vars.items() if "time" in da.dims]
        part = DAY.with_name(DAY.name + ".partial")
        src[dynamic].isel(time=slice(0, DAY_TIMES)).to_zarr(part, mode="w", zarr_format=2, consolidated=True)
        later = DAY.with_name("drift_later_0p25.zarr")
        src[dynamic].isel(time=slice(DAY_TIMES, None)).to_zarr(later, mode="w", zarr_format=2, consolidated=True)
        part.rename(DAY)
    if not REFERENCE.exists():
        summarise([str(DAY.with_name("drift_later_0p25.zarr"))]).save(str(REFERENCE))
    import xarray as xr

    ds = xr.open_zarr(DAY)
    return {"times": ds.sizes["time"], "grid": [ds.sizes["latitude"], ds.sizes["longitude"]],
            "fields_per_time": sum(da.sizes.get("level", 1) for da in ds.data_vars.values()),
            "bytes": int(sum(da.nbytes for da in ds.data_vars.values()))}


def child(program: str) -> dict:
    import numpy as np
    import xarray as xr

    from model_code.data.ingest import Field
    from model_code.variables import by_key
    from monitoring.drift import compare
    from monitoring.summaries import Summaries, summarise, summarise_fields

    reference = Summaries.load(str(REFERENCE))
    import evidently.legacy.calculations.stattests  # noqa: F401  (import cost is not the check's)

    after_imports = _status_kib("VmRSS")  # torch (through model_code), xarray, Evidently
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
            "total_s": done - start, "peak_kib": _status_kib("VmHWM"), "after_imports_kib": after_imports,
            "columns": len(result.columns), "rows": len(current.table), "drifted_share": result.share}


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
    cols = results.runs["ours"][0]["columns"]
    lines += ["", f"Summary table: {results.runs['ours'][0]['rows']} rows x {cols} columns "
                  f"(7 statistics x 4 latitude bands per field)."]
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "child":
        print(json.dumps(child(sys.argv[2])))
    else:
        print(table(run(int(sys.argv[1]) if len(sys.argv) > 1 else 3)))
