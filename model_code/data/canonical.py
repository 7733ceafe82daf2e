"""Bring a source dataset's coordinates into the one form the rest of the system assumes.

Canonical form: `time` the valid time (datetime64, increasing; a scalar coordinate when a
source holds one time, expanded into a dimension only for the fields that are used), `level`
(pressure in hPa, increasing: top of the atmosphere first, as Aurora lists them), `latitude` (degrees north, strictly decreasing within [-90, 90]) and
`longitude` (degrees east, strictly increasing within [0, 360)).

What can be fixed without guessing is fixed, and said in a note: latitudes flipped,
longitudes rolled from [-180, 180), pressure in Pa converted to hPa, forecast (time, step)
pairs turned into valid times. What cannot is a `DataError` naming the file and coordinate:
duplicated or non-monotonic coordinates, a regional grid that crosses the 0° meridian,
ensemble members, grids that are not regular latitude-longitude.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from model_code.data.findings import Finding
from model_code.errors import DataError

_LAT_NAMES = ("latitude", "lat")
_LON_NAMES = ("longitude", "lon")
_PRESSURE_DIMS = ("isobaricInhPa", "isobaricInPa", "pressure_level", "level", "plev")
_HPA_UNITS = ("hpa", "millibars", "millibar", "mbar", "mb")
_PA_UNITS = ("pa", "pascal", "pascals")


def _note(check: str, message: str, source: str) -> Finding:
    """A fix made on the way in: users are told, validators report it as a warning."""
    return Finding(check, "warning", message, source=source)


def _find(ds: xr.Dataset, names: tuple[str, ...]) -> str | None:
    return next((n for n in names if n in ds.coords or n in ds.dims), None)


def _check_strictly_monotonic(values: np.ndarray, what: str, source: str) -> None:
    diffs = np.diff(values)
    if np.any(diffs == 0):
        dup = values[1:][diffs == 0]
        raise DataError(f"duplicated {what} values: {_show(dup)}", source=source,
                        check=f"{what.replace(' ', '_')}_duplicates")
    if not (np.all(diffs > 0) or np.all(diffs < 0)):
        i = int(np.argmax(np.sign(diffs) != np.sign(diffs[0])))
        raise DataError(
            f"{what} coordinate is not monotonic: {_show(values[i:i + 3])} at index {i}",
            source=source, check=f"{what.replace(' ', '_')}_monotonic",
        )


def _show(values: np.ndarray, limit: int = 5) -> str:
    items = [str(v) for v in np.asarray(values)[:limit]]
    more = f", ... ({len(values)} in all)" if len(values) > limit else ""
    return ", ".join(items) + more


def _canonical_time(ds: xr.Dataset, source: str, notes: list[Finding]) -> xr.Dataset:
    """Make `time` the valid time: one dimension, datetime64, strictly increasing."""
    if "valid_time" in ds.coords:
        vt = ds["valid_time"]
        reference = [c for c in ("time", "step", "forecast_reference_time", "forecast_period")
                     if c in ds.coords and c not in vt.dims]
        ds = ds.drop_vars(reference)
        if vt.ndim == 0:  # stays a scalar: expanding lazy GRIB arrays here would load them all
            ds = ds.drop_vars("valid_time").assign_coords(time=vt.values)
        elif vt.ndim == 1:
            (dim,) = vt.dims
            if dim != "valid_time":
                ds = ds.swap_dims({dim: "valid_time"}).drop_vars(dim, errors="ignore")
            ds = ds.rename(valid_time="time")
        else:
            dims = vt.dims
            ds = ds.stack(_sample=dims).swap_dims(_sample="valid_time")
            ds = ds.drop_vars(["_sample", *dims], errors="ignore").rename(valid_time="time")
            notes.append(_note("time_layout", f"{' x '.join(dims)} forecast fields arranged by valid time", source))
    if "time" not in ds.coords:
        return ds
    times = np.atleast_1d(ds["time"].values)
    if not np.issubdtype(times.dtype, np.datetime64):
        raise DataError(
            f"time coordinate does not decode to dates (dtype {times.dtype}); "
            "expected CF time units such as 'hours since 2000-01-01'",
            source=source, check="time_decodable",
        )
    if len(times) > 1:
        diffs = np.diff(times)
        unique, counts = np.unique(times, return_counts=True)
        if np.any(counts > 1):
            raise DataError(
                f"duplicated times: {_show(unique[counts > 1])}", source=source,
                check="time_duplicates",
            )
        if np.any(diffs < np.timedelta64(0)):
            i = int(np.argmax(diffs < np.timedelta64(0)))
            raise DataError(
                f"times are not increasing: {times[i]} is followed by {times[i + 1]}", source=source,
                check="time_monotonic",
            )
    return ds


def _canonical_level(ds: xr.Dataset, source: str, notes: list[Finding]) -> xr.Dataset:
    """Rename the pressure coordinate to `level` in hPa (a scalar one becomes a dimension)."""
    name = _find(ds, _PRESSURE_DIMS)
    if name is None:
        return ds
    coord = ds[name]
    units = str(coord.attrs.get("units", "")).strip().lower()
    if name == "isobaricInPa" or units in _PA_UNITS:
        factor = 0.01
    elif name == "isobaricInhPa" or units in _HPA_UNITS:
        factor = 1.0
    elif units:
        return ds  # a vertical coordinate that is not pressure (e.g. model levels)
    else:
        factor = 0.01 if float(np.max(coord.values)) > 1100 else 1.0
    if coord.ndim == 0:
        ds = ds.expand_dims(name)
    values = ds[name].values.astype("float64") * factor
    if factor != 1.0:
        notes.append(_note("level_units", "pressure levels converted from Pa to hPa", source))
    if len(values) > 1:
        _check_strictly_monotonic(values, "pressure level", source)
    values = np.where(np.isclose(values, np.round(values)), np.round(values), values)
    ds = ds.rename({name: "level"}) if name != "level" else ds
    ds = ds.assign_coords(level=("level", values, {"units": "hPa"}))
    return ds.sortby("level") if len(values) > 1 and values[0] > values[-1] else ds


def _canonical_lat_lon(ds: xr.Dataset, source: str, notes: list[Finding]) -> xr.Dataset:
    lat_name, lon_name = _find(ds, _LAT_NAMES), _find(ds, _LON_NAMES)
    if lat_name is None or lon_name is None:
        raise DataError("no latitude/longitude coordinates", source=source, check="grid_coordinates")
    if ds[lat_name].ndim != 1 or ds[lon_name].ndim != 1 or ds[lat_name].dims == ds[lon_name].dims:
        raise DataError(
            f"grid is not a regular latitude-longitude grid (latitude dims {ds[lat_name].dims}, "
            f"longitude dims {ds[lon_name].dims}); regrid it to a regular grid first",
            source=source, check="grid_regular",
        )
    ds = ds.rename({n: c for n, c in ((lat_name, "latitude"), (lon_name, "longitude")) if n != c})
    if ds["latitude"].dims != ("latitude",) or ds["longitude"].dims != ("longitude",):
        ds = ds.swap_dims({ds["latitude"].dims[0]: "latitude", ds["longitude"].dims[0]: "longitude"})

    lat = ds["latitude"].values.astype("float64")
    if np.any(lat < -90) or np.any(lat > 90):
        raise DataError(
            f"latitudes outside [-90, 90]: from {lat.min()} to {lat.max()}", source=source,
            check="latitude_range",
        )
    if len(lat) > 1:
        _check_strictly_monotonic(lat, "latitude", source)
        if lat[1] > lat[0]:
            ds = ds.isel(latitude=slice(None, None, -1))
            notes.append(_note("latitude_order", "latitudes flipped to decreasing (north to south)", source))

    lon = ds["longitude"].values.astype("float64")
    if len(lon) > 1:
        _check_strictly_monotonic(lon, "longitude", source)
        if lon[1] < lon[0]:
            ds = ds.isel(longitude=slice(None, None, -1))
            lon = lon[::-1]
            notes.append(_note("longitude_order", "longitudes reordered to increasing", source))
    if np.any(lon < 0) or np.any(lon >= 360):
        wrapped = np.mod(lon, 360.0)
        step = float(np.median(np.diff(lon))) if len(lon) > 1 else 0.0
        is_global = len(lon) > 1 and (lon[-1] - lon[0] + step) >= 360 - 1e-6
        if not is_global and np.any(np.diff(wrapped) < 0):
            raise DataError(
                f"regional grid crosses the 0° meridian (longitudes {lon[0]:g} to {lon[-1]:g}); "
                "Aurora needs longitudes increasing within [0, 360), which would split this "
                "domain in two. Select a domain on one side of 0°, or a global grid",
                source=source, check="longitude_meridian",
            )
        order = np.argsort(wrapped, kind="stable")
        if np.any(np.diff(wrapped[order]) == 0):
            raise DataError(
                "longitudes repeat once wrapped into [0, 360) (e.g. both -180 and 180)",
                source=source, check="longitude_duplicates",
            )
        ds = ds.isel(longitude=order).assign_coords(longitude=("longitude", wrapped[order]))
        notes.append(_note(
            "longitude_range", f"longitudes rolled from [{lon.min():g}, {lon.max():g}] into [0, 360)", source
        ))
    # GRIB2 stores coordinates in micro-degrees; rounding to that removes float noise such as
    # 1.5e-12 for 0°, so grids from different files compare equal.
    ds = ds.assign_coords(
        latitude=("latitude", np.round(ds["latitude"].values.astype("float64"), 6),
                  {"units": "degrees_north", "standard_name": "latitude"}),
        longitude=("longitude", np.round(ds["longitude"].values.astype("float64"), 6),
                   {"units": "degrees_east", "standard_name": "longitude"}),
    )
    return ds


def canonicalise(ds: xr.Dataset, source: str) -> tuple[xr.Dataset, list[Finding]]:
    """Canonical coordinates for `ds` (from `source`), and notes on what was changed."""
    notes: list[Finding] = []
    if "number" in ds.dims and ds.sizes["number"] > 1:
        raise DataError(
            f"holds {ds.sizes['number']} ensemble members (dimension 'number'); "
            "select one member before forecasting from it",
            source=source, check="ensemble_members",
        )
    ds = ds.squeeze("number", drop=True) if "number" in ds.dims else ds
    ds = ds.drop_vars("number", errors="ignore")
    ds = _canonical_time(ds, source, notes)
    ds = _canonical_level(ds, source, notes)
    ds = _canonical_lat_lon(ds, source, notes)
    return ds, notes
