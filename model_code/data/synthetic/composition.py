"""Atmospheric composition: emission statics, aerosols, column totals and pressure-level gases.

The air-pollution variant has no small public gridded sample, so these fields are what
`--fill-missing synthetic` gives it. Every species grows from the same population and
per-species emission maps, so related fields stay ordered (pm1 <= pm2p5 <= pm10) and
co-located with their sources; tracers mix into the atmosphere's boundary layer.
"""

from __future__ import annotations

from functools import cached_property
from typing import Callable

import numpy as np

from model_code.data.synthetic.atmosphere import boundary_layer, stratosphere
from model_code.data.synthetic.context import _per_context
from model_code.data.synthetic.spectral import _F
from model_code.data.synthetic.statics import _StaticPieces

_DOBSON = 2.1415e-5  # kg m-2 of ozone per Dobson unit
_LOG_EPS = 1e-3  # as aurora.normalisation.log_transform


class _CompositionPieces(_StaticPieces):
    """Where emissions are: population and one source map per species."""

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


def _static(ctx: _CompositionPieces) -> dict[str, Callable[[], np.ndarray]]:
    """Static generators: the emission maps, raw and log-transformed."""
    table = {}
    for species in ("ammonia", "co", "nox", "so2"):
        table[f"static_{species}"] = lambda s=species: ctx.emission(s)
        # The same transform as aurora.normalisation.log_transform: log(x + eps) - log(eps).
        table[f"static_{species}_log"] = lambda s=species: np.log1p(ctx.emission(s) / _F(_LOG_EPS))
    return table


def _surface(ctx: _CompositionPieces) -> dict[str, Callable[[], np.ndarray]]:
    """Surface generators: particulate matter and total columns."""

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

    return {
        "pm1": pm1, "pm2p5": pm2p5, "pm10": pm10,
        "tcco": tcco, "tc_no": tc_no, "tcno2": tcno2, "gtco3": gtco3, "tcso2": tcso2,
    }


def _atmos(ctx: _CompositionPieces) -> dict[str, Callable[[float], np.ndarray]]:
    """Each entry maps a level (hPa) to a (T, H, W) mixing ratio."""

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
        "co": tracer("co", lambda lv: 6e-8 * (lv / 1000.0) ** 0.3, 2e-7, 0.3),
        "no": tracer("no", lambda lv: 5e-11, 1.2e-9, 0.5, strat=5e-10),
        "no2": tracer("no2", lambda lv: 1e-10, 6e-9, 0.5, strat=8e-10),
        "go3": go3,
        "so2": tracer("so2", lambda lv: 5e-11, 1.5e-9, 0.5),
    }
