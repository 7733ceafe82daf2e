"""Static fields on a variant's grid, each with the regridding method that suits it."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import xarray as xr

from model_code.data.grid import Method, default_method, regrid_to_variant, variant_axes
from model_code.errors import DataError
from model_code.variables import variable
from model_code.variants import VariantSpec
from model_code.data.preprocess.angles import _catalogue_attrs


def _static_items(fields_or_ds: Any) -> dict[str, xr.DataArray]:
    if isinstance(fields_or_ds, xr.Dataset):
        return {str(k): v for k, v in fields_or_ds.data_vars.items()}
    if isinstance(fields_or_ds, Mapping):
        return {str(k): (v if isinstance(v, xr.DataArray) else v.values()) for k, v in fields_or_ds.items()}
    raise DataError(
        f"static fields given as {type(fields_or_ds).__name__}; expected an xarray Dataset or a "
        "mapping from dataset name to field (as `read_fields` returns)"
    )


def prepare_statics(
    fields_or_ds: xr.Dataset | Mapping[str, Any],
    spec: VariantSpec,
    method: Method | Mapping[str, Method] | None = None,
) -> xr.Dataset:
    """The static fields of `spec` found in the input, on the variant's grid.

    Default methods (`grid.default_method`): `slt` nearest (soil type codes stay codes; any
    other method is refused), `lat_mask` nearest; `lsm`, `z_surface` (surface geopotential),
    `wmb` and the emission statics conservative when coarsening (land fraction and mean
    orography of each coarse cell) and bilinear when refining. `lsm` is then clipped to
    [0, 1] and `slt` rounded to integer codes. A field with a time dimension takes its first
    time. All statics must cover the same domain.
    """
    items = _static_items(fields_or_ds)
    wanted = [variable("static", n) for n in spec.static_vars]
    found = [v for v in wanted if v.dataset_name in items]
    if not found:
        raise DataError(
            f"none of the {spec.name} variant's static fields is in the input; expected some of: "
            f"{', '.join(v.dataset_name for v in wanted)} (got: {', '.join(items) or 'nothing'})"
        )
    res = float(spec.grid.resolution)
    out: dict[str, xr.DataArray] = {}
    domains: dict[str, str] = {}
    for v in found:
        key = v.dataset_name
        da = items[key]
        if "level" in da.dims:
            raise DataError(f"static field '{key}' has a level dimension; expected (latitude, longitude)")
        if "time" in da.dims:
            da = da.isel(time=0)
        da = da.drop_vars([c for c in da.coords if c not in ("latitude", "longitude")])
        if "latitude" not in da.dims or "longitude" not in da.dims:
            raise DataError(f"static field '{key}' has dims {tuple(da.dims)}; expected (latitude, longitude)")
        chosen = method if isinstance(method, str) else (method or {}).get(key)
        chosen = chosen or default_method(key, da.latitude.values, da.longitude.values, res)
        if key == "slt" and chosen != "nearest":
            raise DataError(f"static field 'slt' holds soil type codes; expected method 'nearest', got '{chosen}'")
        regridded = regrid_to_variant(da.rename(key), spec, method=chosen)
        how = regridded.attrs.get("regrid_method", chosen)
        if key in ("lsm", "lat_mask"):
            regridded = regridded.clip(0.0, 1.0)
        elif key == "slt":
            regridded = np.round(regridded)
        regridded.attrs = {**_catalogue_attrs(key), "regrid_method": how}
        out[key] = regridded.astype("float32")
        lat, lon = variant_axes(da.latitude.values, da.longitude.values, spec.grid)
        domains[key] = f"{len(lat)}x{len(lon)}, latitudes {lat[0]:g}..{lat[-1]:g}, longitudes {lon[0]:g}..{lon[-1]:g}"
    if len(set(domains.values())) > 1:
        raise DataError(
            "static fields cover different domains on the variant's grid; crop them to one domain first",
            problems=[f"{k}: {d}" for k, d in domains.items()],
        )
    return xr.Dataset(out, attrs={"variant": spec.name, "grid_resolution": res})
