"""Reports from real scores of the hourly ERA5 sample, and ensembles without an ensemble model.

The report tests score a forecast that is the truth plus 0.5 m/s against persistence and
climatology on the real hourly 10 m winds (north-west 33x64 box), so every number in the
scorecard can be checked against the scores themselves. The ensemble tests use the tiny
medium-range model on a synthetic 32x64 window.
"""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from matplotlib import image as mpimg

from conftest import ERA5_HOURLY
from model_code.checkpoint import save_checkpoint
from model_code.data.batch import window_to_batch
from model_code.data.synthetic import synthetic_window
from model_code.errors import DataError
from model_code.evaluation.baselines import persistence
from model_code.evaluation.ensembles import checkpoint_ensemble, perturb_batch, perturbed_ensemble
from model_code.evaluation.metrics import area_weights
from model_code.evaluation.report import spread_and_error, write_report
from model_code.evaluation.score import Scores, evaluate, skill
from model_code.forecast import forecast
from model_code.variables import variable
from model_code.variants import build_model, get_variant

PNG = b"\x89PNG\r\n\x1a\n"
SPEC = get_variant("medium-range")




def assert_png(path: Path) -> None:
    data = Path(path).read_bytes()
    assert data[:8] == PNG and len(data) > 1000, path
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 50 and img.shape[1] > 50, path


@pytest.fixture(scope="module")
def scores() -> Scores:
    with xr.open_dataset(ERA5_HOURLY) as ds:
        truth = ds[["u10", "v10"]].isel(latitude=slice(0, 33), longitude=slice(0, 64)).load()
    for v in ("u10", "v10"):
        truth[v].attrs["units"] = "m s-1"
    inits = truth.time.values[2:14:3]
    leads = np.arange(1, 7) * np.timedelta64(1, "h")
    valid = inits[:, None] + leads[None, :]
    model = xr.Dataset(
        {v: (("init_time", "lead_time", "latitude", "longitude"),
             truth[v].sel(time=valid.ravel()).values.reshape(len(inits), len(leads), 33, 64) + 0.5,
             {"units": "m s-1"}) for v in ("u10", "v10")},
        coords={"init_time": inits, "lead_time": leads, "latitude": truth.latitude.values,
                "longitude": truth.longitude.values})
    forecasts = {"model": model, "persistence": persistence(truth, inits, leads), "other": model - 1.5}
    return evaluate(forecasts, truth, metrics=("rmse", "bias"), variant="medium-range",
                    truth_name=str(ERA5_HOURLY))


@pytest.fixture(scope="module")
def report(scores, tmp_path_factory):
    return write_report(scores, tmp_path_factory.mktemp("reports") / "report", notes=["a note"])


def test_report_holds_metrics_curves_scorecards_and_one_html_page(scores, report):
    out = Path(report.out_dir)

    assert Scores.from_json(report.metrics).records == scores.records

    names = {Path(p).name for p in report.curves}
    assert names == {f"{v}_{m}.png" for v in ("u10", "v10", "wind10") for m in ("rmse", "bias")}
    assert [Path(p).name for p in report.scorecards] == ["scorecard_persistence.png", "scorecard_other.png"]
    for path in report.curves + report.scorecards:
        assert_png(path)

    card = json.loads(Path(report.scorecard_json).read_text())
    assert card == json.loads(json.dumps(report.card))
    vs = card["baselines"]["persistence"]
    # the model is off by exactly 0.5 m/s everywhere: its RMSE and bias are 0.5
    row = next(r for r in vs["rows"] if r["variable"] == "u10" and r["metric"] == "rmse" and r["lead_hours"] == 6)
    p = scores.value("persistence", "u10", "rmse", 6)
    assert row["model"] == pytest.approx(0.5, abs=1e-5)
    assert row["skill"] == pytest.approx(1 - row["model"] ** 2 / p ** 2)  # the MSE skill score
    assert vs["improved"] == sum(r["better"] for r in vs["rows"]) and vs["compared"] == len(vs["rows"])
    assert vs["share_improved"] == pytest.approx(vs["improved"] / vs["compared"])
    bias_rows = [r for r in vs["rows"] if r["metric"] == "bias"]
    assert bias_rows and all(r["better"] == (abs(r["model"]) < abs(r["baseline"])) for r in bias_rows)
    # u10/v10 0.5 vs 1.0 m/s off: better on every u10/v10 target; wind speed errors are not a plain offset
    other = card["baselines"]["other"]
    assert all(r["better"] for r in other["rows"] if r["variable"] != "wind10")

    md = Path(report.scorecard_md).read_text()
    assert "## vs persistence" in md and "| target | +1 h |" in md and "Targets improved:" in md

    page = Path(report.html).read_text()
    assert page.startswith("<!DOCTYPE html>") and "a note" in page
    for path in report.curves + report.scorecards:
        assert base64.b64encode(Path(path).read_bytes()).decode() in page, path
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["metrics.json", "scorecard.json", "scorecard.md", "report.html", "curves",
         "scorecard_persistence.png", "scorecard_other.png"])


@pytest.fixture(scope="module")
def ensemble_scores() -> tuple[Scores, xr.Dataset]:
    """A 5-member ensemble of the real hourly 10 m winds (truth + 0.5 m/s + member noise) beside
    persistence, scored as ensemble-v1.5; returns the scores and the ensemble."""
    with xr.open_dataset(ERA5_HOURLY) as ds:
        truth = ds[["u10", "v10"]].isel(latitude=slice(0, 33), longitude=slice(0, 64)).load()
    for v in ("u10", "v10"):
        truth[v].attrs["units"] = "m s-1"
    inits = truth.time.values[2:14:3]
    leads = np.arange(1, 7) * np.timedelta64(1, "h")
    valid = inits[:, None] + leads[None, :]
    rng = np.random.default_rng(0)
    shape = (len(inits), len(leads), 5, 33, 64)
    ens = xr.Dataset(
        {v: (("init_time", "lead_time", "member", "latitude", "longitude"),
             truth[v].sel(time=valid.ravel()).values.reshape(len(inits), len(leads), 1, 33, 64) + 0.5
             + rng.normal(0, 0.8, shape), {"units": "m s-1"}) for v in ("u10", "v10")},
        coords={"init_time": inits, "lead_time": leads, "latitude": truth.latitude.values,
                "longitude": truth.longitude.values})
    scores = evaluate({"model": ens, "persistence": persistence(truth, inits, leads)}, truth,
                      variant="ensemble-v1.5", point_crps=True)
    return scores, ens


def test_an_ensemble_report_shows_spread_against_error_and_rank_histograms(ensemble_scores, report, tmp_path):
    scores, _ = ensemble_scores
    assert scores.select(metric="rank_histogram") and scores.select(metric="spread_skill")
    ens_report = write_report(scores, tmp_path / "report")
    # ensemble-v1.5 targets z500, t850, t2m and wind10: of these the winds were scored
    assert [Path(p).relative_to(ens_report.out_dir).as_posix() for p in ens_report.ensemble] == [
        "ensemble/spread_wind10.png", "ensemble/rank_histogram_wind10.png"]
    page = Path(ens_report.html).read_text()
    assert "<h2>Ensemble reliability</h2>" in page
    for path in ens_report.ensemble:
        assert_png(path)
        assert base64.b64encode(Path(path).read_bytes()).decode() in page, path
    # rank histograms are descriptive: in metrics.json, never in the scorecard or the curves
    assert Scores.from_json(ens_report.metrics).records == scores.records
    rows = [r for entry in ens_report.card["baselines"].values() for r in entry["rows"]]
    assert rows and not any(r["metric"] == "rank_histogram" for r in rows)
    assert any(r["metric"] == "crps" for r in rows)  # the ensemble's CRPS against persistence's
    assert not any("rank_histogram" in Path(p).name for p in ens_report.curves)
    # a deterministic forecast: no ensemble section, no ensemble figure
    assert report.ensemble == [] and "Ensemble reliability" not in Path(report.html).read_text()
    assert not (Path(report.out_dir) / "ensemble").exists()


def test_spread_against_error_is_the_member_spread_and_the_error_of_the_mean(ensemble_scores):
    scores, ens = ensemble_scores
    points = spread_and_error(scores.records)
    assert {k[0] for k in points} == {"model"}  # persistence has no spread
    u = ens["u10"].isel(lead_time=2)
    with xr.open_dataset(ERA5_HOURLY) as ds:
        o = ds["u10"].isel(latitude=slice(0, 33), longitude=slice(0, 64)).sel(
            time=u.init_time.values + u.lead_time.values).values
    w = area_weights(u.latitude).values[:, None]

    def spatial_mean(x: np.ndarray) -> np.ndarray:  # (init, lat, lon) -> (init,)
        return (x * w).sum(axis=(-2, -1)) / (w.sum() * x.shape[-1])

    spread = np.sqrt(spatial_mean(u.var("member", ddof=1).values).mean())
    error = np.sqrt(spatial_mean((u.mean("member").values - o) ** 2).mean())
    lead, rmse, got = points[("model", "u10", None, "domain")][2]
    assert lead == 3.0 and rmse == pytest.approx(error, rel=1e-6) and got == pytest.approx(spread, rel=1e-6)
    assert got > rmse  # 0.8 m/s of member noise around a mean 0.5 m/s off: over-dispersed


def test_a_failed_report_leaves_the_previous_one_whole(scores, report, tmp_path):
    out = tmp_path / "report"
    shutil.copytree(report.out_dir, out)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(FileNotFoundError):
        write_report(scores, out, figures=[("missing", tmp_path / "nowhere.png")])
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]


def test_explainability_figures_are_copied_and_embedded(scores, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    fig.savefig(tmp_path / "saliency.png")
    plt.close(fig)
    report = write_report(scores, tmp_path / "report", figures=[("Saliency of u10", tmp_path / "saliency.png")],
                          explanation={"objective": "u10", "inputs": {"u10": {"occlusion": 0.2, "gradient_x_input": 0.1}}})
    assert [Path(p).name for p in report.figures] == ["saliency.png"]
    assert_png(report.figures[0])
    page = Path(report.html).read_text()
    assert "<h2>Explainability</h2>" in page and "Saliency of u10" in page
    assert base64.b64encode((tmp_path / "saliency.png").read_bytes()).decode() in page
    assert json.loads((Path(report.out_dir) / "explain.json").read_text())["objective"] == "u10"


def test_skill_follows_each_metric_s_direction_and_stays_bounded_near_a_perfect_baseline():
    assert skill("rmse", 1.0, 2.0) == pytest.approx(0.75)  # 1 - MSE / MSE_ref
    assert skill("mae", 1.0, 2.0) == pytest.approx(0.5)
    assert skill("bias", -0.5, 1.0) == pytest.approx(0.5)
    assert skill("bias", 1.0, -0.5) == pytest.approx(-0.5)
    assert skill("acc", 0.9, 0.6) == pytest.approx(0.3)
    assert skill("far", 0.2, 0.5) == pytest.approx(0.3)
    assert skill("spread_skill", 0.9, 1.5) == pytest.approx(0.8)
    # a baseline bias of 2e-5 K against a model's 1e-2 K: -1, where a percentage said -49804 %
    assert skill("bias", 1e-2, 2e-5) == pytest.approx(-0.998)
    assert skill("bias", 0.0, 0.0) == 0.0
    assert skill("rmse", 1.0, 0.0) is None and skill("rmse", float("nan"), 1.0) is None


# --------------------------------------------------------------------------------------
# Ensembles


@pytest.fixture(scope="module")
def window():
    lat, lon = np.linspace(60, 29, 32), np.linspace(0, 63, 64)
    times = np.array(["2020-01-01T00", "2020-01-01T06"], dtype="datetime64[ns]")
    return synthetic_window(SPEC, lat, lon, times, levels=(500, 850))


def test_perturbations_stay_within_physical_bounds_and_keep_nan_and_constants(window):
    batch = window_to_batch(window.copy(deep=True), SPEC)  # the batch shares the window's memory
    batch.surf_vars["msl"][0, 0, 0, :5] = float("nan")
    batch.atmos_vars["q"][:] = 0.0
    gen = torch.Generator().manual_seed(0)
    noisy = perturb_batch(batch, scale=50.0, generator=gen)  # noise far beyond any bound
    for attr, kind in (("surf_vars", "surface"), ("atmos_vars", "atmos")):
        for name, x in getattr(noisy, attr).items():
            low, high = variable(kind, name).bounds
            finite = x[torch.isfinite(x)]
            assert (low is None or finite.min() >= low) and (high is None or finite.max() <= high), name
    assert torch.isnan(noisy.surf_vars["msl"][0, 0, 0, :5]).all()
    assert torch.equal(noisy.atmos_vars["q"], batch.atmos_vars["q"])
    assert all(torch.equal(noisy.static_vars[k], batch.static_vars[k]) for k in batch.static_vars)
    assert not torch.equal(noisy.surf_vars["2t"], batch.surf_vars["2t"])
    with pytest.raises(DataError, match="scale must be >= 0"):
        perturb_batch(batch, scale=-1, generator=gen)


def test_perturbed_ensembles_are_seeded_and_give_a_crps(window):
    model = build_model(SPEC, "tiny")
    a = perturbed_ensemble(model, SPEC, window, 2, members=3, scale=0.05, seed=7)
    b = perturbed_ensemble(model, SPEC, window, 2, members=3, scale=0.05, seed=7)
    c = perturbed_ensemble(model, SPEC, window, 2, members=3, scale=0.05, seed=8)
    assert a.sizes["member"] == 3 and a.attrs["ensemble"] == "perturbed initial conditions"
    xr.testing.assert_identical(a, b)
    assert not np.array_equal(a["t2m"].values, c["t2m"].values)
    assert float(a["t2m"].std("member").mean()) > 0
    assert "forward" not in vars(model)  # the model is itself again
    plain = forecast(model, SPEC, window, 2)
    assert not np.array_equal(a["t2m"].isel(member=0).values, plain["t2m"].values)

    truth = plain.drop_vars("lead_time").drop_vars("forecast_reference_time")
    truth = xr.concat([window[list(truth.data_vars)].isel(time=[-1]), truth], dim="time")
    scores = evaluate({"model": a}, truth, metrics=("rmse", "crps", "spread_skill"))
    crps = scores.select(forecast="model", variable="t2m", metric="crps")
    assert len(crps) == 2 and all(r["value"] > 0 for r in crps)


def test_checkpoint_ensembles_forecast_each_checkpoint_from_the_same_window(window, tmp_path):
    paths = []
    for seed in (0, 1):
        paths.append(save_checkpoint(build_model(SPEC, "tiny", seed=seed), SPEC, "tiny",
                                     str(tmp_path / f"seed{seed}.safetensors")))
    ens = checkpoint_ensemble(paths, SPEC, window, 2)
    assert ens.sizes["member"] == 2 and ens.attrs["ensemble"] == "checkpoints"
    first = forecast(build_model(SPEC, "tiny", seed=0), SPEC, window, 2)
    np.testing.assert_array_equal(ens["z"].isel(member=0).values, first["z"].values)
    assert not np.array_equal(ens["z"].isel(member=0).values, ens["z"].isel(member=1).values)
    with pytest.raises(DataError, match="at least one checkpoint"):
        checkpoint_ensemble([], SPEC, window, 2)
