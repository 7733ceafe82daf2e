"""Forecast collections in the (init_time, lead_time, ...) layout, and their checks against a truth.

`forecast()` writes one dataset per initialisation (dims ``time``, [``level``], ``latitude``,
``longitude``; coord ``lead_time`` on ``time``; scalar ``forecast_reference_time``).
Scoring wants the WeatherBench 2 layout instead: dims (``init_time``, ``lead_time``,
[``member``], [``level``], ``latitude``, ``longitude``) with the truth on a ``time`` axis of
valid times. `align` is the one place where a forecast meets a truth: it refuses
different grids, units, levels and missing valid times with a `DataError` naming them.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import xarray as xr

from model_code.errors import DataError
from model_code.storage import local_copy

LAT, LON = "latitude", "longitude"
INIT, LEAD, TIME, MEMBER = "init_time", "lead_time", "time", "member"
GRID_TOLERANCE = 1e-4
"""Degrees two grids' coordinates may differ by and still be the same grid."""


def _hours(td) -> str:
    return f"{np.timedelta64(td, 'ns') / np.timedelta64(1, 'h'):g} h"


def _show(t) -> str:
    return str(np.datetime64(t, "ns"))[:16]


def _one(ds: xr.Dataset, index: int) -> xr.Dataset:
    """One `forecast()` output -> dims (init_time=1, lead_time, ...)."""
    if INIT in ds.dims and LEAD in ds.dims:
        return ds
    if TIME not in ds.dims or LEAD not in ds.coords or "forecast_reference_time" not in ds.coords:
        raise DataError(f"forecast dataset {index} is neither per-init (dim 'time' with coords 'lead_time' and "
                        f"'forecast_reference_time') nor stacked (dims '{INIT}', '{LEAD}'); dims {dict(ds.sizes)}")
    init = np.datetime64(ds["forecast_reference_time"].values, "ns")
    out = ds.swap_dims({TIME: LEAD}).drop_vars([TIME, "forecast_reference_time"])
    return out.expand_dims({INIT: [init]})


def stack_forecasts(datasets: Iterable[xr.Dataset]) -> xr.Dataset:
    """Per-init forecasts (one `forecast()` output each) -> one dataset (init_time, lead_time, ...).

    Every forecast must have the same lead times, variables and grid; an init time given
    twice is an error.
    """
    parts = [_one(ds, i) for i, ds in enumerate(datasets)]
    if not parts:
        raise DataError("no forecast to stack")
    ref = parts[0]
    inits: list[np.datetime64] = []
    for i, p in enumerate(parts):
        if set(p.data_vars) != set(ref.data_vars):
            raise DataError(f"forecast {i} has variables {sorted(p.data_vars)}; forecast 0 has {sorted(ref.data_vars)}")
        if p.sizes[LEAD] != ref.sizes[LEAD] or (p[LEAD].values != ref[LEAD].values).any():
            raise DataError(f"forecast {i} has lead times {[_hours(x) for x in p[LEAD].values]}; forecast 0 has "
                            f"{[_hours(x) for x in ref[LEAD].values]}")
        _same_grid(ref, p, "forecast 0", f"forecast {i}")
        inits += list(p[INIT].values)
    if len(set(inits)) != len(inits):
        dup = sorted({_show(t) for t in inits if inits.count(t) > 1})
        raise DataError(f"initialisation time(s) given more than once: {', '.join(dup)}")
    stacked = xr.concat(parts, dim=INIT, data_vars="all", coords="minimal", compat="override", join="override")
    return stacked.sortby(INIT)


WB2_LEAD = "prediction_timedelta"
"""WeatherBench 2's forecast layout: dims `time` (the initialisation) and `prediction_timedelta`."""


def canonical_forecast(ds: xr.Dataset, source: str) -> xr.Dataset:
    """A forecast in this project's names, units and layout, as the readers give a truth.

    Variables under their dataset names (`2t`, `2m_temperature`, `t2m` all become `t2m`;
    `variables.find`), converted to the catalogue's units where the units attribute makes
    that unambiguous (noted in the `preprocessing_notes` attribute); `lat`/`lon` named
    `latitude`/`longitude`; the WeatherBench 2 layout (`time` = init, `prediction_timedelta`
    = lead) made (init_time, lead_time). Variables Aurora does not know are kept as they are.
    """
    from model_code.data.units import to_canonical
    from model_code.variables import find

    ds = ds.rename({k: v for k, v in (("lat", LAT), ("lon", LON)) if k in ds.dims or k in ds.coords})
    if WB2_LEAD in ds.dims:
        if TIME not in ds.dims:
            raise DataError(f"a forecast with '{WB2_LEAD}' needs the WeatherBench 2 'time' dimension of "
                            f"initialisation times; dims {dict(ds.sizes)}", source=source)
        ds = ds.drop_vars([LEAD], errors="ignore").rename({TIME: INIT, WB2_LEAD: LEAD})
    notes, renames = [], {}
    for name, da in ds.data_vars.items():
        v = find(str(name), "atmos" if "level" in da.dims else "surface")
        if v is None:
            continue
        values, note = to_canonical(da.values, da.attrs.get("units"), v.units, variable=str(name), source=source)
        if note is not None:
            notes.append(note)
            ds[name] = da.copy(data=values)
        ds[name].attrs["units"] = v.units
        if v.dataset_name != name:
            renames[name] = v.dataset_name
            notes.append(f"{name} read as {v.dataset_name}")
    taken = [k for k in renames.values() if k in ds.data_vars and k not in renames]
    if taken or len(set(renames.values())) < len(renames):
        raise DataError(f"the forecast holds one variable under two names: {sorted(renames)} and {taken}",
                        source=source)
    ds = ds.rename(renames)
    if notes:
        ds.attrs["preprocessing_notes"] = "; ".join(filter(None, [ds.attrs.get("preprocessing_notes"), *notes]))
    return ds


def open_forecast(uri: str) -> xr.Dataset:
    """A forecast file (NetCDF or Zarr, local or s3://), loaded, canonical (`canonical_forecast`),
    in the stacked layout."""
    with contextlib.ExitStack() as stack:
        path = stack.enter_context(local_copy(uri))
        try:
            ds = xr.open_zarr(path) if Path(path).suffix == ".zarr" or (Path(path) / ".zgroup").exists() \
                else xr.open_dataset(path)
            ds = ds.load()
        except (OSError, ValueError) as err:
            raise DataError(f"cannot read the forecast: {err}", source=str(uri)) from err
    ds = canonical_forecast(ds, str(uri))
    return stack_forecasts([ds]) if INIT not in ds.dims else ds.transpose(INIT, LEAD, ...)


def open_forecasts(uris: Sequence[str]) -> xr.Dataset:
    """Several forecast files (one init each, or already stacked) as one stacked dataset."""
    opened = [open_forecast(u) for u in uris]
    return opened[0] if len(opened) == 1 else stack_forecasts(opened)


def _lon360(lon) -> np.ndarray:
    return np.mod(np.asarray(lon, dtype="float64"), 360.0)


def _same_grid(a: xr.Dataset, b: xr.Dataset, name_a: str, name_b: str) -> None:
    for d in (LAT, LON):
        if d not in a.dims or d not in b.dims:
            raise DataError(f"{name_a if d not in a.dims else name_b} has no '{d}' dimension")
    la, lb = a[LAT].values, b[LAT].values
    oa, ob = _lon360(a[LON].values), _lon360(b[LON].values)
    if la.shape != lb.shape or oa.shape != ob.shape:
        raise DataError(f"different grids: {name_a} is {len(la)}x{len(oa)} (lat x lon), {name_b} is {len(lb)}x{len(ob)}")
    dlat, dlon = np.abs(la - lb).max(), np.abs((oa - ob + 180) % 360 - 180).max()
    if dlat > GRID_TOLERANCE or dlon > GRID_TOLERANCE:
        raise DataError(f"different grids: {name_a} and {name_b} latitudes differ by up to {dlat:g}°, longitudes "
                        f"by up to {dlon:g}° (tolerance {GRID_TOLERANCE}°); regrid one onto the other")


def _on_grid_of(truth: xr.Dataset, forecast: xr.Dataset, name: str) -> xr.Dataset:
    """The truth ordered as the forecast's grid (flipped latitudes, 0..360 vs ±180 longitudes)."""
    for d in (LAT, LON):
        if d not in truth.dims:
            raise DataError(f"the truth has no '{d}' dimension; dims {dict(truth.sizes)}")
    if truth.sizes[LAT] == forecast.sizes[LAT] and truth.sizes[LON] == forecast.sizes[LON]:
        lat_order = np.argsort(truth[LAT].values)[np.argsort(np.argsort(forecast[LAT].values))]
        lon_order = np.argsort(_lon360(truth[LON].values))[np.argsort(np.argsort(_lon360(forecast[LON].values)))]
        if (lat_order != np.arange(len(lat_order))).any() or (lon_order != np.arange(len(lon_order))).any():
            truth = truth.isel({LAT: lat_order, LON: lon_order})  # only when needed: it reads lazy data
    _same_grid(forecast, truth, name, "the truth")
    return truth.assign_coords({LAT: forecast[LAT].values, LON: forecast[LON].values})


def on_forecast_points(ds: xr.Dataset, forecast: xr.Dataset, what: str = "the truth") -> tuple[xr.Dataset, str | None]:
    """`ds` at the forecast's grid points when it holds them all (Aurora drops the last row of
    a grid one row over a patch multiple), with a note saying so; else unchanged, for `align`
    to judge. Returns (dataset, note or None)."""
    if ds.sizes.get(LAT) == forecast.sizes[LAT] and ds.sizes.get(LON) == forecast.sizes[LON]:
        return ds, None
    try:
        sub = ds.sel({LAT: forecast[LAT].values, LON: _lon360(forecast[LON].values)}, method="nearest",
                     tolerance=1e-3)
    except KeyError:
        return ds, None
    return sub, (f"{what} cut from {ds.sizes[LAT]}x{ds.sizes[LON]} to the forecast's "
                 f"{forecast.sizes[LAT]}x{forecast.sizes[LON]} grid points")


def align(forecast: xr.Dataset, truth: xr.Dataset, *, name: str = "forecast",
          variables: Sequence[str] | None = None) -> tuple[xr.Dataset, xr.Dataset, list[str]]:
    """Check `forecast` against `truth` and return both restricted to what can be scored.

    Returns (forecast, truth, missing) where `missing` names the forecast's variables the
    truth lacks (the scorer reports them as exclusions). Raises `DataError` naming what
    differs: grid beyond `GRID_TOLERANCE`, units attribute of a variable, levels absent from
    the truth, valid times (init + lead) absent from the truth, no variable in common.
    """
    forecast = _one(forecast, 0) if INIT not in forecast.dims else forecast
    if TIME not in truth.dims:
        raise DataError(f"the truth needs a '{TIME}' dimension of valid times; dims {dict(truth.sizes)}")
    wanted = list(variables) if variables is not None else list(forecast.data_vars)
    absent = [v for v in wanted if v not in forecast.data_vars]
    if absent:
        raise DataError(f"{name} has no variable(s) {absent}; it has {sorted(forecast.data_vars)}")
    missing = [v for v in wanted if v not in truth.data_vars]
    common = [v for v in wanted if v in truth.data_vars]
    if not common:
        raise DataError(f"{name} and the truth share no variable: {name} has {sorted(forecast.data_vars)}, "
                        f"the truth {sorted(truth.data_vars)}")
    truth = _on_grid_of(truth[common + [v for v in ("lsm",) if v in truth and v not in common]], forecast, name)

    units = [f"{v}: {name} in '{forecast[v].attrs['units']}', truth in '{truth[v].attrs['units']}'"
             for v in common if "units" in forecast[v].attrs and "units" in truth[v].attrs
             and forecast[v].attrs["units"] != truth[v].attrs["units"]]
    if units:
        raise DataError(f"different units in {name} and the truth; convert one of them", problems=units)

    if any("level" in forecast[v].dims for v in common):
        if "level" not in truth.dims:
            raise DataError(f"{name} has pressure levels {forecast['level'].values.tolist()}; the truth has none")
        lost = [float(x) for x in forecast["level"].values if not np.isclose(truth["level"].values, x).any()]
        if lost:
            raise DataError(f"the truth lacks level(s) {lost} hPa of {name}; it has {truth['level'].values.tolist()}")
        if truth.sizes["level"] != forecast.sizes["level"] or not np.allclose(truth["level"], forecast["level"]):
            truth = truth.sel(level=forecast["level"].values, method="nearest")
        truth = truth.assign_coords(level=forecast["level"].values)

    valid = forecast[INIT].values[:, None] + forecast[LEAD].values[None, :]
    have = np.isin(valid, truth[TIME].values)
    if not have.all():
        bad = [(i, l) for i, l in zip(*np.nonzero(~have))]
        raise DataError(
            f"the truth lacks {len(bad)} valid time(s) of {name} (it covers {_show(truth[TIME].values.min())} to "
            f"{_show(truth[TIME].values.max())})",
            problems=[f"init {_show(forecast[INIT].values[i])} + {_hours(forecast[LEAD].values[l])} = "
                      f"{_show(valid[i, l])}" for i, l in bad[:10]])
    return forecast[common], truth, missing


def check_leads(baseline: xr.Dataset, model: xr.Dataset, name: str) -> xr.Dataset:
    """`baseline` at the model's init and lead times; raises naming the ones it lacks."""
    lost_leads = [x for x in model[LEAD].values if x not in baseline[LEAD].values]
    if lost_leads:
        raise DataError(f"baseline '{name}' lacks lead time(s) {[_hours(x) for x in lost_leads]} of the model; "
                        f"it has {[_hours(x) for x in baseline[LEAD].values]}")
    lost_inits = [x for x in model[INIT].values if x not in baseline[INIT].values]
    if lost_inits:
        raise DataError(f"baseline '{name}' lacks initialisation time(s) {[_show(x) for x in lost_inits[:10]]} "
                        "of the model")
    return baseline.sel({LEAD: model[LEAD].values, INIT: model[INIT].values})


def truth_like(truth: xr.DataArray, inits: np.ndarray, leads: np.ndarray) -> np.ndarray:
    """The truth at valid times init + lead: (T, L, ...) from a (time, ...) array."""
    valid = (inits[:, None] + leads[None, :]).ravel()
    index = truth.get_index(TIME).get_indexer(valid)
    if (index < 0).any():
        raise DataError(f"the truth lacks valid time {_show(valid[index < 0][0])}")
    values = truth.isel({TIME: index}).transpose(TIME, ...).values  # reads only these times
    return values.reshape(len(inits), len(leads), *values.shape[1:])
