"""Training fields whose values are read only when a sample needs them.

Training files are far larger than memory, so they are opened lazily (`open_fields`:
coordinates and times, no values) and must stay on a local disk for the whole run.
Consecutive samples share most of their times and every read has a fixed cost, so a
dataset's time-dependent fields read a missing time together with the times after it and
keep the slices read (`_CachedField` through a `_SliceCache`).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import xarray as xr

from model_code.data.ingest import Field, Provenance, read_fields
from model_code.errors import DataError
from model_code.storage import is_s3

__all__ = ["READ_AHEAD_BYTES", "open_fields"]


def open_fields(
    paths: Sequence[str | os.PathLike], *, regrid_to: float | None = None
) -> tuple[dict[str, Field], Provenance]:
    """Open local training files lazily: coordinates and times known, no values read yet."""
    if not paths:
        raise DataError("no input files given")
    remote = [str(p) for p in paths if is_s3(p)]
    if remote:
        raise DataError("training reads its files lazily for the whole run; copy them to a local "
                        "disk first", problems=remote)
    names = tuple(str(p) for p in paths)
    for name in names:
        if not Path(name).exists():
            raise DataError("file not found", source=name)
    return read_fields([(n, Path(n)) for n in names], resolution=regrid_to)


class _SliceCache:
    """Time slices of dynamic fields already read, least recently used dropped first.

    Consecutive samples share most of their times (a history of 2 and a target 1 step ahead
    touch 3 times, 2 of them shared with the next sample), so each slice is read from the
    file about once an epoch instead of once per sample that uses it. Bounded in bytes;
    each worker process has its own.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._slices: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()  # (variable, time in ns)

    def get(self, key: tuple[str, int]) -> np.ndarray | None:
        array = self._slices.get(key)
        if array is not None:
            self._slices.move_to_end(key)
        return array

    def put(self, key: tuple[str, int], array: np.ndarray) -> None:
        old = self._slices.pop(key, None)
        self.bytes += array.nbytes - (0 if old is None else old.nbytes)
        self._slices[key] = array
        while self.bytes > self.max_bytes and len(self._slices) > 1:
            _, old = self._slices.popitem(last=False)
            self.bytes -= old.nbytes



READ_AHEAD_BYTES = 4 * 2**20


@dataclass
class _CachedField(Field):
    """A dynamic field read through a `_SliceCache`: `Field.values`'s values, without coordinates.

    A time not cached yet is read together with the times after it, up to `READ_AHEAD_BYTES`
    in one read: each read has a fixed cost (selection, a call into the backend, a chunk per
    time), which dominates on coarse grids, and the next samples need those times.
    """

    cache: _SliceCache | None = None
    times: np.ndarray | None = None  # the field's time axis in ns, read once
    ahead: int = 1

    @classmethod
    def of(cls, f: Field, cache: _SliceCache) -> _CachedField:
        per_time = f.data.dtype.itemsize * int(np.prod([n for d, n in f.data.sizes.items() if d != "time"]))
        return cls(f.var, f.data, f.source, f.convert, f.note, cache,
                   f.data.indexes["time"].asi8.copy(), max(1, READ_AHEAD_BYTES // per_time))

    def values(self, **selection) -> xr.DataArray:
        times = np.atleast_1d(np.asarray(selection.pop("time"), dtype="datetime64[ns]")).astype(np.int64).tolist()
        found = {t: self.cache.get((self.key, t)) for t in times}
        missing = [t for t, a in found.items() if a is None]
        if missing:
            positions = self._positions("time", np.array(missing, dtype="datetime64[ns]"))
            start = int(positions.min())
            stop = max(int(positions.max()) + 1, min(start + self.ahead, len(self.times)))
            if stop - start > max(self.ahead, len(missing)):  # far apart: read only those
                block, read = Field.values(self, time=np.array(missing, dtype="datetime64[ns]")).values, missing
            else:
                block, read = self.chunk(time=slice(start, stop)).values, self.times[start:stop].tolist()
            for t, array in zip(read, block):
                self.cache.put((self.key, t), array)
                if t in found:
                    found[t] = array
        data = np.stack([found[t] for t in times])
        if "level" in selection:
            data = data[:, np.atleast_1d(self._positions("level", selection.pop("level")))]
        if selection:
            raise ValueError(f"cached fields select by time and level only, not {sorted(selection)}")
        # No coordinates: building their indexes costs milliseconds, and the loader's callers
        # (assemble_window, targets) lay the values on their own coordinates.
        return xr.DataArray(data, dims=self.data.dims)
