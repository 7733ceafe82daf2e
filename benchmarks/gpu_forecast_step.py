"""Forecast steps of the full medium-range Aurora at 0.25° on a GPU, as the predictor runs them.

    python benchmarks/gpu_forecast_step.py                  # on a CUDA machine: prints a Markdown table
    python benchmarks/gpu_forecast_step.py --write benchmarks/gpu_forecast_step.md   # and records it for the doc
    python benchmarks/gpu_forecast_step.py --dry-run        # the same code on the CPU: tiny model, 5.625° grid

What runs is the predictor's path: `build_model(spec, "full")` (about 1.3 B parameters, seeded
random weights: the time of a step does not depend on the values), bf16 autocast of the
backbone (`model.autocast_backbone = True`, as `auroraops serve --autocast` sets it; the
weights stay FP32, since `model.to(bfloat16)` fails), and `forecast_steps`, which yields each
step's prediction copied back to the CPU, as a forecast job writes it. The input is a
synthetic window of every medium-range input (`synthetic_window`, 721x1440, 13 levels, two
six-hourly times), moved to the GPU once. The first `--warmup` steps are not timed (the first
forward is several times slower than later ones); then the median of `--steps` steps, each
from one yield to the next. Peak memory: `torch.cuda.max_memory_allocated` (and `_reserved`)
over the timed steps. Out of memory is reported as such, with the card's size. The published
figure for this model is about 6-7 s per step on an A100.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model_code.data.batch import window_to_batch  # noqa: E402
from model_code.data.synthetic import regular_grid, synthetic_window  # noqa: E402
from model_code.forecast import forecast_steps  # noqa: E402
from model_code.storage import write_atomic  # noqa: E402
from model_code.variants import VARIANTS, build_model  # noqa: E402

SPEC = VARIANTS["medium-range"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="timed rollout steps after the warm-up (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (default 1)")
    parser.add_argument("--resolution", type=float, default=0.25, help="global grid in degrees (default 0.25)")
    parser.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    parser.add_argument("--write", metavar="PATH", help="also write the table to this file (atomically)")
    parser.add_argument("--dry-run", action="store_true",
                        help="the same code on the CPU with the tiny model on a 5.625° grid: checks the script, "
                        "measures nothing of a GPU")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 1:
        parser.error("--steps and --warmup must be at least 1")
    if not args.dry_run and not torch.cuda.is_available():
        parser.error("no CUDA device: this benchmark times a GPU (use --dry-run to check the script on the CPU)")
    return args


def measure(args: argparse.Namespace) -> dict[str, str]:
    resolution = 5.625 if args.dry_run else args.resolution
    device = torch.device("cpu" if args.dry_run else "cuda")
    row = {"device": "CPU (dry run)" if args.dry_run else torch.cuda.get_device_name(0)}
    start = time.perf_counter()
    lat, lon = regular_grid(resolution)
    end = np.datetime64("2024-01-01T06:00", "ns")
    window = synthetic_window(SPEC, lat, lon, np.array([end - np.timedelta64(6, "h"), end]))
    model = build_model(SPEC, "tiny" if args.dry_run else "full", seed=0)
    params = sum(p.numel() for p in model.parameters())
    model.autocast_backbone = args.precision == "bf16"
    model = model.to(device).eval()
    batch = window_to_batch(window, SPEC).to(device)
    h, w = batch.spatial_shape
    row.update(model=f"medium-range, {'tiny' if args.dry_run else 'full'} "
                     + (f"({params / 1e6:.2f} M parameters)" if args.dry_run else f"({params / 1e9:.2f} B parameters)"),
               grid=f"{resolution:g}° ({h}x{w})", levels=str(len(batch.metadata.atmos_levels)),
               precision=args.precision, prepared=f"{time.perf_counter() - start:.0f} s")
    cuda = device.type == "cuda"
    total = torch.cuda.get_device_properties(device).total_memory if cuda else 0
    ends = [time.perf_counter()]
    try:
        for k, _ in enumerate(forecast_steps(model, batch, args.warmup + args.steps), start=1):
            ends.append(time.perf_counter())  # the prediction is on the CPU: the step has finished
            if cuda and k == args.warmup:
                torch.cuda.reset_peak_memory_stats(device)
    except torch.cuda.OutOfMemoryError:
        row.update(step="out of memory", spread="–", first="–",
                   allocated=f"{torch.cuda.max_memory_allocated() / 2**30:.1f} of {total / 2**30:.0f}",
                   reserved=f"{torch.cuda.max_memory_reserved() / 2**30:.1f}")
        return row
    times = np.diff(ends)
    timed = times[args.warmup:]
    row.update(first=f"{times[0]:.2f}", step=f"{statistics.median(timed):.2f}", spread=f"{max(timed) / min(timed):.2f}x")
    if cuda:
        row.update(allocated=f"{torch.cuda.max_memory_allocated() / 2**30:.1f} of {total / 2**30:.0f}",
                   reserved=f"{torch.cuda.max_memory_reserved() / 2**30:.1f}")
    else:
        row.update(allocated="–", reserved="–")
    return row


def table(row: dict[str, str], args: argparse.Namespace) -> str:
    command = " ".join(["python", "benchmarks/gpu_forecast_step.py", *sys.argv[1:]])
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join([
        f"Measured {date} with `{command}` (torch {torch.__version__}):",
        "",
        "| device | model | grid | levels | precision | first step (s) "
        f"| seconds / step (median of {args.steps}) | spread | peak allocated (GiB) | peak reserved (GiB) | preparation |",
        "|---|---|---|--:|---|--:|--:|--:|--:|--:|--:|",
        f"| {row['device']} | {row['model']} | {row['grid']} | {row['levels']} | {row['precision']} "
        f"| {row['first']} | {row['step']} | {row['spread']} | {row['allocated']} | {row['reserved']} | {row['prepared']} |",
    ])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    text = table(measure(args), args)
    print(text)
    if args.write:
        write_atomic(args.write, lambda p: Path(p).write_text(text + "\n"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
