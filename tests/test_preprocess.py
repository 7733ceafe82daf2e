"""Preprocessing for training: climatology, normalisation statistics, angles and statics,
learnt from the training period only."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import xarray as xr
from aurora import AuroraWave
from aurora.normalisation import normalise_surf_var

from conftest import GFS, GFS_WAVE, IFS_8_STEPS, SOIL_TYPE
from fields import area_weighted_mean
from model_code.data.ingest import read_fields
from model_code.data.preprocess import (
    ANGLE_VARS,
    NormalisationStats,
    angles_to_sincos,
    aurora_atmos_stats,
    aurora_surf_stats,
    climatology,
    deseasonalise,
    mean_direction,
    normalisation_stats,
    prepare_statics,
    reseasonalise,
    sincos_to_angles,
)
from model_code.data.synthetic import regular_grid, synthetic_field
from model_code.errors import DataError
from model_code.variables import by_key
from model_code.variants import get_variant

MEDIUM = get_variant("medium-range")
POLLUTION = get_variant("air-pollution")
WAVE = get_variant("wave")


def fields_of(path):
    return read_fields([(str(path), path)])[0]


@pytest.fixture(scope="module")
def gfs():
    return fields_of(GFS)


@pytest.fixture(scope="module")
def ifs_t() -> xr.DataArray:
    return fields_of(IFS_8_STEPS)["t"].values()  # (8 six-hourly times, 6 levels, 19, 36), 10°


@pytest.fixture(scope="module")
def swh() -> xr.DataArray:
    return fields_of(GFS_WAVE)["swh"].values()  # 1/6°, land NaN


@pytest.fixture(scope="module")
def series() -> xr.Dataset:
    """Three years of 6-hourly synthetic 2 m temperature on a 10° globe: 2021-22 train, 2023 rest."""
    lat, lon = regular_grid(10.0)
    times = np.arange(np.datetime64("2021-01-01T00"), np.datetime64("2024-01-01T00"), np.timedelta64(6, "h"))
    t2m = synthetic_field(by_key("t2m"), lat, lon, times)
    coords = {"time": times.astype("datetime64[ns]"), "latitude": lat, "longitude": lon}
    return xr.Dataset({"t2m": (("time", "latitude", "longitude"), t2m)}, coords=coords)


TRAIN = ("2021-01-01", "2022-12-31T18:00")


# --------------------------------------------------------------------------------------
# Climatology


def test_climatology_is_the_mean_per_day_of_year_and_hour_of_training_times(series):
    clim = climatology(series, TRAIN)
    assert clim["t2m"].dims == ("dayofyear", "hour", "latitude", "longitude")
    assert clim.hour.values.tolist() == [0, 6, 12, 18]
    assert 60 not in clim.dayofyear.values and len(clim.dayofyear) == 365  # no 29 February in 2021-22
    day100 = series.t2m.sel(time=["2021-04-09T06:00", "2022-04-09T06:00"]).mean("time")  # day 100 of 366
    np.testing.assert_allclose(clim.t2m.sel(dayofyear=100, hour=6), day100, rtol=1e-6)
    assert int(clim.n_samples.sel(dayofyear=100, hour=6)) == 2
    assert json.loads(clim.attrs["train_period"]) == ["2021-01-01T00:00:00", "2022-12-31T18:00:00"]


def test_smoothed_climatology_pools_a_window_of_days_wrapping_around_the_year(series):
    clim = climatology(series, TRAIN, smoothing_days=15)
    assert clim.dayofyear.values.tolist() == list(range(1, 367))
    train = series.sel(time=slice(*TRAIN))
    t = train.time.to_index()
    doy = t.dayofyear + ((~t.is_leap_year) & (t.month >= 3))
    window = np.isin(doy, [*range(360, 367), *range(1, 9)]) & (t.hour == 12)  # 1 January ± 7 days
    expected = train.t2m.isel(time=np.flatnonzero(window)).mean("time")
    np.testing.assert_allclose(clim.t2m.sel(dayofyear=1, hour=12), expected, rtol=1e-6)
    assert int(clim.n_samples.sel(dayofyear=1, hour=12)) == window.sum() == 30
    assert np.isfinite(clim.t2m.sel(dayofyear=60)).all()  # 29 February from its neighbours


def test_values_outside_the_training_period_do_not_change_the_climatology(series):
    clim = climatology(series, TRAIN, smoothing_days=5)
    changed = series.copy(deep=True)
    changed["t2m"][dict(time=slice(2920, None))] += 100.0  # 2023 only
    changed["t2m"][dict(time=slice(2920, 2930))] = np.nan
    xr.testing.assert_identical(climatology(changed, TRAIN, smoothing_days=5), clim)
    leaked = climatology(changed, ("2021-01-01", "2023-01-31T18:00"), smoothing_days=5)
    assert not np.allclose(leaked.t2m.values, clim.t2m.values)


def test_deseasonalise_removes_the_annual_cycle_and_reseasonalise_inverts_it(series):
    clim = climatology(series, TRAIN, smoothing_days=31)
    anomalies = deseasonalise(series, clim)
    assert anomalies.t2m.dtype == np.float32 and anomalies.time.equals(series.time)
    assert float(anomalies.t2m.std()) < 0.5 * float((series.t2m - series.t2m.mean("time")).std())
    test = anomalies.t2m.sel(time="2023")  # unseen year: anomalies of a cycle learnt without it
    assert abs(float(area_weighted_mean(test.mean("time")))) < 1.0
    np.testing.assert_allclose(reseasonalise(anomalies, clim).t2m, series.t2m, rtol=1e-6, atol=1e-4)


def test_real_ifs_temperature_by_hour_round_trip_and_missing_groups(ifs_t):
    ds = ifs_t.to_dataset()  # 2024-06-03 00Z .. 06-04 18Z, 6-hourly
    clim = climatology(ds, ("2024-06-03", "2024-06-03T18:00"), by=("hour",))
    assert clim.t.dims == ("hour", "level", "latitude", "longitude") and clim.hour.values.tolist() == [0, 6, 12, 18]
    anomalies = deseasonalise(ds, clim)
    np.testing.assert_allclose(anomalies.t.isel(time=slice(0, 4)).values, 0.0, atol=1e-4)  # the training day
    assert float(abs(anomalies.t.isel(time=slice(4, None))).max()) > 0.1
    np.testing.assert_allclose(reseasonalise(anomalies, clim).t.values, ds.t.values, rtol=1e-6)
    daily = climatology(ds, ("2024-06-03", "2024-06-03T18:00"))
    with pytest.raises(DataError, match="no training data for 4 calendar group") as err:
        deseasonalise(ds, daily)  # 4 June (day 156) is not in a climatology of 3 June
    assert "dayofyear 156, hour 0" in str(err.value)


def test_climatology_of_directions_goes_through_sine_and_cosine():
    lat, lon = regular_grid(10.0)
    times = np.arange(np.datetime64("2024-01-01T00"), np.datetime64("2024-01-03T00"), np.timedelta64(6, "h"))
    mwd = synthetic_field(by_key("mwd"), lat, lon, times, seed=3)
    mwd[0::4], mwd[4::4] = 350.0, 10.0  # both 00Z steps: either side of north
    mwd[:, :3] = np.nan  # no waves near the north pole
    ds = xr.Dataset({"mwd": (("time", "latitude", "longitude"), mwd)},
                    coords={"time": times, "latitude": lat, "longitude": lon})
    clim = climatology(ds, ("2024-01-01", "2024-01-02T18:00"), by=("hour",))
    assert {"mwd_sin", "mwd_cos"} == set(clim.data_vars)
    north = sincos_to_angles(clim).mwd.sel(hour=0).values[3:]
    assert np.minimum(north, 360 - north).max() < 1e-3  # 0°, not 180°
    restored = reseasonalise(deseasonalise(ds, clim), clim)
    assert list(restored.data_vars) == ["mwd"]
    np.testing.assert_array_equal(np.isnan(restored.mwd.values), np.isnan(mwd))
    gap = np.abs((restored.mwd.values - mwd + 180) % 360 - 180)
    assert np.nanmax(gap) < 1e-3


def test_bad_periods_and_groupings_are_data_errors(series):
    with pytest.raises(DataError, match="is empty; expected start <= end"):
        climatology(series, ("2022-01-01", "2021-01-01"))
    with pytest.raises(DataError, match="holds none of the 4380 times"):
        climatology(series, ("2030-01-01", "2031-01-01"))
    with pytest.raises(DataError, match="not a \\(start, end\\) pair"):
        normalisation_stats(series, "2021")
    with pytest.raises(DataError, match="expected distinct keys among dayofyear, hour, month"):
        climatology(series, TRAIN, by=("week",))
    with pytest.raises(DataError, match="expected an odd number of days"):
        climatology(series, TRAIN, smoothing_days=10)
    with pytest.raises(DataError, match="no 'time' dimension"):
        climatology(series.isel(time=0), TRAIN)
    with pytest.raises(DataError, match="variable 't2m' has dims .*expected 'latitude' and 'longitude'"):
        normalisation_stats(series.rename(latitude="y"), TRAIN)


# --------------------------------------------------------------------------------------
# Normalisation statistics


def test_stats_ignore_validation_and_test_dates(ifs_t):
    ds = ifs_t.to_dataset()
    train = ("2024-06-03", "2024-06-03T18:00")
    stats = normalisation_stats(ds, train)
    assert set(stats.atmos["t"]) == {300.0, 400.0, 500.0, 700.0, 850.0, 1000.0}
    t850 = stats.get("t", 850)
    assert 250 < t850.location < 300 and 1 < t850.scale < 30 and t850.estimator == "median, 1.4826 MAD"
    changed = ds.copy(deep=True)
    changed["t"][dict(time=slice(4, None))] += 50.0  # 4 June: validation and test
    assert normalisation_stats(changed, train) == stats
    assert normalisation_stats(changed, ("2024-06-03", "2024-06-04T18:00")) != stats


def test_robust_scale_ignores_a_few_outliers_that_move_the_std(gfs):
    t2m = gfs["t2m"].values().to_dataset()
    period = ("2011-01-15", "2011-01-16")
    clean = {r: normalisation_stats(t2m, period, robust=r).get("t2m") for r in (True, "iqr", False)}
    dirty = t2m.copy(deep=True)
    dirty["t2m"][0, 30:33, 40:43] = 1.0e4  # 9 of 10512 cells, a broken sensor
    for robust in (True, "iqr"):
        spoilt = normalisation_stats(dirty, period, robust=robust).get("t2m")
        assert abs(spoilt.scale / clean[robust].scale - 1) < 0.01
        assert abs(spoilt.location - clean[robust].location) < 0.1
    spoilt = normalisation_stats(dirty, period, robust=False).get("t2m")
    assert spoilt.scale > 10 * clean[False].scale
    assert 5 < clean[True].scale < 40 and 5 < clean[False].scale < 40  # kelvin


def test_robust_estimators_follow_their_definitions():
    rng = np.random.default_rng(0)
    values = rng.standard_t(3, size=(3, 5, 7)).astype("float64") * 4 + 10  # 105 values, heavy tails
    ds = xr.Dataset({"u10": (("time", "latitude", "longitude"), values)},
                    coords={"time": np.arange(3).astype("datetime64[D]"), "latitude": np.linspace(20, -20, 5),
                            "longitude": np.arange(7.0)})
    x = values.ravel()
    mad = normalisation_stats(ds, ("1970-01-01", "1970-01-03"), area_weighted=False).get("u10")
    assert mad.location == pytest.approx(np.median(x), rel=1e-12)
    assert mad.scale == pytest.approx(1.4826 * np.median(np.abs(x - np.median(x))), rel=1e-12)
    iqr = normalisation_stats(ds, ("1970-01-01", "1970-01-03"), robust="iqr", area_weighted=False).get("u10")
    q25, q75 = np.quantile(x, [0.25, 0.75], method="hazen")
    assert iqr.scale == pytest.approx((q75 - q25) / 1.349, rel=1e-12)
    std = normalisation_stats(ds, ("1970-01-01", "1970-01-03"), robust=False, area_weighted=False).get("u10")
    assert (std.location, std.scale) == (pytest.approx(x.mean()), pytest.approx(x.std()))


def test_stats_of_wave_heights_leave_land_out_and_weigh_by_area(swh):
    ds = swh.to_dataset()
    period = ("2026-08-19", "2026-08-19")
    mean = normalisation_stats(ds, period, robust=False).get("swh")
    assert mean.location == pytest.approx(float(area_weighted_mean(swh.astype("float64"))[0]), rel=1e-9)
    unweighted = normalisation_stats(ds, period, robust=False, area_weighted=False).get("swh")
    assert unweighted.location == pytest.approx(float(np.nanmean(swh.values.astype("float64"))), rel=1e-6)
    robust = normalisation_stats(ds, period).get("swh")
    assert 0.3 < robust.location < mean.location and 0 < robust.scale < 3  # skewed: median below mean


def test_stats_json_round_trip_and_aurora_form(gfs):
    ds = xr.Dataset({k: gfs[k].values() for k in ("t2m", "u10", "v10", "msl", "lsm", "z_surface", "t")})
    stats = normalisation_stats(ds, ("2011-01-15", "2011-01-15T12:00"))
    assert NormalisationStats.from_json(stats.to_json()) == stats
    surf = aurora_surf_stats(stats)
    assert set(surf) == {"2t", "10u", "10v", "msl", "lsm", "z"}
    assert "median and" not in stats.get("lsm").estimator and "standard deviation instead" in stats.get("lsm").estimator
    x = torch.from_numpy(ds.t2m.values)
    t2m = stats.get("t2m")
    np.testing.assert_allclose(normalise_surf_var(x, "2t", stats=surf).numpy(), (x.numpy() - t2m.location) / t2m.scale,
                               rtol=1e-5)
    assert not np.allclose(normalise_surf_var(x, "2t").numpy(), (x.numpy() - t2m.location) / t2m.scale)
    atmos = aurora_atmos_stats(stats)
    assert atmos["t_850"] == (stats.get("t", 850).location, stats.get("t", 850).scale)
    with pytest.raises(DataError, match="not a normalisation statistics document"):
        NormalisationStats.from_json('{"format": "something else"}')


def test_anomaly_stats_need_a_climatology_from_inside_the_training_period(series):
    clim = climatology(series, TRAIN, smoothing_days=31)
    stats = normalisation_stats(series, TRAIN, climatology=clim)
    assert stats.deseasonalised and abs(stats.get("t2m").location) < 1.0
    assert stats.get("t2m").scale < normalisation_stats(series, TRAIN).get("t2m").scale
    with pytest.raises(DataError, match="Aurora normalises raw fields"):
        aurora_surf_stats(stats)
    assert set(aurora_surf_stats(stats, allow_anomalies=True)) == {"2t"}
    with pytest.raises(DataError, match="otherwise other dates leak in"):
        normalisation_stats(series, ("2021-01-01", "2021-12-31"), climatology=clim)


# --------------------------------------------------------------------------------------
# Angles


def wave_directions(swh: xr.DataArray) -> xr.Dataset:
    """Synthetic wave directions on the real GFS-Wave grid, NaN on its real land."""
    land = swh.isnull().values[0]
    times = np.array(["2024-01-01T00", "2024-01-01T06"], dtype="datetime64[ns]")
    lat, lon = swh.latitude.values, swh.longitude.values
    data = {name: (("time", "latitude", "longitude"), synthetic_field(by_key(name), lat, lon, times, land=land))
            for name in ("mwd", "mdts")}
    return xr.Dataset(data, coords={"time": times, "latitude": lat, "longitude": lon})


def test_angle_variables_are_those_of_aurora_wave():
    assert ANGLE_VARS == ("mwd", "mdww", "mdts", "mwd1", "mwd2")
    assert set(ANGLE_VARS) < set(WAVE.surf_vars)


def test_angles_round_trip_through_sine_and_cosine_as_aurora_wave_does(swh):
    ds = wave_directions(swh)
    sc = angles_to_sincos(ds)
    assert list(sc.data_vars) == ["mwd_sin", "mwd_cos", "mdts_sin", "mdts_cos"]
    np.testing.assert_array_equal(np.isnan(sc.mwd_sin.values), np.isnan(ds.mwd.values))
    np.testing.assert_allclose(np.hypot(sc.mwd_sin, sc.mwd_cos).values[np.isfinite(sc.mwd_sin.values)], 1, rtol=1e-6)
    back = sincos_to_angles(sc)
    assert list(back.data_vars) == ["mwd", "mdts"] and back.mwd.attrs["units"] == "degree"
    gap = np.abs((back.mwd.values - ds.mwd.values + 180) % 360 - 180)
    assert np.nanmax(gap) < 1e-3 and np.nanmin(back.mwd.values) >= 0 and np.nanmax(back.mwd.values) <= 360
    # AuroraWave's own decoder hook turns the same components into the same angles.
    fake = SimpleNamespace(angle_surf_vars=ANGLE_VARS, density_channel_surf_vars=())
    pred = SimpleNamespace(static_vars={"wmb": torch.ones(1)},
                           surf_vars={k: torch.from_numpy(sc[k].values.copy()) for k in ("mwd_sin", "mwd_cos")})
    theirs = AuroraWave._post_decoder_hook(fake, None, pred).surf_vars["mwd"].numpy()
    np.testing.assert_allclose(back.mwd.values, theirs, atol=1e-3)


def test_mean_of_directions_either_side_of_north_is_north():
    north = float(mean_direction(xr.DataArray([350.0, 10.0], dims="time")))
    assert min(north, 360.0 - north) < 1e-9  # 0°, where the arithmetic mean says 180°
    assert float(mean_direction(xr.DataArray([350.0, 20.0, np.nan], dims="t"))) == pytest.approx(5.0)
    weighted = mean_direction(xr.DataArray([90.0, 180.0], dims="t"), weights=xr.DataArray([3.0, 0.0], dims="t"))
    assert float(weighted) == pytest.approx(90.0)


def test_a_direction_without_its_pair_is_refused(swh):
    sc = angles_to_sincos(wave_directions(swh)).drop_vars("mwd_cos")
    with pytest.raises(DataError, match="'mwd_sin' is present but 'mwd_cos' is missing"):
        sincos_to_angles(sc)
    both = wave_directions(swh).assign(mwd_sin=lambda d: d.mwd)
    with pytest.raises(DataError, match="given both as degrees and as mwd_sin"):
        angles_to_sincos(both)


def test_direction_stats_are_of_sine_and_cosine(swh):
    stats = normalisation_stats(wave_directions(swh), ("2024-01-01", "2024-01-02"))
    assert set(stats.surface) == {"mwd_sin", "mwd_cos", "mdts_sin", "mdts_cos"}
    assert all(-1 <= s.location <= 1 for s in stats.surface.values())
    assert aurora_surf_stats(stats) == {}  # AuroraWave normalises raw angles by (0, 1) itself


# --------------------------------------------------------------------------------------
# Static fields


def test_gfs_statics_on_the_medium_range_grid(gfs):
    statics = prepare_statics(gfs, MEDIUM)
    assert set(statics.data_vars) == {"lsm", "z_surface"}  # GFS has no soil type
    assert statics.lsm.shape == MEDIUM.grid.shape and statics.lsm.dims == ("latitude", "longitude")
    assert float(statics.lsm.min()) >= 0 and float(statics.lsm.max()) <= 1
    assert statics.lsm.attrs["regrid_method"] == "bilinear" and statics.lsm.attrs["aurora_name"] == "lsm"
    assert statics.z_surface.attrs["aurora_name"] == "z" and float(statics.z_surface.max()) > 9.80665 * 4000


def test_soil_type_stays_integer_codes():
    slt = fields_of(SOIL_TYPE)["slt"].values()  # 6x6 points, 2° apart
    statics = prepare_statics({"slt": slt}, MEDIUM)
    codes = statics.slt.values
    assert statics.slt.attrs["regrid_method"] == "nearest" and codes.shape == (49, 45)
    assert set(np.unique(codes)) <= set(np.unique(slt.values)) and np.all(codes == np.round(codes))
    with pytest.raises(DataError, match="expected method 'nearest'"):
        prepare_statics({"slt": slt}, MEDIUM, method="bilinear")


def test_land_fraction_from_a_fine_mask_is_coarsened_conservatively(swh):
    land = swh.isel(time=0).isnull().astype("float32").rename("lsm")  # 1/6° land/sea from GFS-Wave
    statics = prepare_statics(xr.Dataset({"lsm": land}), POLLUTION)  # to 0.4°, 52.4N..14.8S
    lsm = statics.lsm
    assert lsm.attrs["regrid_method"] == "conservative" and float(lsm.min()) == 0 and float(lsm.max()) == 1
    coast = ((lsm > 0.01) & (lsm < 0.99)).mean()
    assert 0.02 < float(coast) < 0.5  # fractions along coasts
    # Same land fraction over a band away from the domain edges (the two grids share no cell
    # edge there, hence the tolerance; test_grid checks exact conservation).
    assert float(area_weighted_mean(lsm.sel(latitude=slice(40, -10)))) == pytest.approx(
        float(area_weighted_mean(land.astype("float64").sel(latitude=slice(40.2, -10.2)))), rel=1e-3)


def test_statics_on_different_domains_or_absent_are_refused(gfs):
    slt = fields_of(SOIL_TYPE)["slt"].values()
    with pytest.raises(DataError, match="cover different domains") as err:
        prepare_statics({"lsm": gfs["lsm"], "slt": slt}, MEDIUM)
    assert "slt: 49x45" in str(err.value)
    with pytest.raises(DataError, match="expected some of: lsm, z_surface, slt"):
        prepare_statics({"t2m": gfs["t2m"]}, MEDIUM)
