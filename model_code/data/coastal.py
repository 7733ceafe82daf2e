"""The wave model's coastal and shallow-water inputs: derived from its own data, and the model that takes them.

Off by default (the training config's `model_inputs`), so the published architecture stays as
it is. Turned on, `CoastalAuroraWave` derives from every batch it is given:

- ``coast`` (static, 0/1): the coastline, the sea cells with land among their eight
  neighbours, found by `near`, the one neighbourhood the loss's coastal band uses too
  (`loss_terms.coastal_factor`);
- ``coast_distance`` (static, km): great-circle distance from a sea cell's centre to the
  nearest coastline cell's centre (nearest neighbours on the sphere,
  `regions.distance_to_other_kind_km`), 0 on the coastline and on land. Exact between cell
  centres (no flat-earth or per-row scaling); as the coastline cells are the sea next to
  land, it is within about a cell of the distance to the true shore. About 5 s for a global
  0.25° grid on one core, once per grid;
- ``shallow_water`` (1, at every input time): `shallow_water_index` of the wave model's
  wind and depth.

Sea is where the wave model's bathymetry `wmb` is above 0, the cells where AuroraWave gives
waves. Derived inside the model, they reach it alike from training, forecasts and the
server, from inputs those already send; the data need only hold a real `wmb`, which
`check_depth` makes sure of before any model is built.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
import xarray as xr
from aurora import AuroraWave, Batch
from aurora.normalisation import unnormalise_surf_var

from model_code.data.grid import wraps_in_longitude
from model_code.errors import DataError
from model_code.evaluation.regions import EARTH_RADIUS_KM, describe_grid, distance_to_other_kind_km
from model_code.variables import G0

__all__ = [
    "COAST",
    "COAST_DISTANCE",
    "SHALLOW_WATER",
    "CoastalAuroraWave",
    "check_depth",
    "coastal_fields",
    "coastline",
    "distance_to_coast_km",
    "near",
    "sea_of",
    "shallow_water_index",
]

COAST, COAST_DISTANCE, SHALLOW_WATER = "coast", "coast_distance", "shallow_water"

NORMALISATION: dict[str, tuple[float, float]] = {
    COAST: (0.0, 1.0),
    COAST_DISTANCE: (0.0, 1000.0),
    SHALLOW_WATER: (0.0, 1.0),
}
"""(location, scale) of each derived input, fixed rather than taken from the data: the 0/1
and 0..1 fields as Aurora scales its `lsm` and `lat_mask` (0, 1); distances in thousands of
km, so the open ocean spans 0 to ~3 (Point Nemo lies ~2,700 km from land), or to ~5 on a 1°
grid, where the small islands of the South Pacific vanish."""

MAX_DISTANCE_KM = float(np.pi * EARTH_RADIUS_KM)
"""Half the Earth's circumference (~20,000 km), farther than any two points on the sphere: no
distance reaches it, and a grid with no coastline at all (a crop of open ocean) gets it
everywhere instead of infinity."""

PEAK_SPEED_RATIO = 1.2
"""Phase speed of the spectral peak of a fully developed wind sea over the 10 m wind speed
(Pierson and Moskowitz 1964: c_p = 1.14 U at 19.5 m, about 1.2 U at 10 m)."""

CALM_WIND = 1.0
"""Wind speed (m s-1) below which the wind raises no sea worth the name; calmer air counts as this."""

_SEA = {"wmb": lambda x: x > 0, "lsm": lambda x: x < 0.5}
"""Sea from each field it can come from (NaN is land: `>` and `<` are False on NaN)."""

_WAVE_STATICS: tuple[str, ...] = inspect.signature(AuroraWave.__init__).parameters["static_vars"].default


def near(mask: torch.Tensor, cells: int, *, wrap: bool = True) -> torch.Tensor:
    """Cells of a (..., h, w) boolean `mask` within `cells` grid steps of a True cell, diagonals
    included (a square of 2 cells + 1 a side); longitude wraps when `wrap`, latitude never does."""
    *lead, h, w = mask.shape
    x = mask.to(torch.float32).reshape(-1, 1, h, w)
    x = F.pad(x, (cells, cells, 0, 0), mode="circular" if wrap else "constant")
    x = F.pad(x, (0, 0, cells, cells))
    return F.max_pool2d(x, kernel_size=2 * cells + 1, stride=1).reshape(*lead, h, w) > 0


def coastline(sea: np.ndarray, lon) -> np.ndarray:
    """(h, w) bool: the sea cells with land among their eight neighbours (longitude wraps on a
    grid that goes all the way round)."""
    sea = np.asarray(sea, dtype=bool)
    land = torch.from_numpy(~sea)
    return sea & near(land, 1, wrap=wraps_in_longitude(lon)).numpy()


def distance_to_coast_km(sea: np.ndarray, lat, lon) -> np.ndarray:
    """(h, w) float32 great-circle km from each sea cell to the nearest coastline cell; 0 on the
    coastline and on land, at most `MAX_DISTANCE_KM`."""
    sea = np.asarray(sea, dtype=bool)
    coast = coastline(sea, lon)
    km = distance_to_other_kind_km(coast, np.asarray(lat, dtype="float64"), np.asarray(lon, dtype="float64"))
    return np.where(coast | ~sea, 0.0, np.minimum(km, MAX_DISTANCE_KM)).astype(np.float32)


def sea_of(field: xr.DataArray, lat, lon) -> np.ndarray:
    """(h, w) bool sea from a field named `wmb` (sea where the depth is above 0) or `lsm` (land
    fraction below 0.5; `regions.sea_from_data` makes one of the NaN-over-land pattern of wave
    fields), which must lie on the data's grid (`lat`, `lon`)."""
    name = field.name
    if name not in _SEA:
        raise DataError(f"{name}: the sea is taken from the wave model's bathymetry 'wmb' or a land-sea mask "
                        f"'lsm'; got a field named {name!r}")
    da = field.squeeze(drop=True)
    if set(da.dims) != {"latitude", "longitude"}:
        raise DataError(f"{name}: expected dims (latitude, longitude); got {field.dims}")
    lat, lon = np.asarray(lat, dtype="float64"), np.asarray(lon, dtype="float64")
    own_lat, own_lon = da.latitude.values.astype("float64"), da.longitude.values.astype("float64")
    if own_lat.shape != lat.shape or own_lon.shape != lon.shape or not (
            np.allclose(own_lat, lat, atol=1e-6) and np.allclose(own_lon % 360, lon % 360, atol=1e-6)):
        raise DataError(f"{name}: on the grid {describe_grid(own_lat, own_lon)}, not the data's "
                        f"{describe_grid(lat, lon)}; regrid it to the data's grid first")
    return _SEA[name](da.transpose("latitude", "longitude").values)


def coastal_fields(field: xr.DataArray, lat, lon) -> xr.Dataset:
    """`coast` (0/1) and `coast_distance` (km) on the data's grid, from its `wmb` or `lsm` (`sea_of`)."""
    sea = sea_of(field, lat, lon)
    coords = {"latitude": np.asarray(lat), "longitude": np.asarray(lon)}
    dims = ("latitude", "longitude")
    return xr.Dataset({
        COAST: (dims, coastline(sea, lon).astype(np.float32),
                {"units": "1", "long_name": "Coastline (sea cells next to land)"}),
        COAST_DISTANCE: (dims, distance_to_coast_km(sea, lat, lon),
                         {"units": "km", "long_name": "Great-circle distance to the coastline"}),
    }, coords=coords)


def check_depth(wmb: xr.DataArray | None, lat, lon, *, asked: Sequence[str], filled: str | None = None) -> None:
    """Refuse, before any model is built, data the `asked` inputs (`coastal`, `shallow_water`)
    cannot be derived from: the wave model's bathymetry must come from the data (`filled`, its
    fill mode, invents the coast and the depth), lie on the data's grid and hold some sea."""
    what = (" and ".join(f"model_inputs.{name}" for name in asked)
            + f" {'is' if len(asked) == 1 else 'are'} derived from the wave model's bathymetry wmb")
    if wmb is None or filled is not None:
        lack = "the data lack it" + ("" if filled is None else f" (it would be filled: {filled}, "
                                                                "which invents the coast and the depth)")
        raise DataError(f"wmb: {what}, and {lack}; add a file holding wmb")
    if not sea_of(wmb.rename("wmb"), lat, lon).any():
        raise DataError(f"wmb: {what}, and it is 0 (land) everywhere: there is no sea to take a coast or a depth from")


def shallow_water_index(wind: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
    """tanh(k_p d) of the wind speed `wind` (m s-1) and the depth `depth` (m): 1 in deep water, 0 on land.

    k_p = g / (1.2 U10)² is the deep-water wavenumber of the peak of the fully developed sea
    that the wind raises (`PEAK_SPEED_RATIO`), the longest waves it makes; tanh(k d) is the
    depth factor of linear wave dispersion, ω² = g k tanh(k d): near 1 where the water is
    deeper than about half a wavelength and waves do not feel the bottom, near k d where they
    do, and shoal, refract and break. Neither wind nor depth alone says where the depth limits
    the sea the wind would raise; this does. A fetch-limited sea is shorter, so for it the
    index is a lower bound. Wind slower than `CALM_WIND`, or NaN (no wave-model wind: land,
    sea ice), counts as `CALM_WIND`.
    """
    u = torch.nan_to_num(wind, nan=0.0).clamp_min(CALM_WIND)
    k = G0 / (PEAK_SPEED_RATIO * u) ** 2  # rad m-1
    return torch.tanh(k * torch.nan_to_num(depth, nan=0.0).clamp_min(0.0))


def _normalised(name: str, x):
    location, scale = NORMALISATION[name]
    return (x - location) / scale


class CoastalAuroraWave(AuroraWave):
    """AuroraWave that also takes this module's inputs, derived from each batch it is given.

    `coastal_inputs` adds the statics `coast` and `coast_distance`; `shallow_water_input` adds
    `shallow_water` at every input time. They join the encoder's inputs once the batch is
    normalised (`_pre_encoder_hook`), with the statics, which Aurora's encoder embeds exactly
    as it embeds surface fields; the decoder never sees them, so nothing derived is predicted,
    and the wave directions (sine and cosine) and density channels stay AuroraWave's own.
    Published weights load with the new embeddings at zero (`_adapt_checkpoint`): the model
    starts out forecasting exactly as the published one.
    """

    def __init__(self, *, coastal_inputs: bool = False, shallow_water_input: bool = False,
                 static_vars: tuple[str, ...] = _WAVE_STATICS, **kw_args) -> None:
        derived = (COAST, COAST_DISTANCE) if coastal_inputs else ()
        derived += (SHALLOW_WATER,) if shallow_water_input else ()
        super().__init__(static_vars=tuple(static_vars) + derived, **kw_args)
        self.coastal_inputs, self.shallow_water_input = coastal_inputs, shallow_water_input
        self.derived_inputs = derived
        self._coast: tuple[bytes, dict[str, np.ndarray]] | None = None  # the last grid's, derived once

    def _pre_encoder_hook(self, batch: Batch) -> Batch:
        shallow = self._shallow_water(batch) if self.shallow_water_input else None  # before the wind's NaN go
        batch = super()._pre_encoder_hook(batch)
        derived = self._coastal(batch) if self.coastal_inputs else {}
        if shallow is not None:
            derived[SHALLOW_WATER] = shallow
        # A new batch: the decoder and the prediction read the one given, so nothing derived is predicted.
        return dataclasses.replace(batch, static_vars={**batch.static_vars, **derived})

    def _shallow_water(self, batch: Batch) -> torch.Tensor:
        wind = unnormalise_surf_var(batch.surf_vars["wind"], "wind", stats=self.surf_stats)  # (b, t, h, w) m s-1
        depth = unnormalise_surf_var(batch.static_vars["wmb"], "wmb", stats=self.surf_stats)  # (b, t, h, w) m
        return _normalised(SHALLOW_WATER, shallow_water_index(wind, depth))

    def _coastal(self, batch: Batch) -> dict[str, torch.Tensor]:
        """`coast` and `coast_distance` of the batch's grid and sea, computed again only when they change."""
        like = batch.static_vars["wmb"]  # (b, t, h, w), normalised
        sea = (unnormalise_surf_var(like[0, 0], "wmb", stats=self.surf_stats) > 0).cpu().numpy()
        lat, lon = (np.asarray(c.detach().cpu(), dtype="float64") for c in (batch.metadata.lat, batch.metadata.lon))
        key = hashlib.sha1(b"".join(a.tobytes() for a in (lat, lon, sea))).digest()
        if self._coast is None or self._coast[0] != key:
            fields = {COAST: coastline(sea, lon).astype(np.float32),
                      COAST_DISTANCE: distance_to_coast_km(sea, lat, lon)}
            self._coast = key, {k: _normalised(k, v) for k, v in fields.items()}
        return {k: torch.from_numpy(v).to(like)[None, None].expand_as(like) for k, v in self._coast[1].items()}

    def _adapt_checkpoint(self, d: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Published weights know no derived input: theirs start at zero, adding nothing to the encoding."""
        d = super()._adapt_checkpoint(d)
        like = d["encoder.surf_token_embeds.weights.2t"]
        for name in self.derived_inputs:
            d.setdefault(f"encoder.surf_token_embeds.weights.{name}", torch.zeros_like(like))
        return d
