"""Scoring: perfect and shifted forecasts, persistence on real hourly ERA5, baselines, bad inputs."""

from __future__ import annotations

import json
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from conftest import ERA5_HOURLY
from model_code.errors import DataError
from model_code.evaluation.baselines import (
    climatology,
    climatology_forecast,
    persistence,
    user_baseline,
)
from model_code.evaluation.forecasts import open_forecasts, stack_forecasts
from model_code.evaluation.hindcast import hindcast
from model_code.evaluation.regions import WHOLE_GRID
from model_code.evaluation import metrics as m
from model_code.evaluation.regions import region_masks
from model_code.evaluation.score import (
    TARGET_VARIANTS,
    TIE_SEED,
    Scores,
    Threshold,
    better,
    evaluate,
    skill,
    target_options,
    targets,
)
from model_code.variants import build_model, get_variant, with_timestep

HOURS = np.timedelta64(1, "h")


def synthetic_truth(n_times=40, step_hours=6, seed=0) -> xr.Dataset:
    """A smooth global truth (10° grid) with t2m and t on two levels, K."""
    rng = np.random.default_rng(seed)
    times = pd.date_range("2021-01-01", periods=n_times, freq=f"{step_hours}h").values
    lat, lon = np.arange(-90, 91, 10.0), np.arange(0, 360, 10.0)
    base = 280 + 20 * np.cos(np.radians(lat))[:, None] + np.sin(np.radians(lon))[None, :]
    t2m = base + np.cumsum(rng.normal(0, 0.5, (n_times, len(lat), len(lon))), axis=0)
    t = np.stack([t2m - 30, t2m - 60], axis=1)
    return xr.Dataset(
        {"t2m": (("time", "latitude", "longitude"), t2m, {"units": "K"}),
         "t": (("time", "level", "latitude", "longitude"), t, {"units": "K"})},
        coords={"time": times, "level": [500.0, 850.0], "latitude": lat, "longitude": lon})


@pytest.fixture
def truth() -> xr.Dataset:
    return synthetic_truth()


def leads(*hours) -> np.ndarray:
    return (np.array(hours) * HOURS).astype("timedelta64[ns]")


def as_forecast(truth: xr.Dataset, inits, lead_times) -> xr.Dataset:
    """The truth at the valid times, in the stacked layout: a perfect forecast."""
    valid = inits[:, None] + lead_times[None, :]
    out = truth.sel(time=valid.ravel())
    data = {v: (("init_time", "lead_time", *out[v].dims[1:]),
                out[v].values.reshape(len(inits), len(lead_times), *out[v].shape[1:]), out[v].attrs)
            for v in truth.data_vars}
    coords = {d: truth[d] for d in ("level", "latitude", "longitude") if d in truth.coords}
    return xr.Dataset(data, coords={"init_time": inits, "lead_time": lead_times, **coords})


# ---- the numbers ------------------------------------------------------------------------------

def test_perfect_forecast_has_rmse_0_and_acc_1_and_a_shift_has_that_bias(truth):
    inits, lt = truth.time.values[4:10], leads(6, 12, 24)
    perfect = as_forecast(truth, inits, lt)
    shifted = perfect + 1.5
    for v in shifted.data_vars:
        shifted[v].attrs = perfect[v].attrs
    clim = climatology(truth)
    s = evaluate({"model": perfect, "shifted": shifted}, truth, climatology=clim, regions=("global", "tropics"))
    for lead in (6, 12, 24):
        assert s.value("model", "t2m", "rmse", lead) == pytest.approx(0.0, abs=1e-12)
        assert s.value("model", "t2m", "acc", lead) == pytest.approx(1.0, abs=1e-12)
        assert s.value("model", "t", "acc", lead, level=850, region="tropics") == pytest.approx(1.0, abs=1e-12)
        assert s.value("shifted", "t2m", "bias", lead) == pytest.approx(1.5, rel=1e-12)
        assert s.value("shifted", "t", "rmse", lead, level=500) == pytest.approx(1.5, rel=1e-12)
        assert s.value("shifted", "t2m", "mae", lead, region="tropics") == pytest.approx(1.5, rel=1e-12)
    assert not s.excluded


def test_persistence_on_real_hourly_era5_grows_with_lead_time():
    with xr.open_dataset(ERA5_HOURLY) as ds:
        truth = ds[["u10", "v10"]].load()
    lt = leads(1, 2, 3, 6, 12)
    inits = truth.time.values[:12]  # 06Z .. 17Z, each with 12 h of truth after it
    pers = persistence(truth, inits, lt)
    s = evaluate({"persistence": pers}, truth, regions=("domain", "box:south:25,37,-108,-91"),
                 metrics=("rmse", "mae", "bias"))
    assert not s.excluded
    assert s.notes == ["regions: domain: 25°N..49°N, 108°W..91°W (121x86 points)"]
    assert evaluate({"persistence": pers}, truth, metrics=("rmse",)).records[0]["region"] == "domain"
    with pytest.raises(DataError, match="region 'global' asked of a regional grid .* use region 'domain'"):
        evaluate({"persistence": pers}, truth, regions=("global",), metrics=("rmse",))
    for var in ("u10", "v10", "wind10"):
        rmse = [s.value("persistence", var, "rmse", h) for h in (1, 2, 3, 6, 12)]
        assert all(np.isfinite(rmse))
        assert 0.1 < rmse[0] < rmse[-1] < 10.0  # m s-1: plausible for 1 h to 12 h of winter wind changes
        assert np.all(np.diff(rmse) > 0), rmse
        assert s.value("persistence", var, "mae", 12) < rmse[-1]


def test_ensemble_forecast_gets_crps_and_spread_skill_and_mean_scores(truth):
    inits, lt = truth.time.values[4:8], leads(6, 12)
    perfect = as_forecast(truth, inits, lt)
    rng = np.random.default_rng(3)
    noise = [xr.DataArray(rng.normal(0, 1, (len(inits), len(lt))), dims=("init_time", "lead_time")) for _ in range(4)]
    ens = xr.concat([perfect + n for n in noise], "member")
    ens = ens.transpose("init_time", "lead_time", "member", ...)
    for v in ens.data_vars:
        ens[v].attrs = perfect[v].attrs
    s = evaluate({"ens": ens}, truth, metrics=("rmse", "crps", "spread_skill"))
    assert s.value("ens", "t2m", "crps", 6) > 0
    assert s.value("ens", "t", "spread_skill", 12, level=500) > 0
    assert s.value("ens", "t2m", "rmse", 6) < s.value("ens", "t2m", "crps", 6) * 10


def noisy_ensemble(truth: xr.Dataset, inits, lt, members: int, scale: float, seed: int) -> xr.Dataset:
    """The perfect forecast plus independent Gaussian noise per member and point."""
    perfect = as_forecast(truth, inits, lt)
    rng = np.random.default_rng(seed)
    ens = xr.concat([perfect.map(lambda da: da + rng.normal(0, scale, da.shape), keep_attrs=True)
                     for _ in range(members)], "member")
    return ens.transpose("init_time", "lead_time", "member", ...)


def test_rank_histograms_are_one_record_per_rank_and_survive_json(truth, tmp_path):
    inits, lt = truth.time.values[4:10], leads(6, 12)
    ens = noisy_ensemble(truth, inits, lt, members=4, scale=1.0, seed=1)
    s = evaluate({"ens": ens, "persistence": persistence(truth, inits, lt)}, truth, regions=("global", "tropics"),
                 metrics=("rmse", "rank_histogram"))
    rows = s.select(forecast="ens", variable="t", level=850.0, region="tropics", lead_hours=12.0,
                    metric="rank_histogram")
    assert [r["rank"] for r in rows] == [0, 1, 2, 3, 4]
    assert sum(r["value"] for r in rows) == pytest.approx(1.0, rel=1e-12)
    direct = m.rank_histogram(ens["t"].sel(level=850.0), truth_like_da(truth["t"].sel(level=850.0), inits, lt),
                              regions=region_masks(["global", "tropics"], truth.latitude, truth.longitude),
                              rng=np.random.default_rng(TIE_SEED))
    np.testing.assert_allclose(s.rank_histogram("ens", "t", 12, level=850, region="tropics"),
                               direct.sel(lead_time=lt[1], region="tropics").values, rtol=1e-12)
    assert s.value("ens", "t", "rank_histogram", 12, level=850, region="tropics", rank=4) == rows[4]["value"]
    assert not s.select(forecast="persistence", metric="rank_histogram")  # deterministic: no ranks
    path = s.to_json(str(tmp_path / "metrics.json"))
    back = Scores.from_json(path)
    assert back.records == s.records
    assert back.rank_histogram("ens", "t2m", 6) == s.rank_histogram("ens", "t2m", 6)
    with pytest.raises(DataError, match="5 score"):
        s.value("ens", "t2m", "rank_histogram", 6)  # a histogram is not one number


def truth_like_da(truth: xr.DataArray, inits, lt) -> xr.DataArray:
    """`truth` at every (init, lead) valid time, in the forecast layout."""
    valid = inits[:, None] + lt[None, :]
    values = truth.sel(time=valid.ravel()).values.reshape(len(inits), len(lt), *truth.shape[1:])
    return xr.DataArray(values, dims=("init_time", "lead_time", *truth.dims[1:]),
                        coords={"init_time": inits, "lead_time": lt, "latitude": truth.latitude,
                                "longitude": truth.longitude})


def test_rank_histograms_have_no_order_and_no_skill():
    for ask in (lambda: better("rank_histogram", 0.2, 0.1), lambda: skill("rank_histogram", 0.2, 0.1)):
        with pytest.raises(DataError, match="'rank_histogram' is descriptive.*compare crps or spread_skill"):
            ask()


def test_thresholds_record_csi_and_ets_for_local_extremes(truth):
    inits, lt = truth.time.values[4:20], leads(6, 12)
    perfect = as_forecast(truth, inits, lt)
    s = evaluate({"model": perfect}, truth, metrics=("rmse",),
                 thresholds=[Threshold("t2m", quantile=0.9), Threshold("t2m", value=1e9)])
    assert s.value("model", "t2m", "csi", 6, threshold=">=q0.9") == pytest.approx(1.0)
    assert s.value("model", "t2m", "ets", 12, threshold=">=q0.9") == pytest.approx(1.0)
    assert any(e["metric"] == "csi" and "no event" in e["reason"] for e in s.excluded)  # 1e9 K: never


# ---- baselines --------------------------------------------------------------------------------

def test_persistence_and_climatology_baselines(truth):
    inits, lt = truth.time.values[4:8], leads(6, 12)
    pers = persistence(truth, inits, lt)
    np.testing.assert_array_equal(pers["t2m"].isel(lead_time=1).values, truth["t2m"].sel(time=inits).values)
    clim = climatology(truth)
    assert clim.attrs["climatology"] == "hour" and "shorter than a year" in clim.attrs["climatology_note"]
    by_hour = truth["t2m"].groupby("time.hour").mean()
    cf = climatology_forecast(clim, inits, lt)
    hour = pd.DatetimeIndex(inits[:1] + lt[:1]).hour[0]
    np.testing.assert_allclose(cf["t2m"].isel(init_time=0, lead_time=0).values, by_hour.sel(hour=hour).values)

    year = synthetic_truth(n_times=4 * 366, step_hours=6)
    yearly = climatology(year)
    assert yearly.attrs["climatology"] == "dayofyear-hour"
    assert set(yearly["t2m"].dims) == {"dayofyear", "hour", "latitude", "longitude"}
    with pytest.raises(DataError, match="persistence needs the truth at its init"):
        persistence(truth, np.array(["1999-01-01"], dtype="datetime64[ns]"), lt)


def test_user_baseline_from_files_is_scored_on_the_same_targets(truth, tmp_path):
    inits, lt = truth.time.values[4:8], leads(6, 12)
    other = as_forecast(truth, inits, leads(6, 12, 18)) + 0.5
    for v in other.data_vars:
        other[v].attrs = truth[v].attrs
    path = tmp_path / "other.nc"
    other.to_netcdf(path)
    model = as_forecast(truth, inits, lt)
    baseline = user_baseline([str(path)], model, "other")
    s = evaluate({"model": model, "other": baseline}, truth, metrics=("bias",))
    assert s.value("other", "t2m", "bias", 12) == pytest.approx(0.5)
    with pytest.raises(DataError, match=r"baseline 'short' lacks lead time\(s\) \['12 h'\]"):
        user_baseline(as_forecast(truth, inits, leads(6)), model, "short")
    with pytest.raises(DataError, match=r"baseline 'persistence' lacks lead time"):
        evaluate({"model": model, "persistence": persistence(truth, inits, leads(6))}, truth)


# ---- bad input ----------------------------------------------------------------------------------

def test_different_grids_units_times_and_levels_are_errors_naming_them(truth):
    inits, lt = truth.time.values[4:8], leads(6, 12)
    model = as_forecast(truth, inits, lt)
    moved = model.assign_coords(latitude=model.latitude + 0.5)
    with pytest.raises(DataError, match="different grids: model and the truth latitudes differ by up to 0.5"):
        evaluate({"model": moved}, truth)
    with pytest.raises(DataError, match="different grids: model is 19x36"):
        evaluate({"model": model}, truth.isel(longitude=slice(0, 30)))
    hpa = model.copy()
    hpa["t"] = hpa["t"].assign_attrs(units="degC")
    with pytest.raises(DataError, match="t: model in 'degC', truth in 'K'"):
        evaluate({"model": hpa}, truth)
    with pytest.raises(DataError, match=r"the truth lacks 1 valid time\(s\) of model \(it covers 2021-01-01T00:00 to 2021-01-10T18:00\)"):
        evaluate({"model": as_forecast(truth, truth.time.values[-4:], leads(0)).assign_coords(
            lead_time=leads(6))}, truth)
    with pytest.raises(DataError, match=r"lacks level\(s\) \[850.0\]"):
        evaluate({"model": model}, truth.sel(level=[500.0]))
    with pytest.raises(DataError, match="unknown metric"):
        evaluate({"model": model}, truth, metrics=("rmsd",))


def test_flipped_latitudes_and_pm180_longitudes_are_the_same_grid(truth):
    inits, lt = truth.time.values[4:8], leads(6)
    model = as_forecast(truth, inits, lt)
    other = truth.isel(latitude=slice(None, None, -1))
    other = other.assign_coords(longitude=((other.longitude + 180) % 360) - 180).sortby("longitude")
    s = evaluate({"model": model}, other, metrics=("rmse",))
    assert s.value("model", "t2m", "rmse", 6) == pytest.approx(0.0, abs=1e-12)


def test_all_nan_region_and_missing_variable_are_reported_exclusions(truth):
    inits, lt = truth.time.values[4:8], leads(6, 12)
    model = as_forecast(truth, inits, lt)
    holed = truth.copy(deep=True)
    holed["t2m"] = holed["t2m"].where(abs(holed.latitude) > 25)  # no tropical t2m anywhere
    s = evaluate({"model": model}, holed[["t2m"]], regions=("global", "tropics"), metrics=("rmse",))
    assert np.isfinite(s.value("model", "t2m", "rmse", 6))
    reasons = {(e["variable"], e["region"]): e["reason"] for e in s.excluded}
    assert "all NaN" in reasons[("t2m", "tropics")]
    assert reasons[("t", None)] == "the truth has no such variable"
    with pytest.raises(DataError, match="excluded: no valid value"):
        s.value("model", "t2m", "rmse", 6, region="tropics")
    with pytest.raises(DataError, match="holds no point"):
        evaluate({"model": model}, truth, regions=("box:tiny:1,2,3,4",))


# ---- the Scores file and ordering ------------------------------------------------------------------

def test_scores_json_round_trip_and_ordering(truth, tmp_path):
    inits, lt = truth.time.values[4:8], leads(6)
    s = evaluate({"model": as_forecast(truth, inits, lt)}, truth, metrics=("rmse", "bias"), variant="medium-range",
                 truth_name="synthetic")
    path = s.to_json(str(tmp_path / "out" / "metrics.json"))
    doc = json.loads(open(path).read())
    assert set(doc) == {"variant", "truth", "subject", "notes", "records", "excluded"}
    assert set(doc["records"][0]) == {"forecast", "variable", "level", "region", "lead_hours", "metric", "value"}
    back = Scores.from_json(path)
    assert back.records == s.records and back.variant == "medium-range" and back.notes == s.notes
    assert not list(tmp_path.glob("out/.*"))  # no temporary left behind
    assert better("rmse", 1.0, 2.0) and better("acc", 0.9, 0.8) and better("bias", -0.1, 0.2)
    assert better("spread_skill", 0.95, 1.2) and not better("csi", 0.1, 0.2) and not better("rmse", float("nan"), 1)
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(DataError, match="not a scores file"):
        Scores.from_json(str(tmp_path / "bad.json"))


def target_cells(scores: Scores, variant: str, baseline: str) -> list[dict]:
    """Each target of `variant` at each of its leads: whether "model" beats `baseline` (None: a side lacks it)."""
    rows = []
    for t in targets(variant):
        where = dict(variable=t.variable, metric=t.metric, level=t.level, threshold=t.threshold)
        where = {k: v for k, v in where.items() if v is not None or k == "level"}
        regions = (t.region,) if t.region else WHOLE_GRID
        values = {f: {r["lead_hours"]: r["value"] for r in scores.select(forecast=f, **where) if r["region"] in regions}
                  for f in ("model", baseline)}
        for lead in t.lead_hours or sorted(set(values["model"]) | set(values[baseline])) or [None]:
            a, b = values["model"].get(lead), values[baseline].get(lead)
            rows.append({"target": t.label, "lead_hours": lead,
                         "better": None if a is None or b is None else better(t.metric, a, b)})
    return rows


def test_medium_range_targets_compare_model_and_baseline_at_days_3_to_5():
    truth = synthetic_truth(n_times=40, step_hours=24)
    truth = truth.assign(z=(truth["t"] * 20).assign_attrs(units="m2 s-2"))
    inits = truth.time.values[5:15]
    lt = leads(24, 72, 96, 120)
    model = as_forecast(truth, inits, lt)
    pers = persistence(truth, inits, lt)
    options = target_options("medium-range", truth)
    assert options["regions"] == ("global",)
    s = evaluate({"model": model, "persistence": pers}, truth, climatology=climatology(truth), **options)
    rows = target_cells(s, "medium-range", "persistence")
    scored = [r for r in rows if r["better"] is not None]
    assert {r["lead_hours"] for r in scored} == {72.0, 96.0, 120.0}
    assert {r["target"] for r in scored} >= {"z500 rmse (whole grid)", "t850 acc (whole grid)",
                                             "t2m rmse (whole grid)"}
    assert all(r["better"] for r in scored if "rmse" in r["target"])
    assert all(r["better"] is None for r in rows if "crps" in r["target"])  # deterministic: no CRPS
    assert {t.region for t in targets("wave")} == {"coastal"}
    assert target_options("air-pollution")["log_floors"]["pm2p5"] > 0


def test_v1_5_targets_medium_range_without_crps_and_the_ensemble_on_crps_and_spread_skill():
    fields = {("z", 500.0), ("t", 850.0), ("t2m", None), ("wind10", None)}
    det = targets("medium-range-v1.5")
    assert {(t.variable, t.level) for t in det} == fields and {t.metric for t in det} == {"rmse", "acc"}
    assert det == tuple(t for t in targets("medium-range") if t.metric != "crps")
    ens = targets("ensemble-v1.5")
    assert {(t.variable, t.level) for t in ens} == fields and {t.metric for t in ens} == {"crps", "spread_skill"}
    assert all(t.lead_hours == (72.0, 96.0, 120.0) and t.region is None for t in det + ens)
    assert all("point_crps" not in target_options(v) for v in ("medium-range", "medium-range-v1.5"))
    with pytest.raises(DataError) as err:
        targets("nowcast")
    assert all(name in str(err.value) for name in TARGET_VARIANTS) and len(TARGET_VARIANTS) == 6


def test_ensemble_v1_5_targets_compare_the_ensemble_crps_with_the_baselines_point_crps():
    """With `target_options("ensemble-v1.5")` persistence gets a CRPS (its MAE: the CRPS of a
    point forecast), so the ensemble's fair CRPS has something to beat; without it, it has none."""
    truth = synthetic_truth(n_times=40, step_hours=24)
    truth = truth.assign(z=(truth["t"] * 20).assign_attrs(units="m2 s-2"))
    inits, lt = truth.time.values[5:15], leads(72, 96, 120)
    ens = noisy_ensemble(truth, inits, lt, members=6, scale=0.5, seed=2)
    pers = persistence(truth, inits, lt)
    options = target_options("ensemble-v1.5", truth)
    assert options == {"regions": ("global",), "point_crps": True}
    s = evaluate({"model": ens, "persistence": pers}, truth, climatology=climatology(truth), **options)
    for lead in (72, 96, 120):
        assert s.value("persistence", "t2m", "crps", lead) == pytest.approx(s.value("persistence", "t2m", "mae", lead))
    rows = target_cells(s, "ensemble-v1.5", "persistence")
    crps = [r for r in rows if "crps" in r["target"] and not r["target"].startswith("wind10")]
    assert len(crps) == 9 and all(r["better"] for r in crps)
    assert all(r["better"] is None for r in rows if "spread_skill" in r["target"])  # persistence has no spread
    plain = evaluate({"model": ens, "persistence": pers}, truth, metrics=("crps",))
    assert not plain.select(forecast="persistence", metric="crps")


# ---- stacking and hindcasts --------------------------------------------------------------------------

def test_stack_forecasts_refuses_mismatched_leads_and_duplicate_inits(truth):
    def one(init, hours):
        valid = init + leads(*hours)
        ds = truth.sel(time=valid)
        return ds.assign_coords(lead_time=("time", leads(*hours)), forecast_reference_time=init)

    a, b = truth.time.values[3], truth.time.values[5]
    stacked = stack_forecasts([one(b, (6, 12)), one(a, (6, 12))])
    assert stacked["t"].dims[:2] == ("init_time", "lead_time") and list(stacked.init_time.values) == [a, b]
    with pytest.raises(DataError, match="forecast 1 has lead times"):
        stack_forecasts([one(a, (6, 12)), one(b, (6,))])
    with pytest.raises(DataError, match="given more than once"):
        stack_forecasts([one(a, (6,)), one(a, (6,))])


@pytest.mark.slow
def test_hindcast_of_a_tiny_model_on_real_hourly_era5(tmp_path):
    box = tmp_path / "era5_box.nc"
    with xr.open_dataset(ERA5_HOURLY) as ds:
        ds.isel(latitude=slice(0, 17), longitude=slice(0, 32)).load().to_netcdf(box)
    spec = with_timestep(get_variant("medium-range"), timedelta(hours=1))
    model = build_model(spec, "tiny")
    fc, truth = hindcast(model, spec, [str(box)], steps=2, max_inits=2, fill_missing="zeros",
                         fill_missing_dynamic="zeros", crop=True, levels=[500, 850])
    assert dict(fc.sizes)["init_time"] == 2 and list(fc.lead_time.values / HOURS) == [1.0, 2.0]
    assert set(truth.data_vars) == {"u10", "v10"}  # filled variables have no truth
    pers = persistence(truth, fc.init_time.values, fc.lead_time.values)
    s = evaluate({"model": fc, "persistence": pers}, truth, metrics=("rmse", "bias"))
    assert np.isfinite(s.value("model", "u10", "rmse", 2))
    assert {e["variable"] for e in s.excluded if e["forecast"] == "model"} >= {"t2m", "z"}
    path = tmp_path / "fc.nc"
    fc.to_netcdf(path)
    assert open_forecasts([str(path)]).sizes == fc.sizes
    with pytest.raises(DataError, match="timestep_hours=6 but the model steps by 1 h"):
        hindcast(model, spec, [str(box)], steps=1, timestep_hours=6)


def test_wave_targets_score_the_coastal_band_found_from_the_nan_over_land():
    times = pd.date_range("2021-01-01", periods=6, freq="6h").values
    lat, lon = np.arange(-40, 41, 5.0), np.arange(0, 360, 5.0)
    swh = np.random.default_rng(4).gamma(2.0, 1.0, (6, len(lat), len(lon)))
    swh[:, :, 10:20] = np.nan  # a continent from 50°E to 95°E
    truth = xr.Dataset({"swh": (("time", "latitude", "longitude"), swh, {"units": "m"}),
                        "mwp": (("time", "latitude", "longitude"), swh * 3, {"units": "s"})},
                       coords={"time": times, "latitude": lat, "longitude": lon})
    model = as_forecast(truth, times[:3], leads(6, 12)) + 0.2
    for v in model.data_vars:
        model[v].attrs = truth[v].attrs
    s = evaluate({"model": model}, truth, metrics=("mae",), regions=("coastal", "land"))
    assert s.value("model", "swh", "mae", 12, region="coastal") == pytest.approx(0.2)
    assert {(e["variable"], e["region"]) for e in s.excluded} == {("swh", "land"), ("mwp", "land")}
    options = target_options("wave", truth)
    assert options["regions"] == ("domain", "coastal")  # 40°S..40°N is not the globe
    scored = evaluate({"model": model, "persistence": persistence(truth, times[:3], leads(6, 12))}, truth,
                      metrics=("mae",), **options)
    rows = target_cells(scored, "wave", "persistence")
    assert rows and all(r["better"] is not None for r in rows)
