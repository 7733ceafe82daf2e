"""`auroraops evaluate` end to end on the real hourly ERA5 sample, and its refusals of bad input.

The data are the shipped hourly ERA5 10 m winds on their north-west 33x64 box (as in the
training tests), the model a tiny medium-range checkpoint stepping by 1 h saved here.
Variables the file lacks are filled with zeros in the inputs and never scored.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from auroraops.cli import main
from model_code.checkpoint import save_checkpoint
from model_code.evaluation.continuous import read_history, skill_drift
from model_code.evaluation.score import Scores
from model_code.variants import build_model, get_variant, with_timestep

FILLS = ["--fill-missing", "zeros", "--fill-missing-dynamic", "zeros", "--crop-to-patch", "--levels", "500", "850"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def hourly(hourly_box) -> Path:
    return hourly_box


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    spec = with_timestep(get_variant("medium-range"), timedelta(hours=1))
    path = tmp_path_factory.mktemp("ckpt") / "tiny_1h.safetensors"
    return save_checkpoint(build_model(spec, "tiny"), spec, "tiny", str(path))


@pytest.mark.slow
def test_hindcast_mode_writes_the_report_with_explainability_and_a_skill_history(hourly, checkpoint, tmp_path, capsys):
    out, history = tmp_path / "report", tmp_path / "skill.jsonl"
    argv = ["evaluate", "--variant", "medium-range", "--checkpoint", checkpoint, "--data", str(hourly),
            "--steps", "3", "--max-inits", "3", *FILLS, "--regions", "global", "--history", str(history),
            "--explain", "--explain-output", "u10", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "vs persistence: better on" in printed and "vs climatology: better on" in printed

    scores = Scores.from_json(str(out / "metrics.json"))
    assert scores.variant == "medium-range"
    assert set(scores.forecasts()) == {"model", "persistence", "climatology"}
    rmse = scores.select(forecast="persistence", variable="u10", metric="rmse")
    assert [r["lead_hours"] for r in rmse] == [1.0, 2.0, 3.0] and all(0 < r["value"] < 20 for r in rmse)
    assert {e["variable"] for e in scores.excluded if e["reason"] == "the truth has no such variable"} >= {"t2m", "z"}

    page = (out / "report.html").read_text()
    assert "<h2>Explainability</h2>" in page and page.count("data:image/png;base64,") >= 8
    assert sorted(p.name for p in (out / "explain").iterdir()) == [
        "explain_attention.png", "explain_gradient_x_input.png", "explain_occlusion.png", "explain_saliency.png"]
    assert json.loads((out / "explain.json").read_text())["objective"] == "u10"

    (entry,) = read_history(str(history))
    assert entry["inits"] == 3 and entry["drift"]["compared_with"] == 0
    assert "u10 rmse global +3h" in entry["scores"]


def test_drift_compares_a_window_with_the_mean_of_earlier_ones():
    history = [{"scores": {"u10 rmse global +6h": 1.0, "u10 acc global +6h": 0.8}},
               {"scores": {"u10 rmse global +6h": 1.2, "u10 acc global +6h": 0.8}}]
    drift = skill_drift(history, {"u10 rmse global +6h": 1.5, "u10 acc global +6h": 0.78, "new +1h": 3.0},
                        threshold=0.2)
    assert drift["compared_with"] == 2
    assert drift["changes"]["u10 rmse global +6h"] == pytest.approx((1.5 - 1.1) / 1.1)
    assert drift["changes"]["u10 acc global +6h"] == pytest.approx(0.025)
    assert drift["flagged"] == ["u10 rmse global +6h"]
    assert skill_drift([], {"u10 rmse global +6h": 9.0})["flagged"] == []


def test_forecast_mode_scores_a_forecast_file_beside_a_user_baseline(hourly, checkpoint, tmp_path, capsys):
    fc = tmp_path / "fc.nc"
    assert main(["forecast", "--variant", "medium-range", "--checkpoint", checkpoint, "--input", str(hourly),
                 "--steps", "2", "--init-time", "2018-01-02T12:00", "--out", str(fc),
                 "--fill-missing", "zeros", "--crop-to-patch", "--levels", "500", "850"]) == 0
    out = tmp_path / "report"
    assert main(["evaluate", "--variant", "medium-range", "--forecast", str(fc), "--truth", str(hourly),
                 "--baseline", f"other={fc}", "--regions", "global", "--metrics", "rmse", "bias", "--out", str(out)]) == 0
    scores = Scores.from_json(str(out / "metrics.json"))
    assert set(scores.forecasts()) == {"model", "persistence", "climatology", "other"}
    assert scores.value("other", "u10", "rmse", 2) == scores.value("model", "u10", "rmse", 2)
    card = json.loads((out / "scorecard.json").read_text())
    assert card["baselines"]["other"]["improved"] == 0  # the same forecast is never better than itself
    assert (out / "curves" / "u10_rmse.png").stat().st_size > 0


@pytest.mark.parametrize("case, message", [
    ("grid", "different grids"),
    ("baseline", "expected NAME=PATH"),
    ("missing", "file not found"),
    ("mode", "either --forecast and --truth"),
])
def test_bad_input_exits_1_naming_what_is_wrong(hourly, tmp_path, capsys, case, message):
    fc = tmp_path / "fc.nc"
    with xr.open_dataset(hourly) as ds:
        box = ds.load()
    stacked = box[["u10", "v10"]].isel(time=[3, 4]).rename(time="lead_time")
    stacked = stacked.assign_coords(lead_time=np.array([1, 2]) * np.timedelta64(1, "h")).expand_dims(
        init_time=[box.time.values[2]])
    stacked.encoding = {}
    stacked.to_netcdf(fc)
    other_grid = tmp_path / "truth_other_grid.nc"
    box.isel(latitude=slice(0, 30)).to_netcdf(other_grid)
    argv = {
        "grid": ["--forecast", str(fc), "--truth", str(other_grid)],
        "baseline": ["--forecast", str(fc), "--truth", str(hourly), "--baseline", str(fc)],
        "missing": ["--forecast", str(fc), "--truth", str(tmp_path / "absent.nc")],
        "mode": ["--forecast", str(fc), "--checkpoint", "x.safetensors"],
    }[case]
    assert main(["evaluate", "--variant", "medium-range", *argv, "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert message in err
    if case == "missing":
        assert "absent.nc" in err
    assert not (tmp_path / "out").exists()
