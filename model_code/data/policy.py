"""Thresholds of the validator's value checks, in a module of their own so that the command
line shows their defaults without importing numpy and xarray."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_CHUNK_BYTES = 256 * 2**20
"""Largest block of one variable held in memory at once."""


@dataclass(frozen=True)
class Policy:
    """Thresholds of the value checks."""

    outlier_sigmas: float = 50.0
    """Values further than this many robust standard deviations (1.4826 MAD) from the median
    are reported as outliers: a warning meant for spikes and fill values (a 9999 in a
    temperature field is ~500 sigmas out), not for meteorological extremes, which on real
    GFS data reach ~30 sigmas (humidity, stratospheric winds) and must not be flagged."""
    histogram_bins: int = 65536
    """Robust statistics resolve a 65536th of a variable's physical range (7.6e-7 kg/kg for q)."""
    subsample: int = 4
    """Robust statistics come from every `subsample`-th row and column (exact min/max do not)."""
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
