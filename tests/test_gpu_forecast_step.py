"""The prepared GPU forecast benchmark runs its whole path on the CPU (`--dry-run`), so it is known
to work before a GPU machine, lent for minutes, runs it; without a GPU it refuses instead of timing the CPU."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_forecast_step.py"


def test_bad_arguments_and_a_missing_gpu_are_refused_before_any_work(monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    import gpu_forecast_step

    with pytest.raises(SystemExit):
        gpu_forecast_step.parse_args(["--dry-run", "--warmup", "0"])
    assert "--steps and --warmup must be at least 1" in capsys.readouterr().err
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):
            gpu_forecast_step.parse_args([])
        assert "no CUDA device" in capsys.readouterr().err


def test_the_dry_run_forecasts_with_the_tiny_model_and_writes_its_table(tmp_path):
    table = tmp_path / "gpu_forecast_step.md"
    done = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--steps", "2", "--write", str(table)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    header, _, row = table.read_text().strip().splitlines()[-3:]
    cells = dict(zip([c.strip() for c in header.split("|")], [c.strip() for c in row.split("|")]))
    assert cells["device"] == "CPU (dry run)" and cells["precision"] == "bf16"
    assert cells["grid"] == "5.625° (33x64)" and cells["levels"] == "13"
    assert float(cells["seconds / step (median of 2)"]) > 0 and float(cells["first step (s)"]) > 0
