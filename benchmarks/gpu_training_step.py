"""One timed training step of the full medium-range Aurora at 0.25° on a GPU: seconds per step, peak memory.

    python benchmarks/gpu_training_step.py                  # on a CUDA machine: prints a Markdown table
    python benchmarks/gpu_training_step.py --write benchmarks/gpu_training_step.md   # and records it for the doc
    python benchmarks/gpu_training_step.py --dry-run        # the same code on the CPU: tiny model, 5.625° grid

What runs is the project's `Trainer` (profile `full`, `train.precision: bf16`, which is
Aurora's own autocast of the backbone, and `train.activation_checkpointing: true`) on a
synthetic window of every medium-range input from `synthetic_window` (721x1440, the 13
levels), six six-hourly times written as Zarr to a temporary directory (about 1.7 GB; the
trainer needs a validation period). The trainer's loader gives the first batch (batch size
1), which is moved to the GPU once and repeated in memory, so the figure is the step, not
the reading of 0.9 GB per sample or its copy to the GPU. One untimed warm-up step, then the
median of `--steps` steps, each timed between the trainer's `on_step_end` calls (after a
CUDA synchronise): the one-step rollout, the variant's loss, backward, gradient clipping,
AdamW and the schedule. Peak memory: `torch.cuda.max_memory_allocated` (and `_reserved`)
over the timed steps. Out of memory is reported as such, with the card's size.

On an 80 GB card the preparation (synthetic data, a 1.3 B-parameter model built on the
CPU) takes a minute or two before the first step.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from bench_training import StepClock, fit_until_enough, fixed_batch_trainer, step_times_ms
from model_code.data.synthetic import regular_grid, synthetic_window
from model_code.data.writers import write_dataset
from model_code.storage import write_atomic
from model_code.training import Callback
from model_code.training.config import config_from_dict
from model_code.variants import VARIANTS

SPEC = VARIANTS["medium-range"]
TIMES = 6


class PeakFromHere(Callback):
    """Restarts CUDA's peak-memory count after step `after`: the peak of the timed steps, not the warm-up's."""

    def __init__(self, after: int) -> None:
        self.after = after

    def on_step_end(self, trainer, step, logs):
        if step == self.after and trainer.device.type == "cuda":
            torch.cuda.synchronize(trainer.device)
            torch.cuda.reset_peak_memory_stats(trainer.device)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="timed steps after the warm-up (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (default 1)")
    parser.add_argument("--resolution", type=float, default=0.25, help="global grid in degrees (default 0.25)")
    parser.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    parser.add_argument("--no-checkpointing", action="store_true", help="without activation checkpointing")
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


def write_data(resolution: float, folder: Path) -> Path:
    lat, lon = regular_grid(resolution)
    times = np.datetime64("2024-01-01T00:00", "ns") + np.arange(TIMES) * np.timedelta64(6, "h")
    return Path(write_dataset(synthetic_window(SPEC, lat, lon, times), str(folder / "synthetic.zarr")))


def config(data: Path, out: Path, args: argparse.Namespace):
    steps = args.warmup + args.steps
    return config_from_dict({
        "variant": SPEC.name,
        "profile": "tiny" if args.dry_run else "full",
        "data": {"paths": [str(data)], "val_fraction": 0.5, "batch_size": 1, "validate": False},
        "train": {"max_steps": steps, "val_every": steps, "val_at_start": False,
                  "device": "cpu" if args.dry_run else "cuda", "progress": False,
                  "precision": args.precision, "activation_checkpointing": not args.no_checkpointing},
        "checkpoint": {"out_dir": str(out), "keep_top_k": 0},
    })


def measure(args: argparse.Namespace) -> dict[str, str]:
    resolution = 5.625 if args.dry_run else args.resolution
    row = {"device": "CPU (dry run)" if args.dry_run else torch.cuda.get_device_name(0)}
    with tempfile.TemporaryDirectory(prefix="gpu-training-step-") as tmp:
        start = time.perf_counter()
        data = write_data(resolution, Path(tmp))
        cfg = config(data, Path(tmp) / "run", args)
        clock = StepClock(stop_after=args.warmup + args.steps)
        trainer, batch = fixed_batch_trainer(cfg, [PeakFromHere(args.warmup), clock])
        h, w = batch.inputs.spatial_shape
        row.update(model=f"medium-range, {cfg.profile} ({trainer.parameter_count / 1e9:.2f} B parameters)"
                   if not args.dry_run else f"medium-range, tiny ({trainer.parameter_count / 1e6:.2f} M parameters)",
                   grid=f"{resolution:g}° ({h}x{w})", levels=str(len(batch.inputs.metadata.atmos_levels)),
                   precision=args.precision, checkpointing="yes" if not args.no_checkpointing else "no",
                   batch=str(batch.batch_size), prepared=f"{time.perf_counter() - start:.0f} s")
        cuda = trainer.device.type == "cuda"
        total = torch.cuda.get_device_properties(trainer.device).total_memory if cuda else 0
        try:
            fit_until_enough(trainer)
        except torch.cuda.OutOfMemoryError:
            row.update(step="out of memory", spread="–",
                       allocated=f"{torch.cuda.max_memory_allocated() / 2**30:.1f} of {total / 2**30:.0f}",
                       reserved=f"{torch.cuda.max_memory_reserved() / 2**30:.1f}")
            return row
        times = step_times_ms(clock.ends, args.warmup)
        row.update(step=f"{statistics.median(times) / 1e3:.2f}", spread=f"{max(times) / min(times):.2f}x",
                   loss=f"{clock.losses[0]:.4g} → {clock.losses[-1]:.4g}")
        if cuda:
            row.update(allocated=f"{torch.cuda.max_memory_allocated() / 2**30:.1f} of {total / 2**30:.0f}",
                       reserved=f"{torch.cuda.max_memory_reserved() / 2**30:.1f}")
        else:
            row.update(allocated="–", reserved="–")
    return row


def table(row: dict[str, str], args: argparse.Namespace) -> str:
    command = " ".join(["python", "benchmarks/gpu_training_step.py", *sys.argv[1:]])
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join([
        f"Measured {date} with `{command}` (torch {torch.__version__}):",
        "",
        "| device | model | grid | levels | precision | activation checkpointing | batch "
        f"| seconds / step (median of {args.steps}) | spread | peak allocated (GiB) | peak reserved (GiB) "
        "| loss (first → last step) | preparation |",
        "|---|---|---|--:|---|---|--:|--:|--:|--:|--:|---|--:|",
        f"| {row['device']} | {row['model']} | {row['grid']} | {row['levels']} | {row['precision']} "
        f"| {row['checkpointing']} | {row['batch']} | {row['step']} | {row['spread']} | {row['allocated']} "
        f"| {row['reserved']} | {row.get('loss', '–')} | {row['prepared']} |",
    ])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.manual_seed(0)
    if args.dry_run:
        torch.set_num_threads(min(2, os.cpu_count() or 1))
    text = table(measure(args), args)
    print(text, flush=True)
    if args.write:
        write_atomic(args.write, lambda tmp: Path(tmp).write_text(text + "\n"))
        print(f"\nwrote {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
