"""`auroraops compress`: a faster model from a checkpoint, at a cost in skill the evaluation measures."""

from __future__ import annotations

import argparse
import json

from model_code.compression import METHODS
from model_code.variants import VARIANTS


def add_parser(sub) -> None:
    p = sub.add_parser(
        "compress",
        help="quantise (int8, bf16), prune or distil a checkpoint into a faster one",
        description=(
            "Compress one of this project's checkpoints and write the result as a checkpoint that "
            "records how it was made (load, serve and evaluate it as any other). int8-dynamic and "
            "bf16 need only an input window to time; int8-static calibrates on real windows of --data; "
            "prune removes the least important MLP units (and heads) then fine-tunes --steps on --data; "
            "distil trains a smaller student on --data with the checkpoint as teacher."
        ),
    )
    p.add_argument("--variant", required=True, choices=list(VARIANTS))
    p.add_argument("--checkpoint", required=True, metavar="URI", help="the uncompressed .safetensors checkpoint")
    p.add_argument("--method", required=True, choices=METHODS)
    p.add_argument("--data", nargs="+", required=True, metavar="PATH",
                   help="real input files: calibration (int8-static), training (prune, distil), timing (all)")
    p.add_argument("--out", required=True, metavar="URI", help="the compressed .safetensors checkpoint")
    p.add_argument("--calibration-windows", type=int, default=8, help="int8-static: windows to calibrate on")
    p.add_argument("--mlp-fraction", type=float, default=0.3, help="prune: share of each block's MLP units removed")
    p.add_argument("--head-fraction", type=float, default=0.0, help="prune: share of each block's attention heads")
    p.add_argument("--steps", type=int, default=0, help="prune: recovery fine-tune steps; distil: student steps")
    p.add_argument("--alpha", type=float, default=0.5, help="distil: weight of the truth in the targets")
    p.add_argument("--depth-factor", type=float, default=0.5, help="distil: student blocks per teacher block")
    p.add_argument("--embed-factor", type=float, default=0.5, help="distil: student embedding per teacher's")
    p.add_argument("--work-dir", metavar="DIR", help="where training runs write (default: a temporary directory)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from model_code.compression.job import CompressJob, compress_checkpoint

    result = compress_checkpoint(CompressJob(
        checkpoint=args.checkpoint, method=args.method, out=args.out, variant=args.variant, data=tuple(args.data),
        calibration_windows=args.calibration_windows, mlp_fraction=args.mlp_fraction,
        head_fraction=args.head_fraction, steps=args.steps, alpha=args.alpha, depth_factor=args.depth_factor,
        embed_factor=args.embed_factor, work_dir=args.work_dir))
    summary = result.summary()
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
        return 0
    print(f"compressed ({summary['method']}): {result.out}\n"
          f"  parameters {result.parameters:,} (from {result.reference_parameters:,}); weights "
          f"{result.weight_bytes / 2**20:.1f} MiB (from {result.reference_weight_bytes / 2**20:.1f} MiB)\n"
          f"  one step {result.latency_ms:.1f} ms against {result.reference_latency_ms:.1f} ms: "
          f"{result.speedup:.2f}x, on a {result.timed_on}\n"
          "  its skill: evaluate it (auroraops evaluate hindcast) beside the model it came from")
    return 0
