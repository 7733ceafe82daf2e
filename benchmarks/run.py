"""Run every benchmark, print the figures as markdown, and optionally rewrite the doc.

    .venv/bin/python benchmarks/run.py                               # print (make bench)
    .venv/bin/python benchmarks/run.py --write docs/benchmarks.md    # print and rewrite the doc
    .venv/bin/python benchmarks/run.py --only validate,loader        # print some sections only
    .venv/bin/python benchmarks/run.py --only loader --write docs/benchmarks.md   # rewrite one

Each section of the doc is written whole from this file, with the date, machine, command
and load of the run that measured it, so a section's figures and the command that produced
them never drift apart. `--write` rewrites the sections it runs (all, or those of `--only`;
every section takes about 20 minutes on 2 cores) and keeps the others as they were.
The validation and loader benchmarks build their synthetic data once, in `outputs/bench/`
(git-ignored); delete that folder to rebuild it.
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

import bench_compression
import bench_forward
import bench_ingest
import bench_jobs
import bench_loader
import bench_pipeline
import bench_serving
import bench_startup
import bench_drift
import drift_confusion
import bench_evaluation
import bench_training
import bench_validate

SECTIONS = ("ingest", "forward", "validate", "loader", "training", "evaluation", "pipeline", "serving", "drift", "gpu",
            "startup", "jobs", "compression")


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
        "Memory (/proc/meminfo)": memory(),
        "xarray / cfgrib / eccodes": f"{version('xarray')} / {version('cfgrib')} / {version('eccodes')}",
        "numpy / zarr / netCDF4": f"{version('numpy')} / {version('zarr')} / {version('netCDF4')}",
        "Python / OS": f"{platform.python_version()} / {platform.system()} {platform.release()}",
    }


def memory() -> str:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 2**20:.0f} GiB"
    return "unknown"


class OtherWork:
    """CPU time that other processes used while a benchmark ran: the honest caveat of a
    shared machine (all CPU time from /proc/stat, steal included, minus this process's and
    that of the child processes it started and waited for: benchmark programs, loader workers)."""

    def __init__(self) -> None:
        self.start = self._now()

    @staticmethod
    def _now() -> tuple[float, float, float]:
        with open("/proc/stat") as f:
            user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, f.readline().split()[1:9])
        busy = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
        own = os.times()
        return time.monotonic(), busy, own.user + own.system + own.children_user + own.children_system

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


HEAD = """\
# Benchmarks

Latest figures of the benchmarks in `benchmarks/`, one section per benchmark. A section is
written whole by the command named at its top, with the date, the load of the machine
while it ran and the figures of that one run, so its figures and the command that
produced them never drift apart; `--write` with `--only` rewrites only the sections it
runs (`make bench` runs every benchmark and only prints). Every time is the median of
several runs (the section says how many) and every comparison is with a baseline
measured in the same run.

The machine of the latest write (every section says if it ran elsewhere):

{machine}

This is a shared machine, so each section says how much CPU time other processes used
while it ran. The spread column of each table says how steady the runs were. Other work
competing for the 2 cores slows a 2-thread torch forward many times over (spreads of 10x
and more), and its medians are then not to be trusted.

"""

# One template per section; `{stamp}` says when, by which command and beside how much other work.
SECTION_DOCS = {
    "ingest": """\
## (a) Ingest: real files to the model's input, against plain xarray

{stamp}

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
""",
    "forward": """\
## (b) Tiny forward and 4-step rollout per variant

{stamp}

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
""",
    "validate": """\
## (c) Validation of a 1 GiB dataset, against naive xarray checks

{stamp}

The dataset: {validate_dataset}. Every input of the medium-range variant from
`synthetic_window`, six-hourly from 2024-01-01 00 UTC, one chunk per time and level, time
steps generated and appended one at a time until the store holds at least 1 GiB on disk;
it is built once and cached (git-ignored). The machine's memory holds it in the page
cache, and an untimed pass before the timed runs puts it there, so every program below
reads it from memory: the figures measure decompression and computation, not the disk.

Three programs read the store, each in a fresh Python process per run, so that its peak
memory is its own (`benchmarks/bench_validate.py child ours|naive|numpy STORE [CHUNK_MIB]`
runs one):

- **ours**: `validate([store])` (no variant, so no contract checks), with the default
  `Policy.chunk_bytes` and with 64 MiB: each variable is read once, in blocks of whole
  time steps of at most that size, and every check (NaN and infinities, NaN share per
  time, physical bounds, constant fields, min/max and where they are, mean, standard
  deviation, robust median/MAD and outliers from a histogram, units, time axis) runs on
  the block in memory.
- **naive**: the same checks as one xarray reduction each, written without thinking about
  passes: `ds = xr.open_zarr(store)` and, for every variable, `isnull().sum()`, `isinf`
  summed, `min()`, `max()`, `(da < lo).sum()`, `(da > hi).sum()` (its physical bounds),
  `mean()`, `std()`, `median()`, each per level as ours reports them, the constant-field
  check `(da.max(("latitude", "longitude")) == da.min(("latitude", "longitude"))).any()`
  and the time steps. Dask is not installed, so `open_zarr` returns lazily indexed arrays
  behind xarray's in-memory cache: the first check of a variable loads it whole, the other
  checks reuse it, and the opened dataset keeps every variable it has loaded. The naive
  program therefore also decompresses each byte once, then makes about ten passes over
  each whole variable, and ends up holding the whole dataset. It does less than ours (no
  outlier statistics, no locations of extremes, no NaN share per time).
- **one numpy pass**: each variable read once through xarray in the same blocks as ours,
  with one `np.max` per block: what any validator reading these bytes has to pay.

Runs alternate (ours, ours with 64 MiB, numpy pass, numpy pass with 64 MiB, naive), for
{long_repeat} rounds.

{validate_table}

{validate_imports}

### Where our time goes (validation)

One validation of the whole store in the benchmark's process, default chunk size, under
cProfile (which slows it; read the shares, not the times):

{validate_profile_table}

{validate_profile_summary}
""",
    "loader": """\
## (d) Training loader against the tiny training step

{stamp}

The data: every input of the medium-range variant from `synthetic_window` on the 5° (37x72)
and 2.5° (73x144) global grids, {loader_times} six-hourly times, written once by the
project's writer (`write_dataset`: one chunk per time, all 13 levels in it) as Zarr and as NetCDF and
cached (git-ignored). With the variant's history of 2 and one lead step that is
{loader_samples} samples, {loader_batches} batches of {loader_batch}, per epoch. torch
uses {loader_threads} threads.

- **loader**: one epoch of `make_loader(WindowDataset.from_files([path], spec,
  validate=False), batch_size={loader_batch}, num_workers=0 | 2)`; workers start afresh
  each epoch, as `make_loader` makes them, and the dataset is built afresh for each epoch
  (not timed), so that the time slices it keeps in memory between samples start empty:
  every epoch reads its data from the file, as every epoch over data larger than that
  memory (`cache_bytes`) does. Data smaller than it, like these files, are read once per
  run, and later epochs without workers come from memory.
- **training step**: forward, backward and AdamW step of `build_model(spec, "tiny")` in
  train mode, over the same batches already in memory: one `aurora.rollout` step, the loss
  the mean over predicted variables of MSE against the targets of `pair_predictions`, each
  divided by its target's variance.
- **training fed by the loader**: the same steps on batches taken from the loader as they
  come, which is what a training run sees.

The loader is not the bottleneck when loader / training is above 1 (the target); the
share of the training rate kept says what a training run fed by it actually gets. Each
round runs the training step once and every loader configuration once, alone and then
feeding the training, for {long_repeat} rounds after one untimed epoch of each.

{loader_table}

{loader_summary}

Validation at construction is timed apart, as `from_files(validate=True)` minus
`from_files(validate=False)` (median of {long_repeat}); it runs once per dataset, before
any model is built:

{loader_validation_table}

### Where the loader's time goes

{loader_profile_case}, one epoch under cProfile (which slows it; read the shares, not
the times):

{loader_profile_table}
""",
    "training": """\
## (e) Training: the harness against a bare loop, skill on real data, a GPU step

{stamp}

`.venv/bin/python benchmarks/run.py --only training` runs this section alone (about five
minutes on 2 cores) and prints it.

### Harness overhead

The tiny medium-range model (`build_model(spec, "tiny")`, seeded) on a synthetic window of
every input on the {harness_grid}° global grid, written once by the project's writer and
cached (git-ignored); torch uses {training_threads} threads. Both sides train the same
seeded model on the same batch (the trainer's own first batch, of {harness_batch}, kept in
memory) with the same loss, `build_loss` of the variant's default `LossConfig`:

- **ours**: `Trainer(cfg).fit()`, its training data replaced by that one batch repeated in
  memory, so that a step is the harness's own work and not the loader's: `aurora.rollout`
  through the module DDP would wrap, the loss, backward, gradient clipping (norm 1),
  AdamW with parameter groups (no weight decay on norms and biases), the warmup-cosine
  schedule, accumulation and NaN bookkeeping, the history and the callbacks (the
  JSON-lines log writes a line per step; the progress bar is off). A callback notes when
  each step ends and stops the run after the last timed step, before the validation and
  checkpoints that `fit` does every `val_every` steps.
- **bare**: the plainest loop over the same batch: `list(aurora.rollout(model, batch.inputs,
  steps=1))`, the loss of `pair_predictions`, `backward()`, the same gradient clipping
  (`clip_grad_norm_` at norm 1: the training's math, not the harness's),
  `torch.optim.AdamW.step()`.

The two alternate step by step in one process: a callback of the trainer runs one bare
step after each of the trainer's, and each step is timed on its own (a trainer step from
the end of the bare step before it to the trainer's next `on_step_end`, after its own
callbacks), so a busy moment of the machine slows both alike. Each run builds both
models afresh, warms up for {harness_warmup} steps and times the next {harness_steps} of each. A time is the
median over {repeat} runs of the mean time per step; ours / bare is the median of the runs'
ratios (the two sides of a run saw the same moments of the machine). The target is at
most {harness_target}x.

{training_harness_table}

{training_harness_summary}

### Skill on a real hourly ERA5 series

The data: `data/samples/era5_d2m_u10_v10_usa_2018-01-02_hourly.nc`, real ERA5 10 m wind
(u10, v10; its d2m is not a medium-range variable) every hour from 2018-01-02 06 UTC to
2018-01-03 06 UTC on a 0.2° grid over the central USA (121x86; the trainer's `data.crop`
drops two columns to fit the patch size, and Aurora drops the last row). The tiny
medium-range model trains at a 1 h step (`timestep_hours: 1`) from seeded random weights,
with the trainer's own config: the variant's other inputs filled with zeros
(`fill_missing` for the statics, `fill_missing_dynamic` for 2t, msl and the atmospheric
variables, on one pressure level) and their targets NaN, so only 10u and 10v are trained
and scored; the variant's default loss; AdamW at lr {skill_lr} with {skill_warmup} warmup steps
and a cosine decay; one-step rollouts; batches of {skill_batch}; {skill_steps} steps. The last
{skill_hold_out} of the time span is held out by the trainer's own split (`data.val_fraction`;
no training sample touches it), and the final weights (no checkpoint is chosen on the
held-out hours) forecast every window in it: +1 h in one step, +6 h as a 6-step rollout.
Scores are RMSE weighted by latitude as in WeatherBench 2 (cell areas, ∝ cos(latitude),
normalised to mean 1 over the grid: `loss_weights.latitude_weights`), the square root of
the mean over forecasts of the weighted mean squared error, against:

- **persistence**: the last input hour, unchanged;
- **climatology**: the mean of the training hours at each grid point. With one day of
  data this is a daily mean of those hours, not a climatology of many years: it knows
  nothing of the diurnal cycle or the weather of the held-out hours.

{training_skill_table}

{training_skill_summary}

### One training step of the full model on a GPU

`benchmarks/gpu_training_step.py` times one training step of the full medium-range model
(about 1.3 B parameters) at 0.25° (721x1440, 13 levels) on synthetic data from
`synthetic_window`, through the same `Trainer` (bf16 autocast of the backbone, activation
checkpointing, batch of 1, the batch kept on the GPU): seconds per step (median of a few
steps after one warm-up) and peak GPU memory, printed as a Markdown table. It is one short
prepared script: `python benchmarks/gpu_training_step.py --write
benchmarks/gpu_training_step.md` on a CUDA machine records the table, which this page then
shows.

{training_gpu}
""",
    "evaluation": """\
## (f) Evaluation: scoring a 0.25° global forecast, against naive xarray

{stamp}

The data: 5 atmospheric variables (z, t, u, v, q) on 13 pressure levels on the 0.25°
global grid (721x1440), float32, one initialisation time, six-hourly lead times, a truth at
every valid time and a climatology by hour of day. Values are synthetic (a fixed random
pattern shifted per time, level and lead), generated on demand, the same for both sides.
Scores: RMSE, MAE, bias and ACC per variable, level and lead time in 4 regions (global,
tropics, northern and southern extra-tropics).

- **head to head, {evaluation_head_leads} lead times**: ours (`evaluate`: lead-time chunks, one pass
  per chunk for every metric and region, area sums as matrix products) against a naive
  implementation that computes each metric and region on its own with plain xarray on whole
  arrays (`(f - o) ** 2`, `.weighted(w).mean(...)`, ...) and is given the truth already laid
  out by lead time. 40 lead times would need 10.8 GB per dataset in memory for the naive
  side, more than this machine can hold twice, hence 2. Times are medians of {evaluation_repeat}
  alternating runs; memory is tracemalloc's peak during the call in a separate run, inputs
  excluded. Both sides' scores are compared before timing.
- **scale, {evaluation_scale_leads} lead times (10 days)**: ours alone, reading a lazily generated
  forecast and truth: time (one run, under tracemalloc) and peak memory, which the lead-time
  chunks bound, whatever the number of lead times. The target is at least 3x faster than
  naive with bounded memory.

{evaluation_table}
""",
    "pipeline": """\
## (g) Pipelines: the KFP local runner against plain function calls

{stamp}

Both sides run the demo's workload (`pipelines.demo`: its config, data, gates and held-out
days, the tiny medium-range model trained and scored on the shipped hourly ERA5 sample, then
registered, and promoted if it passes the gates, in a fresh MLflow sqlite store each run):
the training pipeline on KFP's local runner (`SubprocessRunner`, the task cache off so every
step runs) against the same step functions called one after another in one process. What
the pipeline adds is a subprocess per task (the interpreter, KFP's executor and what the
step imports, paid again by every task) and KFP's artifact bookkeeping; its extra time over
the tasks that ran is the fixed cost of a task. The sides alternate (median of
{pipeline_repeat} runs each); the targets are at most {pipeline_target}x and at most
{pipeline_task_target} s per task.

{pipeline_table}
""",
    "serving": """\
## (h) Serving: requests over sockets, concurrent clients, payload transport, cold start, a swap

{stamp}

- **one request**: a v2 request (gRPC with raw tensors; REST with the binary extension; our
  clients) for a 2-step forecast of the tiny medium-range model on a 32x64 window, against
  `forecast_steps` on the same window in the benchmark's own process (same checkpoint);
  paired and alternating, medians; target for gRPC at most 1.3x. In the predictor: the mean
  of the server's own `aurora_request_seconds` over the same requests (decoding the tensors,
  the forward passes, encoding the answer); the rest of a request is the protocol's transport
  both ways and the clients' own work.
- **6 clients at once**: six threads, each with its own connection, send back to back for
  5 s; requests/s of all of them against the same forecast called back to back in this
  process, sequentially; rounds alternate, medians; target at least 0.8x. The last column is
  the mean number of requests per forward pass the server recorded (`aurora_batch_size`).
- **transport**: 4 MB and 64 MB FP32 tensors through an echo model on the same KServe
  server (`benchmarks/serving_echo.py`): gRPC `raw_input_contents`, REST with the binary
  extension, REST JSON; beside them the same bytes as one message to a gRPC echo that takes
  and gives bytes (grpc.aio, no protobuf, no KServe: what gRPC's Python layer costs by
  itself), and the same round trip over a plain loopback TCP socket between two processes, no
  protocol: the wire's limit here. MB/s is tensor MB over the round trip (the tensor travels
  both ways); target for 64 MB over gRPC at least 500 MB/s.
- **cold start**: process start to ready (imports, checkpoint load, two warm-up forwards;
  readiness polled every 50 ms), and what a fresh process takes to import the server's
  modules and to load the checkpoint; target: cold start less the checkpoint load at most 3 s.
  Where the imports' time goes is the self time of each top-level package's modules under
  `python -X importtime`, as shares, applied to the plain import time.
- **a swap under load**: a server following `models:/aurora-medium-range@champion`
  (`--follow 1`, sqlite MLflow registry) answers 4 gRPC clients that never pause while the
  alias moves between two registered versions; latency of requests in flight during a swap
  against the same run's steady state, failed requests, and answers of the old version after
  the new one answered (0 means no client went back).

Every forward pass of the served model runs on one thread, the predictor's model thread: the
first load and its warm-up, inline batches and the steps of jobs (a swap loads on a thread of
its own that ends with the load). torch's CPU threads are an OpenMP team per thread that calls
into torch, kept while that thread lives; with a second one the process has more OpenMP
threads than the 2 cores, and OpenMP's idle threads then sleep instead of spinning, so every
parallel region of a forward waits for them to wake. Before, the checkpoint loaded and warmed
up on the main thread and requests ran on another: the tiny model's forward in the server
took as long as on two teams in one process (58 ms against 31 ms on one), and one gRPC
request was 1.46x and 1.47x the in-process forecast in two runs on this machine.

{serving_table}
""",
    "drift": """\
## (i) Drift check of one day of 0.25° data, and its false alarms on real data

{stamp}

**Cost.** One day of 6-hourly 0.25° global data (4 times x 721x1440): the medium-range
inputs t2m, u10, v10, msl and z, u, v, t, q on 13 levels (69 fields per time), synthetic, cut
from the validation benchmark's store. It is reduced to a table of area-weighted summaries
(9 statistics and a 16-band latitude profile per field, one row per time) and compared with
stored reference summaries of the two following days: 10 features per field as anomalies
from the reference's hour-of-day cycle, thresholds calibrated on stretches of the reference,
one Evidently ValueDrift per tested column in one Report (docs/monitoring.md). Each program
runs in a fresh Python process per run, so its peak resident memory is its own; runs
alternate, medians of {drift_repeat}:

- **streaming**: `summarise([day])` reads one 64 MiB block of times at a time, then `compare`;
- **load all**: `xr.open_zarr(day).load()`, then the same reductions and the same comparison.

{drift_table}

**False alarms and caught faults** (`benchmarks/drift_confusion.py`): the real hourly ERA5
2 m temperature of March 2019 over the British Isles (`data/samples`, 33x40 at 0.25°), each
reference fortnight against every 1-, 3- and 7-day window of the month outside it (a flagged
window is a false alarm), and faults made from a window outside it (`monitoring/faults.py`;
caught when the window drifted and its first reason is the fault's own). The default rule:
Evidently's normed Wasserstein distance, margin 3.

{drift_confusion}
""",
    "gpu": """\
## (j) Forecast steps of the full medium-range model on a GPU

{stamp}

`benchmarks/gpu_forecast_step.py` times forecast steps of the full medium-range model
(about 1.3 B parameters) at 0.25° (721x1440, 13 levels) the way the predictor runs them:
bf16 autocast of the backbone (`auroraops serve --autocast`), `forecast_steps` yielding each
step's prediction back on the CPU, a synthetic window of every input moved to the GPU once;
seconds per step after one warm-up step (the published figure is about 6-7 s per step on an
A100) and peak GPU memory. It is one short prepared script: `python
benchmarks/gpu_forecast_step.py --write benchmarks/gpu_forecast_step.md` on a CUDA machine
records the table, which this section then shows (the training step's GPU figure is in (e)).

{gpu_forecast}
""",
    "startup": """\
## (k) Start-up: the command line's help against the interpreter floor

{stamp}

`auroraops --help` and the help of a few commands, each run as a fresh process of the
installed console script: what a user's `--help` costs, the parsers of every command
included. A command imports torch, KServe, MLflow, KFP and xarray only where it runs
(`tests/test_cli.py` checks that no help imports them). The floor is `python -c pass`, the
same interpreter doing nothing. The commands and the floor take turns, one round running
each once (median of {startup_repeat} rounds, after one untimed round); the target is at most
{startup_target} s for every help.

{startup_table}
""",
    "jobs": """\
## (l) A full-grid job against a plain script

{stamp}

A synthetic medium-range window on the full 0.25° grid (721x1440, 2 times, 13 levels, one
NetCDF of ~586 MB of fields), 1 step of the tiny model, so that the data path, not the
model, is what is timed. Ours: a job by reference submitted to a running `auroraops serve`
(the model loaded), submit to succeeded, polled every 50 ms. The baseline,
`benchmarks/plain_job.py`, in a fresh process: read with xarray, build the batch, the same
forward, write the step with the same NetCDF encoding (the model loaded before its clock
starts). The sides alternate ({jobs_repeat} runs each, medians); the target is at most 1.5x.
Memory: the server's peak resident memory above its size when ready, against the plain
script's peak above its size before reading; the target is at most 2x (one input window +
one output step). On a CPU the tiny model's activations on the full grid are host memory
too: the plain script measures the forward's own working memory, and the data path is the
peak less that.

{jobs_table}

On a GPU: `benchmarks/gpu.sh` runs the same benchmark with `--device cuda` and records its
table in `benchmarks/gpu_job.md`, shown here:

{gpu_job}
""",
    "compression": """\
## (m) Compression: speed, memory and skill per technique

{stamp}

`benchmarks/bench_compression.py` (`--smoke` runs the same code on tiny settings in under two
minutes, which checks the script and measures nothing). The techniques are those of
`model_code/compression/` ([compression.md](compression.md)): int8-dynamic, int8-static, bf16,
{compression_mlp} of each block's MLP units pruned, and a distilled student (depth and
embedding factors {compression_factors}).

### Speed and memory on the full architecture

The full medium-range architecture ({compression_parameters} parameters, seeded random
weights: a step's time does not depend on the values) on a {compression_grid} global grid (a
synthetic window from `synthetic_window` at {compression_resolution}°, cropped to the patch size), torch on
{compression_threads} threads. int8-static is calibrated on {compression_calibration} other
synthetic windows; the student is `student_overrides(spec, "full")` with random weights. Each
technique's model is built and compressed afresh and freed before the next, beside the one
fp32 model every technique is timed against (never more than two full models at once). One
step is a forward (`forward_hours`, as `CompressResult` times it); after a warm-up the
technique and fp32 run in turns, {compression_repeat} pairs, and the speed-up is the median of
the pairs' fp32 / technique ratios. Memory: the weights' bytes (`weight_bytes`; the int8
models drop the float weights they were made from, as a model loaded from an int8 checkpoint
does), the resident memory the prepared model holds, and the process's peak resident memory
while preparing it and running its first forward, both above the resident size before it was
built (the peak count restarted per technique through `/proc/self/clear_refs`).

{compression_speed_table}

{compression_speed_summary}

### Cost in skill on real data

Per seed ({compression_seeds}): a tiny teacher trained with the demo's config
(`pipelines.demo.CONFIG`, `train.seed`) on the real hourly ERA5 2 m temperature of March 2019
over the British Isles without its held-out days (as the pipeline's prepare step writes it:
1-16 March trains, 17-21 validates), then each technique from that teacher through
`compress_checkpoint` on the same series (the pipeline's compress step; pruning recovers for
{compression_prune_steps} steps and the student trains {compression_distil_steps} steps, both with the
teacher's own config), and every checkpoint scored by `score_checkpoint` on up to
{compression_max_inits} initialisations in the held-out 22-31 March, 4 six-hour steps:
latitude-weighted RMSE of 2 m temperature over the whole grid.

{compression_skill_table}

{compression_skill_summary}

### Goals

Speed from the full architecture above, skill from the real data: the mean over seeds of the
relative RMSE change against the teacher, at each of +6, +12 and +24 h (the worst of the
three must be within the limit; a decrease meets it).

{compression_goals}

![Speed-up on the full architecture against the RMSE change at +12 h, per technique]({compression_figure})

Speed-up on the full architecture (x) against the RMSE change at +12 h (y: the mean over
seeds, bars from the smallest to the largest).
""",
}

PLACEHOLDER = """\
{title}

**Not measured yet**: `.venv/bin/python benchmarks/run.py --only {name} --write docs/benchmarks.md`
writes this section.
"""


EVALUATION_REPEAT = 2  # a naive run takes a minute on 2 cores
PIPELINE_REPEAT = 3  # a run takes a minute or two on 2 cores
STARTUP_REPEAT = 10  # a round takes about half a second
JOBS_REPEAT = 3  # a job and a plain run take about a minute together on 2 cores
COMPRESSION_REPEAT = 3  # one step of the full architecture takes 10-25 s on 2 cores
COMPRESSION_FIGURE = "figures/compression_tradeoff.png"
"""The trade-off plot, beside the doc that `--write` rewrites (and links it from there)."""

MARK = "<!-- section: {} -->"


def read_sections(path: Path) -> dict[str, str]:
    """The sections of an earlier write, by name (empty if the file does not exist)."""
    if not path.exists():
        return {}
    sections, name = {}, None
    for line in path.read_text().splitlines(keepends=True):
        for n in SECTIONS:
            if line.strip() == MARK.format(n):
                name = n
                sections[n] = ""
                break
        else:
            if name:
                sections[name] += line
    return sections


def write_doc(path: Path, info: dict[str, str], ran: list[str], fields: dict[str, object]) -> None:
    """Rewrite the sections in `ran` with this run's figures and keep the others as they were."""
    sections = read_sections(path)
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    where = f"{info['CPU cores available (`nproc`)']} CPU cores ({info['CPU model (/proc/cpuinfo)']}), GPU: {info['GPU']}"
    for name in ran:
        stamp = f"*Measured {date} on {where} with `{command()}`; {fields[f'other_{name}']}.*"
        sections[name] = SECTION_DOCS[name].format(stamp=stamp, **fields).rstrip("\n") + "\n\n"
    for name in SECTIONS:  # a section added since the doc's last write, not run now
        if name not in sections:
            title = SECTION_DOCS[name].splitlines()[0]
            sections[name] = PLACEHOLDER.format(title=title, name=name) + "\n"
    text = HEAD.format(machine=machine_table(info)) + "".join(
        MARK.format(n) + "\n" + sections[n] for n in SECTIONS)
    path.write_text(text.rstrip("\n") + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", metavar="PATH",
                        help="rewrite the sections run (all, or those of --only) in this markdown file")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per figure (default 5)")
    parser.add_argument("--long-repeat", type=int, default=3,
                        help="timed rounds of the validation and loader benchmarks (default 3)")
    parser.add_argument("--only", metavar="SECTIONS", default=",".join(SECTIONS),
                        help=f"comma-separated sections to run, of {','.join(SECTIONS)} (default all)")
    args = parser.parse_args()
    only = [x.strip() for x in args.only.split(",") if x.strip()]
    unknown = [x for x in only if x not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    if args.write:
        kept = read_sections(Path(args.write))
        if not kept and set(only) != set(SECTIONS):
            parser.error(f"{args.write} has no sections yet: write them all first (no --only)")
        lacking = [x for x in SECTIONS if x not in only and x not in kept]
        if lacking:
            print(f"{args.write} has no section {', '.join(lacking)} yet: it is written as not measured "
                  f"(run it with --only {','.join(lacking)} --write {args.write})", file=sys.stderr)

    torch.set_num_threads(bench_forward.THREADS)
    info = machine()
    print(machine_table(info), flush=True)
    fields: dict[str, object] = {}

    if "ingest" in only:
        print("\n## (a) Ingest\n", flush=True)
        other = OtherWork()
        ingest = bench_ingest.run(args.repeat)
        fields["other_ingest"] = other.report()
        print(bench_ingest.table(ingest), flush=True)
        profile = bench_ingest.profile_gfs()
        print("\n" + bench_ingest.profile_table(profile), flush=True)
        print("\n" + profile_summary(profile), flush=True)
        print(f"\nDuring the timed ingest runs, {fields['other_ingest']}.", flush=True)
        fields.update(target=bench_ingest.TARGET, ingest_table=bench_ingest.table(ingest),
                      profile_table=bench_ingest.profile_table(profile), profile_summary=profile_summary(profile))

    if "forward" in only:
        print("\n## (b) Forward\n", flush=True)
        other = OtherWork()
        forward = bench_forward.run(args.repeat)
        fields["other_forward"] = other.report()
        print(bench_forward.table(forward))
        print(f"\nDuring the forward runs, {fields['other_forward']}.", flush=True)
        fields.update(threads=bench_forward.THREADS, forward_table=bench_forward.table(forward))

    if "validate" in only:
        print("\n## (c) Validation\n", flush=True)
        other = OtherWork()
        validation = bench_validate.run(args.long_repeat)
        fields["other_validate"] = other.report()
        text = {
            "validate_dataset": bench_validate.dataset_line(validation),
            "validate_table": bench_validate.table(validation),
            "validate_imports": bench_validate.imports_note(validation),
            "validate_profile_table": bench_validate.profile_table(validation),
            "validate_profile_summary": bench_validate.profile_summary(validation),
        }
        print("\n\n".join(text.values()), flush=True)
        print(f"\nDuring the validation benchmark, {fields['other_validate']}.", flush=True)
        fields.update(text)

    if "loader" in only:
        print("\n## (d) Loader\n", flush=True)
        other = OtherWork()
        loader = bench_loader.run(args.long_repeat)
        fields["other_loader"] = other.report()
        torch.set_num_threads(bench_forward.THREADS)
        samples = bench_loader.TIMES - bench_loader.SPEC.max_history
        text = {
            "loader_table": bench_loader.table(loader),
            "loader_summary": bench_loader.summary(loader),
            "loader_validation_table": bench_loader.validation_table(loader),
            "loader_profile_table": bench_loader.profile_table(loader),
        }
        print("\n\n".join(text.values()), flush=True)
        print(f"\nDuring the loader benchmark, {fields['other_loader']}.", flush=True)
        fields.update(text, loader_times=bench_loader.TIMES, loader_samples=samples,
                      loader_batches=-(-samples // bench_loader.BATCH), loader_batch=bench_loader.BATCH,
                      loader_threads=bench_loader.THREADS,
                      loader_profile_case=loader.profile_case[0].upper() + loader.profile_case[1:])

    if "training" in only:
        print("\n## (e) Training\n", flush=True)
        other = OtherWork()
        harness = bench_training.run_harness(args.repeat)
        fields["other_training_harness"] = other.report()
        other = OtherWork()
        skill = bench_training.run_skill()
        fields["other_training_skill"] = other.report()
        torch.set_num_threads(bench_forward.THREADS)
        text = {
            "training_harness_table": bench_training.harness_table(harness),
            "training_harness_summary": bench_training.harness_summary(harness),
            "training_skill_table": bench_training.skill_table(skill),
            "training_skill_summary": bench_training.skill_summary(skill),
            "training_gpu": bench_training.gpu_result(),
        }
        print("\n\n".join(text.values()), flush=True)
        print(f"\nDuring the harness benchmark, {fields['other_training_harness']}; during the skill run, "
              f"{fields['other_training_skill']}.", flush=True)
        fields["other_training"] = (f"during the harness benchmark, {fields['other_training_harness']}; during "
                                    f"the skill run, {fields['other_training_skill']}")
        fields.update(text, harness_grid=f"{bench_training.HARNESS_GRID:g}", training_threads=bench_training.THREADS,
                      harness_batch=bench_training.HARNESS_BATCH, harness_warmup=bench_training.WARMUP,
                      harness_steps=bench_training.STEPS, harness_target=bench_training.TARGET,
                      skill_lr=f"{bench_training.SKILL_LR:g}", skill_warmup=bench_training.SKILL_WARMUP,
                      skill_batch=bench_training.SKILL_BATCH, skill_steps=bench_training.SKILL_STEPS,
                      skill_hold_out=f"{100 * bench_training.HOLD_OUT:g}%")

    if "evaluation" in only:
        print("\n## (f) Evaluation\n", flush=True)
        other = OtherWork()
        evaluation = bench_evaluation.run(EVALUATION_REPEAT)
        fields["other_evaluation"] = other.report()
        fields.update(evaluation_table=bench_evaluation.table(evaluation), evaluation_repeat=EVALUATION_REPEAT,
                      evaluation_head_leads=bench_evaluation.HEAD_TO_HEAD_LEADS,
                      evaluation_scale_leads=bench_evaluation.SCALE_LEADS)
        print(fields["evaluation_table"], flush=True)

    if "pipeline" in only:
        print("\n## (g) Pipelines\n", flush=True)
        other = OtherWork()
        pipeline = bench_pipeline.run(PIPELINE_REPEAT)
        fields["other_pipeline"] = other.report()
        fields.update(pipeline_table=bench_pipeline.table(pipeline), pipeline_repeat=PIPELINE_REPEAT,
                      pipeline_target=bench_pipeline.TARGET, pipeline_task_target=f"{bench_pipeline.TASK_TARGET_S:g}")
        print(fields["pipeline_table"], flush=True)

    if "serving" in only:
        print("\n## (h) Serving\n", flush=True)
        other = OtherWork()
        serving = bench_serving.run(args.long_repeat)
        fields["other_serving"] = other.report()
        fields["serving_table"] = bench_serving.table(serving)
        print(fields["serving_table"], flush=True)

    if "drift" in only:
        print("\n## (i) Drift\n", flush=True)
        other = OtherWork()
        drift = bench_drift.run(args.long_repeat, log=lambda line: None)
        confusion = drift_confusion.run(log=lambda line: None)
        fields["other_drift"] = other.report()
        fields.update(drift_table=bench_drift.table(drift), drift_repeat=args.long_repeat,
                      drift_confusion=drift_confusion.table(confusion))
        print(fields["drift_table"] + "\n\n" + fields["drift_confusion"], flush=True)

    if "gpu" in only:
        recorded = Path(__file__).with_name("gpu_forecast_step.md")
        fields["other_gpu"] = "nothing was timed by this command"
        fields["gpu_forecast"] = recorded.read_text().strip() if recorded.exists() else (
            "**Not measured**: no GPU was available to the runs so far, and no GPU run has recorded its "
            "figures (`benchmarks/gpu_forecast_step.md`, written by the script's `--write`). `--dry-run` runs "
            "the same code on the CPU with the tiny model on a 5.625° grid, which checks that the script "
            "works, not what a GPU does.")
        print("\n## (j) GPU forecast step\n\n" + fields["gpu_forecast"], flush=True)

    if "startup" in only:
        print("\n## (k) Start-up\n", flush=True)
        other = OtherWork()
        table = bench_startup.table(bench_startup.run(STARTUP_REPEAT))
        fields.update(other_startup=other.report(), startup_table=table, startup_repeat=STARTUP_REPEAT,
                      startup_target=f"{bench_startup.TARGET_S:g}")
        print(table, flush=True)

    if "jobs" in only:
        print("\n## (l) Full-grid job\n", flush=True)
        other = OtherWork()
        table = bench_jobs.table(bench_jobs.run(JOBS_REPEAT))
        recorded = Path(__file__).with_name("gpu_job.md")
        gpu_job = recorded.read_text().strip() if recorded.exists() else (
            "**Not measured**: no GPU has been lent to the runs so far. `benchmarks/gpu.sh --dry-run` (in the "
            "test suite) runs the same script on a 64x128 grid on the CPU, which checks that it works.")
        fields.update(other_jobs=other.report(), jobs_table=table, jobs_repeat=JOBS_REPEAT, gpu_job=gpu_job)
        print(table, flush=True)

    if "compression" in only:
        print("\n## (m) Compression\n", flush=True)
        other = OtherWork()
        speed = bench_compression.run_speed(bench_compression.Settings(repeat=COMPRESSION_REPEAT))
        fields["other_compression_speed"] = other.report()
        other = OtherWork()
        skill = bench_compression.run_skill(bench_compression.Settings())
        fields["other_compression_skill"] = other.report()
        torch.set_num_threads(bench_forward.THREADS)
        figure = (Path(args.write).parent / COMPRESSION_FIGURE if args.write
                  else Path("outputs/bench") / Path(COMPRESSION_FIGURE).name)
        bench_compression.plot(speed, skill, figure)
        text = {
            "compression_speed_table": bench_compression.speed_table(speed),
            "compression_speed_summary": bench_compression.speed_summary(speed),
            "compression_skill_table": bench_compression.skill_table(skill),
            "compression_skill_summary": bench_compression.skill_summary(skill),
            "compression_goals": bench_compression.goals_table(speed, skill),
        }
        print("\n\n".join(text.values()) + f"\n\nTrade-off plot: {figure}", flush=True)
        print(f"\nDuring the speed runs, {fields['other_compression_speed']}; during the skill runs, "
              f"{fields['other_compression_skill']}.", flush=True)
        fields["other_compression"] = (f"during the speed runs, {fields['other_compression_speed']}; during "
                                       f"the skill runs, {fields['other_compression_skill']}")
        fp32 = speed.row("fp32")
        fields.update(text, compression_figure=COMPRESSION_FIGURE, compression_repeat=COMPRESSION_REPEAT,
                      compression_resolution=f"{bench_compression.RESOLUTION:g}",
                      compression_grid=f"{speed.grid[0]}x{speed.grid[1]}", compression_threads=speed.threads,
                      compression_parameters=bench_compression.size_label(fp32.parameters),
                      compression_calibration=bench_compression.CALIBRATION_WINDOWS,
                      compression_mlp=f"{100 * bench_compression.MLP_FRACTION:g} %",
                      compression_factors=f"{bench_compression.DEPTH_FACTOR:g}",
                      compression_seeds=", ".join(map(str, bench_compression.SEEDS)),
                      compression_prune_steps=bench_compression.PRUNE_STEPS,
                      compression_distil_steps=bench_compression.DISTIL_STEPS,
                      compression_max_inits=bench_compression.MAX_INITS)

    if args.write:
        write_doc(Path(args.write), info, only, dict(fields, repeat=args.repeat, long_repeat=args.long_repeat))
        print(f"\nwrote {', '.join(only)} in {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
