"""Grid operations a user asks for explicitly: regridding and cropping to the patch size.

Neither happens by default: a grid that does not fit a variant is an error that names
these two options, because both change the data the forecast starts from.

Three regridding methods, all for regular latitude-longitude grids:

- ``bilinear``: interpolation between the four surrounding nodes; smooth fields, refining.
- ``conservative``: first-order area-conservative remapping. Every node is the centre of a
  cell bounded halfway to its neighbours (clipped at the poles); a target cell takes the
  area-weighted mean of the source cells it overlaps, so the area integral is preserved.
- ``nearest``: the nearest node; categorical fields (soil type) and binary indicators.

The rule `regrid_to_variant` applies when no method is given is in `default_method`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Mapping

import numpy as np
import xarray as xr
from scipy import sparse

from model_code.errors import DataError

if TYPE_CHECKING:
    from model_code.variants import Grid, VariantSpec

Method = Literal["bilinear", "conservative", "nearest"]
METHODS: tuple[str, ...] = ("bilinear", "conservative", "nearest")

CATEGORICAL = frozenset({"slt", "lat_mask"})
"""Dataset names regridded by nearest neighbour: soil type codes and a 0/1 indicator."""

_DEGREE_UNITS = frozenset({"degree", "degrees", "deg", "degree_true"})


def _is_global(lon: np.ndarray) -> bool:
    if len(lon) < 2:
        return False
    step = float(np.median(np.diff(lon)))
    return lon[-1] - lon[0] + step >= 360 - 1e-6


def wraps_in_longitude(lon) -> bool:
    """Whether increasing longitudes (degrees) go all the way round, so the last column
    neighbours the first: the periodic grids of `regrid` and `cell_areas`."""
    return _is_global(np.asarray(lon, dtype="float64"))


def target_axes(lat: np.ndarray, lon: np.ndarray, resolution: float) -> tuple[np.ndarray, np.ndarray]:
    """Latitudes (decreasing) and longitudes at `resolution` covering the same domain."""
    new_lat = np.arange(lat[0], lat[-1] - 1e-9, -resolution)
    if _is_global(lon):
        new_lon = np.arange(0.0, 360.0 - 1e-9, resolution)
    else:
        new_lon = np.arange(lon[0], lon[-1] + 1e-9, resolution)
    return np.round(new_lat, 6), np.round(new_lon, 6)


def _axes_of(da: xr.DataArray) -> tuple[np.ndarray, np.ndarray]:
    missing = [d for d in ("latitude", "longitude") if d not in da.dims]
    if missing:
        raise DataError(
            f"variable '{da.name}' has dims {tuple(da.dims)}; regridding needs "
            f"'latitude' and 'longitude' dimensions (missing: {', '.join(missing)})"
        )
    return da.latitude.values.astype("float64"), da.longitude.values.astype("float64")


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise DataError(f"unknown regridding method '{method}'; expected one of: {', '.join(METHODS)}")


def regrid(
    da: xr.DataArray, resolution: float, *, categorical: bool = False, method: Method | None = None
) -> xr.DataArray:
    """Regrid a canonical field onto `resolution` degrees over the same domain.

    Without `method`: bilinear interpolation, or the nearest neighbour when `categorical`
    (soil type). Periodic in longitude for global grids. With bilinear, NaN (e.g. land in
    wave fields) spreads to the cells it touches, which keeps masked areas masked; with
    ``method="conservative"`` masked cells are left out instead (see `regrid_to_grid`).
    """
    if method is None:
        method = "nearest" if categorical else "bilinear"
    _check_method(method)
    if categorical and method != "nearest":
        raise DataError(f"variable '{da.name}' is categorical; expected method 'nearest', got '{method}'")
    lat, lon = _axes_of(da)
    new_lat, new_lon = target_axes(lat, lon, resolution)
    if method == "conservative":
        return _conservative_da(da, new_lat, new_lon, resolution)
    if _is_global(lon):  # pad one column on each side so interpolation wraps around
        da = xr.concat(
            [da.isel(longitude=[-1]).assign_coords(longitude=[lon[-1] - 360.0]), da,
             da.isel(longitude=[0]).assign_coords(longitude=[lon[0] + 360.0])],
            dim="longitude",
        )
    out = da.interp(latitude=new_lat, longitude=new_lon, method="nearest" if method == "nearest" else "linear")
    out.attrs = da.attrs
    return out.astype(da.dtype if da.dtype.kind == "f" else "float32")


# --------------------------------------------------------------------------------------
# Cells: edges and areas


def _step(centres: np.ndarray) -> float:
    return float(np.median(np.abs(np.diff(centres)))) if len(centres) > 1 else float("nan")


def cell_edges(
    centres: np.ndarray, *, periodic: bool = False, step: float | None = None, clip: float | None = None
) -> np.ndarray:
    """The n + 1 edges of the cells around n monotonic `centres`.

    Inner edges lie halfway between neighbours; the outer two half a spacing beyond the end
    centres (`step` gives the spacing when there is a single centre). `periodic` (global
    longitudes): the outer edges split the gap across the 0/360 seam, so the cells tile
    exactly 360°. `clip` (90 for latitudes) bounds the edges to [-clip, clip].
    """
    c = np.asarray(centres, dtype="float64")
    if c.ndim != 1 or c.size == 0:
        raise DataError(f"cell edges need a 1-D, non-empty coordinate; got shape {c.shape}")
    if c.size == 1:
        if step is None or not step > 0:
            raise DataError(f"a grid of one point ({c[0]:g}) needs its spacing to define a cell")
        edges = np.array([c[0] - step / 2, c[0] + step / 2])
    else:
        inner = 0.5 * (c[1:] + c[:-1])
        if periodic:
            half = 0.5 * (c[0] + 360.0 - c[-1])
            first, last = c[0] - half, c[-1] + half
        else:
            first, last = c[0] - 0.5 * (c[1] - c[0]), c[-1] + 0.5 * (c[-1] - c[-2])
        edges = np.concatenate([[first], inner, [last]])
    if clip is not None:
        edges = np.clip(edges, -clip, clip)
    return edges


def cell_areas(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """(H, W) cell areas in steradians (unit sphere): |Δ sin(latitude edge)| · |Δ longitude edge| (rad).

    Latitude edges are clipped at the poles; longitudes are periodic on global grids. On a
    global grid the areas sum to 4π. Away from the poles an area is ≈ cos(lat) Δlat Δlon.
    """
    lat = np.asarray(lat, dtype="float64")
    lon = np.asarray(lon, dtype="float64")
    lat_e = cell_edges(lat, clip=90.0, step=_fallback_step(lat, lon))
    lon_e = cell_edges(lon, periodic=_is_global(lon), step=_fallback_step(lon, lat))
    dlat = np.abs(np.diff(np.sin(np.deg2rad(lat_e))))
    dlon = np.abs(np.diff(np.deg2rad(lon_e)))
    return dlat[:, None] * dlon[None, :]


def _fallback_step(axis: np.ndarray, other: np.ndarray) -> float | None:
    """Spacing of a one-point axis: that of the other axis, if it has more than one point."""
    if len(axis) > 1:
        return None
    return _step(other) if len(other) > 1 else None


# --------------------------------------------------------------------------------------
# Conservative remapping


def _overlap_matrix(src_edges: np.ndarray, dst_edges: np.ndarray, period: float | None = None) -> sparse.csr_array:
    """(n_dst, n_src) sparse matrix of overlap lengths between source and target cells.

    Edges may increase or decrease; `period` (360 for global longitudes) wraps the source.
    Built from the elementary intervals between all edges, so it is exact and O(n log n).
    """
    n, m = len(src_edges) - 1, len(dst_edges) - 1
    s_idx, d_idx = np.arange(n), np.arange(m)
    s, d = np.asarray(src_edges, "float64"), np.asarray(dst_edges, "float64")
    if s[0] > s[-1]:
        s, s_idx = s[::-1], s_idx[::-1]
    if d[0] > d[-1]:
        d, d_idx = d[::-1], d_idx[::-1]
    if period is not None:  # tile the source one period on each side
        s = np.concatenate([s[:-1] - period, s[:-1], s[:-1] + period, [s[-1] + period]])
        s_idx = np.tile(s_idx, 3)
    cuts = np.unique(np.concatenate([s, d]))
    cuts = cuts[(cuts >= d[0]) & (cuts <= d[-1])]
    a, b = cuts[:-1], cuts[1:]
    length, mid = b - a, 0.5 * (a + b)
    width = np.min(np.abs(np.diff(d))) if m else 0.0
    i = np.searchsorted(s, mid, side="right") - 1
    j = np.searchsorted(d, mid, side="right") - 1
    ok = (length > 1e-9 * width) & (i >= 0) & (i < len(s) - 1) & (j >= 0) & (j < m)
    return sparse.csr_array((length[ok], (d_idx[j[ok]], s_idx[i[ok]])), shape=(m, n))


def _remap_weights(lat, lon, new_lat, new_lon, dst_step: float | None = None):
    """Latitude (overlaps of sin(lat) edges) and longitude (overlaps in degrees) matrices."""
    src_lat_e = cell_edges(lat, clip=90.0, step=_fallback_step(lat, lon))
    src_lon_e = cell_edges(lon, periodic=_is_global(lon), step=_fallback_step(lon, lat))
    dst_lat_e = cell_edges(new_lat, clip=90.0, step=dst_step or _fallback_step(new_lat, new_lon))
    dst_lon_e = cell_edges(new_lon, periodic=_is_global(new_lon), step=dst_step or _fallback_step(new_lon, new_lat))
    w_lat = _overlap_matrix(np.sin(np.deg2rad(src_lat_e)), np.sin(np.deg2rad(dst_lat_e)))
    w_lon = _overlap_matrix(src_lon_e, dst_lon_e, period=360.0 if _is_global(lon) else None)
    return w_lat, w_lon


def _apply(w_lat: sparse.csr_array, w_lon: sparse.csr_array, x: np.ndarray) -> np.ndarray:
    """W_lat · x · W_lonᵀ for every (H, W) slice of x with shape (N, H, W)."""
    n, h, w = x.shape
    y = w_lat @ x.transpose(1, 0, 2).reshape(h, n * w)  # (H', N W)
    h2 = y.shape[0]
    z = (w_lon @ y.reshape(h2 * n, w).T).T  # (H' N, W')
    return np.asarray(z).reshape(h2, n, -1).transpose(1, 0, 2)


def conservative_remap(values: np.ndarray, lat, lon, new_lat, new_lon, *, dst_step: float | None = None) -> np.ndarray:
    """First-order conservative remapping of (..., H, W) `values` onto the target axes.

    y_j = Σ_i a_ij m_i x_i / Σ_i a_ij m_i, where a_ij is the area of the overlap of target
    cell j with source cell i (product of the overlaps of sin(latitude) edges and of
    longitude edges, so two sparse matrix products per field) and m_i is 1 where x_i is
    finite, 0 where it is NaN. A target cell with no valid source cell is NaN; cells partly
    outside the source domain average what they cover. Computed in float64.
    """
    values = np.asarray(values)
    w_lat, w_lon = _remap_weights(lat, lon, new_lat, new_lon, dst_step)
    shape = values.shape
    x = values.reshape((-1,) + shape[-2:]).astype("float64")
    mask = np.isfinite(x)
    if mask.all():
        num = _apply(w_lat, w_lon, x)
        den = np.outer(w_lat.sum(axis=1), w_lon.sum(axis=1))[None]
    else:
        num = _apply(w_lat, w_lon, np.where(mask, x, 0.0))
        den = _apply(w_lat, w_lon, mask.astype("float64"))
    tiny = 1e-12 * float(np.max(den)) if den.size else 0.0
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(den > tiny, num / np.where(den > tiny, den, 1.0), np.nan)
    return out.reshape(shape[:-2] + out.shape[-2:])


def _conservative_da(da: xr.DataArray, new_lat, new_lon, dst_step: float | None = None) -> xr.DataArray:
    lat, lon = _axes_of(da)
    others = [d for d in da.dims if d not in ("latitude", "longitude")]
    src = da.transpose(*others, "latitude", "longitude")
    out = conservative_remap(src.values, lat, lon, new_lat, new_lon, dst_step=dst_step)
    coords = {k: v for k, v in src.coords.items() if not ({"latitude", "longitude"} & set(v.dims))}
    coords.update(latitude=("latitude", np.asarray(new_lat), da.latitude.attrs),
                  longitude=("longitude", np.asarray(new_lon), da.longitude.attrs))
    res = xr.DataArray(out, dims=(*others, "latitude", "longitude"), coords=coords, name=da.name, attrs=da.attrs)
    return res.transpose(*da.dims).astype(da.dtype if da.dtype.kind == "f" else "float32")


def _interpolated_da(da: xr.DataArray, new_lat, new_lon, method: str) -> xr.DataArray:
    """Bilinear or nearest onto explicit axes; targets up to half a cell beyond the outer
    nodes take the value at the edge node (clamped), other targets outside are NaN."""
    lat, lon = _axes_of(da)
    new_lat, new_lon = np.asarray(new_lat, "float64"), np.asarray(new_lon, "float64")
    if _is_global(lon):
        da = xr.concat(
            [da.isel(longitude=[-1]).assign_coords(longitude=[lon[-1] - 360.0]), da,
             da.isel(longitude=[0]).assign_coords(longitude=[lon[0] + 360.0])],
            dim="longitude",
        )
        at_lon = np.where(new_lon < lon[0] - 1e-9, new_lon + 360.0, new_lon)
    else:
        half = 0.5 * (_step(lon) if len(lon) > 1 else 0.0)
        inside = (new_lon >= lon.min() - half - 1e-9) & (new_lon <= lon.max() + half + 1e-9)
        at_lon = np.where(inside, np.clip(new_lon, lon.min(), lon.max()), new_lon)
    half = 0.5 * (_step(lat) if len(lat) > 1 else 0.0)
    inside = (new_lat >= lat.min() - half - 1e-9) & (new_lat <= lat.max() + half + 1e-9)
    at_lat = np.where(inside, np.clip(new_lat, lat.min(), lat.max()), new_lat)
    out = da.interp(latitude=at_lat, longitude=at_lon, method="linear" if method == "bilinear" else "nearest")
    out = out.assign_coords(latitude=("latitude", new_lat, da.latitude.attrs),
                            longitude=("longitude", new_lon, da.longitude.attrs))
    out.attrs = da.attrs
    return out.astype(da.dtype if da.dtype.kind == "f" else "float32")


def regrid_to_grid(
    da: xr.DataArray, lat: np.ndarray, lon: np.ndarray, *, method: Method = "bilinear",
    step: float | None = None,
) -> xr.DataArray:
    """Regrid a canonical field onto explicit target latitudes and longitudes.

    `step` is the target spacing, needed by the conservative method only when an axis has a
    single point. Longitudes are periodic when the source is global.
    """
    _check_method(method)
    _axes_of(da)
    if method == "conservative":
        return _conservative_da(da, np.asarray(lat, "float64"), np.asarray(lon, "float64"), step)
    return _interpolated_da(da, lat, lon, method)


# --------------------------------------------------------------------------------------
# Onto a variant's native grid


def variant_axes(lat: np.ndarray, lon: np.ndarray, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """Nodes of the variant's global grid inside the domain covered by (`lat`, `lon`).

    The variant grid is latitudes 90 .. -90 and longitudes 0 .. 360 - res at `grid.resolution`
    (shape `grid.shape`). A global source gets the whole grid; a regional one the nodes
    within its cells (its nodes plus half a spacing, within [0, 360)).
    """
    res = float(grid.resolution)
    h, w = grid.shape
    if abs((h - 1) * res - 180.0) > 1e-6 or abs(w * res - 360.0) > 1e-6:
        raise DataError(f"grid {h}x{w} at {res:g}° is not a global regular grid from 90° to -90°")
    full_lat = np.round(np.linspace(90.0, -90.0, h), 6)
    full_lon = np.round(np.arange(w) * res, 6)
    lat = np.asarray(lat, "float64")
    lon = np.asarray(lon, "float64")
    lat_e = cell_edges(lat, clip=90.0, step=_fallback_step(lat, lon) or res)
    tol = 1e-6
    new_lat = full_lat[(full_lat <= max(lat_e) + tol) & (full_lat >= min(lat_e) - tol)]
    if _is_global(lon):
        new_lon = full_lon
    else:
        lon_e = cell_edges(lon, step=_fallback_step(lon, lat) or res)
        new_lon = full_lon[(full_lon >= min(lon_e) - tol) & (full_lon <= max(lon_e) + tol)]
    if not new_lat.size or not new_lon.size:
        raise DataError(
            f"the domain latitudes {lat.max():g}..{lat.min():g}, longitudes {lon.min():g}..{lon.max():g} "
            f"holds no node of the {res:g}° grid"
        )
    return new_lat, new_lon


def _is_direction(name: str, da: xr.DataArray) -> bool:
    from model_code.variables import by_key

    try:
        units = by_key(name).units
    except KeyError:
        units = str(da.attrs.get("units", ""))
    return units in _DEGREE_UNITS


def default_method(name: str, lat: np.ndarray, lon: np.ndarray, resolution: float) -> Method:
    """The method `regrid_to_variant` uses for variable `name` going to `resolution` degrees.

    1. categorical fields (soil type `slt`, the 0/1 `lat_mask`): ``nearest``, always;
    2. coarsening (the target spacing exceeds the source spacing along either axis):
       ``conservative``. A coarse cell holds the area mean of what falls in it, which is what
       masks and fractions (lsm), concentrations and columns (pollutants, emissions),
       accumulations (precipitation) and wave heights must keep; for smooth state fields it
       also avoids the aliasing of sampling points. NaN cells (land in wave fields) are left
       out, so coastal cells keep their sea values;
    3. refining or equal spacing: ``bilinear`` (first-order conservative remapping would make
       every fine cell inside a coarse one equal, a blocky field).

    Directions (degrees) are regridded through their sine and cosine with the same rule.
    """
    if name in CATEGORICAL:
        return "nearest"
    lat_step = _step(np.asarray(lat, "float64"))
    lon_step = _step(np.asarray(lon, "float64"))
    coarser = [resolution > s * (1 + 1e-6) for s in (lat_step, lon_step) if np.isfinite(s)]
    return "conservative" if any(coarser) else "bilinear"


def _same_axes(lat, lon, new_lat, new_lon) -> bool:
    return (len(lat) == len(new_lat) and len(lon) == len(new_lon)
            and np.allclose(lat, new_lat, atol=1e-6) and np.allclose(lon, new_lon, atol=1e-6))


def _regrid_var(da: xr.DataArray, name: str, new_lat, new_lon, method: str, res: float) -> xr.DataArray:
    if name in CATEGORICAL and method != "nearest":
        raise DataError(f"variable '{name}' is categorical; expected method 'nearest', got '{method}'")
    through_sincos = _is_direction(name, da) and method != "nearest"
    if through_sincos:
        rad = np.deg2rad(da.astype("float64"))
        s = regrid_to_grid(np.sin(rad), new_lat, new_lon, method=method, step=res)
        c = regrid_to_grid(np.cos(rad), new_lat, new_lon, method=method, step=res)
        out = (np.rad2deg(np.arctan2(s, c)) % 360.0).astype(da.dtype if da.dtype.kind == "f" else "float32")
        out.attrs = dict(da.attrs)
        out.name = da.name
    else:
        out = regrid_to_grid(da, new_lat, new_lon, method=method, step=res)
    out.attrs["regrid_method"] = method + (" (through sin/cos)" if through_sincos else "")
    return out


def regrid_to_variant(
    obj: xr.DataArray | xr.Dataset,
    spec: VariantSpec,
    method: Method | Mapping[str, Method] | None = None,
) -> xr.DataArray | xr.Dataset:
    """Regrid a canonical field or dataset onto the native grid of `spec` (`spec.grid`).

    `method`: one method for every variable, a mapping from dataset name to method (others
    take the default), or None for `default_method` per variable. A global source gives the
    full `spec.grid.shape`; a regional one the variant's nodes inside its domain (see
    `variant_axes`). Variables without latitude/longitude pass through. Each regridded
    variable records its method in the attribute `regrid_method`.
    """
    if isinstance(method, str):
        _check_method(method)
    elif method is not None:
        for m in method.values():
            _check_method(m)
    if isinstance(obj, xr.DataArray):
        ds = obj.to_dataset(name=obj.name if obj.name is not None else "field")
    else:
        ds = obj
    spatial = [k for k, v in ds.data_vars.items() if "latitude" in v.dims and "longitude" in v.dims]
    if not spatial:
        raise DataError(
            "nothing to regrid: no variable has both 'latitude' and 'longitude' dimensions "
            f"(variables: {', '.join(map(str, ds.data_vars)) or 'none'})"
        )
    lat, lon = _axes_of(ds[spatial[0]])
    res = float(spec.grid.resolution)
    new_lat, new_lon = variant_axes(lat, lon, spec.grid)
    same = _same_axes(lat, lon, new_lat, new_lon)
    out = {}
    for key, da in ds.data_vars.items():
        name = str(key)
        if name not in spatial:
            out[name] = da
            continue
        if same:
            out[name] = da.copy()
            out[name].attrs["regrid_method"] = "none (already on the grid)"
            continue
        chosen = method if isinstance(method, str) else (method or {}).get(name)
        chosen = chosen or default_method(name, lat, lon, res)
        out[name] = _regrid_var(da, name, new_lat, new_lon, chosen, res)
    result = xr.Dataset(out, attrs=ds.attrs)
    if isinstance(obj, xr.DataArray):
        return result[spatial[0]].rename(obj.name)
    return result


# --------------------------------------------------------------------------------------
# Cropping


def crop_to_patch(ds: xr.Dataset, patch_size: int) -> tuple[xr.Dataset, str | None]:
    """Drop the fewest easternmost columns and southernmost rows so the grid fits the patch.

    Aurora needs the width to be a multiple of the patch size and the height at most one
    row over a multiple (it drops that row itself).
    """
    h, w = ds.sizes["latitude"], ds.sizes["longitude"]
    drop_cols = w % patch_size
    drop_rows = max(h % patch_size - 1, 0)
    if not drop_cols and not drop_rows:
        return ds, None
    cropped = ds.isel(latitude=slice(0, h - drop_rows), longitude=slice(0, w - drop_cols))
    lat, lon = cropped.latitude.values, cropped.longitude.values
    note = (
        f"cropped from {h}x{w} to {h - drop_rows}x{w - drop_cols} to fit patch size {patch_size}: "
        f"{drop_rows} southernmost row(s) and {drop_cols} easternmost column(s) dropped "
        f"(latitudes now {lat[0]:g}..{lat[-1]:g}, longitudes {lon[0]:g}..{lon[-1]:g})"
    )
    return cropped, note
