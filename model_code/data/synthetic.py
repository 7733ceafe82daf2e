"""Synthetic, physically plausible meteorological fields.

Two uses: filling variables that have no public real sample (pollutants, gridded wave
fields, soil type, emission statics) when a user asks for `--fill-missing synthetic`, and
scale tests and benchmarks at any grid size up to 0.1° global.

Every field is an analytic function of latitude, longitude, time, pressure level and a
seed: a large-scale climatological shape plus smooth random anomalies made of a few
low-wavenumber sinusoids. Values therefore do not depend on the grid they are sampled on
or on the order variables are generated in, and related variables stay consistent
(pm1 <= pm2p5 <= pm10, shww <= swh, geopotential from the temperature profile). Everything
built here is labelled with the attribute `synthetic = "true"` so it cannot be mistaken
for observations.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import xarray as xr

from model_code.errors import DataError
from model_code.variables import G0, Variable

if TYPE_CHECKING:
    from model_code.variants import VariantSpec

__all__ = ["SYNTHETIC_ATTR", "regular_grid", "synthetic_dataarray", "synthetic_field", "synthetic_window"]

SYNTHETIC_ATTR = "synthetic"
"""Attribute key that marks generated DataArrays and Datasets (value "true")."""

_F = np.float32
_R_DRY = 287.05  # J kg-1 K-1
_LAPSE = 0.0065  # K m-1, standard-atmosphere tropospheric lapse rate
_KAPPA = _R_DRY * _LAPSE / G0  # exponent of the barometric formula, ~0.190
_P_REF = 101325.0  # Pa
_DOBSON = 2.1415e-5  # kg m-2 of ozone per Dobson unit
_LOG_EPS = 1e-3  # as aurora.normalisation.log_transform
_WAVE_DOMAIN = 80.0  # degrees: |lat| covered by the wave model


# --------------------------------------------------------------------------------------
# Smooth random fields


def _rng(seed: int, name: str) -> np.random.Generator:
    """A generator that depends only on the seed and a component name, never on call order."""
    return np.random.default_rng([int(seed) % 2**64, zlib.crc32(name.encode())])


@dataclass(frozen=True)
class _Modes:
    """A smooth random field on the sphere: a sum of K separable low-wavenumber sinusoids.

    Longitude-dependent modes are damped by cos(lat) so the field is single-valued at the
    poles. Dynamic fields drift eastwards and their mode amplitudes pulse over days.
    """

    m: np.ndarray  # (K,) zonal wavenumbers
    n: np.ndarray  # (K,) meridional wavenumbers (per radian of latitude)
    amp: np.ndarray  # (K,)
    lon_phase: np.ndarray  # (K,) rad
    lat_phase: np.ndarray  # (K,) rad
    drift: np.ndarray  # (K,) eastward phase speed, rad of longitude per hour
    pulse: np.ndarray  # (K,) angular frequency of amplitude modulation, rad per hour
    pulse_phase: np.ndarray  # (K,) rad

    @classmethod
    def draw(cls, seed: int, name: str, k: int = 8, max_m: int = 5, max_n: int = 5, min_m: int = 0) -> _Modes:
        rng = _rng(seed, name)
        m = rng.integers(min_m, max_m + 1, k)
        n = rng.integers(1, max_n + 1, k)
        amp = rng.uniform(0.3, 1.0, k) / np.sqrt(1.0 + 0.3 * (m + n))  # redder spectrum
        return cls(
            m=m.astype(np.float64), n=n.astype(np.float64), amp=amp,
            lon_phase=rng.uniform(0, 2 * np.pi, k), lat_phase=rng.uniform(0, 2 * np.pi, k),
            drift=np.deg2rad(rng.uniform(0.1, 0.5, k)),  # ~2.4-12 deg/day
            pulse=2 * np.pi / rng.uniform(72.0, 240.0, k), pulse_phase=rng.uniform(0, 2 * np.pi, k),
        )

    def _lat_basis(self, lat: np.ndarray) -> np.ndarray:
        phi = np.deg2rad(lat)[:, None]  # (H, 1)
        damp = np.where(self.m > 0, np.cos(phi), 1.0)  # (H, K)
        return (np.cos(self.n * phi + self.lat_phase) * damp).astype(_F)  # (H, K)

    def _one(self, lat_basis: np.ndarray, lam: np.ndarray, hour: float | None, out: np.ndarray) -> None:
        amp, shift = self.amp, 0.0
        if hour is not None:
            amp = amp * (0.6 + 0.4 * np.cos(self.pulse * hour + self.pulse_phase))
            shift = np.mod(self.drift * hour, 2 * np.pi)[:, None]
        lon_basis = np.cos(self.m[:, None] * (lam[None, :] - shift) + self.lon_phase[:, None]).astype(_F)
        np.matmul(lat_basis * amp.astype(_F), lon_basis, out=out)  # (H, W)
        # Standardise (product of two random-phase cosines has variance 1/4), then squash
        # into (-1, 1) so every consumer knows its range exactly.
        sigma = float(np.sqrt(np.sum(amp**2) / 4.0))
        out *= _F(0.9 / sigma)
        np.tanh(out, out=out)

    def static(self, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        """(H, W) float32 in (-1, 1)."""
        out = np.empty((lat.size, lon.size), _F)
        self._one(self._lat_basis(lat), np.deg2rad(lon), None, out)
        return out

    def dynamic(self, lat: np.ndarray, lon: np.ndarray, hours: np.ndarray) -> np.ndarray:
        """(T, H, W) float32 in (-1, 1)."""
        out = np.empty((hours.size, lat.size, lon.size), _F)
        basis, lam = self._lat_basis(lat), np.deg2rad(lon)
        for i, h in enumerate(hours):
            self._one(basis, lam, float(h), out[i])
        return out


_CONTINENTS = dict(k=10, max_m=3, max_n=3)
_LAND_SHARE = 0.30  # area fraction of land
_COAST_WIDTH = 0.08  # potential units over which lsm goes from 0 to 1


def _continent_potential(seed: int, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """(H, W) float32: land where above the threshold; includes an Antarctic plateau."""
    c = _Modes.draw(seed, "lsm", **_CONTINENTS).static(lat, lon)
    antarctic = np.clip((-lat - 64.0) / 8.0, 0.0, 1.0).astype(_F)[:, None]  # (H, 1)
    c += _F(3.0) * antarctic
    return c


@lru_cache(maxsize=64)
def _land_threshold(seed: int) -> float:
    """Potential level above which ~30% of the globe's area is land (on a fixed 1° grid,
    so that the coastline does not depend on the grid a field is sampled on)."""
    lat = np.linspace(89.5, -89.5, 180)
    lon = np.arange(360) + 0.5
    c = _continent_potential(seed, lat, lon).astype(np.float64)
    w = np.broadcast_to(np.cos(np.deg2rad(lat))[:, None], c.shape).ravel()
    order = np.argsort(c.ravel())
    cum = np.cumsum(w[order]) / w.sum()
    return float(c.ravel()[order][np.searchsorted(cum, 1.0 - _LAND_SHARE)])


# --------------------------------------------------------------------------------------
# One sampling context: grid, times, levels and the shared pieces built on them


def _gauss(x: np.ndarray, centre: float, width: float) -> np.ndarray:
    return np.exp(-(((x - centre) / width) ** 2))


class _Ctx:
    """Grid, times, levels and seed, with the physical pieces that several variables share
    (built once per context, each a pure function of its inputs)."""

    def __init__(self, lat, lon, hours, levels, seed: int, land: np.ndarray | None):
        self.lat = lat  # (H,) float64 degrees north
        self.lon = lon  # (W,) float64 degrees east
        self.hours = hours  # (T,) float64 hours since 1970-01-01 UTC, or None
        self.levels = levels  # (L,) float64 hPa, or None
        self.seed = seed
        self._land_given = land  # (H, W) bool or None
        phi = np.deg2rad(lat)
        self.sin2 = (np.sin(phi) ** 2).astype(_F)[:, None]  # (H, 1)
        self.sinlat = np.sin(phi).astype(_F)[:, None]  # (H, 1)
        self.coslat = np.cos(phi).astype(_F)[:, None]  # (H, 1)
        self.abslat = np.abs(lat).astype(_F)[:, None]  # (H, 1) degrees

    @property
    def shape(self) -> tuple[int, int]:
        return (self.lat.size, self.lon.size)

    def smooth(self, name: str, **kw) -> np.ndarray:
        """(H, W) static anomaly in (-1, 1)."""
        return _Modes.draw(self.seed, name, **kw).static(self.lat, self.lon)

    def weather(self, name: str, **kw) -> np.ndarray:
        """(T, H, W) evolving anomaly in (-1, 1)."""
        return _Modes.draw(self.seed, name, **kw).dynamic(self.lat, self.lon, self.hours)

    # ---- calendar -------------------------------------------------------------------

    @cached_property
    def season(self) -> np.ndarray:
        """(T, 1, 1): +1 in northern mid-summer (mid-July), -1 in mid-winter."""
        day = np.mod(self.hours / 24.0, 365.2425)
        return np.cos(2 * np.pi * (day - 196.0) / 365.2425).astype(_F)[:, None, None]

    def solar_cycle(self, peak_hour: float) -> np.ndarray:
        """(T, 1, W): cos of local solar time relative to `peak_hour`, from longitude and UTC."""
        utc = np.mod(self.hours, 24.0)[:, None]  # (T, 1)
        local = utc + self.lon[None, :] / 15.0  # (T, W) hours
        return np.cos(2 * np.pi * (local - peak_hour) / 24.0).astype(_F)[:, None, :]

    # ---- statics --------------------------------------------------------------------

    @cached_property
    def potential(self) -> np.ndarray:
        """(H, W) continent potential minus the land threshold: > 0 on synthetic land."""
        c = _continent_potential(self.seed, self.lat, self.lon)
        c -= _F(_land_threshold(self.seed))
        return c

    @cached_property
    def lsm(self) -> np.ndarray:
        """(H, W) land fraction: the caller's mask as 0/1 when given, else synthetic."""
        if self._land_given is not None:
            return self._land_given.astype(_F)
        return np.clip(_F(0.5) + self.potential / _F(_COAST_WIDTH), 0.0, 1.0)

    @cached_property
    def land(self) -> np.ndarray:
        """(H, W) bool."""
        return self._land_given if self._land_given is not None else self.lsm > 0.5

    @cached_property
    def orography(self) -> np.ndarray:
        """(H, W) surface height in m: 0 at sea, 20-4000 m on land."""
        ridge = (self.smooth("z_surface", k=12, max_m=9, max_n=9) + 1) * _F(0.5)
        inland = np.clip(self.potential / _F(0.5), 0.0, 1.0)
        plateau = np.clip((-self.lat.astype(_F) - 68.0) / 8.0, 0.0, 1.0)[:, None] * _F(0.7)
        relief = np.maximum(ridge * ridge * ridge * inland, plateau)  # (H, W) in [0, 1]
        return np.where(self.land, _F(20.0) + _F(3980.0) * relief, _F(0.0))

    @cached_property
    def population(self) -> np.ndarray:
        """(H, W) in (-1, 1): where people (and so most emissions) are."""
        return self.smooth("_population", k=12, max_m=10, max_n=8)

    def emission(self, species: str) -> np.ndarray:
        """(H, W) scaled emission of `species` (ammonia, co, nox, so2, or pm for aerosol
        sources): non-negative, mostly over land, correlated through population."""
        key = f"static_{species}" if species != "pm" else "_pm_sources"
        if key not in self.__dict__:
            own = self.smooth(key, k=10, max_m=8, max_n=6)
            value = own * _F(1.3)
            value += self.population
            np.exp(value, out=value)
            value *= self.lsm
            value *= _F(0.25)
            sea = {"so2": 0.004, "nox": 0.006}.get(species, 0.0)  # shipping lanes
            if sea:
                own += _F(1.0)
                own *= _F(sea) * (1 - self.lsm)
                value += own
            self.__dict__[key] = value
        return self.__dict__[key]

    # ---- surface weather ------------------------------------------------------------

    @cached_property
    def sea_level_temperature(self) -> np.ndarray:
        """(T, H, W) K: temperature reduced to sea level, without the diurnal cycle."""
        base = _F(301.0) - _F(46.0) * self.sin2 + _F(10.0) * self.sinlat * self.season  # (T, H, 1)
        return base + _F(6.0) * self.weather("_temperature")

    @cached_property
    def msl(self) -> np.ndarray:
        """(T, H, W) Pa: subtropical highs, subpolar lows and travelling anomalies."""
        belts = _F(900.0) * _gauss(self.abslat, 32.0, 10.0) - _F(1300.0) * _gauss(self.abslat, 62.0, 10.0)
        # Travelling waves only (no zonal-mean anomaly), so the global mean stays put.
        return _F(_P_REF) + belts + _F(2300.0) * self.weather("msl", min_m=1)

    def _zonal_surface_wind(self) -> tuple[np.ndarray, np.ndarray]:
        """(H, 1) each: trades, westerlies and polar easterlies; equatorward trade flow."""
        a = self.abslat
        u = -_F(6.0) * _gauss(a, 15.0, 12.0) + _F(8.0) * _gauss(a, 48.0, 10.0) - _F(3.0) * _gauss(a, 72.0, 8.0)
        v = -_F(3.0) * np.sign(self.sinlat) * _gauss(a, 15.0, 10.0)
        return u.astype(_F), v.astype(_F)

    @cached_property
    def wind10(self) -> tuple[np.ndarray, np.ndarray]:
        """(T, H, W) each, m s-1; weaker over land (friction)."""
        u0, v0 = self._zonal_surface_wind()
        friction = _F(1.0) - _F(0.4) * self.lsm
        u = (u0 + _F(4.5) * self.weather("u10")) * friction
        v = (v0 + _F(4.0) * self.weather("v10", min_m=1)) * friction  # waves: no zonal-mean v
        return u, v

    # ---- waves ----------------------------------------------------------------------

    @cached_property
    def wind_speed(self) -> np.ndarray:
        return np.hypot(*self.wind10)

    @cached_property
    def wind_from(self) -> np.ndarray:
        """(T, H, W) degrees the wind blows from (meteorological convention)."""
        u, v = self.wind10
        return _F(270.0) - np.degrees(np.arctan2(v, u))

    @cached_property
    def storm_belt(self) -> np.ndarray:
        """(H, 1): 1 in the ~50° storm tracks, stronger in the Southern Ocean."""
        return _gauss(self.abslat, 50.0, 14.0) * np.where(self.sinlat < 0, _F(1.0), _F(0.7))

    @cached_property
    def shww(self) -> np.ndarray:
        """Wind-sea height (m), from the local wind, fetch-limited."""
        return _F(0.1) + _F(0.018) * self.wind_speed**2

    @cached_property
    def shts(self) -> np.ndarray:
        """Total swell height (m), from remote storms."""
        return (_F(0.4) + _F(2.8) * self.storm_belt) * (_F(1.0) + _F(0.3) * self.weather("shts"))

    @cached_property
    def swell_split(self) -> np.ndarray:
        """Angle (rad) splitting swell energy into first (cos) and second (sin) partitions."""
        return _F(0.45) + _F(0.2) * self.weather("_swell_split")

    @cached_property
    def mpww(self) -> np.ndarray:
        return _F(3.0) + _F(2.8) * np.sqrt(self.shww)

    @cached_property
    def mpts(self) -> np.ndarray:
        return _F(9.0) + _F(2.5) * self.storm_belt + _F(1.5) * self.weather("mpts")

    @cached_property
    def mwp(self) -> np.ndarray:
        """Energy-weighted mean of wind-sea and swell periods."""
        e_ww, e_ts = self.shww**2, self.shts**2
        return (e_ww * self.mpww + e_ts * self.mpts) / (e_ww + e_ts)

    @cached_property
    def mdww(self) -> np.ndarray:
        return self.wind_from + _F(15.0) * self.weather("mdww")

    @cached_property
    def mdts(self) -> np.ndarray:
        """Swell from the south-west in the south, from the west-north-west in the north."""
        base = _F(250.0) + _F(40.0) * self.sinlat
        return base + _F(35.0) * self.weather("mdts")

    # ---- pressure levels ------------------------------------------------------------

    @cached_property
    def strat_temperature(self) -> np.ndarray:
        """(H, 1) K: lower-stratosphere temperature, cold tropical tropopause."""
        return _F(208.0) + _F(9.0) * self.sin2

    def pressure(self, level: float) -> np.float32:
        """Pa, from a level in hPa."""
        return _F(level * 100.0)


# --------------------------------------------------------------------------------------
# Generators, one per (kind, name); each returns float32 before bounds and masks


def _surface(ctx: _Ctx) -> dict[str, Callable[[], np.ndarray]]:
    def t2m():
        amp = (_F(0.5) + _F(5.5) * ctx.lsm) * (_F(0.4) + _F(0.6) * ctx.coslat)  # (H, W) K
        out = ctx.sea_level_temperature - _F(_LAPSE) * ctx.orography
        out += amp * ctx.solar_cycle(14.0)  # peak at 14 local solar time
        return out

    def pollution_cycle():
        """(T, H, W) factor: shallow night boundary layer, peak near 07 local time over land."""
        return _F(1.0) + _F(0.25) * ctx.lsm * ctx.solar_cycle(7.0)

    def lognormal(name: str, sigma: float) -> np.ndarray:
        return np.exp(_F(sigma) * ctx.weather(name))

    def pm10():
        return (_F(8e-9) + _F(2.5e-8) * ctx.emission("pm")) * lognormal("pm10", 0.5) * pollution_cycle()

    def pm2p5():
        return pm10() * (_F(0.6) + _F(0.15) * ctx.weather("pm2p5"))  # ratio 0.45-0.75

    def pm1():
        return pm2p5() * (_F(0.72) + _F(0.12) * ctx.weather("pm1"))  # ratio 0.6-0.84

    def tcco():
        hemisphere = _F(1.0) + _F(0.25) * np.tanh(ctx.lat.astype(_F) / 20.0)[:, None]
        return (_F(8e-4) * hemisphere + _F(6e-4) * ctx.emission("co")) * lognormal("tcco", 0.2)

    def tc_no():
        return (_F(4e-7) + _F(3e-6) * ctx.emission("nox")) * lognormal("tc_no", 0.4) * pollution_cycle()

    def tcno2():
        return (_F(3e-6) + _F(2e-5) * ctx.emission("nox")) * lognormal("tcno2", 0.4) * pollution_cycle()

    def gtco3():
        dobson = _F(265.0) + _F(85.0) * ctx.sin2 + _F(25.0) * ctx.weather("gtco3")
        return _F(_DOBSON) * dobson

    def tcso2():
        return (_F(3e-6) + _F(2.5e-5) * ctx.emission("so2")) * lognormal("tcso2", 0.5)

    def swh1():
        return ctx.shts * np.cos(ctx.swell_split)

    def swh2():
        return ctx.shts * np.sin(ctx.swell_split)

    def mwd():
        e_ww, e_ts = ctx.shww**2, ctx.shts**2
        a, b = np.deg2rad(ctx.mdww), np.deg2rad(ctx.mdts)
        return np.degrees(np.arctan2(e_ww * np.sin(a) + e_ts * np.sin(b), e_ww * np.cos(a) + e_ts * np.cos(b)))

    return {
        "2t": t2m,
        "10u": lambda: ctx.wind10[0],
        "10v": lambda: ctx.wind10[1],
        "msl": lambda: ctx.msl,
        "pm1": pm1, "pm2p5": pm2p5, "pm10": pm10,
        "tcco": tcco, "tc_no": tc_no, "tcno2": tcno2, "gtco3": gtco3, "tcso2": tcso2,
        "swh": lambda: np.hypot(ctx.shww, ctx.shts),
        "mwd": mwd,
        "mwp": lambda: ctx.mwp,
        "pp1d": lambda: ctx.mwp * (_F(1.15) + _F(0.07) * ctx.weather("pp1d")),  # >= mwp, <= 16 s
        "shww": lambda: ctx.shww,
        "mdww": lambda: ctx.mdww,
        "mpww": lambda: ctx.mpww,
        "shts": lambda: ctx.shts,
        "mdts": lambda: ctx.mdts,
        "mpts": lambda: ctx.mpts,
        "swh1": swh1,
        "mwd1": lambda: ctx.mdts + _F(10.0) * ctx.weather("mwd1"),
        "mwp1": lambda: ctx.mpts * (_F(1.06) + _F(0.04) * ctx.weather("mwp1")),
        "swh2": swh2,
        "mwd2": lambda: ctx.mdts + _F(60.0) + _F(40.0) * ctx.weather("mwd2"),
        "mwp2": lambda: ctx.mpts * (_F(0.85) + _F(0.1) * ctx.weather("mwp2")),
        "wind": lambda: ctx.wind_speed,
        "dwi": lambda: ctx.wind_from,
        "10u_wave": lambda: ctx.wind10[0],
        "10v_wave": lambda: ctx.wind10[1],
    }


def _static(ctx: _Ctx) -> dict[str, Callable[[], np.ndarray]]:
    def slt():
        codes = np.floor((ctx.smooth("slt", k=8, max_m=6, max_n=6) + 1) * _F(3.5)) + 1  # 1..7
        return np.where(ctx.land, np.clip(codes, 1, 7), _F(0.0))

    def wmb():
        deep = np.sqrt(np.clip(-ctx.potential / _F(0.35), 0.0, 1.0))
        texture = _F(0.85) + _F(0.15) * ctx.smooth("wmb", k=10, max_m=8, max_n=8)
        return np.where(ctx.land, _F(0.0), (_F(40.0) + _F(4960.0) * deep) * texture)

    def lat_mask():
        inside = (np.abs(ctx.lat) <= _WAVE_DOMAIN).astype(_F)[:, None]
        return np.broadcast_to(inside, ctx.shape)

    table = {
        "lsm": lambda: ctx.lsm,
        "z": lambda: _F(G0) * ctx.orography,
        "slt": slt,
        "wmb": wmb,
        "lat_mask": lat_mask,
    }
    for species in ("ammonia", "co", "nox", "so2"):
        table[f"static_{species}"] = lambda s=species: ctx.emission(s)
        # The same transform as aurora.normalisation.log_transform: log(x + eps) - log(eps).
        table[f"static_{species}_log"] = lambda s=species: np.log1p(ctx.emission(s) / _F(_LOG_EPS))
    return table


def _atmos(ctx: _Ctx) -> dict[str, Callable[[], np.ndarray]]:
    """Each entry maps a level (hPa) to a (T, H, W) array."""

    def tropo_ratio(p):
        """(T, H, W): (p / p_msl) ** kappa, the barometric-formula temperature ratio."""
        return (p / ctx.msl) ** _F(_KAPPA)

    def temperature(level):
        return np.maximum(ctx.sea_level_temperature * tropo_ratio(ctx.pressure(level)), ctx.strat_temperature)

    def geopotential(level):
        p = ctx.pressure(level)
        ts, tt = ctx.sea_level_temperature, ctx.strat_temperature
        r = tropo_ratio(p)
        troposphere = ts * (_F(1.0) - r) / _F(_LAPSE)  # m, standard-atmosphere lapse rate
        # Isothermal above the tropopause: z_t + R T_t / g * ln(p_t / p), with
        # ln(p_t / p) = ln(p_msl / p) + ln(T_t / T_s) / kappa.
        log_pt_p = np.log(ctx.msl / p) + np.log(tt / ts) / _F(_KAPPA)
        stratosphere = (ts - tt) / _F(_LAPSE) + _F(_R_DRY / G0) * tt * log_pt_p
        return _F(G0) * np.where(ts * r >= tt, troposphere, stratosphere)

    def upper(level):
        """0 at 1000 hPa rising to 1 at 250 hPa and above."""
        return _F(np.clip(np.log(1000.0 / level) / np.log(4.0), 0.0, 1.0))

    def jet_shape(level):
        """Vertical shape of the jet: peaks at 250 hPa."""
        return _F(np.exp(-((np.log(level / 250.0) / 0.8) ** 2)))

    def boundary_layer(level):
        return _F(min(1.0, np.exp(-(1000.0 - level) / 150.0)))

    def stratosphere(level):
        return _F(np.clip(np.log(200.0 / level) / np.log(4.0), 0.0, 1.0))

    def low_levels(level):
        return _F(np.clip((level - 200.0) / 800.0, 0.0, 1.0))

    @_per_context(ctx, "u_parts")
    def u_parts():
        u0, _ = ctx._zonal_surface_wind()
        jet = _F(30.0) * _gauss(ctx.abslat, 35.0, 11.0) * (_F(1.0) - _F(0.25) * ctx.sinlat * ctx.season)
        tropical_easterly = -_F(8.0) * _gauss(ctx.abslat, 0.0, 15.0)
        return u0, jet, tropical_easterly, ctx.weather("_u_low"), ctx.weather("_u_high")

    def u(level):
        u0, jet, easterly, a_low, a_high = u_parts()
        h = upper(level)
        return (u0 * low_levels(level) + jet * jet_shape(level) + easterly * stratosphere(level)
                + _F(4.5) * (1 - h) * a_low + _F(12.0) * h * a_high)

    @_per_context(ctx, "v_parts")
    def v_parts():
        _, v0 = ctx._zonal_surface_wind()
        return v0, ctx.weather("_v_low", min_m=1), ctx.weather("_v_high", min_m=1)

    def v(level):
        v0, a_low, a_high = v_parts()
        h = upper(level)
        return v0 * low_levels(level) + _F(3.5) * (1 - h) * a_low + _F(9.0) * h * a_high

    @_per_context(ctx, "q_surface")
    def q_surface():
        """(T, H, W) kg kg-1 near the surface: relative humidity times saturation."""
        t = ctx.sea_level_temperature
        e_sat = _F(611.2) * np.exp(_F(17.67) * (t - _F(273.15)) / (t - _F(29.65)))  # Pa
        q_sat = _F(0.622) * e_sat / (ctx.msl - _F(0.378) * e_sat)
        rh = _F(0.72) + _F(0.13) * ctx.weather("q") - _F(0.15) * ctx.lsm
        return np.minimum(rh * q_sat, _F(0.025))

    def q(level):
        # Moisture scale height ~2 km against ~7.5 km for pressure, plus a dry stratospheric floor.
        return q_surface() * (ctx.pressure(level) / ctx.msl) ** _F(3.5) + _F(2.5e-6)

    def tracer(name, background, surface, sigma, strat=0.0):
        """Background profile(level) + surface emissions mixed in the boundary layer."""
        emission = {"co": "co", "no": "nox", "no2": "nox", "so2": "so2"}[name]

        @_per_context(ctx, f"tracer_{name}")
        def parts():
            return ctx.emission(emission), np.exp(_F(sigma) * ctx.weather(name))

        def at(level):
            e, noise = parts()
            low = _F(background(level)) + _F(surface) * e * boundary_layer(level)
            return low * noise + _F(strat) * stratosphere(level)

        return at

    @_per_context(ctx, "go3_parts")
    def go3_parts():
        return (_F(1.0) + _F(0.3) * ctx.sin2) * np.exp(_F(0.15) * ctx.weather("go3"))

    def go3(level):
        return _F(3e-8 * (1000.0 / level) ** 1.94) * go3_parts()  # 3e-8 at 1000 hPa, 1e-5 at 50

    return {
        "t": temperature,
        "z": geopotential,
        "u": u,
        "v": v,
        "q": q,
        "co": tracer("co", lambda lv: 6e-8 * (lv / 1000.0) ** 0.3, 2e-7, 0.3),
        "no": tracer("no", lambda lv: 5e-11, 1.2e-9, 0.5, strat=5e-10),
        "no2": tracer("no2", lambda lv: 1e-10, 6e-9, 0.5, strat=8e-10),
        "go3": go3,
        "so2": tracer("so2", lambda lv: 5e-11, 1.5e-9, 0.5),
    }


def _per_context(ctx: _Ctx, key: str):
    """Cache a zero-argument builder on the context, so per-level loops build it once."""

    def wrap(build):
        def get():
            if key not in ctx.__dict__:
                ctx.__dict__[key] = build()
            return ctx.__dict__[key]

        return get

    return wrap


# --------------------------------------------------------------------------------------
# Public API


def _check_axes(lat, lon, land) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    if lat.ndim != 1 or lon.ndim != 1 or lat.size == 0 or lon.size == 0:
        raise DataError(
            f"synthetic fields need 1-D, non-empty latitude and longitude; got shapes {lat.shape} and {lon.shape}"
        )
    if np.any(np.abs(lat) > 90.0) or not np.all(np.isfinite(lat)) or not np.all(np.isfinite(lon)):
        raise DataError("synthetic fields need finite latitudes within [-90, 90] and finite longitudes")
    if land is not None:
        land = np.asarray(land, dtype=bool)
        if land.shape != (lat.size, lon.size):
            raise DataError(f"land mask has shape {land.shape}; expected {(lat.size, lon.size)} (latitude, longitude)")
    return lat, lon, land


def _hours(times, var: Variable) -> np.ndarray:
    if times is None or np.size(times) == 0:
        raise DataError(f"synthetic {var.dataset_name}: a {var.kind} variable needs times")
    t = np.atleast_1d(np.asarray(times, dtype="datetime64[s]"))
    if t.ndim != 1 or np.any(np.isnat(t)):
        raise DataError(f"synthetic {var.dataset_name}: times must be a 1-D sequence of valid datetimes")
    return t.astype(np.int64).astype(np.float64) / 3600.0


def _levels(levels, var: Variable) -> np.ndarray:
    if levels is None or np.size(levels) == 0:
        raise DataError(f"synthetic {var.dataset_name}: an atmospheric variable needs pressure levels (hPa)")
    lv = np.atleast_1d(np.asarray(levels, dtype=np.float64))
    if lv.ndim != 1 or not np.all(np.isfinite(lv)) or np.any(lv <= 0) or np.any(lv > 1100):
        raise DataError(f"synthetic {var.dataset_name}: pressure levels must be in (0, 1100] hPa, got {lv.tolist()}")
    return lv


def _generate(var: Variable, ctx: _Ctx) -> np.ndarray:
    if var.kind == "atmos":
        build = _atmos(ctx).get(var.name)
        if build is None:
            raise DataError(f"no synthetic generator for atmospheric variable '{var.name}'")
        out = np.empty((ctx.hours.size, ctx.levels.size) + ctx.shape, _F)  # (T, L, H, W)
        for i, level in enumerate(ctx.levels):
            out[:, i] = build(float(level))
    else:
        build = (_static if var.kind == "static" else _surface)(ctx).get(var.name)
        if build is None:
            raise DataError(f"no synthetic generator for {var.kind} variable '{var.name}'")
        out = np.array(np.broadcast_to(build(), _shape(var, ctx)), dtype=_F)  # fresh copy

    if var.units == "degree":
        np.mod(out, _F(360.0), out=out)
        out[out >= 360.0] = 0.0  # float32 rounding of values just below 360
    lo, hi = var.bounds
    if lo is not None or hi is not None:
        np.clip(out, lo, hi, out=out)
    if var.nan_by_design:
        out[..., ctx.land] = np.nan
    return out


def _shape(var: Variable, ctx: _Ctx) -> tuple[int, ...]:
    if var.kind == "static":
        return ctx.shape
    if var.kind == "surface":
        return (ctx.hours.size,) + ctx.shape
    return (ctx.hours.size, ctx.levels.size) + ctx.shape


def _context(var: Variable, lat, lon, times, levels, seed: int, land) -> _Ctx:
    lat, lon, land = _check_axes(lat, lon, land)
    hours = _hours(times, var) if var.kind != "static" else None
    lv = _levels(levels, var) if var.kind == "atmos" else None
    return _Ctx(lat, lon, hours, lv, seed, land)


def synthetic_field(
    var: Variable,
    lat: np.ndarray,
    lon: np.ndarray,
    times: Sequence[np.datetime64] | None = None,
    levels: Sequence[float] | None = None,
    *,
    seed: int = 0,
    land: np.ndarray | None = None,
) -> np.ndarray:
    """float32 array: surface var -> (T, H, W); static -> (H, W); atmos -> (T, L, H, W).

    lat in degrees north (any order), lon degrees east in [0, 360), times datetime64 (UTC),
    levels in hPa. land: optional boolean (H, W) mask (True = land) used for land/sea
    contrasts and NaN-over-land of wave fields; when None it comes from the synthetic lsm
    for the same seed and grid.
    """
    return _generate(var, _context(var, lat, lon, times, levels, seed, land))


def _coords(var: Variable, lat, lon, times, levels) -> tuple[tuple[str, ...], dict]:
    coords: dict = {
        "latitude": ("latitude", np.asarray(lat), {"units": "degrees_north", "standard_name": "latitude"}),
        "longitude": ("longitude", np.asarray(lon), {"units": "degrees_east", "standard_name": "longitude"}),
    }
    dims: tuple[str, ...] = ("latitude", "longitude")
    if var.kind == "atmos":
        coords["level"] = ("level", np.atleast_1d(np.asarray(levels)), {"units": "hPa", "standard_name": "air_pressure"})
        dims = ("level",) + dims
    if var.kind != "static":
        coords["time"] = ("time", np.atleast_1d(np.asarray(times, dtype="datetime64[ns]")))
        dims = ("time",) + dims
    return dims, coords


def _attrs(var: Variable, seed: int) -> dict:
    attrs = {"units": var.units, "long_name": var.long_name}
    if var.standard_name is not None:
        attrs["standard_name"] = var.standard_name
    attrs.update({SYNTHETIC_ATTR: "true", "synthetic_seed": seed})
    return attrs


def synthetic_dataarray(var, lat, lon, times=None, levels=None, *, seed=0, land=None) -> xr.DataArray:
    """`synthetic_field` as a DataArray named var.dataset_name with dims (time, [level],
    latitude, longitude) or (latitude, longitude), coords, CF attrs and the synthetic marker."""
    values = synthetic_field(var, lat, lon, times, levels, seed=seed, land=land)
    dims, coords = _coords(var, lat, lon, times, levels)
    return xr.DataArray(values, dims=dims, coords=coords, name=var.dataset_name, attrs=_attrs(var, seed))


def synthetic_window(spec: VariantSpec, lat, lon, times, levels=None, *, seed=0) -> xr.Dataset:
    """Every input variable of a variant as one Dataset keyed by dataset name (levels
    default to the variant's), marked synthetic. For scale tests and benchmarks."""
    levels = spec.levels if levels is None else levels
    variables = spec.inputs()
    lat_, lon_, _ = _check_axes(lat, lon, None)
    hours = _hours(times, variables[0])
    lv = _levels(levels, next((v for v in variables if v.kind == "atmos"), variables[0]))
    ctx = _Ctx(lat_, lon_, hours, lv, seed, None)  # shared: pieces are built once
    data_vars = {}
    for var in variables:
        dims, coords = _coords(var, lat, lon, times, levels)
        data_vars[var.dataset_name] = xr.DataArray(_generate(var, ctx), dims=dims, coords=coords, attrs=_attrs(var, seed))
    return xr.Dataset(data_vars, attrs={SYNTHETIC_ATTR: "true", "synthetic_seed": seed, "variant": spec.name})


def regular_grid(resolution: float) -> tuple[np.ndarray, np.ndarray]:
    """Global regular grid at `resolution` degrees: latitudes 90..-90 inclusive
    (decreasing), longitudes 0..360-res (increasing). E.g. 0.25 -> (721,), (1440,)."""
    resolution = float(resolution)
    n_lat = 180.0 / resolution if resolution > 0 else 0.0
    n_lon = 360.0 / resolution if resolution > 0 else 0.0
    if resolution <= 0 or abs(n_lat - round(n_lat)) > 1e-6 or abs(n_lon - round(n_lon)) > 1e-6:
        raise DataError(f"grid resolution must be a positive divisor of 180 degrees, got {resolution}")
    lat = np.linspace(90.0, -90.0, int(round(n_lat)) + 1)
    lon = np.linspace(0.0, 360.0, int(round(n_lon)), endpoint=False)
    return lat, lon
