"""Reference forecasts every model is shown beside: persistence, climatology, other models.

- `persistence`: the truth at the initialisation time, repeated over every lead time.
- `climatology`: the mean of a training period by day of year and hour of day when the
  period covers a whole year, else (documented fallback) by hour of day only; the
  dataset's ``climatology`` attribute says which. `climatology_forecast` turns it into a
  forecast for given init and lead times; `evaluate` uses it for ACC anomalies too.
  `reference_climatology` chooses the period: one given, or the data before the first
  verified initialisation, never a time inside the verified period (a climatology of the
  verified days is the answer itself, and its RMSE near 0 makes every model look useless).
- `user_baseline`: another model's output (NetCDF/Zarr: GraphCast, Pangu, IFS, CAMS,
  WAVEWATCH III ...) at the model's init and lead times, on the same grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import xarray as xr

from model_code.errors import DataError
from model_code.evaluation.forecasts import INIT, LEAD, TIME, check_leads, open_forecasts

DAYOFYEAR_HOUR = "dayofyear-hour"
HOUR = "hour"
MIN_CLIMATOLOGY_DAYS = 7
"""Fewest values of every hour of day a climatology needs (a week of data): fewer, and the
mean is one weather situation, not a climate."""


def _times(values) -> np.ndarray:
    return np.asarray(values, dtype="datetime64[ns]")


def _leads(values) -> np.ndarray:
    out = np.asarray(values)
    if not np.issubdtype(out.dtype, np.timedelta64):
        out = np.asarray(values, dtype="float64") * np.timedelta64(3600, "s")
    return out.astype("timedelta64[ns]")


def persistence(truth: xr.Dataset, inits, lead_times) -> xr.Dataset:
    """``f(t0 + τ) = o(t0)`` for every lead ``τ``: dims (init_time, lead_time, ...).

    `lead_times` are timedeltas or hours. Raises when the truth lacks an init time.
    """
    inits, leads = _times(inits), _leads(lead_times)
    absent = inits[~np.isin(inits, truth[TIME].values)]
    if len(absent):
        raise DataError(f"persistence needs the truth at its init times; it lacks {[str(t)[:16] for t in absent[:10]]}")
    dynamic = [v for v in truth.data_vars if TIME in truth[v].dims]
    at_init = truth[dynamic].sel({TIME: inits}).rename({TIME: INIT})
    out = at_init.expand_dims({LEAD: leads}, axis=1)
    return out.assign_attrs(forecast="persistence").transpose(INIT, LEAD, ...)


def climatology(truth: xr.Dataset, *, period: tuple | None = None, kind: str = "auto") -> xr.Dataset:
    """Mean of `truth` over `period` (start, end inclusive) by day of year and hour.

    `kind`: ``dayofyear-hour`` (the WeatherBench 2 climatology: one mean per calendar day
    and hour of day, no smoothing), ``hour`` (one mean per hour of day) or ``auto``:
    ``dayofyear-hour`` when the period spans at least 365 days, else ``hour``, since a
    shorter period has no value for most days of the year. Day 366 of leap years is
    looked up as day 365. The result's ``climatology`` attribute names the kind used.
    """
    ds = truth[[v for v in truth.data_vars if TIME in truth[v].dims]]
    if period is not None:
        ds = ds.sel({TIME: slice(*period)})
    if not ds.sizes.get(TIME):
        raise DataError(f"no truth time inside the climatology period {period}")
    times = pd.DatetimeIndex(ds[TIME].values)
    span_days = (times.max() - times.min()) / pd.Timedelta(days=1)
    if kind == "auto":
        kind = DAYOFYEAR_HOUR if span_days >= 365 else HOUR
    if kind == DAYOFYEAR_HOUR:
        doy = np.minimum(times.dayofyear.values, 365)
        keys = {"dayofyear": doy, "hour": times.hour.values}
        note = f"mean by day of year and hour over {times.min():%Y-%m-%d} .. {times.max():%Y-%m-%d}"
    elif kind == HOUR:
        keys = {"hour": times.hour.values}
        note = (f"mean by hour of day over {times.min():%Y-%m-%d %H}h .. {times.max():%Y-%m-%d %H}h "
                f"({span_days:.1f} days: shorter than a year, so no day-of-year cycle)"
                if span_days < 365 else f"mean by hour of day over {times.min():%Y-%m-%d} .. {times.max():%Y-%m-%d}")
    else:
        raise DataError(f"unknown climatology kind '{kind}'; expected auto, {DAYOFYEAR_HOUR} or {HOUR}")
    clim = _group_means(ds, keys)
    for v in clim.data_vars:
        clim[v].attrs = dict(truth[v].attrs)
    return clim.assign_attrs(climatology=kind, climatology_note=note, samples=int(ds.sizes[TIME]))


@dataclass(frozen=True)
class ReferenceClimatology:
    """The climatology baseline chosen for one verification, or why there is none."""

    dataset: xr.Dataset | None
    """None when the period holds too little data: the baseline is left out."""
    note: str
    """Where it came from (period, number of times, kind), or why it was left out."""
    period: tuple[str, str] | None = None
    """First and last time it was built from."""


def _show_times(times: np.ndarray) -> str:
    return f"{str(times.min())[:16]} .. {str(times.max())[:16]}" if len(times) else "no time"


def reference_climatology(source: xr.Dataset, inits, lead_times, *, period: tuple | None = None,
                          explicit: bool = False, min_days: int = MIN_CLIMATOLOGY_DAYS) -> ReferenceClimatology:
    """The climatology baseline of a verification from inits x lead_times, never from its answer.

    - `source`: truth-like data (``time`` axis); `period` (start, end inclusive) restricts it;
      `explicit` says the caller chose `source` itself (a `--climatology` file).
    - Without `period` or `explicit`, the climatology is the part of `source` before the
      first initialisation: what a forecaster knew when the first forecast was made.

    A chosen period or file holding any time inside the verified period (first to last
    valid time) is refused with a `DataError`: that is leakage, not a baseline. A period
    with fewer than `min_days` values of an hour of day the verification needs gives no
    climatology, and the note says why.
    """
    inits, leads = _times(inits), _leads(lead_times)
    valid = np.unique((inits[:, None] + leads[None, :]).ravel())
    verified = f"{_show_times(valid)} ({len(valid)} valid times)"
    times = source[TIME].values
    if period is not None:
        chosen, what = times[(times >= np.datetime64(period[0])) & (times <= np.datetime64(period[1]))], \
            f"period {period[0]} .. {period[1]}"
    elif explicit:
        chosen, what = times, "given files"
    else:
        chosen, what = times[times < inits.min()], f"data before the first initialisation ({str(inits.min())[:16]})"
    leaked = chosen[(chosen >= valid.min()) & (chosen <= valid.max())]
    if len(leaked) and (period is not None or explicit):
        raise DataError(
            f"the climatology ({what}) overlaps the verified period {verified}: {len(leaked)} of its "
            f"times ({_show_times(leaked)}) are inside it; a climatology of the verified days is the answer "
            "itself. Take a period before (or after) the verified one")
    if not len(chosen):
        return ReferenceClimatology(None, f"left out: the {what} holds no time")
    chosen_times = pd.DatetimeIndex(chosen)
    counts = pd.Series(chosen_times.hour).value_counts()
    needed = sorted(set(pd.DatetimeIndex(valid).hour))
    short = {h: int(counts.get(h, 0)) for h in needed if counts.get(h, 0) < min_days}
    span = f"{_show_times(chosen)}, {len(chosen)} time(s)"
    if short:
        sample = ", ".join(f"{h:02d}h: {n}" for h, n in list(short.items())[:6])
        return ReferenceClimatology(
            None, f"left out: the {what} ({span}) has fewer than {min_days} values of hour(s) of day the "
                  f"verification needs ({sample}{', ...' if len(short) > 6 else ''})")
    clim = climatology(source.sel({TIME: chosen}))
    note = f"{clim.attrs['climatology_note']}; from the {what}, disjoint from the verified period {verified}"
    return ReferenceClimatology(clim, note, (str(chosen.min())[:19], str(chosen.max())[:19]))


def _group_means(ds: xr.Dataset, keys: dict[str, np.ndarray]) -> xr.Dataset:
    """NaN-aware means of `ds` over time for each combination of `keys` (dims in `keys` order).

    One sparse (groups x times) matrix product per variable: the sums and the counts of
    finite values of every group in a single pass over the data.
    """
    from scipy import sparse

    codes, uniques = zip(*(np.unique(k, return_inverse=True)[::-1] for k in keys.values()))
    flat = np.ravel_multi_index(codes, [len(u) for u in uniques])
    n_groups = int(np.prod([len(u) for u in uniques]))
    member = sparse.csr_matrix((np.ones(len(flat)), (flat, np.arange(len(flat)))), shape=(n_groups, len(flat)))
    out = {}
    for v, da in ds.data_vars.items():
        x = da.transpose(TIME, ...).values.astype("float64")
        finite = np.isfinite(x).reshape(len(flat), -1)
        sums = member @ np.where(finite, x.reshape(len(flat), -1), 0.0)
        counts = member @ finite.astype("float64")
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
        other = [d for d in da.dims if d != TIME]
        out[v] = xr.DataArray(mean.reshape(*[len(u) for u in uniques], *x.shape[1:]), dims=(*keys, *other))
    coords = {**dict(zip(keys, uniques)), **{d: ds[d].values for d in ds.dims if d != TIME and d in ds.coords}}
    return xr.Dataset(out, coords=coords)


def climatology_values(clim: xr.DataArray, valid_times) -> np.ndarray:
    """The climatology at each valid time: (n, ...) numpy array in `clim`'s other dims' order."""
    times = pd.DatetimeIndex(_times(valid_times))
    hours = times.hour.values
    if "hour" not in clim.dims:
        raise DataError(f"climatology '{clim.name}' has no 'hour' dimension; build it with baselines.climatology")
    have_hours = clim["hour"].values
    lost = sorted(set(hours) - set(have_hours))
    if lost:
        raise DataError(f"climatology '{clim.name}' has no value for hour(s) {lost} of the valid times; "
                        f"it has hours {sorted(have_hours.tolist())}")
    sel = {"hour": xr.DataArray(hours, dims="valid")}
    if "dayofyear" in clim.dims:
        doy = np.minimum(times.dayofyear.values, 365)
        lost_days = sorted(set(doy) - set(clim["dayofyear"].values))
        if lost_days:
            raise DataError(f"climatology '{clim.name}' has no value for day(s) of year {lost_days[:10]}")
        sel["dayofyear"] = xr.DataArray(doy, dims="valid")
    return clim.sel(sel).transpose("valid", ...).values


def climatology_forecast(clim: xr.Dataset, inits, lead_times) -> xr.Dataset:
    """The climatology at every valid time init + lead, as a forecast (init_time, lead_time, ...)."""
    inits, leads = _times(inits), _leads(lead_times)
    valid = (inits[:, None] + leads[None, :]).ravel()
    data = {}
    for v, da in clim.data_vars.items():
        values = climatology_values(da, valid)
        other = [d for d in da.dims if d not in ("hour", "dayofyear")]
        data[v] = xr.DataArray(values.reshape(len(inits), len(leads), *values.shape[1:]),
                               dims=(INIT, LEAD, *other), attrs=da.attrs)
    coords = {INIT: inits, LEAD: leads, **{d: clim[d].values for d in clim.dims if d not in ("hour", "dayofyear")}}
    return xr.Dataset(data, coords=coords, attrs={"forecast": "climatology", **clim.attrs})


def user_baseline(uris: Sequence[str] | xr.Dataset, model: xr.Dataset, name: str, *,
                  regrid: bool = False) -> xr.Dataset:
    """Another model's forecast (files or dataset) at `model`'s init and lead times and grid.

    Grids must match (`forecasts.GRID_TOLERANCE`) unless `regrid` is set, which
    interpolates linearly onto the model's grid and says so in the ``regridded`` attribute.
    """
    ds = uris if isinstance(uris, xr.Dataset) else open_forecasts(list(uris))
    if regrid:
        lon = model["longitude"].values
        ds = ds.interp(latitude=model["latitude"].values, longitude=lon, method="linear")
        ds.attrs["regridded"] = "interpolated linearly onto the model's grid"
    return check_leads(ds, model, name)
