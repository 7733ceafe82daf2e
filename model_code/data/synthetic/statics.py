"""Land and surface statics: continents, land-sea mask, orography, soil, vegetation and lakes.

Every other family reads the coastline from here (land/sea contrasts, emissions over land,
wave fields NaN over land), so it is fixed once per seed on a reference grid and never
depends on the grid a field is sampled on.
"""

from __future__ import annotations

from functools import cached_property, lru_cache
from typing import Callable

import numpy as np

from model_code.data.grid import cell_areas
from model_code.data.synthetic.context import _Context
from model_code.data.synthetic.spectral import _F, _Modes
from model_code.variables import G0

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
    w = cell_areas(lat, lon).ravel()
    order = np.argsort(c.ravel())
    cum = np.cumsum(w[order]) / w.sum()
    return float(c.ravel()[order][np.searchsorted(cum, 1.0 - _LAND_SHARE)])


class _StaticPieces(_Context):
    """The coastline and relief that the other families' pieces build on."""

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


def _static(ctx: _StaticPieces) -> dict[str, Callable[[], np.ndarray]]:
    """Static generators: land-sea mask, surface geopotential, soil type, and Aurora 1.5's
    sub-grid orography, vegetation and lakes (soil and vegetation types also one-hot)."""

    def slt():
        codes = np.floor((ctx.smooth("slt", k=8, max_m=6, max_n=6) + 1) * _F(3.5)) + 1  # 1..7
        return np.where(ctx.land, np.clip(codes, 1, 7), _F(0.0))

    def one_hot(name: str, code: int, codes: np.ndarray) -> Callable[[], np.ndarray]:
        return lambda: (codes() == code).astype(_F)

    def vegetation(name: str, kinds: tuple[int, ...]) -> Callable[[], np.ndarray]:
        """Codes of `kinds` drawn over land (0, none, at sea), as ECMWF's tvh/tvl fields hold them."""
        def codes():
            pick = np.floor((ctx.smooth(name, k=8, max_m=6, max_n=6) + 1) * _F(len(kinds) - 1) / 2).astype(int)
            return np.where(ctx.land, np.asarray(kinds[1:])[np.clip(pick, 0, len(kinds) - 2)], 0)
        return codes

    relief = lambda: ctx.orography / _F(4000.0)  # noqa: E731
    table = {
        "lsm": lambda: ctx.lsm,
        "z": lambda: _F(G0) * ctx.orography,
        "slt": slt,
        "anor": lambda: _F(1.5) * ctx.smooth("anor", k=8, max_m=8, max_n=8),
        "isor": lambda: np.where(ctx.land, _F(0.5) + _F(0.4) * ctx.smooth("isor", k=6, max_m=6, max_n=6), _F(0.0)),
        "slor": lambda: _F(0.05) * relief(),
        "sdor": lambda: _F(400.0) * relief(),
        "sdfor": lambda: _F(150.0) * relief(),
        "cvh": lambda: np.where(ctx.land, np.clip(ctx.smooth("cvh", k=6, max_m=6, max_n=6), 0.0, 1.0), _F(0.0)),
        "cvl": lambda: np.where(ctx.land, np.clip(-ctx.smooth("cvh", k=6, max_m=6, max_n=6), 0.0, 1.0), _F(0.0)),
        "cl": lambda: np.where(ctx.land, np.clip(ctx.smooth("cl", k=6, max_m=6, max_n=6) - _F(0.8), 0.0, 1.0) * 5,
                               _F(0.0)),
        "dl": lambda: np.where(ctx.land, _F(25.0) * (ctx.smooth("dl", k=6, max_m=6, max_n=6) + 1), _F(0.0)),
    }
    table.update({f"slt_{k}": one_hot("slt", k, slt) for k in range(8)})
    high = vegetation("tvh", (0, 3, 4, 5, 6, 18, 19))
    low = vegetation("tvl", (0, 1, 2, 7, 9, 10, 11, 13, 16, 17))
    table.update(tvh=lambda: high().astype(_F), tvl=lambda: low().astype(_F))
    table.update({f"tvh_{k}": one_hot("tvh", k, high) for k in (0, 3, 4, 5, 6, 18, 19)})
    table.update({f"tvl_{k}": one_hot("tvl", k, low) for k in (0, 1, 2, 7, 9, 10, 11, 13, 16, 17)})
    return table
