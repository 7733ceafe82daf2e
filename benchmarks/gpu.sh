#!/usr/bin/env bash
# Every prepared GPU benchmark in one run, for the minutes a GPU machine is lent: a full-model
# forecast step and training step (bf16, activation checkpointing) and a full-grid job against
# a plain script. Each writes its table beside it, which `benchmarks/run.py --only gpu,training,jobs`
# then puts in docs/benchmarks.md. `--dry-run` runs the same scripts on the CPU at small sizes.
#
#   benchmarks/gpu.sh              # on a CUDA machine, from the repository root
#   benchmarks/gpu.sh --dry-run    # anywhere: checks the scripts, writes to a temporary folder
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
if [[ "${1:-}" == "--dry-run" ]]; then
    out=$(mktemp -d)
    "$PYTHON" benchmarks/gpu_forecast_step.py --dry-run --steps 1 --write "$out/gpu_forecast_step.md"
    "$PYTHON" benchmarks/gpu_training_step.py --dry-run --steps 1 --write "$out/gpu_training_step.md"
    "$PYTHON" benchmarks/bench_jobs.py --dry-run --repeat 1 --write "$out/gpu_job.md"
    echo "dry run: tables in $out"
else
    "$PYTHON" benchmarks/gpu_forecast_step.py --write benchmarks/gpu_forecast_step.md
    "$PYTHON" benchmarks/gpu_training_step.py --write benchmarks/gpu_training_step.md
    "$PYTHON" benchmarks/bench_jobs.py --device cuda --write benchmarks/gpu_job.md
fi
