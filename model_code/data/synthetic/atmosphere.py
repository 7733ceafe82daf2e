"""Weather: near-surface temperature, pressure and wind, and the pressure-level t, z, u, v, q.

One temperature profile drives both temperature and geopotential (barometric formula with
an isothermal stratosphere), so the two stay hydrostatically consistent; the 10 m wind built
here also drives the wave family, and the vertical shapes here mix the composition tracers.
"""

from __future__ import annotations

from functools import cached_property
from typing import Callable

import numpy as np

from model_code.data.synthetic.context import _gauss, _per_context
from model_code.data.synthetic.spectral import _F
from model_code.data.synthetic.statics import _StaticPieces
from model_code.variables import G0

_R_DRY = 287.05  # J kg-1 K-1
_LAPSE = 0.0065  # K m-1, standard-atmosphere tropospheric lapse rate
_KAPPA = _R_DRY * _LAPSE / G0  # exponent of the barometric formula, ~0.190
_P_REF = 101325.0  # Pa


class _AtmospherePieces(_StaticPieces):
    """Surface weather and the upper-air reference temperatures shared by several variables."""

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

    # ---- pressure levels ------------------------------------------------------------

    @cached_property
    def strat_temperature(self) -> np.ndarray:
        """(H, 1) K: lower-stratosphere temperature, cold tropical tropopause."""
        return _F(208.0) + _F(9.0) * self.sin2

    def pressure(self, level: float) -> np.float32:
        """Pa, from a level in hPa."""
        return _F(level * 100.0)


# ---- vertical shapes, functions of the level in hPa -------------------------------------


def upper(level: float) -> np.float32:
    """0 at 1000 hPa rising to 1 at 250 hPa and above."""
    return _F(np.clip(np.log(1000.0 / level) / np.log(4.0), 0.0, 1.0))


def jet_shape(level: float) -> np.float32:
    """Vertical shape of the jet: peaks at 250 hPa."""
    return _F(np.exp(-((np.log(level / 250.0) / 0.8) ** 2)))


def boundary_layer(level: float) -> np.float32:
    return _F(min(1.0, np.exp(-(1000.0 - level) / 150.0)))


def stratosphere(level: float) -> np.float32:
    return _F(np.clip(np.log(200.0 / level) / np.log(4.0), 0.0, 1.0))


def low_levels(level: float) -> np.float32:
    return _F(np.clip((level - 200.0) / 800.0, 0.0, 1.0))


# ---- generators -------------------------------------------------------------------------


def _surface(ctx: _AtmospherePieces) -> dict[str, Callable[[], np.ndarray]]:
    """Surface generators: 2 m temperature, 10 m wind and mean sea-level pressure."""

    def t2m():
        amp = (_F(0.5) + _F(5.5) * ctx.lsm) * (_F(0.4) + _F(0.6) * ctx.coslat)  # (H, W) K
        out = ctx.sea_level_temperature - _F(_LAPSE) * ctx.orography
        out += amp * ctx.solar_cycle(14.0)  # peak at 14 local solar time
        return out

    return {
        "2t": t2m,
        "10u": lambda: ctx.wind10[0],
        "10v": lambda: ctx.wind10[1],
        "msl": lambda: ctx.msl,
    }


def _atmos(ctx: _AtmospherePieces) -> dict[str, Callable[[float], np.ndarray]]:
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

    return {
        "t": temperature,
        "z": geopotential,
        "u": u,
        "v": v,
        "q": q,
    }
