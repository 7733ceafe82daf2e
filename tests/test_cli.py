"""The `auroraops` command line: help everywhere, exit codes 0/1/2, nothing written on failure."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from auroraops.cli import build_parser, main
from conftest import BROKEN, GFS, IFS_8_STEPS

AURORAOPS = Path(sys.executable).parent / "auroraops"


HEAVY = ("torch", "aurora", "kserve", "mlflow", "kfp", "xarray")
"""Libraries that take seconds to import: a command imports them where it uses them, never to parse."""


def command_paths(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """Every command of `parser`, sub-commands included: (), ("data",), ("data", "validate"), ..."""
    yield path
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from command_paths(sub, (*path, name))


# In a fresh interpreter: what it holds after the help is what `auroraops ... --help` paid for.
HELP_CHILD = f"""
import json, sys
from auroraops.cli import main
try:
    main([*sys.argv[1:], "--help"])
except SystemExit as e:
    code = e.code
print(json.dumps({{"code": code, "imported": [m for m in {HEAVY!r} if m in sys.modules]}}), file=sys.stderr)
"""


@pytest.mark.parametrize("path", list(command_paths(build_parser())), ids=lambda path: " ".join(path) or "auroraops")
def test_every_command_has_help_without_heavy_imports(path):
    run = subprocess.run([sys.executable, "-c", HELP_CHILD, *path], capture_output=True, text=True, timeout=120)
    result = json.loads(run.stderr.splitlines()[-1])
    assert result["code"] == 0, run.stderr
    assert run.stdout.startswith(f"usage: auroraops {' '.join(path)}".rstrip())
    assert result["imported"] == []


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["forecast", "--input", str(GFS), "--steps", "2", "--out", "x.nc"])
    assert exit_.value.code == 2
    assert "--variant" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["forecast", "--variant", "global", "--input", str(GFS), "--steps", "2", "--out", "x.nc"])
    assert exit_.value.code == 2


def test_bad_input_exits_1_with_the_reason_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "f.nc"
    code = main(["forecast", "--variant", "medium-range", "--input", str(IFS_8_STEPS), "--steps", "2", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("error: ") and "7 variable(s) the medium-range variant needs" in err and "'msl'" in err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_broken_file_exits_1_naming_it(tmp_path, capsys):
    code = main(["forecast", "--variant", "medium-range", "--input", str(BROKEN / "era5-levels-corrupted.grib"),
                 "--steps", "1", "--out", str(tmp_path / "f.nc")])
    assert code == 1
    assert "era5-levels-corrupted.grib: truncated or corrupted GRIB message" in capsys.readouterr().err


def test_forecast_command_writes_the_forecast_and_summarises_it(tmp_path, capsys):
    out = tmp_path / "hr.nc"
    code = main(["forecast", "--variant", "high-res", "--input", str(GFS), "--steps", "2", "--out", str(out),
                 "--history", "1", "--fill-missing", "synthetic", "--crop-to-patch", "--levels", "500", "850"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    ds = xr.open_dataset(out)
    assert ds.sizes["time"] == 2 and list(ds.level.values) == [500, 850]
    assert f"forecast written: {out}" in printed and "lead times +6h, +12h" in printed
    assert "cropped from 73x144 to 71x140" in printed


def test_parser_lists_every_variant():
    help_text = build_parser()._subparsers._group_actions[0].choices["forecast"].format_help()
    for name in ("medium-range", "high-res", "air-pollution", "wave"):
        assert name in help_text


@pytest.mark.slow
def test_demo_forecasts_every_variant_from_the_shipped_samples(tmp_path):
    """The forecasts `make demo` makes, through the installed console script (its training
    pipeline is the one tests/test_pipelines.py runs, there with fewer steps)."""
    run = subprocess.run([str(AURORAOPS), "demo", "--out", str(tmp_path), "--steps", "2", "--no-pipeline"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    for variant in ("medium-range", "high-res", "air-pollution", "wave", "medium-range-v1.5", "ensemble-v1.5"):
        ds = xr.open_dataset(tmp_path / f"{variant}.nc")
        hours = (ds.lead_time.values / np.timedelta64(1, "h")).tolist()
        assert ds.attrs["aurora_variant"] == variant
        assert hours == ([1, 2, 3, 6, 12] if variant == "medium-range-v1.5" else [12, 24] if variant == "air-pollution"
                         else [6, 12])
        assert variant in run.stdout
    assert xr.open_dataset(tmp_path / "ensemble-v1.5.nc").sizes["member"] == 4
    assert "synthetic vars" in run.stdout and "gfs_2p5deg_global_f120.grib2" in run.stdout
