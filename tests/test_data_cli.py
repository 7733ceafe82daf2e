"""`auroraops data validate|audit` on real files: tables, exit codes, reports."""

from __future__ import annotations

import json

import pytest

from auroraops.cli import main
from conftest import BROKEN, GFS, GFS_WAVE, IFS_8_STEPS


@pytest.mark.parametrize("argv", [["data", "--help"], ["data", "validate", "--help"], ["data", "audit", "--help"]])
def test_help(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 0 and "usage: auroraops data" in capsys.readouterr().out


def test_valid_file_exits_0(capsys):
    assert main(["data", "validate", str(GFS_WAVE)]) == 0
    assert "1 source(s): 0 error(s)" in capsys.readouterr().out


def test_errors_exit_1_with_a_readable_table_and_a_json_report(tmp_path, capsys):
    report = tmp_path / "report.json"
    code = main(["data", "validate", str(IFS_8_STEPS), "--variant", "medium-range", "--report", str(report)])
    out = capsys.readouterr().out
    assert code == 1
    assert out.splitlines()[0].split() == ["severity", "check", "variable", "level", "where", "message"]
    assert "contract_variables" in out and "t2m" in out and "Fix: " in out
    data = json.loads(report.read_text())
    assert data["ok"] is False and data["statistics"]["t"]["levels"]["500"]["count"] == 8 * 19 * 36


def test_broken_files_exit_1_without_a_traceback(capsys):
    code = main(["data", "validate", *(str(p) for p in sorted(BROKEN.iterdir()))])
    captured = capsys.readouterr()
    assert code == 1 and "Traceback" not in captured.out + captured.err
    for check in ("readable", "nan_share"):
        assert check in captured.out


def test_usage_error_exits_2(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["data", "validate"])
    assert exit_.value.code == 2


def test_audit_writes_json_markdown_and_plots(tmp_path, capsys):
    out = tmp_path / "audit"
    assert main(["data", "audit", str(GFS), str(BROKEN / "fields_with_missing_values.grib"), "--out", str(out)]) == 0
    files = {p.name for p in out.iterdir()}
    assert files == {"audit.json", "audit.md", "coverage.png", "nan_share.png", "ranges.png"}
    for png in ("coverage.png", "nan_share.png", "ranges.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (out / "audit.md").read_text()
    assert "## Coverage" in markdown and "## Statistics" in markdown and "nan_share" in markdown
    assert json.loads((out / "audit.json").read_text())["coverage"]
