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
from conftest import BRITISH_ISLES
from model_code.checkpoint import save_checkpoint
from model_code.evaluation.continuous import read_history, skill_drift
from model_code.evaluation.score import Scores
from model_code.variants import build_model, get_variant, with_timestep

FILLS = ["--fill-missing", "zeros", "--fill-missing-dynamic", "zeros", "--crop-to-patch", "--levels", "500", "850"]




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
            "--steps", "3", "--max-inits", "3", *FILLS, "--regions", "domain", "--history", str(history),
            "--explain", "--explain-output", "u10", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "vs persistence: better on" in printed and "vs climatology" not in printed
    # One day of data: the hours before the first init are no climate, so no climatology baseline.
    assert "note: climatology: left out: the data before the first initialisation" in printed

    scores = Scores.from_json(str(out / "metrics.json"))
    assert scores.variant == "medium-range"
    assert set(scores.forecasts()) == {"model", "persistence"}
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
    assert "u10 rmse domain +3h" in entry["scores"]


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
                 "--baseline", f"other={fc}", "--metrics", "rmse", "bias", "--out", str(out)]) == 0
    scores = Scores.from_json(str(out / "metrics.json"))
    assert set(scores.forecasts()) == {"model", "persistence", "other"}  # too little truth before the init
    assert {r["region"] for r in scores.records} == {"domain"}
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


# --------------------------------------------------------------------------------------
# Baselines that never see the answer, and names a forecaster uses (the British Isles month)


@pytest.fixture(scope="module")
def checkpoint_6h(tmp_path_factory) -> str:
    spec = get_variant("medium-range")
    path = tmp_path_factory.mktemp("ckpt6") / "tiny_6h.safetensors"
    return save_checkpoint(build_model(spec, "tiny"), spec, "tiny", str(path))


UK_FILLS = ["--fill-missing", "mean", "--fill-missing-dynamic", "mean", "--crop-to-patch", "--levels", "500", "850"]
HELD_OUT = ["--test-period", "2019-03-22T00:00", "2019-03-23T23:00"]


@pytest.mark.slow
def test_the_climatology_comes_from_before_the_verified_days_and_overlap_is_refused(checkpoint_6h, tmp_path, capsys):
    out = tmp_path / "report"
    argv = ["evaluate", "--variant", "medium-range", "--checkpoint", checkpoint_6h, "--data", str(BRITISH_ISLES),
            "--steps", "2", "--max-inits", "4", *UK_FILLS, *HELD_OUT, "--metrics", "rmse", "--out"]
    assert main([*argv, str(out)]) == 0
    scores = Scores.from_json(str(out / "metrics.json"))
    assert set(scores.forecasts()) == {"model", "persistence", "climatology"}
    note = next(n for n in scores.notes if n.startswith("climatology:"))
    assert "over 2019-03-01 00h .. 2019-03-21 23h" in note and "disjoint from the verified period" in note
    # Not the answer: three weeks of hour-of-day means miss the held-out days by degrees, not by 1e-6.
    assert 1.0 < scores.value("climatology", "t2m", "rmse", 12) < 4.0
    assert scores.subject["inits"]["first"] >= "2019-03-22" and scores.subject["leads_hours"] == [6.0, 12.0]
    assert scores.subject["data_hash"].startswith("sha256:")

    for period in (["2019-03-15", "2019-03-22T12:00"], ["2019-03-20", "2019-03-31"]):
        assert main([*argv[:-1], "--climatology-period", *period, "--out", str(tmp_path / "leak")]) == 1
        assert "overlaps the verified period" in capsys.readouterr().err
    assert main([*argv[:-1], "--climatology", str(BRITISH_ISLES), "--out", str(tmp_path / "leak")]) == 1
    assert "the climatology (given files) overlaps the verified period" in capsys.readouterr().err
    assert not (tmp_path / "leak").exists()
    assert main([*argv[:-1], "--climatology-period", "2019-03-01", "2019-03-03", "--out", str(tmp_path / "short")]) == 0
    short = Scores.from_json(str(tmp_path / "short" / "metrics.json"))
    assert "climatology" not in short.forecasts()
    assert any("left out: the period 2019-03-01 .. 2019-03-03" in n and "fewer than 7 values" in n for n in short.notes)


def _wb2(stacked: xr.Dataset, name: str) -> xr.Dataset:
    """A stacked forecast in WeatherBench 2's layout: `time` the init, `prediction_timedelta`."""
    return stacked.rename({"init_time": "time", "lead_time": "prediction_timedelta", "t2m": name})


def test_forecast_and_truth_names_and_the_weatherbench2_layout_give_the_same_rmse(tmp_path):
    """`t2m` (ERA5), `2t` (ECMWF) and `2m_temperature` (WeatherBench 2) are one variable on
    either side; a forecast in the WeatherBench 2 layout scores as the stacked one does."""
    with xr.open_dataset(BRITISH_ISLES) as ds:
        truth = ds.sel(time=slice("2019-03-10", "2019-03-12")).load()
    inits = truth.time.values[[6, 12, 18]]
    leads = np.array([6, 12], dtype="timedelta64[h]").astype("timedelta64[ns]")
    valid = (inits[:, None] + leads[None, :]).ravel()
    values = truth["t2m"].sel(time=valid).values.reshape(3, 2, 33, 40) + 0.7  # a forecast 0.7 K too warm
    stacked = xr.Dataset({"t2m": (("init_time", "lead_time", "latitude", "longitude"), values, {"units": "K"})},
                         coords={"init_time": inits, "lead_time": leads, "latitude": truth.latitude.values,
                                 "longitude": truth.longitude.values})
    files = {"t2m": stacked, "2t": stacked.rename(t2m="2t"), "2m_temperature": stacked.rename(t2m="2m_temperature"),
             "wb2": _wb2(stacked, "2m_temperature").transpose("time", "prediction_timedelta", ...)}
    truths = {"t2m": truth, "2t": truth.rename(t2m="2t"), "2m_temperature": truth.rename(t2m="2m_temperature")}
    rmse = {}
    for fname, fc in files.items():
        fc.to_netcdf(tmp_path / f"fc_{fname}.nc")
        for tname, tr in truths.items():
            tr.to_netcdf(tmp_path / f"truth_{tname}.nc")
            out = tmp_path / f"report_{fname}_{tname}"
            assert main(["evaluate", "--variant", "medium-range", "--forecast", str(tmp_path / f"fc_{fname}.nc"),
                         "--truth", str(tmp_path / f"truth_{tname}.nc"), "--metrics", "rmse", "bias",
                         "--out", str(out)]) == 0
            scores = Scores.from_json(str(out / "metrics.json"))
            rmse[fname, tname] = scores.value("model", "t2m", "rmse", 12)
            assert scores.value("model", "t2m", "bias", 6) == pytest.approx(0.7, abs=1e-4)
    assert len(set(rmse.values())) == 1 and next(iter(rmse.values())) == pytest.approx(0.7, abs=1e-4)
