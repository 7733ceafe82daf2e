"""One sampling context: the grid, times, levels and seed every family samples on.

The family modules extend `_Context` with the physical pieces they own (cached once per
context, each a pure function of its inputs), so variables that share a piece, such as
the 10 m wind under the waves, stay consistent and are built only once per window.
"""

from __future__ import annotations

from functools import cached_property
from typing import Callable, TypeVar

import numpy as np

from model_code.data.synthetic.spectral import _F, _Modes

_T = TypeVar("_T")


def _gauss(x: np.ndarray, centre: float, width: float) -> np.ndarray:
    return np.exp(-(((x - centre) / width) ** 2))


class _Context:
    """Grid, times, levels and seed, with the calendar and the anomaly draws every family uses."""

    def __init__(
        self,
        lat: np.ndarray,
        lon: np.ndarray,
        hours: np.ndarray | None,
        levels: np.ndarray | None,
        seed: int,
        land: np.ndarray | None,
    ):
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


def _per_context(ctx: _Context, key: str) -> Callable[[Callable[[], _T]], Callable[[], _T]]:
    """Cache a zero-argument builder on the context, so per-level loops build it once."""

    def wrap(build):
        def get():
            if key not in ctx.__dict__:
                ctx.__dict__[key] = build()
            return ctx.__dict__[key]

        return get

    return wrap
