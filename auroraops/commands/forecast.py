"""`auroraops forecast`: real data files in, a CF NetCDF or Zarr forecast out."""

from __future__ import annotations

import argparse
import json
import tempfile
from typing import TYPE_CHECKING

from model_code.data.fill_modes import FILL_MODES
from model_code.variants import PROFILES, VARIANTS

if TYPE_CHECKING:
    from model_code.forecast import ForecastResult


def add_parser(sub) -> None:
    p = sub.add_parser(
        "forecast",
        help="forecast from GRIB/NetCDF/Zarr files (paths or s3:// URIs)",
        description=(
            "Read real data files, check them against the variant's input contract, run an "
            "N-step forecast and write it as CF NetCDF (.nc) or Zarr (.zarr). Nothing is "
            "written unless the whole run succeeds."
        ),
    )
    p.add_argument("--variant", required=True, choices=list(VARIANTS))
    p.add_argument("--profile", choices=PROFILES,
                   help="architecture (default: the checkpoint's own; tiny without a checkpoint)")
    p.add_argument("--input", nargs="+", required=True, metavar="PATH",
                   help="input files or s3:// URIs, merged into one dataset")
    p.add_argument("--steps", type=int, required=True, help="number of model time steps")
    p.add_argument("--out", required=True, metavar="FILE", help="output .nc or .zarr (path or s3://)")
    p.add_argument("--checkpoint", metavar="URI",
                   help=".safetensors checkpoint of this project (path, s3:// or models:/aurora-VARIANT@ALIAS or "
                        "/VERSION from the registry) or a published Aurora .ckpt")
    p.add_argument("--fill-missing", choices=FILL_MODES,
                   help="fill variables absent from the inputs (recorded in the output)")
    p.add_argument("--history", type=int, help="input time steps (default: the variant's maximum)")
    p.add_argument("--init-time", metavar="ISO", help="initialisation time (default: latest possible)")
    p.add_argument("--levels", type=float, nargs="+", metavar="HPA",
                   help="pressure levels to use (default: all of the variant's that the data have)")
    p.add_argument("--regrid", type=float, metavar="DEG", help="regrid all inputs to this resolution")
    p.add_argument("--crop-to-patch", action="store_true",
                   help="drop edge rows/columns so the grid fits the patch size")
    p.add_argument("--lead-hours", type=int, nargs="+", metavar="H",
                   help="lead times to write, in hours (default: each step's end); Aurora 1.5 variants "
                        "forecast every hour")
    p.add_argument("--members", type=int, default=1,
                   help="ensemble members, on a `member` dimension (stochastic variants: ensemble-v1.5)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of initial weights and synthetic fills; member m draws noise from seed + m")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from model_code.forecast import ForecastJob, run_forecast_job

    with tempfile.TemporaryDirectory(prefix="auroraops-forecast-") as tmp:
        checkpoint = args.checkpoint
        if checkpoint and checkpoint.startswith("models:/"):
            from adapters.registry import resolve_checkpoint

            checkpoint = resolve_checkpoint(checkpoint, tmp)
        job = ForecastJob(
            variant=args.variant, inputs=tuple(args.input), steps=args.steps, out=args.out,
            profile=args.profile, checkpoint=checkpoint, fill_missing=args.fill_missing,
            history=args.history, init_time=args.init_time,
            levels=tuple(args.levels) if args.levels else None, regrid=args.regrid,
            crop_to_patch=args.crop_to_patch, seed=args.seed, device=args.device,
            lead_hours=tuple(args.lead_hours) if args.lead_hours else None, members=args.members,
        )
        print(describe(run_forecast_job(job)))
    return 0


def describe(result: ForecastResult) -> str:
    """A short human summary of one forecast."""
    ds, prov = result.dataset, result.provenance
    lines = [
        f"forecast written: {result.out}",
        f"  variant {ds.attrs['aurora_variant']} ({ds.attrs['aurora_profile']}), weights: {result.weights}",
        f"  grid {ds.sizes['latitude']}x{ds.sizes['longitude']}, {ds.sizes['level']} levels, "
        f"from {str(ds.forecast_reference_time.values)[:16]}, lead times "
        + ", ".join(f"+{int(lt / 3.6e12)}h" for lt in ds.lead_time.values.astype("int64")),
        f"  variables from data: {len(prov.from_data)}, computed: {len(prov.origin) - len(prov.from_data)}, "
        f"filled: {len(prov.filled)}",
    ]
    if "member" in ds.dims:
        lines.append(f"  members: {ds.sizes['member']} (noise seeds {ds.member.attrs.get('seeds', '')})")
    clipped = {k: n for k, n in json.loads(ds.attrs.get("clipped_values", "{}")).items() if n}
    if clipped:
        lines.append("  clipped to physical ranges: " + ", ".join(f"{k} {n}" for k, n in clipped.items()))
    lines += [f"  note: {n}" for n in prov.notes]
    lines.append("  seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in result.seconds.items()))
    return "\n".join(lines)
