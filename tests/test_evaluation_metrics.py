"""Metrics and regions: hand-computed values, and the independent `scores` package to 1e-6."""

from __future__ import annotations

import numpy as np
import pytest
import scores.categorical
import scores.continuous
import scores.probability
import xarray as xr

from model_code.errors import DataError
from model_code.evaluation import metrics as m
from model_code.evaluation.regions import Box, distance_to_other_kind_km, region_mask, region_masks


def field(values, lat, lon, *, extra: dict | None = None, name="x") -> xr.DataArray:
    """A DataArray with dims (*extra, latitude, longitude)."""
    extra = extra or {}
    return xr.DataArray(np.asarray(values, dtype="float64"), dims=(*extra, "latitude", "longitude"),
                        coords={**extra, "latitude": lat, "longitude": lon}, name=name)


@pytest.fixture
def pair():
    """Forecast and truth (init_time 4, lead_time 3, lat 7, lon 12), lat weights far from uniform."""
    rng = np.random.default_rng(1)
    lat, lon = np.linspace(-75, 75, 7), np.arange(0, 360, 30.0)
    dims = {"init_time": np.arange(4), "lead_time": np.arange(3)}
    truth = field(rng.normal(size=(4, 3, 7, 12)), lat, lon, extra=dims)
    forecast = truth + field(rng.normal(0.3, 1.0, size=(4, 3, 7, 12)), lat, lon, extra=dims)
    weights = m.area_weights(lat)
    return forecast, truth, weights


# ---- weights -----------------------------------------------------------------------------------

def test_area_weights_are_cell_areas_with_mean_one():
    lat = np.array([-60.0, 0.0, 60.0])  # cells -90..-30, -30..30, 30..90
    w = m.area_weights(lat).values
    area = np.array([np.sin(np.radians(-30)) + 1, 2 * np.sin(np.radians(30)), 1 - np.sin(np.radians(30))])
    np.testing.assert_allclose(w, area / area.mean(), rtol=1e-12)
    assert m.area_weights(np.linspace(-90, 90, 721)).mean() == pytest.approx(1.0)
    # a 0.25° grid weights as cos(lat) away from the poles
    w = m.area_weights(np.linspace(-90, 90, 721))
    np.testing.assert_allclose(w.sel(latitude=45.0) / w.sel(latitude=0.0), np.cos(np.radians(45)), rtol=1e-4)


# ---- deterministic scores: by hand ------------------------------------------------------------

def test_rmse_mae_bias_by_hand_square_root_after_the_time_mean():
    lat, lon = np.array([-60.0, 0.0, 60.0]), np.array([0.0, 180.0])
    w = m.area_weights(lat).values  # (3,)
    err0 = np.array([[1.0, -1.0], [2.0, 0.0], [0.0, 3.0]])
    err1 = np.array([[0.0, 0.0], [-0.5, 0.0], [0.0, 0.5]])
    truth = field(np.zeros((2, 3, 2)), lat, lon, extra={"init_time": [0, 1]})
    forecast = field(np.stack([err0, err1]), lat, lon, extra={"init_time": [0, 1]})

    def wmean(x):
        return (w[:, None] * x).sum() / (w.sum() * 2)

    mse = [wmean(err0**2), wmean(err1**2)]
    assert float(m.rmse(forecast, truth)) == pytest.approx(np.sqrt(np.mean(mse)), rel=1e-12)
    assert float(m.rmse(forecast, truth)) != pytest.approx(np.mean(np.sqrt(mse)), rel=1e-3)  # order matters
    assert float(m.mae(forecast, truth)) == pytest.approx(np.mean([wmean(abs(err0)), wmean(abs(err1))]), rel=1e-12)
    assert float(m.bias(forecast, truth)) == pytest.approx(np.mean([wmean(err0), wmean(err1)]), rel=1e-12)


def test_nan_points_renormalise_the_weights_and_an_all_nan_time_drops_out():
    lat, lon = np.array([-60.0, 0.0, 60.0]), np.array([0.0, 180.0])
    w = m.area_weights(lat).values
    err0 = np.array([[1.0, np.nan], [2.0, 0.0], [np.nan, 3.0]])
    err1 = np.full((3, 2), np.nan)  # no valid point at this time: it does not count as zero
    truth = field(np.zeros((2, 3, 2)), lat, lon, extra={"init_time": [0, 1]})
    forecast = field(np.stack([err0, err1]), lat, lon, extra={"init_time": [0, 1]})
    valid = np.isfinite(err0)
    wf = np.broadcast_to(w[:, None], err0.shape)
    expected = np.sqrt((wf * np.nan_to_num(err0) ** 2).sum() / wf[valid].sum())
    assert float(m.rmse(forecast, truth)) == pytest.approx(expected, rel=1e-12)
    everything_nan = forecast * np.nan
    assert np.isnan(float(m.rmse(everything_nan, truth)))


def test_acc_by_hand_and_perfect_forecast():
    lat, lon = np.array([-30.0, 30.0]), np.array([0.0, 90.0, 180.0])  # equal weights
    clim = field(np.full((2, 3), 10.0), lat, lon)
    o = field([[11.0, 9.0, 10.5], [12.0, 8.0, 10.0]], lat, lon)
    f = field([[10.5, 9.5, 11.0], [11.0, 9.0, 9.0]], lat, lon)
    fa, oa = (f - clim).values, (o - clim).values
    expected = (fa * oa).sum() / np.sqrt((fa**2).sum() * (oa**2).sum())
    assert float(m.acc(f, o, clim, time_dim="none")) == pytest.approx(expected, rel=1e-12)
    assert float(m.acc(o, o, clim, time_dim="none")) == pytest.approx(1.0, rel=1e-12)


# ---- deterministic scores: against the `scores` package ---------------------------------------

def test_rmse_mae_bias_match_scores_with_latitude_weights(pair):
    forecast, truth, weights = pair
    keep = ["lead_time"]
    np.testing.assert_allclose(m.rmse(forecast, truth).values,
                               scores.continuous.rmse(forecast, truth, preserve_dims=keep, weights=weights).values,
                               rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(m.mae(forecast, truth).values,
                               scores.continuous.mae(forecast, truth, preserve_dims=keep, weights=weights).values,
                               rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(m.bias(forecast, truth).values,
                               scores.continuous.additive_bias(forecast, truth, preserve_dims=keep,
                                                               weights=weights).values, rtol=1e-6, atol=1e-12)


def test_rmse_of_one_region_matches_scores_on_its_points(pair):
    forecast, truth, weights = pair
    regions = region_masks(["global", "tropics"], forecast.latitude, forecast.longitude)
    ours = m.rmse(forecast, truth, regions=regions)
    tropical = abs(forecast.latitude) <= 20
    theirs = scores.continuous.rmse(forecast.where(tropical, drop=True), truth.where(tropical, drop=True),
                                    preserve_dims=["lead_time"], weights=weights.where(tropical, drop=True))
    np.testing.assert_allclose(ours.sel(region="tropics").values, theirs.values, rtol=1e-6)


def test_acc_matches_weighted_mean_squares_from_scores(pair):
    """WeatherBench 2's (uncentred, area-weighted) ACC from three of the `scores` package's
    weighted MSEs per init: ⟨f′o′⟩ = (⟨f′²⟩ + ⟨o′²⟩ − ⟨(f′ − o′)²⟩) / 2."""
    forecast, truth, weights = pair
    clim = truth.mean("init_time") * 0.5  # anomalies that are neither centred nor zero
    fa, oa = forecast - clim, truth - clim
    keep = ["init_time", "lead_time"]
    ff = scores.continuous.mse(fa, 0 * fa, preserve_dims=keep, weights=weights)
    oo = scores.continuous.mse(oa, 0 * oa, preserve_dims=keep, weights=weights)
    fo = (ff + oo - scores.continuous.mse(fa, oa, preserve_dims=keep, weights=weights)) / 2
    theirs = (fo / np.sqrt(ff * oo)).mean("init_time")
    np.testing.assert_allclose(m.acc(forecast, truth, clim).values, theirs.values, rtol=1e-6)


def test_spread_skill_matches_weighted_mean_squares_from_scores(pair):
    """sqrt(⟨member variance⟩) / RMSE of the ensemble mean, both from `scores`' weighted MSE."""
    forecast, truth, weights = pair
    rng = np.random.default_rng(3)
    ens = forecast.expand_dims(member=6).copy(data=forecast.values[None] + rng.normal(size=(6, *forecast.shape)))
    mean = ens.mean("member")
    variance = scores.continuous.mse(ens, mean, preserve_dims=["lead_time"], weights=weights) * 6 / 5  # ddof 1
    error = scores.continuous.mse(mean, truth, preserve_dims=["lead_time"], weights=weights)
    np.testing.assert_allclose(m.spread_skill(ens, truth).values, np.sqrt(variance / error).values, rtol=1e-6)


# ---- ensembles -----------------------------------------------------------------------------------

def test_fair_crps_matches_scores_and_a_hand_value(pair):
    forecast, truth, weights = pair
    rng = np.random.default_rng(2)
    ens = forecast.expand_dims(member=5).copy(data=forecast.values[None] + rng.normal(size=(5, *forecast.shape)))
    ours = m.crps(ens, truth)
    theirs = scores.probability.crps_for_ensemble(ens, truth, "member", method="fair", preserve_dims=["lead_time"],
                                                  weights=weights)
    np.testing.assert_allclose(ours.values, theirs.values, rtol=1e-6)

    lat, lon = np.array([0.0]), np.array([0.0])
    one = xr.DataArray(np.array([1.0, 2.0, 4.0])[:, None, None], dims=("member", "latitude", "longitude"),
                       coords={"latitude": lat, "longitude": lon})
    obs = field([[2.5]], lat, lon)
    # (|1-2.5| + |2-2.5| + |4-2.5|)/3 − (2·(1+3+2))/(2·3·2) = 7/6 − 1
    assert float(m.crps(one, obs, time_dim="none")) == pytest.approx(7 / 6 - 1.0, rel=1e-12)


def test_spread_skill_by_hand():
    lat, lon = np.array([0.0]), np.array([0.0, 1.0])
    members = np.array([[1.0, 0.0], [3.0, 4.0]])  # (member 2, lon 2): variances 2 and 8, means 2 and 2
    ens = xr.DataArray(members[:, None, :], dims=("member", "latitude", "longitude"),
                       coords={"latitude": lat, "longitude": lon})
    obs = field([[1.0, 4.0]], lat, lon)  # errors of the mean: 1 and -2
    expected = np.sqrt((2 + 8) / 2) / np.sqrt((1 + 4) / 2)
    assert float(m.spread_skill(ens, obs, time_dim="none")) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(DataError, match="at least 2 members"):
        m.crps(ens.isel(member=[0]), obs, time_dim="none")


# ---- rank histograms --------------------------------------------------------------------------------

def ensemble_of(forecast: xr.DataArray, members: int, scale: float, seed: int) -> xr.DataArray:
    """`members` noisy copies of `forecast` along a leading ``member`` dim."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(0.0, scale, size=(members, *forecast.shape))
    return forecast.expand_dims(member=members).copy(data=forecast.values[None] + noise)


def test_rank_histogram_matches_scores_with_equal_and_latitude_weights(pair):
    forecast, truth, weights = pair
    ens = ensemble_of(forecast, 5, 0.6, seed=4)  # too little spread for the error: U-shaped
    ours = m.rank_histogram(ens, truth)
    assert ours.dims == ("lead_time", "rank") and list(ours["rank"].values) == [0, 1, 2, 3, 4, 5]
    np.testing.assert_allclose(ours.sum("rank").values, 1.0, rtol=1e-12)
    theirs = scores.probability.rank_histogram(ens, truth, "member", preserve_dims=["lead_time"], weights=weights)
    np.testing.assert_allclose(ours.values, theirs.transpose("lead_time", "rank").values, rtol=1e-6, atol=1e-12)
    # equal-area weights (latitudes ±5°): the unweighted histogram of `scores`
    lat = np.array([-5.0, 5.0])
    f = ens.isel(latitude=[2, 4]).assign_coords(latitude=lat)
    o = truth.isel(latitude=[2, 4]).assign_coords(latitude=lat)
    theirs = scores.probability.rank_histogram(f, o, "member", preserve_dims=["lead_time"])
    np.testing.assert_allclose(m.rank_histogram(f, o).values, theirs.transpose("lead_time", "rank").values,
                               rtol=1e-6, atol=1e-12)
    edges = ours.isel(rank=[0, -1]).mean().item()
    assert edges > 2 * ours.isel(rank=slice(1, -1)).mean().item()  # under-dispersed: U-shaped


def test_rank_histogram_by_hand_with_weights_nan_and_regions():
    lat, lon = np.array([-60.0, 0.0, 60.0]), np.array([0.0, 180.0])
    w = m.area_weights(lat).values
    members = np.array([[[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]],
                        [[2.0, 2.0], [2.0, 2.0], [2.0, 2.0]],
                        [[3.0, 3.0], [3.0, np.nan], [3.0, 3.0]]])  # (member 3, lat 3, lon 2)
    ens = xr.DataArray(members, dims=("member", "latitude", "longitude"), coords={"latitude": lat, "longitude": lon})
    obs = field([[0.5, 2.5], [3.5, 9.0], [1.5, np.nan]], lat, lon)
    # valid points: (-60°: ranks 0 and 2), (0°: rank 3; the other has a NaN member), (60°: rank 1)
    weight = {0: w[0], 1: w[2], 2: w[0], 3: w[1]}
    total = 2 * w[0] + w[1] + w[2]
    expected = [weight[r] / total for r in range(4)]
    ours = m.rank_histogram(ens, obs, time_dim="none")
    np.testing.assert_allclose(ours.values, expected, rtol=1e-12)
    regions = region_masks(["global", "box:north:30,90,-10,359"], lat, lon)
    np.testing.assert_allclose(m.rank_histogram(ens, obs, regions=regions, time_dim="none").isel(region=1).values,
                               [0, 1, 0, 0], atol=1e-12)
    with pytest.raises(DataError, match="'member' dimension"):
        m.rank_histogram(ens.isel(member=0), obs, time_dim="none")


def test_rank_histogram_shares_ties_at_random_as_scores_shares_them_evenly():
    """Integer fields tie often; a seeded draw over the tied ranks matches `scores`' even share
    to sampling error, and the same seed gives the same histogram."""
    rng = np.random.default_rng(5)
    lat, lon = np.array([-5.0, 5.0]), np.arange(0.0, 360.0, 0.5)
    truth = field(rng.integers(0, 4, size=(150, 2, 720)), lat, lon, extra={"init_time": np.arange(150)})
    ens = truth.expand_dims(member=4).copy(data=rng.integers(0, 4, size=(4, *truth.shape)).astype("float64"))
    ours = m.rank_histogram(ens, truth, rng=11)
    theirs = scores.probability.rank_histogram(ens, truth, "member")
    np.testing.assert_allclose(ours.values, theirs.values, atol=0.004)  # 216 000 points: sampling error ~1e-3
    xr.testing.assert_identical(ours, m.rank_histogram(ens, truth, rng=11))
    assert not np.array_equal(ours.values, m.rank_histogram(ens, truth, rng=12).values)


# ---- threshold skill -------------------------------------------------------------------------------

def contingency(f: xr.DataArray, o: xr.DataArray, threshold, below: bool = False) -> dict[str, np.ndarray]:
    """`contingency_np` over the whole grid, summed over the leading (time) dimension."""
    wm = m.region_weights(m.global_region(f.latitude.values, f.longitude.values), f.latitude.values)
    order = [d for d in f.dims if d not in ("latitude", "longitude")] + ["latitude", "longitude"]
    fa, oa = f.transpose(*order).values, o.transpose(*order).values
    thr = threshold.broadcast_like(o).transpose(*order).values if isinstance(threshold, xr.DataArray) else threshold
    if fa.ndim == 2:
        fa, oa = fa[None], oa[None]
    return {k: v[..., 0] for k, v in m.contingency_np(fa, oa, wm, thr, below=below).items()}


def test_contingency_scores_by_hand():
    lat, lon = np.array([0.0]), np.arange(6.0)
    f = field([[5, 5, 5, 0, 0, 0]], lat, lon)
    o = field([[5, 0, 5, 5, 0, 0]], lat, lon)
    out = contingency(f, o, 1.0)  # a=2 b=1 c=1 d=2
    a, b, c, d = 2, 1, 1, 2
    a_r = (a + b) * (a + c) / 6
    assert float(out["hit_rate"]) == pytest.approx(a / (a + c))
    assert float(out["far"]) == pytest.approx(b / (a + b))
    assert float(out["csi"]) == pytest.approx(a / (a + b + c))
    assert float(out["ets"]) == pytest.approx((a - a_r) / (a + b + c - a_r))
    none = contingency(f, o, 100.0)
    assert np.isnan(float(none["csi"]))  # no event anywhere: undefined, not 0


def test_contingency_scores_match_the_scores_package(pair):
    forecast, truth, _ = pair
    # equal area weights (latitudes ±5°), so the unweighted contingency table of `scores` applies
    lat = np.array([-5.0, 5.0])
    f = forecast.isel(latitude=[2, 4]).assign_coords(latitude=lat)
    o = truth.isel(latitude=[2, 4]).assign_coords(latitude=lat)
    ours = contingency(f, o, 0.5)
    table = scores.categorical.BinaryContingencyManager(f >= 0.5, o >= 0.5).transform(preserve_dims=["lead_time"])
    np.testing.assert_allclose(ours["hit_rate"], table.hit_rate().values, rtol=1e-6)
    np.testing.assert_allclose(ours["far"], table.false_alarm_ratio().values, rtol=1e-6)
    np.testing.assert_allclose(ours["csi"], table.critical_success_index().values, rtol=1e-6)
    np.testing.assert_allclose(ours["ets"], table.equitable_threat_score().values, rtol=1e-6)


def test_quantile_thresholds_are_local_and_below_counts_cold_extremes(pair):
    forecast, truth, _ = pair
    q = m.quantile_threshold(truth, 0.9, dim=["init_time", "lead_time"])
    assert q.dims == ("latitude", "longitude")
    cold = contingency(truth, truth, m.quantile_threshold(truth, 0.1, dim=["init_time", "lead_time"]), below=True)
    np.testing.assert_allclose(cold["csi"], 1.0)  # a perfect forecast catches every cold extreme
    with pytest.raises(DataError, match="quantile"):
        m.quantile_threshold(truth, 1.5)


# ---- spectra ----------------------------------------------------------------------------------------

def test_zonal_spectrum_puts_a_wave_at_its_wavenumber_and_keeps_the_variance():
    lon = np.arange(0, 360, 360 / 64)
    lat = np.array([-30.0, 30.0])
    wave = 2.0 * np.cos(np.radians(3 * lon))
    spec = m.zonal_spectrum(field(np.stack([wave, wave]), lat, lon))
    assert int(np.argmax(spec.values)) == 3
    assert float(spec.sum()) == pytest.approx(float((wave**2).mean()), rel=1e-12)  # Parseval
    with pytest.raises(DataError, match="NaN"):
        m.zonal_spectrum(field(np.full((2, 64), np.nan), lat, lon))


# ---- regions --------------------------------------------------------------------------------------

def test_boxes_agree_on_0_360_and_pm180_grids_and_cross_the_antimeridian():
    lat = np.arange(-90, 91, 10.0)
    lon360, lon180 = np.arange(0, 360, 10.0), np.arange(-180, 180, 10.0)
    a = region_mask("europe", lat, lon360)
    b = region_mask("europe", lat, lon180)
    assert a.sum() == b.sum() > 0
    pacific = region_mask("box:pacific:-30,30,150,-120", lat, lon360)
    cols = lon360[pacific.any(axis=0)]
    assert set(cols) == {150, 160, 170, 180, 190, 200, 210, 220, 230, 240}
    tropics = region_mask("tropics", lat, lon360)
    assert set(lat[tropics.any(axis=1)]) == {-20, -10, 0, 10, 20}
    assert (region_mask("nh-extra-tropics", lat, lon360) | region_mask("sh-extra-tropics", lat, lon360)
            | tropics).all()
    with pytest.raises(DataError, match="unknown region 'atlantis'"):
        region_mask("atlantis", lat, lon360)
    with pytest.raises(DataError, match="south < north"):
        Box(10, 5, 0, 10)


def test_land_sea_and_coastal_band_in_cells_and_km():
    lat, lon = np.arange(0.0, 10.0), np.arange(0.0, 10.0)
    land = np.zeros((10, 10))
    land[:, :4] = 1.0  # land west of 3.5°E
    lsm = field(land, lat, lon, name="lsm")
    assert region_mask("land", lat, lon, lsm=lsm).sum() == 40
    coastal = region_mask("coastal:2", lat, lon, lsm=lsm)
    assert set(lon[coastal.any(axis=0)]) == {4.0, 5.0}  # sea within 2 cells of land
    km = distance_to_other_kind_km(land >= 0.5, lat, lon)
    assert km[0, 4] == pytest.approx(111.19, rel=1e-3)  # one degree east of land on the equator
    coastal_km = region_mask("coastal:150km", lat, lon, lsm=lsm)
    assert set(lon[coastal_km.any(axis=0)]) == {4.0}
    assert not (coastal & (land >= 0.5)).any()
    with pytest.raises(DataError, match="needs a land-sea mask"):
        region_mask("coastal", lat, lon)
