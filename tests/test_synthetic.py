"""Synthetic fields: shapes, bounds, determinism and the physics the rest of the system relies on."""

from __future__ import annotations

import numpy as np
import pytest

from model_code.data.synthetic import (
    SYNTHETIC_ATTR,
    regular_grid,
    synthetic_dataarray,
    synthetic_field,
    synthetic_window,
)
from model_code.errors import DataError
from model_code.variables import G0, VARIABLES, variable
from model_code.variants import LEVELS, VARIANTS

LAT, LON = regular_grid(5.0)  # (37,), (72,)
TIMES = np.array(["2024-07-01T00", "2024-07-01T06"], dtype="datetime64[s]")
LEVELS_DESC = sorted(LEVELS, reverse=True)  # 1000 hPa first: upwards with the index
SEED = 0


def field(kind, name, *, lat=LAT, lon=LON, times=TIMES, levels=LEVELS_DESC, seed=SEED, land=None):
    return synthetic_field(variable(kind, name), lat, lon, times, levels, seed=seed, land=land)


def synthetic_land(seed=SEED, lat=LAT, lon=LON):
    return field("static", "lsm", lat=lat, lon=lon, seed=seed) > 0.5


def area_mean(x, lat=LAT):
    """Area-weighted mean over the last two (lat, lon) axes."""
    w = np.cos(np.deg2rad(lat))[:, None] * np.ones(x.shape[-1])
    return (x * w).sum(axis=(-2, -1)) / w.sum()


# ---- grid -------------------------------------------------------------------------------


def test_regular_grid():
    lat, lon = regular_grid(0.25)
    assert lat.shape == (721,) and lon.shape == (1440,)
    assert lat[0] == 90 and lat[-1] == -90 and np.all(np.diff(lat) < 0)
    assert lon[0] == 0 and np.isclose(lon[-1], 359.75) and np.all(np.diff(lon) > 0)
    assert [a.shape for a in regular_grid(0.1)] == [(1801,), (3600,)]
    assert [a.shape for a in regular_grid(5.0)] == [(37,), (72,)]
    with pytest.raises(DataError):
        regular_grid(0.7)
    with pytest.raises(DataError):
        regular_grid(0)


# ---- every variable of every variant ----------------------------------------------------


@pytest.mark.parametrize("name", list(VARIANTS))
def test_every_variable_generates_within_bounds(name):
    spec = VARIANTS[name]
    land = synthetic_land()
    for v in dict.fromkeys(spec.inputs() + spec.outputs()):
        x = synthetic_field(v, LAT, LON, TIMES, spec.levels, seed=SEED)
        expected = {
            "static": (37, 72),
            "surface": (2, 37, 72),
            "atmos": (2, len(spec.levels), 37, 72),
        }[v.kind]
        assert x.shape == expected, v.dataset_name
        assert x.dtype == np.float32, v.dataset_name
        nan = np.isnan(x)
        if v.nan_by_design:
            assert np.array_equal(nan, np.broadcast_to(land, x.shape)), v.dataset_name
        else:
            assert not nan.any(), v.dataset_name
        values = x[~nan].astype(np.float64)
        assert np.all(np.isfinite(values)), v.dataset_name
        lo, hi = v.bounds
        if lo is not None:
            assert values.min() >= lo, (v.dataset_name, values.min())
        if hi is not None:
            assert values.max() <= hi, (v.dataset_name, values.max())
        if v.units == "degree":
            assert values.max() < 360.0, v.dataset_name
        assert values.std() > 0 or v.name == "lat_mask", f"{v.dataset_name} is constant"


def test_typical_magnitudes_follow_the_catalogue_units():
    """Global medians near what ERA5/CAMS/WAM hold, in the catalogue's units."""
    expected = {  # (kind, name): (low, high) for the median
        ("surface", "2t"): (270, 295), ("surface", "msl"): (100500, 102000),
        ("surface", "pm10"): (1e-9, 1e-7), ("surface", "pm2p5"): (1e-9, 1e-7),
        ("surface", "tcco"): (3e-4, 3e-3), ("surface", "tc_no"): (1e-7, 1e-5),
        ("surface", "tcno2"): (1e-6, 1e-4), ("surface", "gtco3"): (5e-3, 8e-3),
        ("surface", "tcso2"): (1e-6, 1e-4), ("surface", "swh"): (0.5, 6),
        ("surface", "mwp"): (3, 16), ("surface", "pp1d"): (3, 16), ("surface", "wind"): (1, 15),
    }
    for (kind, name), (low, high) in expected.items():
        median = np.nanmedian(field(kind, name))
        assert low <= median <= high, (name, median)
    levels = [1000, 500, 50]
    go3 = np.median(field("atmos", "go3", levels=levels), axis=(0, 2, 3))
    assert 1e-8 < go3[0] < 1e-7 and 3e-6 < go3[2] < 3e-5
    for name, (low, high) in {"co": (2e-8, 5e-7), "no": (1e-11, 2e-9), "no2": (3e-11, 1e-8),
                              "so2": (1e-11, 2e-9)}.items():
        median = np.median(field("atmos", name, levels=levels)[:, 0])
        assert low <= median <= high, (name, median)


# ---- determinism ------------------------------------------------------------------------


def test_same_seed_same_values_and_different_seed_different_values():
    for kind, name in [("surface", "2t"), ("atmos", "q"), ("static", "lsm"), ("surface", "swh")]:
        a = field(kind, name, seed=3)
        assert np.array_equal(a, field(kind, name, seed=3), equal_nan=True)
        assert not np.array_equal(a, field(kind, name, seed=4), equal_nan=True), name


def test_order_of_generation_does_not_matter():
    names = [("surface", "pm10"), ("static", "z"), ("atmos", "t"), ("surface", "mwd"), ("static", "slt")]
    forward = {n: field(*n, seed=7) for n in names}
    backward = {n: field(*n, seed=7) for n in reversed(names)}
    for n in names:
        assert np.array_equal(forward[n], backward[n], equal_nan=True), n


def test_values_do_not_depend_on_the_grid():
    """A point has the same value on a coarse grid and on a finer one that contains it."""
    fine_lat, fine_lon = regular_grid(2.5)
    for kind, name in [("surface", "msl"), ("static", "lsm"), ("static", "z")]:
        coarse = field(kind, name)
        fine = field(kind, name, lat=fine_lat, lon=fine_lon)[..., ::2, ::2]
        np.testing.assert_allclose(coarse, fine, rtol=1e-5, atol=1e-3)


def test_fields_are_smooth_not_white_noise():
    lat, lon = regular_grid(1.0)
    for kind, name in [("surface", "msl"), ("surface", "10u"), ("static", "static_co")]:
        x = field(kind, name, lat=lat, lon=lon)
        x = x.reshape(-1, x.shape[-1]).astype(np.float64)  # rows along longitude
        x = x - x.mean(axis=1, keepdims=True)
        lag1 = (x * np.roll(x, 1, axis=1)).sum() / (x * x).sum()
        assert lag1 > 0.95, (name, lag1)


# ---- physics ----------------------------------------------------------------------------


def test_geopotential_increases_upwards_at_every_point_and_follows_standard_heights():
    z = field("atmos", "z")  # (T, L, H, W), levels from 1000 to 50 hPa
    assert np.all(np.diff(z, axis=1) > 0)
    height = area_mean(z.mean(axis=0)) / G0  # (L,) metres
    standard = {1000: 111, 500: 5574, 250: 10363, 50: 20576}
    for level, metres in standard.items():
        got = height[LEVELS_DESC.index(level)]
        assert abs(got - metres) < 0.08 * metres + 60, (level, got)


def test_temperature_profile():
    t = field("atmos", "t")
    t1000 = t[:, LEVELS_DESC.index(1000)]
    assert t1000[:, np.abs(LAT) <= 15].mean() > t1000[:, np.abs(LAT) >= 70].mean() + 25
    t500 = t[:, LEVELS_DESC.index(500)]
    assert np.all(t500 < t1000)  # lapse rate in the troposphere
    t50, t100 = t[:, LEVELS_DESC.index(50)], t[:, LEVELS_DESC.index(100)]
    assert 200 <= t50.min() and t50.max() <= 225  # near-isothermal lower stratosphere
    assert np.abs(t50 - t100).max() < 5


def test_humidity_is_non_negative_and_decreases_with_height():
    q = field("atmos", "q")
    assert np.all(q >= 0)
    assert np.all(np.diff(q, axis=1) < 0)
    tropical_surface = q[:, 0][:, np.abs(LAT) <= 10].mean()
    assert 0.012 < tropical_surface < 0.025
    polar_surface = q[:, 0][:, np.abs(LAT) >= 75].mean()
    assert polar_surface < tropical_surface / 4
    assert q[:, -1].max() < 1e-5  # 50 hPa: dry stratosphere


def test_winds_have_jets_trades_and_small_meridional_component():
    u = field("atmos", "u").mean(axis=(0, 3))  # (L, H) zonal mean
    v = field("atmos", "v").mean(axis=(0, 3))
    jet = (np.abs(LAT) >= 30) & (np.abs(LAT) <= 45)
    i250, i850 = LEVELS_DESC.index(250), LEVELS_DESC.index(850)
    assert u[i250, jet].mean() > 15 and u[i250, jet].mean() > u[i850, jet].mean() + 10
    assert np.abs(v).max() < 6
    u10 = field("surface", "10u").mean(axis=(0, 2))
    assert u10[(np.abs(LAT) >= 5) & (np.abs(LAT) <= 20)].mean() < -1  # easterly trades
    assert u10[(np.abs(LAT) >= 40) & (np.abs(LAT) <= 55)].mean() > 2  # westerlies
    speed = np.hypot(field("surface", "10u"), field("surface", "10v"))
    assert speed.max() < 25


def test_mean_sea_level_pressure():
    msl = field("surface", "msl")
    assert abs(area_mean(msl).mean() - 101325) < 400
    assert 1000 < msl.std() < 3000 and msl.min() > 96000 and msl.max() < 106000


def test_particulate_matter_is_ordered_and_pollutants_are_positive():
    pm1, pm2p5, pm10 = field("surface", "pm1"), field("surface", "pm2p5"), field("surface", "pm10")
    assert np.all(pm1 > 0) and np.all(pm1 <= pm2p5) and np.all(pm2p5 <= pm10)
    for name in ("tcco", "tc_no", "tcno2", "gtco3", "tcso2"):
        assert np.all(field("surface", name) > 0), name
    land = synthetic_land()
    # Emitted at the surface: more over land near the ground (CO is long-lived, so less so).
    for name, contrast in {"co": 1.3, "no": 2.0, "no2": 2.0, "so2": 2.0, "go3": None}.items():
        x = field("atmos", name)
        assert np.all(x > 0), name
        if contrast:
            assert x[:, 0][:, land].mean() > contrast * x[:, 0][:, ~land].mean(), name
    go3 = field("atmos", "go3")
    assert np.all(np.diff(go3, axis=1) > 0)  # ozone rises into the stratosphere


def test_wave_fields_are_consistent():
    swh, shww, shts = field("surface", "swh"), field("surface", "shww"), field("surface", "shts")
    sea = ~np.isnan(swh)
    assert np.all(swh[sea] >= shww[sea]) and np.all(swh[sea] >= shts[sea])
    np.testing.assert_allclose(swh[sea] ** 2, shww[sea] ** 2 + shts[sea] ** 2, rtol=1e-4)
    swh1, swh2 = field("surface", "swh1"), field("surface", "swh2")
    assert np.all(swh1[sea] >= swh2[sea]) and np.all(swh1[sea] <= shts[sea] * 1.0001)
    mwp, pp1d = field("surface", "mwp"), field("surface", "pp1d")
    assert np.all(pp1d[sea] >= mwp[sea])
    for name in ("mwp", "pp1d", "mpww", "mpts", "mwp1", "mwp2"):
        x = field("surface", name)[sea]
        assert 3 <= x.min() and x.max() <= 16, name
    belt = np.nanmean(swh[:, np.abs(LAT + 50) <= 5])
    tropics = np.nanmean(swh[:, np.abs(LAT) <= 10])
    assert belt > tropics + 0.5
    # The wave model's wind is the 10 m wind over the sea.
    u10, wind = field("surface", "10u"), field("surface", "wind")
    np.testing.assert_array_equal(field("surface", "10u_wave")[sea], u10[sea])
    np.testing.assert_allclose(wind[sea], np.hypot(u10, field("surface", "10v"))[sea], rtol=1e-6)


def test_land_mask_from_the_caller_is_respected():
    land = np.zeros((LAT.size, LON.size), dtype=bool)
    land[10:20, 30:50] = True
    swh = field("surface", "swh", land=land)
    assert np.array_equal(np.isnan(swh), np.broadcast_to(land, swh.shape))
    assert np.array_equal(field("static", "lsm", land=land), land.astype(np.float32))
    z = field("static", "z", land=land)
    assert np.all(z[land] > 0) and np.all(z[~land] == 0)
    wmb = field("static", "wmb", land=land)
    assert np.all(wmb[land] == 0) and np.all(wmb[~land] > 0)


def test_static_fields():
    lat, lon = regular_grid(1.0)
    lsm = field("static", "lsm", lat=lat, lon=lon)
    land = lsm > 0.5
    assert 0 <= lsm.min() and lsm.max() <= 1
    share = area_mean(land.astype(np.float64), lat)
    assert 0.25 < share < 0.35
    assert np.mean((lsm > 0) & (lsm < 1)) < 0.1  # fractional values only along coasts

    z = field("static", "z", lat=lat, lon=lon)
    assert np.all(z[~land] == 0) and np.all(z[land] > 0)
    assert 1500 * G0 < z.max() <= 4000 * G0 * 1.0001

    slt = field("static", "slt", lat=lat, lon=lon)
    assert np.array_equal(slt, np.round(slt))
    assert np.all(slt[~land] == 0) and set(np.unique(slt[land])) <= set(range(1, 8))
    assert len(np.unique(slt[land])) >= 5

    wmb = field("static", "wmb", lat=lat, lon=lon)
    assert np.all(wmb[land] == 0) and np.all(wmb[~land] > 0)
    assert 3000 < wmb.max() <= 5000 and np.median(wmb[~land]) > 300

    lat_mask = field("static", "lat_mask", lat=lat, lon=lon)
    assert np.array_equal(lat_mask, np.broadcast_to((np.abs(lat) <= 80)[:, None], lat_mask.shape).astype(np.float32))

    for species in ("ammonia", "co", "nox", "so2"):
        linear = field("static", f"static_{species}", lat=lat, lon=lon)
        log = field("static", f"static_{species}_log", lat=lat, lon=lon)
        assert np.all(linear >= 0)
        assert linear[land].mean() > 20 * linear[~land].mean(), species
        np.testing.assert_allclose(log, np.log(linear + 1e-3) - np.log(1e-3), rtol=1e-4, atol=1e-5)


def test_two_metre_temperature_has_a_diurnal_cycle_peaking_in_the_afternoon():
    times = np.datetime64("2024-03-01T00", "s") + np.arange(48) * np.timedelta64(1, "h")
    t2m = field("surface", "2t", times=times)  # (48, H, W)
    land = synthetic_land()
    hours = np.arange(48)
    checked = 0
    for i, j in zip(*np.nonzero(land & (np.abs(LAT) <= 45)[:, None])):
        local = (hours + LON[j] / 15.0) % 24
        k14 = np.nonzero(np.abs(local - 14) < 0.5)[0][0]
        k02 = np.nonzero((np.abs(local - 2) < 0.5) & (hours > k14))[0][0]  # 12 h later
        assert t2m[k14, i, j] > t2m[k02, i, j] + 1, (LAT[i], LON[j])
        checked += 1
    assert checked > 50
    # The cycle is weaker over the sea.
    swing = t2m.max(axis=0) - t2m.min(axis=0)
    assert swing[land].mean() > 2 * swing[~land].mean()


def test_global_tenth_of_a_degree_surface_field():
    lat, lon = regular_grid(0.1)
    x = synthetic_field(variable("surface", "2t"), lat, lon, TIMES[:1])
    assert x.shape == (1, 1801, 3600) and x.dtype == np.float32
    assert np.isfinite(x).all()


# ---- xarray wrappers and errors ---------------------------------------------------------


def test_dataarray_has_coords_and_attrs():
    da = synthetic_dataarray(variable("atmos", "t"), LAT, LON, TIMES, [500, 850], seed=5)
    assert da.name == "t" and da.dims == ("time", "level", "latitude", "longitude")
    assert da.attrs["units"] == "K" and da.attrs["standard_name"] == "air_temperature"
    assert da.attrs[SYNTHETIC_ATTR] == "true" and da.attrs["synthetic_seed"] == 5
    assert list(da.level.values) == [500, 850] and da.time.size == 2
    np.testing.assert_array_equal(da.values, synthetic_field(variable("atmos", "t"), LAT, LON, TIMES, [500, 850], seed=5))
    static = synthetic_dataarray(variable("static", "static_co_log"), LAT, LON)
    assert static.name == "static_co_log" and static.dims == ("latitude", "longitude")
    assert "standard_name" not in static.attrs


@pytest.mark.parametrize("name", list(VARIANTS))
def test_window_holds_every_input_marked_synthetic(name):
    spec = VARIANTS[name]
    ds = synthetic_window(spec, LAT, LON, TIMES, seed=2)
    assert set(ds.data_vars) == {v.dataset_name for v in spec.inputs()}
    assert ds.attrs[SYNTHETIC_ATTR] == "true"
    assert list(ds.level.values) == list(spec.levels)
    for v in spec.inputs():
        da = ds[v.dataset_name]
        assert da.attrs[SYNTHETIC_ATTR] == "true" and da.attrs["units"] == v.units
        assert da.dtype == np.float32
    # The shared context builds pieces once but gives the same values as one-off calls.
    for v in spec.inputs()[:3] + spec.inputs()[-2:]:
        alone = synthetic_field(v, LAT, LON, TIMES, spec.levels, seed=2)
        np.testing.assert_array_equal(ds[v.dataset_name].values, alone)


def test_errors_name_what_is_missing():
    with pytest.raises(DataError, match="times"):
        synthetic_field(variable("surface", "2t"), LAT, LON)
    with pytest.raises(DataError, match="times"):
        synthetic_field(variable("atmos", "t"), LAT, LON, None, [500])
    with pytest.raises(DataError, match="levels"):
        synthetic_field(variable("atmos", "t"), LAT, LON, TIMES)
    with pytest.raises(DataError, match="levels"):
        synthetic_field(variable("atmos", "q"), LAT, LON, TIMES, [])
    with pytest.raises(DataError, match="1-D"):
        synthetic_field(variable("static", "lsm"), np.zeros((3, 3)), LON)
    with pytest.raises(DataError, match="1-D"):
        synthetic_field(variable("static", "lsm"), LAT, LON[None, :])
    with pytest.raises(DataError, match="land mask"):
        synthetic_field(variable("surface", "swh"), LAT, LON, TIMES, land=np.zeros((3, 3), bool))
    # Statics need neither.
    assert synthetic_field(variable("static", "z"), LAT, LON).shape == (37, 72)


def test_catalogue_is_fully_covered():
    for v in VARIABLES:
        x = synthetic_field(v, LAT[:5], LON[:5], TIMES[:1], [500])
        assert x.dtype == np.float32, v.dataset_name
