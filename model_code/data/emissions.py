"""User emission inventories as the air-pollution model's emission statics, or as new static inputs.

The air-pollution variant reads eight emission statics (`static_<species>` and `static_<species>_log`
for ammonia, CO, NOx and SO2) whose scaling in Aurora's own static file is not published. An
inventory (the training config's `data.emissions`: a NetCDF or GRIB flux map on any regular grid)
is read with the project's readers, converted to kg m-2 s-1 (`ACCEPTED_UNITS`), checked (it must
cover the data's domain, with no NaN or negative flux there) and remapped conservatively onto the
data's grid, so each cell keeps the mean flux of the area it covers. Then either

- `species`: `static_<species>` is the flux divided by its area-weighted mean over the domain (of
  order one, mean 1), and `static_<species>_log` is log(1 + that / 1e-3), the transform Aurora
  applies to its pollutants (`aurora.normalisation.log_transform`); or
- `name`: a new static input of the model (`EmissionStaticInputs`), the flux in kg m-2 s-1
  normalised by its own area-weighted mean and standard deviation over the domain.

The divisor, or the location and scale, are fixed once, from the training domain, and recorded in
every checkpoint (`MappedInventory`), with the inventory's path: a forecast reads the inventory
again from that path and maps it with the same numbers, so the same flux is the same input.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Mapping, Sequence

import numpy as np
import xarray as xr

from model_code.data.canonical import canonicalise
from model_code.data.grid import _fallback_step, cell_areas, cell_edges, regrid_to_grid, wraps_in_longitude
from model_code.data.lags import _default
from model_code.data.preprocess.normalisation import _location_scale
from model_code.data.readers import open_datasets
from model_code.errors import DataError
from model_code.storage import is_s3, local_copy
from model_code.variables import variable

if TYPE_CHECKING:
    import torch
    from aurora import Aurora, Batch

__all__ = ["ACCEPTED_UNITS", "EmissionInventory", "EmissionStaticInputs", "InventoryStatics", "MappedInventory",
           "emission_class", "flux_factor", "flux_units", "mapped_of", "model_overrides", "onto_grid", "read_flux",
           "read_inventories", "records", "split_new_statics", "with_new_statics"]

Species = Literal["ammonia", "co", "nox", "so2"]

MOLAR_MASS = {"ammonia": 17.031, "co": 28.010, "nox": 46.0055, "so2": 64.066}
"""g mol-1 of each species, for inventories in mol or molecules; NOx counted as NO2, as inventories report it."""

LOG_EPS = 1e-3
"""The floor of the `_log` statics: `aurora.normalisation.log_transform`'s, which the synthetic fill uses too."""

YEAR_S = 365.25 * 86400.0
AVOGADRO = 6.02214076e23
KG_FLUX = "kg m-2 s-1"

_AMOUNT = {"kg": 1.0, "g": 1e-3, "mol": None, "molec": None, "molecules": None}
"""kg per unit of amount; None: through the molar mass (mol, molecules)."""
_AREA = {"m": 1.0, "cm": 1e4}
"""How many of this unit squared make a m2 (a flux per cm2 is 1e4 times one per m2)."""
_TIME = {"s": 1.0, "d": 86400.0, "day": 86400.0, "yr": YEAR_S, "year": YEAR_S, "a": YEAR_S}
_SPELLINGS = (
    re.compile(r"^(?P<amount>[a-z]+)[ .](?P<area>c?m)-2[ .](?P<time>[a-z]+)-1$"),  # kg m-2 s-1, kg.m-2.s-1
    re.compile(r"^(?P<amount>[a-z]+) ?/ ?(?P<area>c?m)2 ?/ ?(?P<time>[a-z]+)$"),  # kg/m2/s
)
ACCEPTED_UNITS = ("an amount (kg, g, mol, molecules) per area (m-2, cm-2) per time (s-1, d-1, yr-1; a year is "
                  "365.25 d), spelled e.g. 'kg m-2 s-1', 'kg m**-2 s**-1', 'kg m^-2 s^-1', 'kg.m-2.s-1' or "
                  "'kg/m2/s'; mol and molecules need a molar mass")

MARK = "emission_inventory"
"""Attribute of a window variable that is a new static input from an inventory (`with_new_statics`)."""


@dataclasses.dataclass(frozen=True)
class EmissionInventory:
    """One emission inventory (YAML: an item of `data.emissions`): a flux map on any regular grid,
    mapped onto one of the variant's emission species or added as a new static input."""

    path: str = ""
    """NetCDF or GRIB file (local path or s3://)."""
    variable: str = ""
    """The flux variable's name in the file (for GRIB, cfgrib's short name, e.g. `noxfire`)."""
    species: Species | None = None
    """`ammonia`, `co`, `nox` or `so2`: fill `static_<species>` and `static_<species>_log`."""
    name: str | None = None
    """... or a new static input of the model with this name (give one of species and name)."""
    units: str | None = None
    """The flux's units when the file's `units` attribute is missing or wrong."""
    molar_mass: float | None = None
    """g mol-1, for units in mol or molecules; default the species' own (`MOLAR_MASS`)."""

    @property
    def inputs(self) -> tuple[str, ...]:
        """The model inputs it fills (dataset names)."""
        if self.species is not None:
            return f"static_{self.species}", f"static_{self.species}_log"
        return (str(self.name),)

    @property
    def label(self) -> str:
        return f"{self.path} ({self.variable})"


@dataclasses.dataclass(frozen=True)
class MappedInventory:
    """An inventory with the numbers that turn its flux into the model's input, fixed on the
    training domain; checkpoints record it (`record`), so forecasts map the flux the same way."""

    inventory: EmissionInventory
    location: float
    """kg m-2 s-1 subtracted: 0 for a species, the normalisation location of a new static."""
    scale: float
    """kg m-2 s-1 per unit of input: the species' mean flux, or the new static's normalisation scale."""

    def record(self) -> dict[str, Any]:
        """Plain data, the local path made absolute, so a forecast run elsewhere finds the file."""
        inv = self.inventory
        path = inv.path if is_s3(inv.path) else str(Path(inv.path).expanduser().resolve())
        return {**dataclasses.asdict(inv), "path": path, "location": self.location, "scale": self.scale}

    @classmethod
    def of(cls, record: Mapping[str, Any]) -> MappedInventory:
        own = {f.name for f in dataclasses.fields(EmissionInventory)}
        return cls(EmissionInventory(**{k: v for k, v in record.items() if k in own}),
                   float(record["location"]), float(record["scale"]))


def records(mapped: Sequence[MappedInventory]) -> str:
    """The JSON a checkpoint's metadata holds under `emissions`."""
    return json.dumps([m.record() for m in mapped], sort_keys=True)


def mapped_of(text: str | None) -> tuple[MappedInventory, ...]:
    """The inventories a checkpoint's `emissions` metadata records (none for other checkpoints)."""
    return tuple(MappedInventory.of(r) for r in json.loads(text or "[]"))


# ---- units ------------------------------------------------------------------------------------------


def flux_units(units: str) -> tuple[str, str, str] | None:
    """(amount, area, time) of an emission-flux unit spelling, None when it is not one (`ACCEPTED_UNITS`)."""
    spelled = " ".join(units.strip().lower().replace("**", "").replace("^", "").split())
    for pattern in _SPELLINGS:
        if (m := pattern.match(spelled)) and m["amount"] in _AMOUNT and m["time"] in _TIME:
            return m["amount"], m["area"], m["time"]
    return None


def flux_factor(units: str | None, molar_mass: float | None, *, name: str, source: str) -> float:
    """kg m-2 s-1 per one of `units`; `molar_mass` (g mol-1) for amounts in mol or molecules."""
    if units is None or not str(units).strip():
        raise DataError(f"'{name}' has no units attribute; give its units in data.emissions[].units "
                        f"(accepted: {ACCEPTED_UNITS})", source=source)
    parsed = flux_units(str(units))
    if parsed is None:
        raise DataError(f"'{name}' has units '{units}', not an emission flux; accepted: {ACCEPTED_UNITS} "
                        "(set data.emissions[].units when the file's attribute is wrong)", source=source)
    amount, area, time = parsed
    kg = _AMOUNT[amount]
    if kg is None:
        if molar_mass is None:
            raise DataError(f"'{name}' has units '{units}': an amount in {amount} needs the molar mass "
                            "(data.emissions[].molar_mass, g mol-1)", source=source)
        kg = molar_mass * 1e-3 / (AVOGADRO if amount.startswith("molec") else 1.0)
    return kg * _AREA[area] / _TIME[time]


# ---- reading and remapping --------------------------------------------------------------------------


def read_flux(inv: EmissionInventory) -> tuple[xr.DataArray, list[str]]:
    """The inventory's flux in kg m-2 s-1 on its own grid in the project's coordinates (latitudes
    north to south, longitudes in [0, 360)), one map: a time axis is averaged, each time alike. With
    what was done to it."""
    with local_copy(inv.path) as path:
        datasets = open_datasets(Path(path), name=inv.path)
        holding = [ds for ds in datasets if inv.variable in ds.data_vars]
        if not holding:
            names = sorted({str(k) for ds in datasets for k in ds.data_vars})
            raise DataError(f"no variable '{inv.variable}'; it holds {', '.join(names) or 'none'}", source=inv.path)
        ds, findings = canonicalise(holding[0][[inv.variable]], inv.path)
        da = ds[inv.variable]
        extra = [d for d in da.dims if d not in ("time", "latitude", "longitude")]
        if extra:
            raise DataError(f"'{inv.variable}' has dims {da.dims}; a flux map has (latitude, longitude) and "
                            "at most a time axis (sum or pick its sectors or levels first)", source=inv.path)
        notes = [f.message for f in findings]
        if "time" in da.dims and da.sizes["time"] > 1:
            notes.append(f"the mean of its {da.sizes['time']} times")
        da = da.mean("time", skipna=False) if "time" in da.dims else da
        units = inv.units if inv.units is not None else da.attrs.get("units")
        molar_mass = inv.molar_mass if inv.molar_mass is not None else MOLAR_MASS.get(str(inv.species))
        factor = flux_factor(units, molar_mass, name=inv.variable, source=inv.path)
        values = da.transpose("latitude", "longitude").values.astype("float64") * factor
    if factor != 1.0:
        notes.append(f"converted from '{units}' to {KG_FLUX}")
    flux = xr.DataArray(values, dims=("latitude", "longitude"), name=inv.variable, attrs={"units": KG_FLUX},
                        coords={"latitude": da.latitude.values, "longitude": da.longitude.values})
    return flux, notes


def _extent(edges: np.ndarray) -> tuple[float, float]:
    return float(np.min(edges)), float(np.max(edges))


def _runs(axis: np.ndarray, outside: np.ndarray) -> str:
    """The stretches of `axis` where `outside` holds, e.g. `90 to 80, 10 to -90`."""
    breaks = np.flatnonzero(np.diff(np.concatenate([[0], outside.astype(int), [0]])))
    return ", ".join(f"{axis[a]:g}" if b - a == 1 else f"{axis[a]:g} to {axis[b - 1]:g}"
                     for a, b in zip(breaks[::2], breaks[1::2]))


def onto_grid(flux: xr.DataArray, lat: np.ndarray, lon: np.ndarray, *, source: str) -> np.ndarray:
    """(H, W) float64 `flux` remapped conservatively onto the grid (`lat`, `lon`).

    Every cell centre of the grid must lie within the inventory's cells; a cell only partly
    covered (at the inventory's edge) takes the mean of its covered part. The inventory's cells
    that overlap the grid's must be finite and non-negative.
    """
    lat, lon = np.asarray(lat, "float64"), np.asarray(lon, "float64")
    src_lat, src_lon = flux.latitude.values.astype("float64"), flux.longitude.values.astype("float64")
    name, tol = flux.name, 1e-6
    lat_e = cell_edges(src_lat, clip=90.0, step=_fallback_step(src_lat, src_lon))
    lon_e = cell_edges(src_lon, periodic=wraps_in_longitude(src_lon), step=_fallback_step(src_lon, src_lat))
    (south, north), (west, east) = _extent(lat_e), _extent(lon_e)
    out_lat = (lat < south - tol) | (lat > north + tol)
    out_lon = np.zeros(len(lon), bool) if wraps_in_longitude(src_lon) else (lon < west - tol) | (lon > east + tol)
    if out_lat.any() or out_lon.any():
        uncovered = [f"{what} {_runs(axis, out)}" for what, axis, out in
                     (("latitudes", lat, out_lat), ("longitudes", lon, out_lon)) if out.any()]
        raise DataError(
            f"'{name}' covers latitudes {north:g} to {south:g} and longitudes {west:g} to {east:g}, not the data's "
            f"domain (latitudes {lat[0]:g} to {lat[-1]:g}, longitudes {lon[0]:g} to {lon[-1]:g}): the grid's "
            f"cells at {' and at '.join(uncovered)} lie outside it", source=source)

    dst_lat_e = cell_edges(lat, clip=90.0, step=_fallback_step(lat, lon))
    dst_lon_e = cell_edges(lon, periodic=wraps_in_longitude(lon), step=_fallback_step(lon, lat))
    (d_south, d_north), (d_west, d_east) = _extent(dst_lat_e), _extent(dst_lon_e)
    rows = (np.maximum(lat_e[:-1], lat_e[1:]) > d_south + tol) & (np.minimum(lat_e[:-1], lat_e[1:]) < d_north - tol)
    cols = np.ones(len(src_lon), bool) if wraps_in_longitude(src_lon) else (
        (lon_e[1:] > d_west + tol) & (lon_e[:-1] < d_east - tol))
    used = flux.isel(latitude=np.flatnonzero(rows), longitude=np.flatnonzero(cols))
    for bad, what in ((~np.isfinite(used.values), "NaN or infinite"), (used.values < 0, "negative")):
        if bad.any():
            i, j = np.unravel_index(int(np.argmax(bad)), bad.shape)
            raise DataError(
                f"'{name}' has {int(bad.sum())} {what} flux value(s) over the data's domain, first at latitude "
                f"{float(used.latitude[i]):g}, longitude {float(used.longitude[j]):g}; an emission flux is a finite "
                "number >= 0 (write 0 where nothing is emitted)", source=source)
    step = _fallback_step(lat, lon) or _fallback_step(lon, lat)
    return regrid_to_grid(used, lat, lon, method="conservative", step=step).values.astype("float64")


# ---- the model's inputs -----------------------------------------------------------------------------


def _mapping(inv: EmissionInventory, values: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> MappedInventory:
    """The numbers that map `values` (the flux over the training domain) onto the model's input."""
    areas = cell_areas(lat, lon)
    if inv.species is not None:
        mean = float(np.sum(areas * values) / np.sum(areas))
        if not mean > 0:
            raise DataError(f"'{inv.variable}' emits nothing over the data's domain: {inv.inputs[0]} is the flux "
                            "divided by its mean there", source=inv.path)
        return MappedInventory(inv, 0.0, mean)
    stats = _location_scale(values.ravel(), areas.ravel(), "none")  # mean and standard deviation
    if "constant" in stats.estimator:
        raise DataError(f"'{inv.variable}' is {stats.location:g} {KG_FLUX} all over the data's domain: a constant "
                        f"input tells the model nothing", source=inv.path)
    return MappedInventory(inv, stats.location, stats.scale)


def _inputs(m: MappedInventory, values: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> dict[str, xr.DataArray]:
    inv = m.inventory
    coords = {"latitude": lat, "longitude": lon}
    if inv.species is None:
        attrs = {"units": KG_FLUX, "long_name": f"Emission flux from {inv.label}", MARK: inv.label}
        return {inv.name: xr.DataArray(values.astype("float32"), dims=("latitude", "longitude"), coords=coords,
                                       name=inv.name, attrs=attrs)}
    scaled = values / m.scale
    out = {}
    for key, field in zip(inv.inputs, (scaled, np.log1p(scaled / LOG_EPS))):
        out[key] = xr.DataArray(field.astype("float32"), dims=("latitude", "longitude"), coords=coords, name=key,
                                attrs={"units": "1", "long_name": variable("static", key).long_name,
                                       "source": inv.label})
    return out


@dataclasses.dataclass(frozen=True)
class InventoryStatics:
    """What inventories give on one grid."""

    species: dict[str, xr.DataArray]
    """`static_<species>` and `static_<species>_log` by dataset name; attribute `source`: the inventory."""
    new_inputs: dict[str, xr.DataArray]
    """The new static inputs by name, in kg m-2 s-1 (`with_new_statics` adds them to windows)."""
    mapped: tuple[MappedInventory, ...]
    notes: tuple[str, ...]
    """What was done to each inventory, for the provenance."""


def model_overrides(mapped: Sequence[MappedInventory]) -> dict[str, dict[str, list[float]]]:
    """The constructor argument that builds the model taking the new static inputs (`emission_class`);
    {} when there are none."""
    new = {m.inventory.name: [m.location, m.scale] for m in mapped if m.inventory.species is None}
    return {"emission_statics": new} if new else {}


def read_inventories(inventories: Sequence[EmissionInventory | MappedInventory], lat: np.ndarray, lon: np.ndarray,
                     *, field: str | None = None) -> InventoryStatics:
    """The model inputs `inventories` give on the grid (`lat`, `lon`), the grid samples and windows
    take. `MappedInventory`s keep their recorded numbers (a forecast); plain ones get theirs from
    this grid (training). `field` (e.g. `data.emissions`) prefixes errors with the config item at fault."""
    lat, lon = np.asarray(lat, "float64"), np.asarray(lon, "float64")
    species, new, mapped, notes = {}, {}, [], []
    for i, item in enumerate(inventories):
        inv = item.inventory if isinstance(item, MappedInventory) else item
        try:
            flux, done = read_flux(inv)
            values = onto_grid(flux, lat, lon, source=inv.path)
            m = item if isinstance(item, MappedInventory) else _mapping(inv, values, lat, lon)
        except DataError as e:
            if field is None:
                raise
            raise DataError(f"{field}[{i}]: {e.message}", source=e.source, problems=e.problems) from None
        mapped.append(m)
        how = (f"{inv.inputs[0]} = flux / {m.scale:.6g} {KG_FLUX} and {inv.inputs[1]} = log(1 + {inv.inputs[0]} / "
               f"{LOG_EPS:g}), in place of any the input files hold" if inv.species else
               f"new static input {inv.name}, normalised by ({m.location:.6g}, {m.scale:.6g}) {KG_FLUX}")
        notes.append(f"emission inventory {inv.label}: {'; '.join([*done, 'remapped conservatively', how])}")
        (species if inv.species else new).update(_inputs(m, values, lat, lon))
    return InventoryStatics(species, new, tuple(mapped), tuple(notes))


def with_new_statics(window: xr.Dataset, statics: Mapping[str, xr.DataArray]) -> xr.Dataset:
    """`window` with the new static inputs, on its grid: the inventories' grid, or its first rows
    and columns where the window was cropped to the patch size."""
    lat, lon = window.latitude.values, window.longitude.values
    added = {}
    for key, da in statics.items():
        own_lat, own_lon = da.latitude.values, da.longitude.values
        if not (np.allclose(own_lat[:len(lat)], lat) and np.allclose(own_lon[:len(lon)], lon)):
            raise DataError(f"the new static input '{key}' is not on the window's grid")
        added[key] = xr.Variable(("latitude", "longitude"), da.values[:len(lat), :len(lon)], dict(da.attrs))
    return window.assign(added)


def split_new_statics(window: xr.Dataset) -> tuple[xr.Dataset, dict[str, np.ndarray]]:
    """The window without its new static inputs (`with_new_statics`), and those as `{name: (h, w) values}`."""
    keys = [k for k in window.data_vars if MARK in window[k].attrs]
    problems = []
    for key in keys:
        da = window[key]
        if da.dims != ("latitude", "longitude"):
            problems.append(f"'{key}' has dims {da.dims}; a static input needs ('latitude', 'longitude')")
        elif not np.isfinite(da.values).all():
            problems.append(f"'{key}' has {int((~np.isfinite(da.values)).sum())} non-finite value(s)")
    if problems:
        raise DataError(f"the window's new static inputs cannot be used ({len(problems)} problem(s))",
                        problems=problems)
    return window.drop_vars(keys), {str(k): window[k].values for k in keys}


# ---- the model ----------------------------------------------------------------------------------------


class EmissionStaticInputs:
    """Mixed into a variant's Aurora class by `emission_class`: the model takes new static inputs
    from emission inventories, normalised with their own (location, scale) through Aurora's
    `surf_stats`, as Aurora normalises its statics. Published weights load with their embeddings
    at zero: the model starts out forecasting as the published one."""

    def __init__(self, *, emission_statics: Mapping[str, Sequence[float]], **kw_args: Any) -> None:
        new = {str(k): (float(v[0]), float(v[1])) for k, v in emission_statics.items()}
        own = tuple(kw_args.pop("static_vars", None) or _default(type(self), "static_vars"))
        given = dict(kw_args.pop("surf_stats", None) or {})
        with warnings.catch_warnings():
            if not given:  # Aurora warns of given statistics; these are the inventories' own
                warnings.filterwarnings("ignore", "The normalisation statics", UserWarning)
            super().__init__(static_vars=own + tuple(new), surf_stats={**given, **new}, **kw_args)
        self.emission_statics = new

    def batch_transform_hook(self, batch: Batch) -> Batch:
        missing = [name for name in self.emission_statics if name not in batch.static_vars]
        if missing:
            raise DataError(f"the model takes static inputs from emission inventories that the batch lacks: "
                            f"{', '.join(missing)} (a forecast reads them from the checkpoint's recorded inventories)")
        return super().batch_transform_hook(batch)

    def _adapt_checkpoint(self, d: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        import torch

        d = super()._adapt_checkpoint(d)
        ends = tuple(f".weights.{prefix}{name}" for name in self.emission_statics for prefix in ("", "static_"))
        for key, value in self.state_dict().items():
            if key not in d and key.endswith(ends):
                d[key] = torch.zeros_like(value)
        return d


@functools.cache
def emission_class(cls: type[Aurora]) -> type[Aurora]:
    """`cls` taking new static inputs too: the class `variants.build_model` builds given `emission_statics`."""
    return type(f"Emission{cls.__name__}", (EmissionStaticInputs, cls), {"__module__": __name__})
