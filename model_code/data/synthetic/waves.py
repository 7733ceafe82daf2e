"""Ocean waves: wind sea, swell partitions, their heights, periods and directions, and the wave statics.

No small public gridded multi-time wave sample exists, so the wave variant fills from here.
Wind sea follows the atmosphere's 10 m wind and swell the storm belts, which keeps the
totals consistent with their parts (shww <= swh, pp1d >= mwp); the fields are NaN over land.
"""

from __future__ import annotations

from functools import cached_property
from typing import Callable

import numpy as np

from model_code.data.synthetic.atmosphere import _AtmospherePieces
from model_code.data.synthetic.context import _gauss
from model_code.data.synthetic.spectral import _F

_WAVE_DOMAIN = 80.0  # degrees: |lat| covered by the wave model


class _WavePieces(_AtmospherePieces):
    """Wind-sea and swell components that the integrated wave parameters combine."""

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


def _surface(ctx: _WavePieces) -> dict[str, Callable[[], np.ndarray]]:
    """Surface generators: integrated, wind-sea and swell-partition parameters, and the wave model's wind."""

    def swh1():
        return ctx.shts * np.cos(ctx.swell_split)

    def swh2():
        return ctx.shts * np.sin(ctx.swell_split)

    def mwd():
        e_ww, e_ts = ctx.shww**2, ctx.shts**2
        a, b = np.deg2rad(ctx.mdww), np.deg2rad(ctx.mdts)
        return np.degrees(np.arctan2(e_ww * np.sin(a) + e_ts * np.sin(b), e_ww * np.cos(a) + e_ts * np.cos(b)))

    return {
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


def _static(ctx: _WavePieces) -> dict[str, Callable[[], np.ndarray]]:
    """Static generators: model bathymetry and the wave model's latitude mask."""

    def wmb():
        deep = np.sqrt(np.clip(-ctx.potential / _F(0.35), 0.0, 1.0))
        texture = _F(0.85) + _F(0.15) * ctx.smooth("wmb", k=10, max_m=8, max_n=8)
        return np.where(ctx.land, _F(0.0), (_F(40.0) + _F(4960.0) * deep) * texture)

    def lat_mask():
        inside = (np.abs(ctx.lat) <= _WAVE_DOMAIN).astype(_F)[:, None]
        return np.broadcast_to(inside, ctx.shape)

    return {
        "wmb": wmb,
        "lat_mask": lat_mask,
    }
