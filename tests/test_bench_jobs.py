"""The prepared GPU benchmarks run as one script (`benchmarks/gpu.sh`); its dry run checks every
script on the CPU at small sizes, the full-grid job benchmark included, so the minutes of a lent
GPU machine are not spent on a broken script."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_script_dry_run_writes_every_table():
    done = subprocess.run([str(ROOT / "benchmarks" / "gpu.sh"), "--dry-run"], cwd=ROOT, capture_output=True,
                          text=True, timeout=900, env={**os.environ, "PYTHON": sys.executable})
    assert done.returncode == 0, done.stderr[-3000:]
    out = Path(re.search(r"dry run: tables in (\S+)", done.stdout).group(1))
    assert sorted(p.name for p in out.iterdir()) == ["gpu_forecast_step.md", "gpu_job.md", "gpu_training_step.md"]
    job = (out / "gpu_job.md").read_text()
    assert "on CPU (dry run, 64x128)" in job
    row = next(line for line in job.splitlines() if line.startswith("| 1 step, 64x128"))
    job_s, plain_s = (float(c) for c in row.split("|")[2:4])
    assert job_s > 0 and plain_s > 0
