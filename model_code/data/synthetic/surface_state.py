"""Aurora 1.5's surface state beyond the weather: moisture, cloud, land surface, snow, sea ice,
the last hour's fluxes and precipitation, and the insolation.

Built on the weather family (the same sea-level temperature, pressure and 10 m wind), so a
dewpoint never exceeds its temperature, cloud follows the moist belts and the radiation follows
the sun and the cloud.
"""

from __future__ import annotations

from functools import cached_property
from typing import Callable

import numpy as np

from model_code.data.solar import insolation_field
from model_code.data.synthetic.atmosphere import _AtmospherePieces
from model_code.data.synthetic.context import _gauss
from model_code.data.synthetic.spectral import _F

_LAPSE = 0.0065  # K m-1


class _SurfaceStatePieces(_AtmospherePieces):
    """Near-surface temperature, humidity and cloud shared by the variables below."""

    @cached_property
    def surface_temperature(self) -> np.ndarray:
        """(T, H, W) K at the ground: sea-level temperature lapsed to the orography, diurnal over land."""
        amp = (_F(0.5) + _F(7.0) * self.lsm) * (_F(0.4) + _F(0.6) * self.coslat)
        return self.sea_level_temperature - _F(_LAPSE) * self.orography + amp * self.solar_cycle(13.0)

    @cached_property
    def relative_humidity(self) -> np.ndarray:
        """(T, H, W) in (0.2, 0.98): moist tropics and storm tracks, drier subtropics and land."""
        belts = _F(0.75) + _F(0.1) * _gauss(self.abslat, 0.0, 12.0) - _F(0.15) * _gauss(self.abslat, 25.0, 8.0)
        rh = belts - _F(0.12) * self.lsm + _F(0.15) * self.weather("rh")
        return np.clip(rh, 0.2, 0.98).astype(_F)

    @cached_property
    def cloud_layers(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(T, H, W) each, fractions of low, medium and high cloud."""
        moist = (self.relative_humidity - _F(0.5)) / _F(0.5)
        low = np.clip(_F(0.35) + _F(0.6) * moist + _F(0.25) * self.weather("lcc"), 0.0, 1.0)
        medium = np.clip(_F(0.25) + _F(0.5) * moist + _F(0.35) * self.weather("mcc"), 0.0, 1.0)
        high = np.clip(_F(0.3) + _F(0.4) * _gauss(self.abslat, 5.0, 15.0) + _F(0.4) * self.weather("hcc"), 0.0, 1.0)
        return low.astype(_F), medium.astype(_F), high.astype(_F)

    @cached_property
    def precipitation(self) -> np.ndarray:
        """(T, H, W) kg m-2 in the last hour: where it is moist and cloudy, zero elsewhere."""
        low, medium, _ = self.cloud_layers
        rate = _F(3.0) * np.maximum(low * medium - _F(0.35), 0.0) * (_F(1.0) + self.weather("tp"))
        return np.maximum(rate, 0.0).astype(_F)

    @cached_property
    def insolation(self) -> np.ndarray:
        """(T, H, W) relative to the solar constant, as Aurora 1.5 computes it (negative at night)."""
        times = np.round(self.hours * 3600.0).astype("int64").astype("datetime64[s]")
        return insolation_field(self.lat, self.lon, times)

    @cached_property
    def frozen(self) -> np.ndarray:
        """(T, H, W) 0..1: how far below freezing the ground is (snow, sea ice)."""
        return np.clip((_F(273.15) - self.surface_temperature) / _F(8.0), 0.0, 1.0).astype(_F)


def _surface(ctx: _SurfaceStatePieces) -> dict[str, Callable[[], np.ndarray]]:
    """Surface generators of Aurora 1.5's extra inputs and outputs."""

    def dewpoint():
        t = ctx.surface_temperature - _F(273.15)
        a, b = _F(17.62), _F(243.12)  # Magnus over water, degrees C
        gamma = np.log(ctx.relative_humidity) + a * t / (b + t)
        return b * gamma / (a - gamma) + _F(273.15)

    def total_cloud():
        low, medium, high = ctx.cloud_layers
        return _F(1.0) - (_F(1.0) - low) * (_F(1.0) - medium) * (_F(1.0) - high)

    def wind100(component: int):
        return ctx.wind10[component] * _F(1.35)  # log-profile ratio 100 m / 10 m over rough ground

    def sunlight():
        return np.clip(ctx.insolation, 0.0, None)

    return {
        "2d": dewpoint,
        "tcwv": lambda: _F(55.0) * ctx.relative_humidity * np.exp((ctx.sea_level_temperature - _F(300.0)) / _F(14.0)),
        "tcc": total_cloud,
        "lcc": lambda: ctx.cloud_layers[0],
        "mcc": lambda: ctx.cloud_layers[1],
        "hcc": lambda: ctx.cloud_layers[2],
        "100u": lambda: wind100(0),
        "100v": lambda: wind100(1),
        "sp": lambda: ctx.msl * np.exp(-ctx.orography / _F(8000.0)),
        "skt": lambda: ctx.surface_temperature,
        "stl1": lambda: ctx.sea_level_temperature - _F(_LAPSE) * ctx.orography
        + (_F(0.5) + _F(3.0) * ctx.lsm) * ctx.solar_cycle(15.0),
        "swvl1": lambda: np.where(ctx.land, _F(0.12) + _F(0.25) * ctx.relative_humidity, _F(0.0)),
        "ci": lambda: np.where(ctx.land, _F(0.0), ctx.frozen),
        "scaled_sd": lambda: np.where(ctx.land, _F(150.0) * ctx.frozen, _F(0.0)),
        "insolation": lambda: ctx.insolation,
        "i10fg": lambda: np.hypot(*ctx.wind10) * _F(1.6) + _F(1.0),
        "blh": lambda: _F(300.0) + _F(1200.0) * ctx.lsm * np.clip(ctx.solar_cycle(14.0), 0.0, None)
        + _F(200.0) * (ctx.weather("blh") + _F(1.0)),
        "uvb_1h": lambda: _F(2.5e5) * sunlight() * (_F(1.0) - _F(0.5) * total_cloud()),
        "ssrd_1h": lambda: _F(3.6e6) * sunlight() * (_F(1.0) - _F(0.6) * total_cloud()),
        "ttr_1h": lambda: -_F(3600.0) * (_F(5.67e-8) * ctx.surface_temperature ** 4 * (_F(1.0) - _F(0.5) * total_cloud())),
        "scaled_tp_1h": lambda: ctx.precipitation,
        "scaled_sf_1h": lambda: ctx.precipitation * ctx.frozen,
    }
