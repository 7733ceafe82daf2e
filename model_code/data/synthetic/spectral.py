"""Smooth random fields on the sphere, the one source of randomness for every family.

Each anomaly is a seeded sum of low-wavenumber sinusoids keyed by seed and component name,
so values never depend on the grid they are sampled on or on the order variables are
generated in; every family module draws its anomalies from here.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

_F = np.float32


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
