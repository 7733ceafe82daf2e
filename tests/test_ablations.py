"""The ablation script (`benchmarks/ablations.py`) judges an option only on paired seeds, keeps the
doc's other sections when it rewrites one, and runs end to end on the real March series (`--smoke`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "ablations.py"


@pytest.fixture()
def ablations(monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    import ablations

    return ablations


def test_an_option_helps_or_hurts_only_when_every_seed_agrees(ablations):
    assert ablations.verdict([-0.02, -0.01, -0.03]) == "helps"
    assert ablations.verdict([0.02, 0.01, 0.001]) == "hurts"
    assert ablations.verdict([-0.05, -0.04, 0.01]) == "no clear effect"  # a better mean is not enough
    assert ablations.verdict([0.05, 0.0, 0.01]) == "no clear effect"


def test_changes_are_paired_by_seed_against_the_reference_arm(ablations):
    a = ablations.ABLATIONS[0]
    ref, other = a.arms[0].label, a.arms[1].label
    runs = [ablations.Run(arm, seed, 10, 5, 1.0, {lead: value for lead in a.leads}, {}, 4)
            for arm, seed, value in ((ref, 0, 2.0), (ref, 1, 1.0), (other, 0, 1.0), (other, 1, 1.5))]
    result = ablations.Result(a, runs, (0, 1), 1.0)
    assert result.paired_change(other, 6) == [-0.5, 0.5]


def test_writing_a_section_keeps_the_others(ablations, tmp_path):
    doc = tmp_path / "ablations.md"
    first, second = ablations.ABLATIONS[0].name, ablations.ABLATIONS[1].name
    ablations.write(doc, {first: f"<!-- ablation: {first} -->\nold {first}\n<!-- /ablation -->",
                          second: f"<!-- ablation: {second} -->\nkept\n<!-- /ablation -->"})
    ablations.write(doc, {first: f"<!-- ablation: {first} -->\nnew {first}\n<!-- /ablation -->"})
    text = doc.read_text()
    assert text.startswith("# Ablations") and f"new {first}" in text and "kept" in text
    assert f"old {first}" not in text and text.index(f"new {first}") < text.index("kept")


@pytest.mark.slow
def test_the_smoke_run_trains_scores_and_prints_a_table_on_both_real_series():
    """The March 2 m temperature (medium-range) and the GEMS column stand-in (air pollution)."""
    done = subprocess.run([sys.executable, str(SCRIPT), "--only", "extreme,composition", "--smoke"], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {line.split("|")[1].strip(): line for line in done.stdout.splitlines() if line.startswith("| ")}
    assert {"uniform", "extremes x3", "persistence", "climatology", "variant's loss", "lag 24 h"} <= set(rows)
    assert "reference" in rows["uniform"] and "%" in rows["extremes x3"] and "%" in rows["lag 24 h"]
    assert "RMSE +12 h (file units)" in done.stdout and "RMSE +6 h (K)" in done.stdout


def test_smoke_figures_are_never_written():
    done = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--write", "x.md"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "measures nothing" in done.stderr
