"""(a) Ingest: real sample files to what the model consumes, against plain xarray.

The baseline reads the same values from the same file the way a competent xarray user
would, and does nothing else: no recognition of variable names, no unit conversion, no
derived fields, no checks. The ratio ours/baseline is therefore the cost of everything the
ingest path adds on top of reading; the target is at most 1.5x.

- GFS 2.5° GRIB2 (3.7 MB, 38 hypercubes): ours is the whole path to an `aurora.Batch` of
  the medium-range variant, `load_window(history=1, fill_missing="zeros")` then
  `window_to_batch` (the file has no soil type, which is filled with zeros). The baseline
  opens only the six hypercubes holding the eleven variables the batch is made from, with
  `filter_by_keys` sharing one cfgrib index in a fresh temporary directory (our reader also
  builds its index in a temporary directory, so both pay for it), and takes `.values` of
  the 13 pressure levels used. Without an index, cfgrib rescans the file for every
  hypercube, which no one should do (about 90 s for this file).
- ERA t and z at 500/850 hPa on 1° (`formats/test4` as NetCDF, Zarr, GRIB): two variables,
  too few for any variant's batch without filling nearly everything, so ours stops at the
  canonical fields: `read_fields` (open, canonicalise, recognise) and `Field.values()` of
  each (loaded, float32). The baseline is `xr.open_dataset(engine=...)` and `.values`.

Before timing, each case checks that both sides read the same numbers (sums of the
variables that need no unit conversion), so the comparison is like for like.
"""

from __future__ import annotations

import cProfile
import pstats
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import xarray as xr

from model_code.data.batch import window_to_batch
from model_code.data.ingest import load_window, read_fields
from model_code.variants import VARIANTS
from timing import SPREAD_NOTE, Timing, paired_ms

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples"
GFS = SAMPLES / "gfs_2p5deg_global_f120.grib2"
TEST4 = SAMPLES / "formats" / "test4"
TARGET = 1.5
MEDIUM_RANGE = VARIANTS["medium-range"]

# cfgrib warns about xarray's future merge defaults on every multi-hypercube open.
warnings.filterwarnings("ignore", category=FutureWarning, module="cfgrib")
warnings.filterwarnings("ignore", category=FutureWarning, module="xarray")


@dataclass(frozen=True)
class Case:
    name: str
    ours_does: str
    ours: Callable[[], object]
    baseline: Callable[[], dict[str, np.ndarray]]
    same: dict[str, Callable[[object], np.ndarray]]
    """Baseline variable -> how to get the same values from our result."""


@dataclass(frozen=True)
class IngestRow:
    case: str
    ours_does: str
    ours: Timing
    baseline: Timing

    @property
    def ratio(self) -> float:
        return self.ours.median / self.baseline.median


# --- GFS GRIB2 to a medium-range Batch ----------------------------------------------------

# Every filter uses the same two keys, so all opens share one index file (cfgrib hashes
# the filter keys into the index name; adding e.g. `level` would rescan the file).
_GFS_HYPERCUBES = (
    ({"typeOfLevel": "isobaricInhPa", "shortName": ["gh", "u", "v", "t"]}, ("gh", "u", "v", "t")),
    ({"typeOfLevel": "isobaricInhPa", "shortName": "r"}, ("r",)),
    ({"typeOfLevel": "heightAboveGround", "shortName": "2t"}, ("t2m",)),
    ({"typeOfLevel": "heightAboveGround", "shortName": ["10u", "10v"]}, ("u10", "v10")),
    ({"typeOfLevel": "meanSea", "shortName": "prmsl"}, ("prmsl",)),
    ({"typeOfLevel": "surface", "shortName": ["lsm", "orog"]}, ("lsm", "orog")),
)


def gfs_ours():
    window, _ = load_window([str(GFS)], MEDIUM_RANGE, history=1, fill_missing="zeros")
    return window_to_batch(window, MEDIUM_RANGE)


def gfs_baseline() -> dict[str, np.ndarray]:
    levels = list(MEDIUM_RANGE.levels)
    out = {}
    with tempfile.TemporaryDirectory() as index_dir:
        for keys, names in _GFS_HYPERCUBES:
            ds = xr.open_dataset(
                GFS, engine="cfgrib",
                backend_kwargs={"filter_by_keys": keys, "indexpath": f"{index_dir}/{{short_hash}}.idx"},
            )
            for name in names:
                da = ds[name]
                out[name] = (da.sel(isobaricInhPa=levels) if "isobaricInhPa" in da.dims else da).values
    return out


def _from_batch(group: str, name: str) -> Callable[[object], np.ndarray]:
    return lambda batch: getattr(batch, group)[name].numpy()


# --- test4: ERA t and z at two levels, three formats ---------------------------------------


def _fields_ours(path: Path) -> Callable[[], dict[str, np.ndarray]]:
    def run():
        fields, _ = read_fields([(str(path), path)])
        return {key: f.values().values for key, f in fields.items()}

    return run


def _plain_baseline(path: Path, engine: str) -> Callable[[], dict[str, np.ndarray]]:
    def run():
        ds = xr.open_dataset(path, engine=engine)
        return {name: ds[name].values for name in ("t", "z")}

    return run


def _grib_baseline(path: Path) -> Callable[[], dict[str, np.ndarray]]:
    def run():
        with tempfile.TemporaryDirectory() as index_dir:
            ds = xr.open_dataset(path, engine="cfgrib",
                                 backend_kwargs={"indexpath": f"{index_dir}/{{short_hash}}.idx"})
            return {name: ds[name].values for name in ("t", "z")}

    return run


def cases() -> list[Case]:
    fields_does = "canonical fields (`read_fields` + `Field.values`)"
    same_fields = {name: (lambda out, n=name: out[n]) for name in ("t", "z")}
    return [
        Case(
            "GFS 2.5° GRIB2, 3.7 MB (`gfs_2p5deg_global_f120.grib2`)",
            "medium-range `Batch` (`load_window` + `window_to_batch`)",
            gfs_ours, gfs_baseline,
            {"t2m": _from_batch("surf_vars", "2t"), "u10": _from_batch("surf_vars", "10u"),
             "v10": _from_batch("surf_vars", "10v"), "prmsl": _from_batch("surf_vars", "msl"),
             "lsm": _from_batch("static_vars", "lsm"), "t": _from_batch("atmos_vars", "t"),
             "u": _from_batch("atmos_vars", "u"), "v": _from_batch("atmos_vars", "v")},
        ),
        Case("ERA t, z 1° NetCDF (`formats/test4.nc`)", fields_does,
             _fields_ours(TEST4.with_suffix(".nc")), _plain_baseline(TEST4.with_suffix(".nc"), "netcdf4"),
             same_fields),
        Case("ERA t, z 1° Zarr (`formats/test4.zarr`)", fields_does,
             _fields_ours(TEST4.with_suffix(".zarr")), _plain_baseline(TEST4.with_suffix(".zarr"), "zarr"),
             same_fields),
        Case("ERA t, z 1° GRIB1 (`formats/test4.grib`)", fields_does,
             _fields_ours(TEST4.with_suffix(".grib")), _grib_baseline(TEST4.with_suffix(".grib")),
             same_fields),
    ]


def check_same_values(case: Case) -> None:
    """Both sides must read the same numbers; sums ignore axis order (levels, latitudes)."""
    ours, base = case.ours(), case.baseline()
    for name, get in case.same.items():
        a, b = np.sum(get(ours), dtype="float64"), np.sum(base[name], dtype="float64")
        if not np.isclose(a, b, rtol=1e-5):
            raise AssertionError(f"{case.name}: {name} differs between our path ({a}) and the baseline ({b})")


def run(repeat: int = 5) -> list[IngestRow]:
    rows = []
    for case in cases():
        check_same_values(case)
        ours, baseline = paired_ms(case.ours, case.baseline, repeat=repeat, warmup=1)
        rows.append(IngestRow(case.name, case.ours_does, ours, baseline))
    return rows


# --- Where the time goes ------------------------------------------------------------------

PROFILED = (
    ("`cfgrib.open_datasets`: open the hypercubes of the file", "cfgrib/xarray_store.py", "open_datasets"),
    ("&nbsp;&nbsp;building the message index (one scan of the file)", "cfgrib/messages.py", "from_fieldset"),
    ("&nbsp;&nbsp;one xarray open per variable and hypercube", "cfgrib/xarray_plugin.py", "open_dataset"),
    ("&nbsp;&nbsp;merging the per-variable datasets", "cfgrib/xarray_store.py", "merge_datasets"),
    ("`canonicalise`: coordinates of each dataset opened", "model_code/data/canonical.py", "canonicalise"),
    ("decoding GRIB fields, wherever it happens", "cfgrib/xarray_plugin.py", "_getitem"),
    ("`assemble_window`: select, convert, derive q, fill", "model_code/data/ingest.py", "assemble_window"),
    ("`window_to_batch`", "model_code/data/batch.py", "window_to_batch"),
)


@dataclass(frozen=True)
class ProfileRow:
    step: str
    function: str
    ours_share: float | None
    ours_calls: int
    baseline_share: float | None
    baseline_calls: int


def _profile(fn: Callable[[], object]) -> tuple[float, dict[tuple[str, str], tuple[int, float]]]:
    """Total seconds, and (file, function) -> (calls, cumulative seconds) under cProfile."""
    fn()  # warm, as in the timed runs
    profiler = cProfile.Profile()
    profiler.enable()
    fn()
    profiler.disable()
    stats = pstats.Stats(profiler)
    by_function: dict[tuple[str, str], tuple[int, float]] = {}
    for (filename, _, function), (_, calls, _, cumulative, _) in stats.stats.items():
        key = (filename.replace("\\", "/"), function)
        old_calls, old_cumulative = by_function.get(key, (0, 0.0))
        by_function[key] = (old_calls + calls, old_cumulative + cumulative)
    return stats.total_tt, by_function


def _lookup(profile, suffix: str, function: str) -> tuple[float | None, int]:
    total, by_function = profile
    for (filename, name), (calls, cumulative) in by_function.items():
        if name == function and filename.endswith(suffix):
            return cumulative / total, calls
    return None, 0


def profile_gfs() -> list[ProfileRow]:
    """Share of one GFS ingest spent in each step, ours and baseline, under cProfile."""
    ours, baseline = _profile(gfs_ours), _profile(gfs_baseline)
    return [ProfileRow(step, fn, *_lookup(ours, suffix, fn), *_lookup(baseline, suffix, fn))
            for step, suffix, fn in PROFILED]


# --- Markdown ----------------------------------------------------------------------------


def table(rows: list[IngestRow]) -> str:
    lines = [
        "| input | our path produces | ours (ms) | baseline (ms) | ours / baseline | target | spread |",
        "|---|---|--:|--:|--:|---|--:|",
    ]
    for r in rows:
        verdict = "met" if r.ratio <= TARGET else "**not met**"
        spread = max(r.ours.spread, r.baseline.spread)
        lines.append(
            f"| {r.case} | {r.ours_does} | {r.ours.median:.1f} | {r.baseline.median:.1f} | "
            f"**{r.ratio:.2f}x** | <= {TARGET}x: {verdict} | {spread:.2f}x |"
        )
    lines.append("")
    lines.append(SPREAD_NOTE)
    return "\n".join(lines)


def profile_table(rows: list[ProfileRow]) -> str:
    def share(x: float | None) -> str:
        return "–" if x is None else f"{100 * x:.0f}%"

    lines = [
        "| step (cumulative time; indented: part of the step above in our path) | ours: share | ours: calls "
        "| baseline: share | baseline: calls |",
        "|---|--:|--:|--:|--:|",
    ]
    for r in rows:
        lines.append(f"| {r.step} | {share(r.ours_share)} | {r.ours_calls or '–'} | "
                     f"{share(r.baseline_share)} | {r.baseline_calls or '–'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(run()))
    if "--profile" in sys.argv:
        print()
        print(profile_table(profile_gfs()))
