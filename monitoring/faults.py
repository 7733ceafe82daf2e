"""Feed faults made from real fields: what the drift check must catch, each under its own reason.

A drill (does a broken feed raise the alarm, end to end?) and the measurement of the check
(`benchmarks/drift_confusion.py`, the tests) both break a real window the way feeds break.
Each fault maps values (t, H, W), rows north to south, to the broken values, and is keyed by
the reason the check should give (`monitoring.reasons`).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy.interpolate import RegularGridInterpolator

Fault = Callable[[np.ndarray], np.ndarray]


def frozen(x: np.ndarray) -> np.ndarray:
    """The feed repeats its first field: every time step a copy of the first."""
    return np.repeat(x[:1], len(x), axis=0)


def flipped(x: np.ndarray) -> np.ndarray:
    """Rows in the wrong order: the field upside down, north where south should be."""
    return x[:, ::-1, :].copy()


def missing(x: np.ndarray, share: float = 0.2, seed: int = 0) -> np.ndarray:
    """A fixed `share` of the cells missing (NaN) at every time step."""
    lost = np.random.default_rng(seed).random(x.shape[1:]) < share
    return np.where(lost, np.nan, x).astype(x.dtype)


def celsius_as_kelvin(x: np.ndarray) -> np.ndarray:
    """Temperatures sent in °C under a label (or a default) of K."""
    return x - 273.15


def warm_bias(x: np.ndarray, kelvin: float = 5.0) -> np.ndarray:
    """A source `kelvin` too warm everywhere."""
    return x + kelvin


def coarser(x: np.ndarray, factor: int = 4) -> np.ndarray:
    """A source `factor` times coarser (block means), interpolated back linearly to the grid."""
    h, w = x.shape[1] // factor * factor, x.shape[2] // factor * factor
    centres = (np.arange(h // factor) * factor + (factor - 1) / 2, np.arange(w // factor) * factor + (factor - 1) / 2)
    rows, cols = np.meshgrid(np.arange(x.shape[1]), np.arange(x.shape[2]), indexing="ij")
    points = np.stack([rows, cols], axis=-1)
    blocks = x[:, :h, :w].reshape(len(x), h // factor, factor, w // factor, factor).mean(axis=(2, 4))
    out = [RegularGridInterpolator(centres, b, bounds_error=False, fill_value=None)(points) for b in blocks]
    return np.asarray(out, dtype=x.dtype)


FAULTS: dict[str, tuple[str, Fault]] = {
    "frozen": ("a frozen field", frozen),
    "profile": ("a north-south flip", flipped),
    "missing": ("20% of cells missing", missing),
    "units": ("°C sent as K", celsius_as_kelvin),
    "bias": ("+5 K everywhere", warm_bias),
    "smoother": ("a source 4x coarser (1° for 0.25°)", coarser),
}
"""Reason the check should give -> (what the fault is, the fault)."""
