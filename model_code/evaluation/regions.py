"""Verification regions as 0/1 masks on the forecast grid.

A region is named by a string, so configs, the command line and score records share one
vocabulary:

- ``global`` (a grid that covers the globe; refused on a regional grid, which is not the
  globe), ``domain`` (the whole grid, whatever it covers: a regional grid's own box);
  ``tropics`` (20°S–20°N); ``extra-tropics`` (|φ| > 20°), ``nh-extra-tropics``
  (20°N–90°N), ``sh-extra-tropics`` (90°S–20°S);
- named boxes from `BOXES` (``europe``, ``north-america``, ...) or ``box:NAME:S,N,W,E`` in
  degrees, with longitudes in either −180..180 or 0..360 and W > E meaning the box crosses
  the antimeridian (``box:pacific:-30,30,150,-120``);
- ``land`` and ``sea`` (land fraction >= 0.5 / < 0.5 of the land-sea mask);
- ``coastal`` (sea within a band of the coast), ``coastal-land`` (land within the band):
  ``coastal`` alone means 3 grid cells, ``coastal:5`` 5 cells, ``coastal:100km`` 100 km
  (great-circle distance to the nearest point of the other kind).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np
import xarray as xr
from scipy import ndimage
from scipy.spatial import cKDTree

from model_code.errors import DataError

LAT, LON = "latitude", "longitude"
GLOBAL, DOMAIN = "global", "domain"
WHOLE_GRID = (GLOBAL, DOMAIN)
"""The names of the region that is every point of the grid: `global` for a global grid,
`domain` for a regional one. Scores of one are what a gate without a region compares."""
EARTH_RADIUS_KM = 6371.0
COASTAL_CELLS = 3


@dataclass(frozen=True)
class Box:
    """A latitude-longitude box in degrees; ``west > east`` crosses the antimeridian."""

    south: float
    north: float
    west: float
    east: float

    def __post_init__(self):
        if not -90 <= self.south < self.north <= 90:
            raise DataError(f"box latitudes must satisfy -90 <= south < north <= 90; got {self.south}, {self.north}")
        for lon in (self.west, self.east):
            if not -180 <= lon <= 360:
                raise DataError(f"box longitudes must lie in -180..360; got {lon}")

    def mask(self, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        """(lat, lon) booleans; longitudes compared modulo 360, so 0..360 and ±180 grids agree."""
        west, east, x = self.west % 360, self.east % 360, np.asarray(lon) % 360
        if self.east - self.west >= 360:
            in_lon = np.ones_like(x, dtype=bool)
        elif west <= east:
            in_lon = (x >= west) & (x <= east)
        else:
            in_lon = (x >= west) | (x <= east)
        in_lat = (np.asarray(lat) >= self.south) & (np.asarray(lat) <= self.north)
        return in_lat[:, None] & in_lon[None, :]


BOXES = {
    "europe": Box(35.0, 75.0, -12.5, 42.5),
    "north-america": Box(25.0, 60.0, -120.0, -75.0),
    "north-atlantic": Box(25.0, 65.0, -80.0, 0.0),
    "north-pacific": Box(25.0, 60.0, 145.0, -130.0),
    "east-asia": Box(25.0, 60.0, 102.5, 150.0),
    "australia": Box(-45.0, -12.5, 120.0, 155.0),
    "arctic": Box(60.0, 90.0, -180.0, 180.0),
    "antarctic": Box(-90.0, -60.0, -180.0, 180.0),
}
"""Named boxes, with the bounds WeatherBench 2 uses for its regional scores where it has them."""

_LATITUDE_BANDS = {
    "global": (-90.0, 90.0),
    "tropics": (-20.0, 20.0),
    "nh-extra-tropics": (20.0, 90.0),
    "sh-extra-tropics": (-90.0, -20.0),
}


def _parse_box(name: str) -> Box:
    try:
        _, _, bounds = name.split(":", 2)
        south, north, west, east = (float(v) for v in bounds.split(","))
    except ValueError:
        raise DataError(f"region '{name}': expected box:NAME:SOUTH,NORTH,WEST,EAST in degrees") from None
    return Box(south, north, west, east)


def _coastal_band(name: str) -> tuple[float, str]:
    """`coastal[:N|:Nkm]` -> (width, 'cells'|'km')."""
    _, _, width = name.partition(":")
    if not width:
        return float(COASTAL_CELLS), "cells"
    try:
        return (float(width[:-2]), "km") if width.endswith("km") else (float(width), "cells")
    except ValueError:
        raise DataError(f"region '{name}': expected coastal, coastal:CELLS or coastal:KMkm") from None


def land_mask(lsm: xr.DataArray, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Boolean land (land fraction >= 0.5) on the (lat, lon) grid, from a land-sea mask field."""
    da = lsm.squeeze(drop=True)
    if set(da.dims) != {LAT, LON}:
        raise DataError(f"land-sea mask must have dims ({LAT}, {LON}) only; got {lsm.dims}")
    if da.sizes[LAT] != len(lat) or da.sizes[LON] != len(lon) or not (
            np.allclose(da[LAT].values, lat, atol=1e-6) and np.allclose(da[LON].values % 360, np.asarray(lon) % 360, atol=1e-6)):
        raise DataError(f"land-sea mask grid ({da.sizes[LAT]}x{da.sizes[LON]}) is not the forecast grid "
                        f"({len(lat)}x{len(lon)}); regrid it first")
    values = da.transpose(LAT, LON).values
    if np.isnan(values).all():
        raise DataError("land-sea mask is all NaN")
    return np.nan_to_num(values, nan=1.0) >= 0.5


def distance_to_other_kind_km(land: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Great-circle distance (km) from each point to the nearest point of the other kind.

    Nearest neighbours of points on the unit sphere (chord length), turned into arc
    length, so the result is exact on any regular grid, including across the antimeridian.
    """
    la, lo = np.meshgrid(np.deg2rad(lat), np.deg2rad(lon), indexing="ij")
    xyz = np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)], axis=-1)
    out = np.full(land.shape, np.inf)
    for kind in (True, False):
        here, there = land == kind, land != kind
        if here.any() and there.any():
            chord, _ = cKDTree(xyz[there]).query(xyz[here])
            out[here] = 2 * EARTH_RADIUS_KM * np.arcsin(np.clip(chord / 2, 0, 1))
    return out


def _within_cells(land: np.ndarray, cells: float) -> np.ndarray:
    """Points whose nearest point of the other kind is at most `cells` grid steps away."""
    dist_to_land = ndimage.distance_transform_edt(~land)
    dist_to_sea = ndimage.distance_transform_edt(land)
    return np.where(land, dist_to_sea, dist_to_land) <= cells


def is_global(lat, lon) -> bool:
    """Whether a grid covers the globe: every longitude, and latitudes whose cells span at
    least 170° (grids cropped to a patch multiple lose a row)."""
    lat, lon = np.sort(np.asarray(lat, dtype="float64")), np.sort(np.asarray(lon, dtype="float64") % 360)
    if len(lon) < 2 or len(lat) < 2:
        return False
    lon_step, lat_step = float(np.median(np.diff(lon))), float(np.median(np.diff(lat)))
    return bool(lon[-1] - lon[0] + lon_step >= 360 - 1e-6 and lat[-1] - lat[0] + lat_step >= 170)


def whole_grid_region(lat, lon) -> str:
    """`global` for a global grid, else `domain`: the region every grid point belongs to."""
    return GLOBAL if is_global(lat, lon) else DOMAIN


def describe_grid(lat, lon) -> str:
    """`domain: 50.25..58°N, 350..359.75°E (32x40 points)`: what a whole-grid region covers."""
    lat, lon = np.asarray(lat, dtype="float64"), np.asarray(lon, dtype="float64")
    east = (lon + 180) % 360 - 180  # -180..180, as a box is named, unless the grid crosses 180°
    east = east if np.all(np.diff(east) > 0) else lon % 360

    def deg(x: float, pos: str, neg: str) -> str:
        return f"{abs(x):g}°{pos if x >= 0 else neg}"
    return (f"{whole_grid_region(lat, lon)}: {deg(lat.min(), 'N', 'S')}..{deg(lat.max(), 'N', 'S')}, "
            f"{deg(east[0], 'E', 'W')}..{deg(east[-1], 'E', 'W')} ({len(lat)}x{len(lon)} points)")


def region_mask(name: str, lat, lon, *, lsm: xr.DataArray | None = None) -> np.ndarray:
    """(lat, lon) boolean mask of region `name` (see the module docstring for names)."""
    lat, lon = np.asarray(lat, dtype="float64"), np.asarray(lon, dtype="float64")
    if name == DOMAIN:
        return np.ones((len(lat), len(lon)), dtype=bool)
    if name == GLOBAL and not is_global(lat, lon):
        raise DataError(f"region 'global' asked of a regional grid ({describe_grid(lat, lon)}); its scores "
                        "are of that box, not the globe: use region 'domain'")
    if name in _LATITUDE_BANDS:
        lo, hi = _LATITUDE_BANDS[name]
        return np.broadcast_to(((lat >= lo) & (lat <= hi))[:, None], (len(lat), len(lon))).copy()
    if name == "extra-tropics":
        return np.broadcast_to((np.abs(lat) > 20)[:, None], (len(lat), len(lon))).copy()
    if name in BOXES:
        return BOXES[name].mask(lat, lon)
    if name.startswith("box:"):
        return _parse_box(name).mask(lat, lon)
    kind = name.split(":", 1)[0]
    if kind in ("land", "sea", "coastal", "coastal-land"):
        if lsm is None:
            raise DataError(f"region '{name}' needs a land-sea mask: give lsm= or an 'lsm' variable in the truth")
        land = land_mask(lsm, lat, lon)
        if kind == "land":
            return land
        if kind == "sea":
            return ~land
        width, unit = _coastal_band(name)
        near = (distance_to_other_kind_km(land, lat, lon) <= width) if unit == "km" else _within_cells(land, width)
        return near & (land if kind == "coastal-land" else ~land)
    raise DataError(f"unknown region '{name}'; expected one of {', '.join(region_names())}, "
                    "box:NAME:S,N,W,E, coastal:CELLS or coastal:KMkm")


def region_names() -> list[str]:
    return [*_LATITUDE_BANDS, DOMAIN, "extra-tropics", *BOXES, "land", "sea", "coastal", "coastal-land"]


def region_masks(names: Iterable[str], lat, lon, *, lsm: xr.DataArray | None = None) -> xr.DataArray:
    """0/1 masks (region, latitude, longitude) of `names`, for the metrics' `regions=`."""
    names = list(dict.fromkeys(names))
    if not names:
        raise DataError("no region given")
    masks = np.stack([region_mask(n, lat, lon, lsm=lsm) for n in names]).astype("float64")
    return xr.DataArray(masks, dims=("region", LAT, LON),
                        coords={"region": names, LAT: np.asarray(lat), LON: np.asarray(lon)})


def sea_from_data(field: xr.DataArray, time_dims: Iterable[str] = ("time",)) -> xr.DataArray:
    """A land-sea mask for NaN-over-land fields (waves): land where the field is never finite."""
    dims = [d for d in time_dims if d in field.dims]
    other = [d for d in field.dims if d not in (*dims, LAT, LON)]
    finite = np.isfinite(field)
    if dims or other:
        finite = finite.any([*dims, *other])
    return xr.DataArray((~finite).astype("float64").transpose(LAT, LON).values, dims=(LAT, LON),
                        coords={LAT: field[LAT].values, LON: field[LON].values}, name="lsm")
