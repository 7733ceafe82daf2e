"""Seeded, physics-aware augmentation of input windows for fine-tuning.

Training data for one region and season is scarce, and naive image augmentation breaks
what a weather model relies on: a flipped grid puts the Sahara in the Southern Ocean, noise
makes humidity negative, rotating u without v changes the wind speed. Each augmentation
here changes a window in one physically meaningful way, states the invariants it keeps,
and keeps the data conventions of docs/architecture.md (keys, dims, latitudes decreasing,
longitudes increasing in [0, 360), float32, variable and global attributes).

Every augmentation is a frozen dataclass whose parameters are checked on construction
(`DataError` naming the field) and which is called as `aug(ds, rng)` with a
`numpy.random.Generator`: the same seed gives the same output. Augmentations return new
Datasets and never write into the input; variables they leave unchanged share memory with
the input, as xarray's own operations do, so treat windows as immutable. Each one appends
a line to the global attribute `augmentations` (a JSON list), so a sample says how it was
made.

`ExtremeEventSampler` is not a transform: it turns windows into sampling weights that
oversample windows with extreme values, for `torch.utils.data.WeightedRandomSampler`.
"""

from __future__ import annotations

import json
import math
import numbers
import warnings
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Iterable, Protocol, Sequence

import numpy as np
import xarray as xr

from model_code.errors import DataError
from model_code.variables import Variable, VARIABLES, by_key

if TYPE_CHECKING:
    from model_code.variants import VariantSpec

__all__ = [
    "AUGMENTATIONS_ATTR",
    "Augmentation",
    "BoundedNoise",
    "Compose",
    "ExtremeEventSampler",
    "LongitudeRoll",
    "RandomCrop",
    "TimeStrideJitter",
    "WindRotation",
    "exceeds",
    "extreme_weights",
    "rotate_winds",
    "window_peak",
    "window_starts",
]

AUGMENTATIONS_ATTR = "augmentations"
"""Global attribute: JSON list describing each augmentation applied, in order."""

SHIFT_ATTR = "longitude_shift_deg"
"""Global attribute set by `LongitudeRoll`: how far east (degrees, mod 360) the planet moved."""

WIND_PAIRS = (("u10", "v10"), ("u", "v"), ("u10_wave", "v10_wave"))
"""(eastward, northward) component pairs that `WindRotation` rotates together."""

FROM_DIRECTIONS = tuple(v.dataset_name for v in VARIABLES if v.units == "degree")
"""Directions in degrees clockwise from north that the flow or waves come from (mwd, dwi, ...)."""


class Augmentation(Protocol):
    def __call__(self, ds: xr.Dataset, rng: np.random.Generator) -> xr.Dataset: ...


def _noted(ds: xr.Dataset, note: str, **attrs) -> xr.Dataset:
    """`ds` with `note` appended to its `augmentations` attribute (a new Dataset)."""
    notes = json.loads(ds.attrs.get(AUGMENTATIONS_ATTR, "[]"))
    return ds.assign_attrs({AUGMENTATIONS_ATTR: json.dumps(notes + [note]), **attrs})


def _catalogued(key: str) -> Variable | None:
    try:
        return by_key(key)
    except KeyError:
        return None


def _is_number(value) -> bool:
    """A finite real number (bools excluded)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _require_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise DataError(f"{name} must be an integer >= {minimum}, got {value!r}")


# --------------------------------------------------------------------------------------
# Composition


@dataclass(frozen=True)
class Compose:
    """Several augmentations applied in order with one generator."""

    steps: tuple[Augmentation, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", tuple(self.steps))
        for i, step in enumerate(self.steps):
            if not callable(step):
                raise DataError(f"steps[{i}] must be an augmentation called as aug(ds, rng), got {step!r}")

    def __call__(self, ds: xr.Dataset, rng: np.random.Generator) -> xr.Dataset:
        for step in self.steps:
            ds = step(ds, rng)
        return ds


# --------------------------------------------------------------------------------------
# Space


@dataclass(frozen=True)
class RandomCrop:
    """A random `height` x `width` sub-window, placed uniformly on the grid.

    Invariants: the crop fits the patch rule (width a multiple of `patch_size`, height a
    multiple or one row over), coordinates are a contiguous slice of the input's (so
    latitudes still decrease and longitudes increase), values are those of the input.
    The crop does not wrap around in longitude; a `LongitudeRoll` before it does that.
    """

    height: int
    width: int
    patch_size: int

    def __post_init__(self) -> None:
        _require_int("patch_size", self.patch_size, 1)
        p = self.patch_size
        _require_int("height", self.height, p)
        _require_int("width", self.width, p)
        if self.width % p:
            raise DataError(f"width must be a multiple of the patch size {p}, got {self.width}")
        if self.height % p > 1:
            raise DataError(
                f"height must be a multiple of the patch size {p} or one row over, got {self.height}"
            )

    @classmethod
    def for_variant(cls, spec: VariantSpec, height: int, width: int) -> RandomCrop:
        return cls(height, width, spec.patch_size)

    def __call__(self, ds: xr.Dataset, rng: np.random.Generator) -> xr.Dataset:
        h, w = ds.sizes["latitude"], ds.sizes["longitude"]
        if self.height > h:
            raise DataError(f"height {self.height} is larger than the grid's {h} latitudes")
        if self.width > w:
            raise DataError(f"width {self.width} is larger than the grid's {w} longitudes")
        row = int(rng.integers(0, h - self.height + 1))
        col = int(rng.integers(0, w - self.width + 1))
        out = ds.isel(latitude=slice(row, row + self.height), longitude=slice(col, col + self.width))
        return _noted(out, f"crop {self.height}x{self.width} at row {row}, column {col} of {h}x{w}")


def _global_step(lon: np.ndarray) -> float | None:
    """The spacing of an evenly spaced longitude axis that closes around the globe, else None."""
    if len(lon) < 2:
        return None
    steps = np.diff(lon)
    step = float(steps.mean())
    if not np.allclose(steps, step, rtol=0, atol=1e-6 * 360) or abs(len(lon) * step - 360.0) > 1e-6 * 360:
        return None
    return step


@dataclass(frozen=True)
class LongitudeRoll:
    """Move the whole planet (weather, land, orography) east by a whole number of columns.

    Every field with a longitude axis, statics included, is rolled by the same shift, and
    coordinate labels stay as they were; the shift is drawn uniformly from the columns
    within `max_shift_deg` either way (any column when None). Global grids only: a regional
    grid has no data to roll in. Invariants: coordinates, values as a multiset, and the
    relation between fields (wind and land, waves and bathymetry) are unchanged.

    Local solar time is then inconsistent with the `time` coordinate by shift/15 hours
    (a field that was at noon is now east or west of noon); the shift is stored in the
    global attribute `longitude_shift_deg` so a caller can account for it.
    """

    max_shift_deg: float | None = None

    def __post_init__(self) -> None:
        m = self.max_shift_deg
        if m is not None and not (_is_number(m) and 0 < m <= 180):
            raise DataError(f"max_shift_deg must be None or in (0, 180] degrees, got {m!r}")

    def __call__(self, ds: xr.Dataset, rng: np.random.Generator) -> xr.Dataset:
        lon = ds.longitude.values
        step = _global_step(lon)
        if step is None:
            raise DataError(
                f"longitude roll needs a global grid (evenly spaced longitudes covering 360 degrees); "
                f"longitude runs {lon.min():g} to {lon.max():g} in {len(lon)} columns"
            )
        w = len(lon)
        if self.max_shift_deg is None:
            shift = int(rng.integers(0, w))
        else:
            k = min(int(math.floor(self.max_shift_deg / step + 1e-9)), w // 2)
            shift = int(rng.integers(-k, k + 1))
        out = ds.roll(longitude=shift, roll_coords=False)
        degrees = shift * step
        total = float((ds.attrs.get(SHIFT_ATTR, 0.0) + degrees) % 360.0)
        note = (
            f"longitude roll by {degrees:+g} degrees ({shift:+d} columns, statics included); "
            f"local solar time is {degrees / 15:+g} h off the time coordinate"
        )
        return _noted(out, note, **{SHIFT_ATTR: total})


# --------------------------------------------------------------------------------------
# Time


def window_starts(n_times: int, history: int, stride: int) -> np.ndarray:
    """Every start index i with i, i + stride, ..., i + (history - 1) * stride < n_times."""
    last = n_times - 1 - (history - 1) * stride
    return np.arange(max(last + 1, 0))


@dataclass(frozen=True)
class TimeStrideJitter:
    """Pick `history` times `step` apart, at a random start, from a finer or longer series.

    For a series with native spacing dt (e.g. hourly) and a model step that is a multiple
    of it (e.g. 6 h), the start is drawn uniformly among all starts that fit, so every
    phase of the day is used, not only the synoptic hours. Invariants: the output has
    `history` increasing times exactly `step` apart, all of them input times with the input's
    values; statics are unchanged.
    """

    history: int
    step: timedelta

    def __post_init__(self) -> None:
        _require_int("history", self.history, 1)
        if not isinstance(self.step, timedelta) or self.step <= timedelta(0):
            raise DataError(f"step must be a positive timedelta, got {self.step!r}")

    @classmethod
    def for_variant(cls, spec: VariantSpec, history: int | None = None) -> TimeStrideJitter:
        return cls(spec.max_history if history is None else history, spec.timestep)

    def _stride(self, times: np.ndarray) -> int:
        step = np.timedelta64(int(self.step.total_seconds()), "s")
        if len(times) < 2:
            return 1
        deltas = np.unique(np.diff(times))
        if len(deltas) != 1 or deltas[0] <= np.timedelta64(0, "s"):
            raise DataError("time must be increasing and evenly spaced to pick a strided window")
        native = deltas[0]
        if step % native:
            spacing = native.astype("timedelta64[m]")
            raise DataError(f"step {self.step} is not a multiple of the series' spacing {spacing}")
        return int(step // native)

    def __call__(self, ds: xr.Dataset, rng: np.random.Generator) -> xr.Dataset:
        times = ds.time.values
        stride = self._stride(times)
        starts = window_starts(len(times), self.history, stride)
        if not len(starts):
            raise DataError(
                f"history {self.history} at a {self.step} step needs {(self.history - 1) * stride + 1} "
                f"times of the series; time has {len(times)}"
            )
        start = int(starts[rng.integers(0, len(starts))])
        out = ds.isel(time=slice(start, start + (self.history - 1) * stride + 1, stride))
        note = f"times {start}:{start + (self.history - 1) * stride + 1}:{stride} of {len(times)}"
        return _noted(out, note)


# --------------------------------------------------------------------------------------
# Values


def _spread(values: np.ndarray, keep_axis: int | None) -> np.ndarray:
    """Standard deviation over every axis but `keep_axis`, NaN ignored, 0 where undefined."""
    axes = tuple(i for i in range(values.ndim) if i != keep_axis)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices
        std = np.nanstd(values, axis=axes, keepdims=True, dtype=np.float64)
    return np.nan_to_num(std, nan=0.0).astype(np.float32)


@dataclass(frozen=True)
class BoundedNoise:
    """Gaussian noise, scaled to each field's own variability and clipped to physical bounds.

    Noise with standard deviation `scale` times the field's standard deviation (per pressure
    level for atmospheric variables) is added to dynamic variables: all catalogued ones but
    directions when `variables` is None. Statics are never touched; directions are circular
    and are refused. Invariants: values stay within the catalogue `bounds` (pollutants,
    humidity, wave heights and wind speed stay non-negative), NaN stays NaN and nothing
    else becomes NaN, dtype and attributes are kept.
    """

    scale: float = 0.01
    variables: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not _is_number(self.scale) or self.scale < 0:
            raise DataError(f"scale must be a finite number >= 0, got {self.scale!r}")
        if self.variables is None:
            return
        names = (self.variables,) if isinstance(self.variables, str) else tuple(self.variables)
        object.__setattr__(self, "variables", names)
        for name in names:
            v = _catalogued(name)
            if v is None:
                raise DataError(f"variables: '{name}' is not a catalogued dataset name")
            if v.kind == "static":
                raise DataError(f"variables: '{name}' is static; noise goes on dynamic variables only")
            if name in FROM_DIRECTIONS:
                raise DataError(f"variables: '{name}' is a direction; rotate it with WindRotation instead")

    def _targets(self, ds: xr.Dataset) -> list[str]:
        if self.variables is not None:
            missing = [n for n in self.variables if n not in ds.data_vars]
            if missing:
                raise DataError(f"variables: {', '.join(map(repr, missing))} not in the window")
            return list(self.variables)
        return [
            str(k) for k in ds.data_vars
            if (v := _catalogued(str(k))) is not None and v.kind != "static" and k not in FROM_DIRECTIONS
        ]

    def __call__(self, ds: xr.Dataset, rng: np.random.Generator) -> xr.Dataset:
        targets = self._targets(ds)
        updates = {}
        for key in targets:
            da = ds[key]
            values = da.values.astype(np.float32, copy=False)
            keep = da.dims.index("level") if "level" in da.dims else None
            noise = rng.standard_normal(values.shape, dtype=np.float32)
            noise *= np.float32(self.scale) * _spread(values, keep)
            lo, hi = by_key(key).bounds
            noisy = np.clip(values + noise, -np.inf if lo is None else lo, np.inf if hi is None else hi)
            updates[key] = da.copy(data=noisy.astype(da.dtype, copy=False))
        return _noted(ds.assign(updates), f"bounded noise, scale {self.scale:g}, on {', '.join(targets)}")


# --------------------------------------------------------------------------------------
# Wind direction


def rotate_winds(ds: xr.Dataset, angle_deg: float) -> xr.Dataset:
    """Rotate every wind vector counter-clockwise by `angle_deg`, and directions with them.

    Each (eastward, northward) pair in `WIND_PAIRS` present in `ds` becomes
    u' = u cos(a) - v sin(a), v' = u sin(a) + v cos(a). Directions in the "coming from,
    clockwise from north" convention (mwd, mdww, mdts, mwd1, mwd2, dwi) become
    (d - a) mod 360: a flow coming from d has components -s (sin d, cos d), and rotating
    that vector counter-clockwise by a turns its bearing, which is measured clockwise,
    back by a. So a westerly (from 270) rotated by 90 degrees comes from the south (180).
    Speeds (hypot(u, v), `wind`) are unchanged, and so is ECMWF's relation
    u_wave = -wind sin(dwi), v_wave = -wind cos(dwi). Other fields are untouched.
    """
    a = math.radians(float(angle_deg))
    cos, sin = math.cos(a), math.sin(a)
    updates = {}
    for ukey, vkey in WIND_PAIRS:
        present = (ukey in ds.data_vars, vkey in ds.data_vars)
        if present == (False, False):
            continue
        if present != (True, True):
            have, lack = (ukey, vkey) if present[0] else (vkey, ukey)
            raise DataError(f"'{have}' cannot be rotated without '{lack}': the window lacks '{lack}'")
        u, v = ds[ukey], ds[vkey]
        u64, v64 = u.values.astype(np.float64), v.values.astype(np.float64)
        updates[ukey] = u.copy(data=(u64 * cos - v64 * sin).astype(u.dtype))
        updates[vkey] = v.copy(data=(u64 * sin + v64 * cos).astype(v.dtype))
    for key in FROM_DIRECTIONS:
        if key in ds.data_vars:
            d = ds[key]
            turned = np.mod(d.values.astype(np.float64) - float(angle_deg), 360.0).astype(d.dtype)
            turned[turned >= 360] = 0  # float32 rounding of values just below 360
            updates[key] = d.copy(data=turned)
    return ds.assign(updates)


@dataclass(frozen=True)
class WindRotation:
    """Rotate all winds and wave directions by one angle drawn from [-max, max] degrees.

    See `rotate_winds` for the invariants. The rotation is of the vectors, not the grid, so
    it breaks geostrophic balance with the pressure and geopotential fields and the link
    between waves and coastlines; keep `max_angle_deg` small (tens of degrees).
    """

    max_angle_deg: float = 15.0

    def __post_init__(self) -> None:
        m = self.max_angle_deg
        if not _is_number(m) or not 0 < m <= 180:
            raise DataError(f"max_angle_deg must be in (0, 180] degrees, got {m!r}")

    def __call__(self, ds: xr.Dataset, rng: np.random.Generator) -> xr.Dataset:
        angle = float(rng.uniform(-self.max_angle_deg, self.max_angle_deg))
        return _noted(rotate_winds(ds, angle), f"wind rotation by {angle:+.3f} degrees counter-clockwise")


# --------------------------------------------------------------------------------------
# Extreme-event balanced sampling


def window_peak(ds: xr.Dataset, variable: str, *, below: bool = False) -> float:
    """The largest value of `variable` in the window (the smallest when `below`), NaN ignored."""
    if variable not in ds.data_vars:
        raise DataError(f"variable '{variable}' is not in the window")
    values = ds[variable].values
    if not np.isfinite(values).any():
        return math.nan
    return float(np.nanmin(values) if below else np.nanmax(values))


def exceeds(ds: xr.Dataset, variable: str, threshold: float, *, below: bool = False) -> bool:
    """True when any value of `variable` in the window is above `threshold` (below, when `below`)."""
    peak = window_peak(ds, variable, below=below)
    return bool(peak < threshold if below else peak > threshold)


def extreme_weights(flags: Sequence[bool] | np.ndarray, factor: float) -> np.ndarray:
    """Sampling probabilities (float64, sum 1): windows flagged extreme are `factor` times as
    likely as the others. `torch.as_tensor(w)` feeds `WeightedRandomSampler`."""
    if not _is_number(factor) or factor < 1:
        raise DataError(f"factor must be a finite number >= 1, got {factor!r}")
    flags = np.asarray(flags, dtype=bool)
    if flags.ndim != 1 or not len(flags):
        raise DataError(f"flags must be a non-empty 1-D sequence, got shape {flags.shape}")
    weights = np.where(flags, float(factor), 1.0)
    return weights / weights.sum()


@dataclass(frozen=True)
class ExtremeEventSampler:
    """Oversample windows whose `variable` goes beyond a threshold by `factor`.

    The threshold is absolute (`threshold`, in the variable's units) or relative
    (`quantile` q: the q-quantile of the windows' peaks, so the top 1 - q of windows by
    peak count as extreme). `below` looks for low extremes (cold, low pressure) instead.
    The sampler reads each window once and keeps one number per window; it knows nothing
    of data loaders.
    """

    variable: str
    threshold: float | None = None
    quantile: float | None = None
    factor: float = 4.0
    below: bool = False

    def __post_init__(self) -> None:
        if (self.threshold is None) == (self.quantile is None):
            raise DataError("threshold or quantile: give exactly one of the two")
        if self.threshold is not None and not _is_number(self.threshold):
            raise DataError(f"threshold must be a finite number, got {self.threshold!r}")
        if self.quantile is not None and not (_is_number(self.quantile) and 0 <= self.quantile < 1):
            raise DataError(f"quantile must be in [0, 1), got {self.quantile!r}")
        extreme_weights([True], self.factor)  # validates factor

    def flags(self, windows: Iterable[xr.Dataset]) -> np.ndarray:
        """One bool per window: does it go beyond the threshold?"""
        peaks = np.array([window_peak(ds, self.variable, below=self.below) for ds in windows])
        if not len(peaks):
            raise DataError("windows: no windows given")
        if self.threshold is not None:
            limit = self.threshold
        else:
            q = 1.0 - self.quantile if self.below else self.quantile
            limit = float(np.nanquantile(peaks, q))
        with np.errstate(invalid="ignore"):
            return peaks < limit if self.below else peaks > limit

    def weights(self, windows: Iterable[xr.Dataset]) -> np.ndarray:
        """Sampling probabilities, one per window (see `extreme_weights`)."""
        return extreme_weights(self.flags(windows), self.factor)
