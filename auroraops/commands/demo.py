"""`auroraops demo`: the training pipeline on a real month, then a forecast of every variant.

First the training pipeline (`pipelines.demo`) runs on KFP's local runner: validate,
prepare, tune, train, evaluate against persistence and climatology on held-out days, and
register the tiny medium-range model in a local MLflow store, trained on ERA5 hourly 2 m
temperature over the British Isles (1-21 March 2019) and verified on 22-31 March; it
becomes `aurora-medium-range@champion` only if it beats both baselines at +6, +12 and +24 h.
The terminal shows one line per step, then the held-out scores and the verdict; the tasks'
own logs go to `pipeline.log`. Then each variant reads the shipped real files (see
data/samples/README.md); variables with no public sample (pollutants, most wave fields,
soil type, Aurora 1.5's clouds, soil and statics where the file lacks them) are filled with
labelled synthetic fields; Aurora 1.5 forecasts hourly lead times and its ensemble 4 members. The tiny profile with seeded random
weights runs on a laptop CPU in seconds: those numbers exercise the system end to end,
they are not a skilful forecast.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from auroraops.commands.forecast import describe

# The repository's samples; an installed copy (the image) says where they are instead.
SAMPLES = Path(os.environ.get("AURORAOPS_SAMPLES", Path(__file__).resolve().parents[2] / "data" / "samples"))
GFS = "gfs_2p5deg_global_f120.grib2"
IFS = "ifs_pl_10deg_2024060300_8steps.grib"
WAVES = "gfswave_ww3_swh_0p16deg.grib2"

# variant -> (real input files, options): what each variant's demo forecast starts from.
# GFS has one time, so those forecasts start from a history of one step; air pollution
# needs two steps 12 h apart, which the 6-hourly IFS upper-air file provides.
DEMO = {
    "medium-range": ((GFS,), dict(history=1, fill_missing="synthetic")),
    "high-res": ((GFS,), dict(history=1, fill_missing="synthetic", crop_to_patch=True)),
    "air-pollution": ((IFS,), dict(fill_missing="synthetic")),
    "wave": ((WAVES,), dict(history=1, fill_missing="synthetic", regrid=1.0)),
    "medium-range-v1.5": ((GFS,), dict(history=1, fill_missing="synthetic", crop_to_patch=True, first_hours=3)),
    "ensemble-v1.5": ((GFS,), dict(history=1, fill_missing="synthetic", crop_to_patch=True, members=4)),
}


def add_parser(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="run the training pipeline and forecast every variant from the shipped real data",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("--out", default="outputs/demo", help="output directory (default: outputs/demo)")
    p.add_argument("--data-dir", default=str(SAMPLES), help="directory with the sample files")
    p.add_argument("--steps", type=int, default=4, help="forecast steps per variant (default: 4)")
    p.add_argument("--no-pipeline", action="store_true", help="only the forecasts, not the training pipeline")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from model_code.forecast import ForecastJob, run_forecast_job
    from model_code.variants import get_variant
    from pipelines.demo import demo_summary, run_demo

    data, out = Path(args.data_dir), Path(args.out)
    if not args.no_pipeline:
        print(f"training pipeline (task logs: {(out / 'pipeline' / 'pipeline.log').resolve()}):")
        summary = run_demo(out / "pipeline", data_dir=data)
        print(f"pipeline {summary.state} in {summary.seconds:.1f} s")
        if summary.state != "SUCCEEDED":
            print(summary.describe())
            return 1
        print(demo_summary(summary), end="\n\n")
    rows = []
    for variant, (files, options) in DEMO.items():
        options = dict(options)
        if first_hours := options.pop("first_hours", 0):  # hourly at first, then every step's end
            step = get_variant(variant).timestep_hours
            options["lead_hours"] = tuple(range(1, first_hours + 1)) + tuple(step * k for k in range(1, args.steps + 1))
        job = ForecastJob(
            variant=variant, inputs=tuple(str(data / f) for f in files), steps=args.steps,
            out=str(out / f"{variant}.nc"), **options,
        )
        start = time.perf_counter()
        result = run_forecast_job(job)
        rows.append((variant, files, result, time.perf_counter() - start))
        print(describe(result), end="\n\n")
    print(_table(rows))
    return 0


def _table(rows) -> str:
    header = ("variant", "input (real)", "grid", "history", "lead times", "real vars", "synthetic vars", "NaN %", "seconds", "output")
    lines = []
    for variant, files, result, seconds in rows:
        ds, prov = result.dataset, result.provenance
        hours = ds.lead_time.values.astype("timedelta64[h]").astype(int)
        nan = float(sum(ds[k].isnull().sum() for k in ds.data_vars)) / sum(ds[k].size for k in ds.data_vars)
        lines.append((
            variant, ", ".join(files), f"{ds.sizes['latitude']}x{ds.sizes['longitude']}",
            str(result.window.sizes["time"]), f"+{hours[0]}..+{hours[-1]}h",
            str(len(prov.from_data)), str(len(prov.filled)), f"{100 * nan:.1f}", f"{seconds:.1f}", result.out,
        ))
    widths = [max(len(h), *(len(r[i]) for r in lines)) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*header), fmt.format(*("-" * w for w in widths))] + [fmt.format(*r) for r in lines])
