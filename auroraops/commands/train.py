"""`auroraops train`: train a variant on real data files from a YAML config."""

from __future__ import annotations

import argparse
import os

from model_code.training.entry import add_arguments, describe, run as run_training


def add_parser(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train or fine-tune a variant from a YAML config",
        description=(
            "Train a variant on local GRIB/NetCDF/Zarr files as a YAML config says (reference: "
            "docs/training.md). --variant, --data and --out replace the file's values; --set "
            "KEY=VALUE replaces any key. Checkpoints (best, last, top-k) and a JSON-lines log go to "
            "the run directory; --resume continues a run exactly where its last checkpoint left it. "
            "Under torchrun, run 'python -m model_code.training' with the same arguments."
        ),
    )
    add_arguments(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    result = run_training(args)
    if int(os.environ.get("RANK", "0")) == 0:
        print(describe(result))
    return 0
