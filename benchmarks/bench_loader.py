"""(d) Training loader throughput against the tiny model's training step rate.

The data: every input of the medium-range variant from `synthetic_window` on a coarse
global grid (5° and 2.5°), 50 six-hourly times from 2024-01-01 00 UTC, written once by the
project's own writer (`write_dataset`: one chunk per time, all 13 levels in it) as Zarr and as NetCDF
and cached in `outputs/bench/` (git-ignored). With the variant's history of 2 and one lead
step, that is 48 samples, 12 batches of 4, per epoch.

- loader: one epoch of `make_loader(WindowDataset.from_files([path], spec, validate=False),
  batch_size=4, num_workers=0 | 2)`, workers started afresh each epoch as `make_loader`
  does, the dataset built afresh for each epoch so that the time slices it keeps in memory
  between samples start empty (every epoch reads its data from the file, as with data
  larger than that memory); samples per second.
- training step: forward, backward and AdamW step of `build_model(spec, "tiny")` in train
  mode on the same batches already in memory, one `aurora.rollout` step, the loss the mean
  over predicted variables of MSE against the targets of `pair_predictions` (each divided by
  its target's variance); samples per second. torch uses 2 threads.
- training fed by the loader: the same steps on batches taken from the loader as they
  come, which is what a training run sees (on 2 cores, loader workers and the training
  threads share them).

The loader is not the bottleneck when loader samples/s over training samples/s is above 1;
the end-to-end column says how much of the training rate survives. Validation is timed
apart: `from_files(validate=True)` minus `from_files(validate=False)`, once per dataset.
"""

from __future__ import annotations

import cProfile
import pstats
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from aurora import rollout

from model_code.data.lazy_fields import READ_AHEAD_BYTES
from model_code.data.loader import make_loader
from model_code.data.samples import pair_predictions
from model_code.data.synthetic import regular_grid, synthetic_window
from model_code.data.windows import WindowDataset
from model_code.data.writers import write_dataset
from model_code.variants import VARIANTS, build_model
from timing import SPREAD_NOTE, Timing

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "outputs" / "bench"
SPEC = VARIANTS["medium-range"]
GRIDS = (5.0, 2.5)
FORMATS = {"zarr": ".zarr", "netcdf": ".nc"}
SHOWN = {"zarr": "Zarr", "netcdf": "NetCDF"}
TIMES = 50
BATCH = 4
WORKERS = (0, 2)
THREADS = 2
TARGET = 1.0


def data_path(resolution: float, fmt: str) -> Path:
    return OUT / f"loader_medium_range_{resolution:g}deg_{TIMES}t{FORMATS[fmt]}"


def build_files(resolution: float) -> dict[str, Path]:
    """The cached files of one grid, written first if absent (the writer is atomic)."""
    paths = {fmt: data_path(resolution, fmt) for fmt in FORMATS}
    if all(p.exists() for p in paths.values()):
        return paths
    lat, lon = regular_grid(resolution)
    times = np.datetime64("2024-01-01T00:00", "ns") + np.arange(TIMES) * np.timedelta64(6, "h")
    ds = synthetic_window(SPEC, lat, lon, times)
    for p in paths.values():
        if not p.exists():
            write_dataset(ds, str(p))
    return paths


def dataset(path: Path, validate: bool = False) -> WindowDataset:
    return WindowDataset.from_files([path], SPEC, validate=validate)


def epoch(loader) -> list:
    return list(loader)


# --------------------------------------------------------------------------------------
# The training step


class Trainer:
    """The tiny model in train mode with AdamW: one step per batch."""

    def __init__(self) -> None:
        self.model = build_model(SPEC, "tiny").train()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4)

    def step(self, batch) -> float:
        predictions = list(rollout(self.model, batch.inputs, steps=max(batch.lead_steps)))
        losses = []
        for pred, target in pair_predictions(predictions, batch):
            for group in ("surf_vars", "atmos_vars"):
                for name, y in getattr(target, group).items():
                    losses.append(torch.nn.functional.mse_loss(getattr(pred, group)[name], y) / y.var())
        loss = torch.stack(losses).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())


def _samples(batches) -> int:
    return sum(b.batch_size for b in batches)


# --------------------------------------------------------------------------------------
# The benchmark


@dataclass(frozen=True)
class Rate:
    """Samples per second of several timed epochs (as `Timing`s of whole epochs)."""

    samples: int
    timing: Timing

    @property
    def per_second(self) -> float:
        return self.samples / (self.timing.median / 1e3)


@dataclass(frozen=True)
class LoaderRow:
    resolution: float
    grid: tuple[int, int]
    fmt: str
    workers: int
    loader: Rate
    training: Rate
    end_to_end: Rate

    @property
    def ratio(self) -> float:
        return self.loader.per_second / self.training.per_second

    @property
    def kept(self) -> float:
        return self.end_to_end.per_second / self.training.per_second


@dataclass(frozen=True)
class ValidationRow:
    resolution: float
    fmt: str
    size_mib: float
    validate_ms: float
    construct_ms: float


@dataclass(frozen=True)
class LoaderResult:
    rows: list[LoaderRow]
    validation: list[ValidationRow]
    profile: list[tuple[str, float, int]]
    profile_case: str


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def _size_mib(path: Path) -> float:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20
    return path.stat().st_size / 2**20


def run_grid(resolution: float, repeat: int, log=print) -> tuple[list[LoaderRow], list[ValidationRow]]:
    paths = build_files(resolution)
    lat, lon = regular_grid(resolution)

    validation = []
    for fmt, path in paths.items():
        dataset(path, validate=True)  # warm: files in the page cache, imports done
        with_checks, without = [], []
        for _ in range(repeat):
            with_checks.append(_timed(lambda: dataset(path, validate=True)))
            without.append(_timed(lambda: dataset(path, validate=False)))
        construct = statistics.median(without)
        validation.append(ValidationRow(resolution, fmt, _size_mib(path),
                                        statistics.median(with_checks) - construct, construct))

    batches = epoch(make_loader(dataset(paths["netcdf"]), BATCH))
    trainer = Trainer()
    trainer.step(batches[0])  # warm-up
    trainer.step(batches[1])
    samples = _samples(batches)

    configs = [(fmt, workers) for fmt in FORMATS for workers in WORKERS]
    loader_ms = {c: [] for c in configs}
    e2e_ms = {c: [] for c in configs}
    train_ms = []
    # Every epoch gets a freshly built dataset (about 30 ms, not timed), so that whatever the
    # dataset keeps in memory between samples starts empty: each epoch reads its data from the
    # file, as every epoch over data larger than that memory does.
    def fresh(fmt: str, workers: int):
        return make_loader(dataset(paths[fmt]), BATCH, num_workers=workers)

    for fmt, workers in configs:  # warm-up epoch of each loader
        epoch(fresh(fmt, workers))
    for _ in range(repeat):  # rounds: every configuration once per round
        train_ms.append(_timed(lambda: [trainer.step(b) for b in batches]))
        for fmt, workers in configs:
            loader = fresh(fmt, workers)
            loader_ms[(fmt, workers)].append(_timed(lambda: epoch(loader)))
            loader = fresh(fmt, workers)
            e2e_ms[(fmt, workers)].append(_timed(lambda: [trainer.step(b) for b in loader]))
    training = Rate(samples, Timing(tuple(train_ms)))
    rows = [LoaderRow(resolution, (len(lat), len(lon)), fmt, workers,
                      Rate(samples, Timing(tuple(loader_ms[(fmt, workers)]))), training,
                      Rate(samples, Timing(tuple(e2e_ms[(fmt, workers)]))))
            for fmt, workers in configs]
    for r in rows:
        log(f"  {resolution:g}° {r.fmt} workers={r.workers}: loader {r.loader.per_second:.1f}/s, "
            f"training {r.training.per_second:.1f}/s, fed by the loader {r.end_to_end.per_second:.1f}/s")
    return rows, validation


def run(repeat: int = 3, log=print) -> LoaderResult:
    torch.set_num_threads(THREADS)
    rows, validation = [], []
    for resolution in GRIDS:
        r, v = run_grid(resolution, repeat, log)
        rows += r
        validation += v
    profile, case = profile_loader(GRIDS[0], "zarr")
    return LoaderResult(rows, validation, profile, case)


# --------------------------------------------------------------------------------------
# Where the loader's time goes


PROFILED = (
    ("`WindowDataset._sample`: one sample", "model_code/data/windows.py", "_sample"),
    ("&nbsp;&nbsp;`window`: the input window (`assemble_window`)", "model_code/data/windows.py", "window"),
    ("&nbsp;&nbsp;`targets`: the target times of the predicted variables", "model_code/data/windows.py", "targets"),
    ("&nbsp;&nbsp;&nbsp;&nbsp;`values` of the dataset's fields (time slices kept between samples)",
     "model_code/data/lazy_fields.py", "values"),
    ("&nbsp;&nbsp;&nbsp;&nbsp;&nbsp;&nbsp;`Field._loaded`: read a block of times and convert it",
     "model_code/data/ingest.py", "_loaded"),
    ("&nbsp;&nbsp;&nbsp;&nbsp;&nbsp;&nbsp;&nbsp;&nbsp;reading from the file (zarr / netCDF4 backend)", "xarray/core/indexing.py",
     "explicit_indexing_adapter"),
    ("&nbsp;&nbsp;`window_to_batch`: window to `aurora.Batch`", "model_code/data/batch.py", "window_to_batch"),
    ("&nbsp;&nbsp;`_target_batch`: targets to `aurora.Batch`", "model_code/data/samples.py", "_target_batch"),
    ("`collate`: samples to one batch", "model_code/data/loader.py", "collate"),
)


def profile_loader(resolution: float, fmt: str):
    """cProfile of one epoch without workers, on a freshly built dataset (shares of its time)."""
    epoch(make_loader(dataset(data_path(resolution, fmt)), BATCH))
    loader = make_loader(dataset(data_path(resolution, fmt)), BATCH)
    profiler = cProfile.Profile()
    profiler.enable()
    epoch(loader)
    profiler.disable()
    stats = pstats.Stats(profiler)
    rows = []
    for label, suffix, function in PROFILED:
        share, calls = 0.0, 0
        for (filename, _, fn), (_, ncalls, _, cumulative, _) in stats.stats.items():
            if fn == function and filename.replace("\\", "/").endswith(suffix):
                share += cumulative / stats.total_tt
                calls += ncalls
        rows.append((label, share, calls))
    return rows, f"{SHOWN[fmt]} at {resolution:g}°, `num_workers=0`"


# --------------------------------------------------------------------------------------
# Markdown


def table(result: LoaderResult) -> str:
    lines = [
        "| grid | file | workers | loader (samples/s) | training step (samples/s) | loader / training "
        "| target | training fed by the loader (samples/s) | share of the training rate kept | spread |",
        "|---|---|--:|--:|--:|--:|---|--:|--:|--:|",
    ]
    for r in result.rows:
        verdict = "met" if r.ratio > TARGET else "**not met**"
        spread = max(r.loader.timing.spread, r.training.timing.spread, r.end_to_end.timing.spread)
        lines.append(
            f"| {r.resolution:g}° ({r.grid[0]}x{r.grid[1]}) | {SHOWN[r.fmt]} | {r.workers} | "
            f"{r.loader.per_second:.1f} | "
            f"{r.training.per_second:.1f} | **{r.ratio:.2f}x** | > {TARGET:g}x: {verdict} | "
            f"{r.end_to_end.per_second:.1f} | {100 * r.kept:.0f}% | {spread:.2f}x |"
        )
    lines += ["", SPREAD_NOTE]
    return "\n".join(lines)


def validation_table(result: LoaderResult) -> str:
    lines = ["| grid | file | size | `from_files(validate=True)` extra (ms) | construction without it (ms) |",
             "|---|---|--:|--:|--:|"]
    for v in result.validation:
        lines.append(f"| {v.resolution:g}° | {SHOWN[v.fmt]} | {v.size_mib:.1f} MiB | {v.validate_ms:.0f} | "
                     f"{v.construct_ms:.0f} |")
    return "\n".join(lines)


def profile_table(result: LoaderResult) -> str:
    lines = ["| step (cumulative; indented: part of the step above) | share of an epoch | calls |",
             "|---|--:|--:|"]
    for label, share, calls in result.profile:
        lines.append(f"| {label} | {100 * share:.0f}% | {calls} |" if calls else f"| {label} | – | – |")
    return "\n".join(lines)


def summary(result: LoaderResult) -> str:
    """What the table says, with the numbers of this run."""
    by = {(r.resolution, r.fmt, r.workers): r for r in result.rows}
    parts = []
    for resolution in GRIDS:
        z, n = by[(resolution, "zarr", 0)], by[(resolution, "netcdf", 0)]
        best = max((r for r in result.rows if r.resolution == resolution), key=lambda r: r.end_to_end.per_second)
        parts.append(
            f"at {resolution:g}° the training step takes {z.training.per_second:.1f} samples/s; without "
            f"workers the loader gives {z.loader.per_second:.1f} from Zarr and {n.loader.per_second:.1f} "
            f"from NetCDF ({n.loader.per_second / z.loader.per_second:.1f}x), and the best training fed "
            f"by a loader ({SHOWN[best.fmt]}, {best.workers} workers) keeps {100 * best.kept:.0f}% of the step rate"
        )
    reading = next(row for row in result.profile if "reading from the file" in row[0])
    text = "; ".join(parts)
    text = text[0].upper() + text[1:] + ". "
    text += (f"In one epoch from {result.profile_case} ({TIMES - SPEC.max_history} samples, each "
             f"using {chunks_per_sample()} field slices of one time and level), reading from the file takes "
             f"{100 * reading[1]:.0f}% of the time, in {reading[2]} reads: a time not in memory yet is "
             f"read with the times after it, up to {READ_AHEAD_BYTES / 2**20:g} MiB of a variable at once "
             "(`READ_AHEAD_BYTES`), so each variable is read in a few blocks an epoch.")
    if all(by[(g, "netcdf", 0)].loader.per_second > 1.2 * by[(g, "zarr", 0)].loader.per_second for g in GRIDS):
        text += (" The same chunks come faster from NetCDF than from Zarr: at a few kB to a few tens of kB a "
                 "chunk, the cost of each read counts more than the bytes.")
    workers_help = all(by[(g, f, 2)].end_to_end.per_second > 1.2 * by[(g, f, 0)].end_to_end.per_second
                       for g in GRIDS for f in FORMATS)
    if not workers_help:
        text += (" On 2 cores, loader workers compete with torch's 2 threads: they raise the loader's own "
                 "rate more than they raise the rate of a training run fed by it.")
    return text


def chunks_per_sample() -> int:
    """Slices of one time and one level a sample uses (history inputs, one target)."""
    def fields(variables) -> int:
        return sum(len(SPEC.levels) if v.kind == "atmos" else 1 for v in variables if v.kind != "static")
    return SPEC.max_history * fields(SPEC.inputs()) + fields(SPEC.outputs())


if __name__ == "__main__":
    result = run()
    print(table(result))
    print()
    print(validation_table(result))
    print()
    print(profile_table(result))
    print()
    print(summary(result))
