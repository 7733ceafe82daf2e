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
    .venv/bin/python benchmarks/bench_validate.py child naive STORE
    .venv/bin/python benchmarks/bench_validate.py child numpy STORE [CHUNK_MIB]
"""

from __future__ import annotations

import cProfile
import json
import os
import pstats
import resource
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

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


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _peak_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def child_ours(store: str, chunk_bytes: int) -> dict:
    from model_code.data.validate import Policy, validate

    after_imports = _rss_kib()
    start = time.perf_counter()
    report = validate([store], policy=Policy(chunk_bytes=chunk_bytes))
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "rss_after_imports_kib": after_imports, "peak_rss_kib": _peak_kib(),
            "summary": report.summary(), "variables": len(report.statistics)}


NAIVE_CHECKS = (
    "isnull().sum()", "isinf sum", "min()", "max()", "(da < lo).sum()", "(da > hi).sum()",
    "mean()", "std()", "median()", "constant-field check", "time steps",
)


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

    after_imports = _rss_kib()
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
    return {"seconds": seconds, "rss_after_imports_kib": after_imports, "peak_rss_kib": _peak_kib(),
            "variables": len(names), "bytes": nbytes, "per_variable": per_variable,
            "lazy": type(xr.open_zarr(store)["t"].variable._data).__name__}


def child_numpy(store: str, chunk_bytes: int) -> dict:
    """Every variable read once in ours' blocks, one np.max per block."""
    import numpy as np
    import xarray as xr

    after_imports = _rss_kib()
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
    return {"seconds": seconds, "rss_after_imports_kib": after_imports, "peak_rss_kib": _peak_kib(),
            "bytes": nbytes}


def _child_main(argv: list[str]) -> None:
    mode, store = argv[0], argv[1]
    if mode == "ours":
        out = child_ours(store, int(float(argv[2]) * MIB) if len(argv) > 2 else _default_chunk())
    elif mode == "naive":
        out = child_naive(store, argv[2].split(",") if len(argv) > 2 else None)
    elif mode == "numpy":
        out = child_numpy(store, int(float(argv[2]) * MIB) if len(argv) > 2 else _default_chunk())
    else:
        raise SystemExit(f"unknown mode {mode}")
    print(json.dumps(out))


def _default_chunk() -> int:
    # Read from the source rather than importing validate (which imports torch and aurora):
    # the numpy pass must not pay for imports that only ours needs.
    import ast

    tree = ast.parse((ROOT / "model_code" / "data" / "validate.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.AnnAssign | ast.Assign):
            target = node.target if isinstance(node, ast.AnnAssign) else node.targets[0]
            if getattr(target, "id", None) == "DEFAULT_CHUNK_BYTES":
                return int(eval(compile(ast.Expression(node.value), "validate.py", "eval")))
    raise RuntimeError("DEFAULT_CHUNK_BYTES not found in model_code/data/validate.py")


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
    naive_scaled_from: str | None
    profile: list[tuple[str, float, int]]
    profile_subset: str

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
    run_child("numpy", s)
    results: dict[str, list[dict]] = {"ours": [], "small": [], "numpy": [], "naive": []}
    for i in range(repeat):
        results["ours"].append(run_child("ours", s, str(default_chunk / MIB)))
        results["small"].append(run_child("ours", s, str(SMALL_CHUNK / MIB)))
        results["numpy"].append(run_child("numpy", s, str(default_chunk / MIB)))
        if i < naive_repeat:
            results["naive"].append(run_child("naive", s))
        log(f"  round {i + 1}: ours {results['ours'][-1]['seconds']:.1f} s, small chunks "
            f"{results['small'][-1]['seconds']:.1f} s, numpy pass {results['numpy'][-1]['seconds']:.1f} s"
            + (f", naive {results['naive'][-1]['seconds']:.1f} s" if i < naive_repeat else ""))
    profile, subset = profile_ours(store, default_chunk)
    return ValidateResult(
        dataset, default_chunk, SMALL_CHUNK,
        _runs("ours", results["ours"]), _runs("ours, small chunks", results["small"]),
        _runs("naive", results["naive"]), _runs("numpy pass", results["numpy"]), None, profile, subset,
    )


# --------------------------------------------------------------------------------------
# Where our time goes


PROFILED = (
    ("reading blocks: `Field.chunk` (zarr read, Blosc decompression, copy)", "model_code/data/ingest.py", "chunk"),
    ("`_Accumulator.update`: the checks of one block, all together", "model_code/data/validate.py", "update"),
    ("&nbsp;&nbsp;own lines: `isfinite`, per-slice counts, min/max, sum, sum of squares", "model_code/data/validate.py", "update*"),
    ("&nbsp;&nbsp;`_histogram`: robust statistics (every 4th row and column)", "model_code/data/validate.py", "_histogram"),
    ("&nbsp;&nbsp;&nbsp;&nbsp;`np.histogram` in it", "numpy/lib/_histograms_impl.py", "histogram"),
    ("&nbsp;&nbsp;`_extremes`: where the min and max are", "model_code/data/validate.py", "_extremes"),
    ("&nbsp;&nbsp;`_bounds`: physical range", "model_code/data/validate.py", "_bounds"),
    ("findings and statistics from the accumulated values", "model_code/data/validate.py", "_value_findings"),
)


def profile_ours(store: Path, chunk_bytes: int, subset: tuple[str, ...] = ("t", "q", "t2m", "msl")):
    """cProfile of `validate_fields` on a few variables of the store (shares of its time)."""
    from model_code.data.ingest import read_fields
    from model_code.data.validate import Policy, validate_fields

    fields, _ = read_fields([(str(store), store)])
    chosen = {k: fields[k] for k in subset}
    profiler = cProfile.Profile()
    profiler.enable()
    validate_fields(chosen, policy=Policy(chunk_bytes=chunk_bytes))
    profiler.disable()
    stats = pstats.Stats(profiler)
    rows = []
    for label, suffix, function in PROFILED:
        own = function.endswith("*")
        name = function.rstrip("*")
        share, calls = 0.0, 0
        for (filename, _, fn), (_, ncalls, tottime, cumulative, _) in stats.stats.items():
            if fn == name and filename.replace("\\", "/").endswith(suffix):
                share += (tottime if own else cumulative) / stats.total_tt
                calls += ncalls
        rows.append((label, share, calls))
    sizes = ", ".join(f"`{k}`" for k in subset)
    return rows, sizes


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
            f"float32; {d.compressor}; built in {d.build_seconds:.0f} s (not part of any figure)")


def table(r: ValidateResult) -> str:
    base = r.ours_default
    lines = [
        "| program | time (s) | throughput (uncompressed) | vs ours | peak RSS | RSS after imports | runs | spread |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
    ]

    def row(label: str, runs: Runs) -> str:
        return (f"| {label} | {runs.median:.1f} | {r.throughput(runs) / 2**20:.0f} MiB/s | "
                f"{runs.median / base.median:.2f}x | {runs.peak_mib:.0f} MiB | {runs.imports_mib:.0f} MiB | "
                f"{len(runs.seconds)} | {runs.spread:.2f}x |")

    lines.append(row(f"ours, `validate([store])`, default chunk ({r.default_chunk // MIB} MiB)", r.ours_default))
    lines.append(row(f"ours, `Policy(chunk_bytes={r.small_chunk // MIB} MiB)`", r.ours_small))
    lines.append(row("naive: one xarray reduction per check", r.naive))
    lines.append(row("one numpy pass: read each block once, `np.max`", r.numpy_pass))
    lines.append("")
    lines.append("Peak RSS is the resident high-water mark of the program's own process "
                 "(`ru_maxrss`), imports included; RSS after imports is what the process held "
                 "before reading any data. Spread: slowest over fastest run.")
    lines.append("")
    small_work = r.ours_small.peak_mib - r.ours_small.imports_mib
    default_work = r.ours_default.peak_mib - r.ours_default.imports_mib
    naive_work = r.naive.peak_mib - r.naive.imports_mib
    lines += [
        "| target | figure | verdict |",
        "|---|---|---|",
        f"| ours at least {SPEEDUP_TARGET:g}x faster than naive | naive / ours = **{r.speedup:.2f}x** | "
        f"{_verdict(r.speedup >= SPEEDUP_TARGET)} |",
        f"| ours within {SINGLE_PASS_TARGET:g}x of one numpy pass | ours / numpy pass = "
        f"**{r.over_single_pass:.2f}x** | {_verdict(r.over_single_pass <= SINGLE_PASS_TARGET)} |",
        f"| peak memory bounded by the chunk, not the dataset | data memory (peak minus after imports): "
        f"{default_work:.0f} MiB with {r.default_chunk // MIB} MiB chunks, {small_work:.0f} MiB with "
        f"{r.small_chunk // MIB} MiB chunks, naive {naive_work:.0f} MiB; dataset "
        f"{r.dataset.uncompressed_bytes / MIB:.0f} MiB uncompressed | "
        f"{_verdict(default_work < 0.5 * r.dataset.uncompressed_bytes / MIB and small_work < default_work)} |",
    ]
    return "\n".join(lines)


def profile_table(r: ValidateResult) -> str:
    lines = ["| step (cumulative; indented: part of the step above) | share of ours | calls |", "|---|--:|--:|"]
    for label, share, calls in r.profile:
        lines.append(f"| {label} | {100 * share:.0f}% | {calls} |")
    return "\n".join(lines)


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
