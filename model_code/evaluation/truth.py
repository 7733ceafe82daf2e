"""Read verifying data (analyses, reanalyses, observations on a grid) as a truth dataset.

The files go through the same readers as model inputs, so names, units and coordinates
come out as forecasts have them: dataset names (`t2m`, `u10`, `z`), catalogue units,
latitudes decreasing, longitudes in [0, 360), pressure levels in hPa, a `time` axis of
valid times. A truth that only a different reader would understand never meets a forecast.
"""

from __future__ import annotations

import contextlib
from typing import Sequence

import numpy as np
import xarray as xr

from model_code.data.ingest import read_fields
from model_code.errors import DataError
from model_code.storage import local_copy

__all__ = ["open_truth"]


def open_truth(uris: Sequence[str], *, time_range: tuple | None = None) -> xr.Dataset:
    """The time-dependent variables of `uris` (paths or s3:// URIs), merged and loaded,
    plus `lsm` when a file has it (land/sea regions use it).

    `time_range` (first, last), inclusive, either end None for open, loads only those times.
    """
    if not uris:
        raise DataError("no truth files given")
    with contextlib.ExitStack() as stack:
        paths = [(str(u), stack.enter_context(local_copy(u))) for u in uris]
        fields, _ = read_fields(paths)
        data = {}
        for key, field in fields.items():
            if "time" not in field.data.dims and key != "lsm":
                continue
            if time_range is not None and "time" in field.data.dims:
                times = field.data["time"].values
                keep = np.ones(len(times), dtype=bool)
                if time_range[0] is not None:
                    keep &= times >= np.datetime64(time_range[0], "ns")
                if time_range[1] is not None:
                    keep &= times <= np.datetime64(time_range[1], "ns")
                da = field.chunk(time=np.nonzero(keep)[0])
            else:
                da = field.values()
            da.attrs = {"units": field.var.units, "long_name": field.var.long_name, "source": field.source}
            data[key] = da
    if not any("time" in da.dims for da in data.values()):
        raise DataError("no time-dependent variable in the truth files; a truth needs a 'time' axis of valid "
                        "times", problems=[str(u) for u in uris])
    try:
        return xr.Dataset(data)
    except ValueError as err:
        raise DataError(f"the truth files do not share one grid and time axis ({err})",
                        problems=[str(u) for u in uris]) from None
