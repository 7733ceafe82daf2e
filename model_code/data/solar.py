"""Top-of-atmosphere insolation on a grid: the one input Aurora 1.5 computes rather than reads.

`aurora.insolation` (orbital mechanics, 1995 orbital elements) is what the model itself uses
to set the insolation of its predictions, so inputs computed here match its outputs exactly.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np


def insolation_field(lat: np.ndarray, lon: np.ndarray, times) -> np.ndarray:
    """(T, H, W) float32 insolation relative to the solar constant at each valid time (UTC)."""
    from aurora.insolation import insolation

    lat32 = np.asarray(lat, dtype=np.float32)
    lon32 = np.asarray(lon, dtype=np.float32) % 360
    stamps = np.atleast_1d(np.asarray(times, dtype="datetime64[us]")).astype(datetime)
    return np.stack([insolation([t], lat32, lon32, enforce_2d=True)[0] for t in stamps]).astype(np.float32)
