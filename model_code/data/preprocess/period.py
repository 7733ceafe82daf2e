"""The training period: everything learnt from data is learnt from these times only."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd
import xarray as xr

from model_code.errors import DataError


_ISO = "%Y-%m-%dT%H:%M:%S"


def _as_dataset(obj: xr.Dataset | xr.DataArray) -> xr.Dataset:
    if isinstance(obj, xr.DataArray):
        return obj.to_dataset(name=obj.name if obj.name is not None else "field")
    return obj


def _period(train_period: Sequence[Any]) -> tuple[np.datetime64, np.datetime64]:
    """(start, end) as datetime64[ns]; both ends inclusive."""
    try:
        start, end = train_period
        s = np.datetime64(pd.Timestamp(start).to_datetime64(), "ns")
        e = np.datetime64(pd.Timestamp(end).to_datetime64(), "ns")
    except (TypeError, ValueError) as exc:
        raise DataError(
            f"training period {train_period!r} is not a (start, end) pair of dates; "
            "expected e.g. ('2019-01-01', '2021-12-31T18:00')"
        ) from exc
    if np.isnat(s) or np.isnat(e) or s > e:
        raise DataError(f"training period {_iso(s)} .. {_iso(e)} is empty; expected start <= end")
    return s, e


def _iso(t: np.datetime64) -> str:
    return "NaT" if np.isnat(t) else pd.Timestamp(t).strftime(_ISO)


def _training(ds: xr.Dataset, train_period: Sequence[Any]) -> tuple[xr.Dataset, tuple[str, str]]:
    """The times of `ds` inside the training period (statics untouched)."""
    start, end = _period(train_period)
    if "time" not in ds.dims:
        raise DataError(
            f"data has no 'time' dimension (dims: {', '.join(map(str, ds.dims))}); "
            "a training period selects valid times"
        )
    times = ds.time.values.astype("datetime64[ns]")
    inside = (times >= start) & (times <= end)
    if not inside.any():
        raise DataError(
            f"training period {_iso(start)} .. {_iso(end)} holds none of the {len(times)} times of "
            f"the data ({_iso(times.min())} .. {_iso(times.max())}); expected a period that overlaps them"
        )
    return ds.isel(time=np.flatnonzero(inside)), (_iso(start), _iso(end))
