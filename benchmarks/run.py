"""Run every benchmark, print the figures as markdown, and optionally rewrite the doc.

    .venv/bin/python benchmarks/run.py                               # print (make bench)
    .venv/bin/python benchmarks/run.py --write docs/benchmarks.md    # print and rewrite the doc

The doc is written whole from this file, so the figures, the machine they were measured
on and the command that produced them never drift apart.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path

import torch

import bench_forward
import bench_ingest


def machine() -> dict[str, str]:
    """What the figures depend on: cores, CPU, accelerator, library versions."""
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none (CPU only)"
    return {
        "CPU cores available (`nproc`)": str(len(os.sched_getaffinity(0))),
        "CPU model (/proc/cpuinfo)": cpu,
        "GPU": gpu,
        "torch": f"{torch.__version__}, {torch.get_num_threads()} intra-op threads",
        "microsoft-aurora": version("microsoft-aurora"),
        "xarray / cfgrib / eccodes": f"{version('xarray')} / {version('cfgrib')} / {version('eccodes')}",
        "Python / OS": f"{platform.python_version()} / {platform.system()} {platform.release()}",
    }


class OtherWork:
    """CPU time that other processes used while a benchmark ran: the honest caveat of a
    shared machine (all CPU time from /proc/stat, steal included, minus this process's)."""

    def __init__(self) -> None:
        self.start = self._now()

    @staticmethod
    def _now() -> tuple[float, float, float]:
        with open("/proc/stat") as f:
            user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, f.readline().split()[1:9])
        busy = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
        own = os.times()
        return time.monotonic(), busy, own.user + own.system

    def report(self) -> str:
        (wall0, busy0, own0), (wall1, busy1, own1) = self.start, self._now()
        others = max(0.0, (busy1 - busy0) - (own1 - own0))
        cores = len(os.sched_getaffinity(0))
        return (f"other processes used {others:.1f} CPU-seconds in {wall1 - wall0:.0f} s on {cores} cores "
                f"({100 * others / ((wall1 - wall0) * cores):.0f}% of the machine)")


def command() -> str:
    python = Path(sys.executable)
    try:
        python = python.relative_to(Path.cwd())
    except ValueError:
        pass
    return shlex.join([str(python), *sys.argv])


def machine_table(info: dict[str, str]) -> str:
    return "\n".join(["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in info.items()])


def profile_summary(rows: list[bench_ingest.ProfileRow]) -> str:
    """The profile in a paragraph, with the numbers of this run."""
    row = {r.function: r for r in rows}

    def pct(function: str) -> str:
        return f"{100 * (row[function].ours_share or 0):.0f}%"

    if row["open_datasets"].ours_share is None:
        return "Our path no longer calls `cfgrib.open_datasets`; the table shows where its time goes."
    converting = sum(row[f].ours_share or 0 for f in ("assemble_window", "window_to_batch"))
    return (
        f"Our GRIB reader opens the file with `cfgrib.open_datasets` ({pct('open_datasets')} of our "
        f"time), which makes one xarray open per variable and hypercube and merges them: "
        f"{row['open_dataset'].ours_calls} opens, against {row['open_dataset'].baseline_calls} for "
        f"the baseline, which opens only the hypercubes the batch needs. Building the message "
        f"index ({pct('from_fieldset')} of our time) is the part both sides pay. `canonicalise` "
        f"then runs on each of the {row['canonicalise'].ours_calls} datasets ({pct('canonicalise')}); "
        f"only the fields the batch uses are decoded ({row['_getitem'].ours_calls} array reads, "
        f"against {row['_getitem'].baseline_calls} for the baseline, which reads level by level). "
        f"Selecting, converting units, "
        f"deriving q and building the `Batch` take {100 * converting:.0f}%"
        + (": the overhead is in opening and reading, not in converting." if converting < 0.05 else ".")
    )


DOC = """\
# Benchmarks

Latest figures of the benchmarks in `benchmarks/`. The page is written whole by the
command below; run it again to refresh the figures (`make bench` runs the same benchmarks
and only prints them). Every time is the median of {repeat} runs. The ingest figures are
compared with a baseline timed in the same run, alternating with it; the forward figures
are checked by ratios from the same run.

```sh
{command}
```

Measured {date} on:

{machine}

This is a shared machine, so the run measures the work of others too:

- during the ingest benchmark, {other_ingest};
- during the forward benchmark, {other_forward}.

The spread column of each table says how steady the runs were. Other work competing for
the 2 cores slows a 2-thread torch forward many times over (spreads of 10x and more), and
its medians are then not to be trusted.

## (a) Ingest: real files to the model's input, against plain xarray

The baseline reads the same values from the same file the way a competent xarray user
would, and does nothing else: no recognition of variable names, no unit conversion, no
derived fields, no checks. Ours / baseline is the cost of everything our path adds; the
target is at most {target}x. Before timing, both sides are checked to read the same numbers.

- **GFS 2.5° GRIB2** (`data/samples/gfs_2p5deg_global_f120.grib2`, 3.7 MB, 38 hypercubes,
  one time): ours is the whole path to the medium-range `aurora.Batch`,
  `load_window([path], spec, history=1, fill_missing="zeros")` then `window_to_batch`
  (the file has no soil type, which is filled with zeros; everything else comes from the
  file, with `z` converted from `gh`, static `z` from `orog` and `q` derived from `r` and
  `t`). The baseline opens only the six hypercubes that hold the eleven variables the
  batch is made from, with `xr.open_dataset(path, engine="cfgrib",
  backend_kwargs={{"filter_by_keys": ..., "indexpath": ...}})`, all filters using the same
  keys so that they share one cfgrib index built in a fresh temporary directory, and takes
  `.values` of the 13 pressure levels used. Our reader also builds its index in a temporary
  directory, so both pay for that scan of the file. A bare cfgrib open without any index
  rescans the file for every hypercube (about 90 s for this file): no one should compare
  against that.
- **ERA t and z at 500 and 850 hPa, 1° global** (`data/samples/formats/test4.*`, the
  same data as NetCDF, Zarr and GRIB1): two variables are too few for any variant's batch
  without filling nearly all of it, so here ours stops at the canonical fields:
  `read_fields([(name, path)])` (open, canonicalise coordinates, recognise variables) and
  `Field.values()` of each field (loaded, float32). The baseline is
  `xr.open_dataset(path, engine="netcdf4" | "zarr" | "cfgrib")` and `.values` of `t` and `z`
  (for GRIB with an index in a temporary directory, as above). These files are small
  (0.5 MB), so their ratios measure the fixed cost of a few milliseconds per file.

{ingest_table}

### Where the time goes (GFS GRIB2)

One ingest of each side under cProfile (which slows both; read the shares, not the times):

{profile_table}

{profile_summary}

For the small test4 files, the few extra milliseconds are `canonicalise` (renaming and
checking coordinates, sorting levels) and the float32 copies made by `Field.values`; for
GRIB also `cfgrib.open_datasets`, which opens the file once per variable and merges the
results where a single `xr.open_dataset` suffices.

## (b) Tiny forward and 4-step rollout per variant

Each variant's tiny profile (seeded random weights, `build_model(spec, "tiny")`) on its
`spec.tiny_grid`, with a batch from `synthetic_window` of `spec.max_history` times
`spec.timestep` apart and `window_to_batch`; torch limited to {threads} threads. "First
forward" is the very first call after building the model; then, after one more warm-up,
the median of {repeat} single forwards (`model(batch)` under `torch.inference_mode()`) and
the median of {repeat} 4-step rollouts (`list(forecast_steps(model, batch, 4))`, as forecasts run).
These figures measure the model and the rollout loop, not data loading.

There is no outside baseline: two ratios from the same run check the figures instead.
Rollout / forward should be close to 4 (a rollout is four forwards and some
bookkeeping); cold / warm is what the first call costs. The variants run in the order of
the table in one process, so the first one's first forward also pays for torch's one-time
set-up.

{forward_table}
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", metavar="PATH", help="rewrite this markdown file with the figures")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per figure (default 5)")
    args = parser.parse_args()

    torch.set_num_threads(bench_forward.THREADS)
    info = machine()
    print(machine_table(info), flush=True)
    print("\n## (a) Ingest\n", flush=True)
    other = OtherWork()
    ingest = bench_ingest.run(args.repeat)
    other_ingest = other.report()
    print(bench_ingest.table(ingest), flush=True)
    profile = bench_ingest.profile_gfs()
    print("\n" + bench_ingest.profile_table(profile), flush=True)
    print("\n" + profile_summary(profile), flush=True)
    print(f"\nDuring the timed ingest runs, {other_ingest}.", flush=True)
    print("\n## (b) Forward\n", flush=True)
    other = OtherWork()
    forward = bench_forward.run(args.repeat)
    other_forward = other.report()
    print(bench_forward.table(forward))
    print(f"\nDuring the forward runs, {other_forward}.")

    if args.write:
        text = DOC.format(
            command=command(),
            repeat=args.repeat,
            date=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            machine=machine_table(info),
            other_ingest=other_ingest,
            other_forward=other_forward,
            target=bench_ingest.TARGET,
            ingest_table=bench_ingest.table(ingest),
            profile_table=bench_ingest.profile_table(profile),
            profile_summary=profile_summary(profile),
            threads=bench_forward.THREADS,
            forward_table=bench_forward.table(forward),
        )
        Path(args.write).write_text(text)
        print(f"\nwrote {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
