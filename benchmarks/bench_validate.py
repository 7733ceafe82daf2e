"""(c) Validation of a 0.25° global dataset of over 1 GB on disk, against naive xarray checks.

The data: every input of the medium-range variant (4 surface fields, 5 atmospheric fields on
13 levels, 3 statics) from `synthetic_window` on the 0.25° global grid (721 x 1440), six-
hourly times from 2024-01-01 00 UTC, written as Zarr v2 with xarray's default compression
(Blosc lz4), one chunk per time and level. Time steps are appended one at a time until the
store holds at least 1 GiB on disk (`du`). It is built once and cached in
`outputs/bench/synthetic_0p25.zarr` (git-ignored); the build is timed on its own and is
not part of any figure.

Three programs read that store, each in a fresh Python process per run (so that its peak
resident memory is its own, not the benchmark's):

- ours: `validate([store], policy=Policy(chunk_bytes=...))` with the default chunk size
  and with 64 MiB: every variable read once, block by block, every check in that pass;
- naive: the same checks the way one writes them with xarray without thinking about
  passes, one xarray reduction per check and variable on `xr.open_zarr(store)`;
- one numpy pass: every variable read once in the same blocks as ours (default chunk
  size), with a single `np.max` per block: the floor any validator reading these bytes
  has to pay.

Targets: ours at least 3x faster than naive; ours within 2x of one numpy pass; ours' peak
memory set by the chunk size, not the dataset size.

Run one program on its own (prints one JSON line):

    .venv/bin/python benchmarks/bench_validate.py child ours STORE [CHUNK_MIB]
    .venv/bin/python benchmarks/bench_validate.py child naive STORE [VARIABLE,...]
    .venv/bin/python benchmarks/bench_validate.py child numpy STORE CHUNK_MIB
"""

from __future__ import annotations

import cProfile
import json
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from timing import status_kib

ROOT = Path(__file__).resolve().parents[1]
STORE = ROOT / "outputs" / "bench" / "synthetic_0p25.zarr"
INFO_NAME = "bench_info.json"
MIN_DISK_BYTES = 2**30  # 1 GiB, as `du` counts it
RESOLUTION = 0.25
FIRST_TIME = "2024-01-01T00:00"
STEP_HOURS = 6
SMALL_CHUNK = 64 * 2**20
SPEEDUP_TARGET = 3.0
SINGLE_PASS_TARGET = 2.0
MIB = 2**20


# --------------------------------------------------------------------------------------
# The dataset, built once


@dataclass(frozen=True)
class DatasetInfo:
    path: str
    grid: tuple[int, int]
    times: int
    variables: int
    fields_per_time: int
    disk_bytes: int
    uncompressed_bytes: int
    compressor: str
    build_seconds: float


def disk_usage(path: Path) -> int:
    """Bytes the files under `path` occupy on disk (allocated blocks, as `du` counts)."""
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
    return total


def _chunks(da) -> dict:
    return {"chunks": tuple(1 if d in ("time", "level") else n for d, n in zip(da.dims, da.shape))}


def build_dataset(path: Path = STORE, min_disk_bytes: int = MIN_DISK_BYTES) -> DatasetInfo:
    """The cached store, built first if absent: one time step generated and appended at a
    time (memory bounded by one step), until the store holds `min_disk_bytes` on disk."""
    info_file = path / INFO_NAME
    if info_file.exists():
        info = json.loads(info_file.read_text())
        return DatasetInfo(**{**info, "grid": tuple(info["grid"])})

    import numpy as np
    import zarr

    from model_code.data.synthetic import regular_grid, synthetic_window
    from model_code.variants import VARIANTS

    spec = VARIANTS["medium-range"]
    lat, lon = regular_grid(RESOLUTION)
    partial = path.with_name(path.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    uncompressed, times, statics = 0, 0, []
    while times == 0 or disk_usage(partial) < min_disk_bytes:
        t = np.datetime64(FIRST_TIME, "ns") + np.timedelta64(STEP_HOURS * times, "h")
        ds = synthetic_window(spec, lat, lon, np.array([t]))
        if times == 0:
            statics = [n for n, da in ds.data_vars.items() if "time" not in da.dims]
            uncompressed += sum(ds[n].nbytes for n in statics)
            encoding = {n: _chunks(da) for n, da in ds.data_vars.items()}
            # Units fixed up front: xarray picks "days since" for a single time, and appended
            # six-hourly times would then be written as whole days.
            encoding["time"] = {"units": f"hours since {FIRST_TIME}", "dtype": "int64"}
            ds.to_zarr(partial, mode="w", zarr_format=2, consolidated=True, encoding=encoding)
        else:
            ds = ds.drop_vars(statics)
            ds.to_zarr(partial, append_dim="time", zarr_format=2, consolidated=True)
        uncompressed += sum(da.nbytes for da in ds.data_vars.values() if "time" in da.dims)
        times += 1
        del ds
        if times > 64:
            raise RuntimeError("the store does not reach its size; is the compression far better than expected?")
    seconds = time.perf_counter() - start
    group = zarr.open_group(str(partial), mode="r")
    first = group["t"]
    compressor = str(getattr(first, "compressors", None) or first.compressor)
    arrays = [group[n] for n in group.array_keys() if group[n].ndim >= 2]
    n_fields = sum(a.shape[1] if a.ndim == 4 else 1 for a in arrays if a.ndim >= 3)
    info = DatasetInfo(
        path=str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path),
        grid=(len(lat), len(lon)), times=times,
        variables=len(arrays),
        fields_per_time=n_fields, disk_bytes=disk_usage(partial), uncompressed_bytes=int(uncompressed),
        compressor=compressor, build_seconds=seconds,
    )
    (partial / INFO_NAME).write_text(json.dumps(asdict(info), indent=1))
    shutil.rmtree(path, ignore_errors=True)
    partial.rename(path)
    return info


# --------------------------------------------------------------------------------------
# The three programs, each run in a fresh process


def child_ours(store: str, chunk_bytes: int | None) -> dict:
    from model_code.data.validate import Policy, validate

    after_imports = status_kib("VmRSS")
    start = time.perf_counter()
    report = validate([store], policy=Policy() if chunk_bytes is None else Policy(chunk_bytes=chunk_bytes))
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "rss_after_imports_kib": after_imports, "peak_rss_kib": status_kib("VmHWM"),
            "summary": report.summary(), "variables": len(report.statistics)}


def _naive_checks(da, lo, hi) -> dict:
    """Every check of ours as its own xarray reduction, per level as ours reports them."""
    import numpy as np
    import xarray as xr

    dims = [d for d in da.dims if d != "level"]  # per level for atmospheric fields
    out = {
        "nan": da.isnull().sum(dims),
        "inf": xr.apply_ufunc(np.isinf, da).sum(dims),
        "min": da.min(dims),
        "max": da.max(dims),
        "below": (da < lo).sum(dims) if lo is not None else None,
        "above": (da > hi).sum(dims) if hi is not None else None,
        "mean": da.mean(dims),
        "std": da.std(dims),
        "median": da.median(dims),
        "constant": (da.max(("latitude", "longitude")) == da.min(("latitude", "longitude"))).any(),
    }
    if "time" in da.dims and da.sizes["time"] > 1:
        steps = np.diff(da.time.values)
        out["irregular"] = len(np.unique(steps)) > 1
    return {k: (v.values if hasattr(v, "values") else v) for k, v in out.items()}


def child_naive(store: str, only: list[str] | None = None) -> dict:
    import xarray as xr

    from model_code.variables import by_key

    after_imports = status_kib("VmRSS")
    start = time.perf_counter()
    ds = xr.open_zarr(store)  # without dask: lazy arrays, each loaded whole on first use (and kept)
    names = [n for n in ds.data_vars if only is None or n in only]
    per_variable = {}
    for name in names:
        t0 = time.perf_counter()
        lo, hi = by_key(name).bounds
        _naive_checks(ds[name], lo, hi)
        per_variable[name] = time.perf_counter() - t0
    seconds = time.perf_counter() - start
    nbytes = sum(ds[n].nbytes for n in names)
    return {"seconds": seconds, "rss_after_imports_kib": after_imports, "peak_rss_kib": status_kib("VmHWM"),
            "variables": len(names), "bytes": nbytes, "per_variable": per_variable,
            "lazy": type(xr.open_zarr(store)["t"].variable._data).__name__}


def child_numpy(store: str, chunk_bytes: int) -> dict:
    """Every variable read once in ours' blocks, one np.max per block."""
    import numpy as np
    import xarray as xr

    after_imports = status_kib("VmRSS")
    start = time.perf_counter()
    ds = xr.open_zarr(store)
    nbytes, acc = 0, []
    for name, da in ds.data_vars.items():
        if "time" not in da.dims:
            blocks = [da]
        else:
            per_time = 4 * int(np.prod([n for d, n in da.sizes.items() if d != "time"]))
            step = max(1, chunk_bytes // per_time)
            blocks = (da.isel(time=slice(s, s + step)) for s in range(0, da.sizes["time"], step))
        for block in blocks:
            x = block.values
            acc.append(np.max(x))
            nbytes += x.nbytes
            del x
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "rss_after_imports_kib": after_imports, "peak_rss_kib": status_kib("VmHWM"),
            "bytes": nbytes}


def _child_main(argv: list[str]) -> None:
    mode, store, rest = argv[0], argv[1], argv[2:]
    if mode == "ours":
        chunk = int(float(rest[0]) * MIB) if rest else None
        out = child_ours(store, chunk)
    elif mode == "naive":
        out = child_naive(store, rest[0].split(",") if rest else None)
    elif mode == "numpy" and rest:
        out = child_numpy(store, int(float(rest[0]) * MIB))
    else:
        raise SystemExit("usage: bench_validate.py child ours STORE [CHUNK_MIB] | naive STORE [VAR,...] "
                         "| numpy STORE CHUNK_MIB")
    print(json.dumps(out))


def _default_chunk() -> int:
    from model_code.data.policy import DEFAULT_CHUNK_BYTES

    return DEFAULT_CHUNK_BYTES


def run_child(*args: str) -> dict:
    """One program in a fresh interpreter; its JSON line back."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, __file__, "child", *args], capture_output=True, text=True,
                          cwd=ROOT, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------
# The benchmark


@dataclass(frozen=True)
class Runs:
    """Several fresh-process runs of one program."""

    label: str
    seconds: tuple[float, ...]
    peak_rss_kib: tuple[int, ...]
    rss_after_imports_kib: tuple[int, ...]
    extra: dict

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def spread(self) -> float:
        return max(self.seconds) / min(self.seconds)

    @property
    def peak_mib(self) -> float:
        return max(self.peak_rss_kib) / 1024

    @property
    def imports_mib(self) -> float:
        return statistics.median(self.rss_after_imports_kib) / 1024


def _runs(label: str, results: list[dict]) -> Runs:
    return Runs(label, tuple(r["seconds"] for r in results), tuple(r["peak_rss_kib"] for r in results),
                tuple(r["rss_after_imports_kib"] for r in results),
                {k: v for k, v in results[-1].items() if k not in ("seconds", "peak_rss_kib", "rss_after_imports_kib")})


@dataclass(frozen=True)
class ValidateResult:
    dataset: DatasetInfo
    default_chunk: int
    small_chunk: int
    ours_default: Runs
    ours_small: Runs
    naive: Runs
    numpy_pass: Runs
    numpy_small: Runs
    profile: list[ProfileRow]

    @property
    def speedup(self) -> float:
        return self.naive.median / self.ours_default.median

    @property
    def over_single_pass(self) -> float:
        return self.ours_default.median / self.numpy_pass.median

    def throughput(self, runs: Runs) -> float:
        """Uncompressed bytes per second."""
        return self.dataset.uncompressed_bytes / runs.median


def run(repeat: int = 3, naive_repeat: int | None = None, store: Path = STORE, log=print) -> ValidateResult:
    """Runs alternate (ours, ours small chunks, numpy pass, naive), `repeat` rounds; the
    naive program runs in the first `naive_repeat` rounds only (default: all)."""
    dataset = build_dataset(store)
    default_chunk = _default_chunk()
    naive_repeat = repeat if naive_repeat is None else naive_repeat
    s = str(store)
    log(f"dataset {dataset.path}: {dataset.times} times, {dataset.disk_bytes / 2**30:.2f} GiB on disk, "
        f"{dataset.uncompressed_bytes / 2**30:.2f} GiB uncompressed (built in {dataset.build_seconds:.0f} s)")
    # Untimed warm-up: the store in the page cache for every program alike.
    run_child("numpy", s, str(default_chunk / MIB))
    results: dict[str, list[dict]] = {"ours": [], "small": [], "numpy": [], "numpy_small": [], "naive": []}
    for i in range(repeat):
        results["ours"].append(run_child("ours", s, str(default_chunk / MIB)))
        results["small"].append(run_child("ours", s, str(SMALL_CHUNK / MIB)))
        results["numpy"].append(run_child("numpy", s, str(default_chunk / MIB)))
        results["numpy_small"].append(run_child("numpy", s, str(SMALL_CHUNK / MIB)))
        if i < naive_repeat:
            results["naive"].append(run_child("naive", s))
        log(f"  round {i + 1}: ours {results['ours'][-1]['seconds']:.1f} s, small chunks "
            f"{results['small'][-1]['seconds']:.1f} s, numpy pass {results['numpy'][-1]['seconds']:.1f} s"
            + (f", naive {results['naive'][-1]['seconds']:.1f} s" if i < naive_repeat else ""))
    return ValidateResult(
        dataset, default_chunk, SMALL_CHUNK,
        _runs("ours", results["ours"]), _runs("ours, small chunks", results["small"]),
        _runs("naive", results["naive"]), _runs("numpy pass", results["numpy"]),
        _runs("numpy pass, small chunks", results["numpy_small"]), profile_ours(store, default_chunk),
    )


# --------------------------------------------------------------------------------------
# Where our time goes


PROFILED = (  # (row label, short name, file suffix, function; * = own time)
    ("reading blocks: `Field.chunk` (zarr chunk reads, Blosc decompression)", "reading",
     "model_code/data/ingest.py", "chunk"),
    ("`_Accumulator.update`: every check of one block", "the checks", "model_code/data/validate.py", "update"),
    ("&nbsp;&nbsp;its own lines (element-wise ufuncs such as `isfinite` are not seen by cProfile)",
     "element-wise ufuncs in `update`", "model_code/data/validate.py", "update*"),
    ("&nbsp;&nbsp;`_extremes`: where the min and max are", "`_extremes`", "model_code/data/validate.py", "_extremes"),
    ("&nbsp;&nbsp;`_histogram`: robust statistics (every 4th row and column)", "`_histogram`",
     "model_code/data/validate.py", "_histogram"),
    ("&nbsp;&nbsp;`_bounds`: physical range", "`_bounds`", "model_code/data/validate.py", "_bounds"),
    ("findings and statistics from the accumulated values", "the findings", "model_code/data/validate.py",
     "_value_findings"),
)
TOP_BUILTINS = 5


@dataclass(frozen=True)
class ProfileRow:
    step: str
    share: float
    calls: int
    short: str = ""


def profile_ours(store: Path, chunk_bytes: int) -> list[ProfileRow]:
    """cProfile of `validate_fields` on every variable of the store: shares of its time, by
    step, then the numpy calls (C functions called from the validator or numpy) that take
    the most time of their own."""
    from model_code.data.ingest import read_fields
    from model_code.data.validate import Policy, validate_fields

    fields, _ = read_fields([(str(store), store)])
    profiler = cProfile.Profile()
    profiler.enable()
    validate_fields(fields, policy=Policy(chunk_bytes=chunk_bytes))
    profiler.disable()
    stats = pstats.Stats(profiler)
    total = stats.total_tt
    rows = []
    for label, short, suffix, function in PROFILED:
        own = function.endswith("*")
        name = function.rstrip("*")
        share, calls = 0.0, 0
        for (filename, _, fn), (_, ncalls, tottime, cumulative, _) in stats.stats.items():
            if fn == name and filename.replace("\\", "/").endswith(suffix):
                share += (tottime if own else cumulative) / total
                calls += ncalls
        rows.append(ProfileRow(label, share, calls, short))
    numpy_calls = []
    for (filename, _, fn), (_, ncalls, tottime, _, callers) in stats.stats.items():
        called_from = [c[0].replace("\\", "/") for c in callers]
        if filename == "~" and any("model_code/data/validate.py" in c or "/numpy/" in c for c in called_from):
            numpy_calls.append(ProfileRow(f"numpy C call `{fn.strip('<>')}`: own time, all calls", tottime / total,
                                          ncalls, f"numpy's `{fn.strip('<>')}`"))
    rows += sorted(numpy_calls, key=lambda r: -r.share)[:TOP_BUILTINS]
    return rows


# --------------------------------------------------------------------------------------
# Markdown


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def _verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def dataset_line(r: ValidateResult) -> str:
    d = r.dataset
    return (f"`{d.path}`: {d.grid[0]}x{d.grid[1]} grid, {d.times} six-hourly times of "
            f"{d.fields_per_time} fields each plus 3 statics, {d.variables} variables; "
            f"**{_gib(d.disk_bytes)} on disk** (`du`), {_gib(d.uncompressed_bytes)} uncompressed "
            f"float32, compressed with `{_compressor(d.compressor)}` (xarray's default for Zarr v2); "
            f"built in {d.build_seconds:.0f} s (not part of any figure)")


def _compressor(text: str) -> str:
    """`Blosc(...)` from the repr of zarr's tuple of compressors."""
    return text[1:-2] if text.startswith("(") and text.endswith(",)") else text


def data_mib(runs: Runs) -> float:
    """Peak RSS above what the process held after its imports, before reading any data."""
    return runs.peak_mib - runs.imports_mib


def memory_bounded(r: ValidateResult) -> bool:
    """Ours' data memory grows with the chunk size and stays far below the dataset's size."""
    dataset_mib = r.dataset.uncompressed_bytes / MIB
    return data_mib(r.ours_small) < data_mib(r.ours_default) < 0.5 * dataset_mib


def table(r: ValidateResult) -> str:
    base = r.ours_default
    lines = [
        "| program | time (s) | throughput (uncompressed) | time / ours | peak RSS (MiB) "
        "| RSS after imports (MiB) | data memory (MiB) | runs | spread |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]

    def row(label: str, runs: Runs) -> str:
        return (f"| {label} | {runs.median:.1f} | {r.throughput(runs) / MIB:.0f} MiB/s | "
                f"{runs.median / base.median:.2f}x | {runs.peak_mib:.0f} | {runs.imports_mib:.0f} | "
                f"**{data_mib(runs):.0f}** | {len(runs.seconds)} | {runs.spread:.2f}x |")

    default, small = r.default_chunk // MIB, r.small_chunk // MIB
    lines.append(row(f"ours: `validate([store])`, default `chunk_bytes` ({default} MiB)", r.ours_default))
    lines.append(row(f"ours: `validate([store], policy=Policy(chunk_bytes={small} MiB))`", r.ours_small))
    lines.append(row("naive: one xarray reduction per check and variable", r.naive))
    lines.append(row(f"one numpy pass: each block read once, `np.max`; {default} MiB blocks", r.numpy_pass))
    lines.append(row(f"one numpy pass, {small} MiB blocks", r.numpy_small))
    lines += [
        "",
        "Time: median of the runs; throughput: the dataset's uncompressed bytes over that time. "
        "Peak RSS: the largest of the runs' resident high-water marks (`VmHWM`), imports included; RSS "
        "after imports: what it held before reading any data; data memory: the difference. "
        "Spread: slowest over fastest run.",
        "",
        "| target | figure | verdict |",
        "|---|---|---|",
        f"| ours at least {SPEEDUP_TARGET:g}x faster than naive | naive / ours = **{r.speedup:.2f}x** | "
        f"{_verdict(r.speedup >= SPEEDUP_TARGET)} |",
        f"| ours within {SINGLE_PASS_TARGET:g}x of one numpy pass over the same bytes | ours / numpy pass = "
        f"**{r.over_single_pass:.2f}x** ({r.throughput(r.ours_default) / MIB:.0f} against "
        f"{r.throughput(r.numpy_pass) / MIB:.0f} MiB/s) | {_verdict(r.over_single_pass <= SINGLE_PASS_TARGET)} |",
        f"| peak memory bounded by the chunk, not the dataset | data memory of ours {data_mib(r.ours_default):.0f} MiB "
        f"with {default} MiB chunks, {data_mib(r.ours_small):.0f} MiB with {small} MiB chunks (numpy pass: "
        f"{data_mib(r.numpy_pass):.0f} and {data_mib(r.numpy_small):.0f} MiB); naive "
        f"{data_mib(r.naive):.0f} MiB; dataset {r.dataset.uncompressed_bytes / MIB:.0f} MiB uncompressed | "
        f"{_verdict(memory_bounded(r))} |",
    ]
    return "\n".join(lines)


def profile_table(r: ValidateResult) -> str:
    lines = ["| step (cumulative time; indented: part of the step above) | share of ours | calls |",
             "|---|--:|--:|"]
    for row in r.profile:
        lines.append(f"| {row.step} | {100 * row.share:.0f}% | {row.calls} |")
    return "\n".join(lines)


def imports_note(r: ValidateResult) -> str:
    return (
        f"RSS after imports is {r.ours_default.imports_mib:.0f} MiB for ours against "
        f"{r.numpy_pass.imports_mib:.0f} MiB for the other two programs: beyond their xarray, "
        f"`model_code.data.validate` imports the project's readers and scipy (torch and aurora only "
        f"load to build a model), a one-off cost of every process that validates; the data memory "
        f"column leaves it out."
    )


def profile_summary(r: ValidateResult) -> str:
    """The profile in a paragraph, with the numbers of this run."""
    reading = r.profile[0].share
    steps = sorted(r.profile[2:len(PROFILED) - 1], key=lambda row: -row.share)[:3]
    biggest = ", ".join(f"{row.short} ({100 * row.share:.0f}%)" for row in steps)
    calls = r.profile[len(PROFILED):]
    top = (f" Counted by C call instead, {calls[0].short} takes the most ({100 * calls[0].share:.0f}% in "
           f"{calls[0].calls} calls: the reductions of every check)." if calls else "")
    return (
        f"Reading the blocks (zarr chunk reads and Blosc decompression) is {100 * reading:.0f}% of our "
        f"time; the one numpy pass, which does little else, sets the floor of that part. The checks take "
        f"{100 * r.profile[1].share:.0f}%, their largest parts being {biggest}; turning the accumulated "
        f"values into findings and statistics takes {100 * r.profile[len(PROFILED) - 1].share:.0f}%.{top}"
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        sys.path.insert(0, str(ROOT))
        _child_main(sys.argv[2:])
    elif len(sys.argv) > 1 and sys.argv[1] == "build":
        print(build_dataset())
    else:
        result = run()
        print(dataset_line(result))
        print(table(result))
        print(profile_table(result))
        print(profile_summary(result))
