"""From files to the input window of one variant: find, convert, merge, select, fill.

`load_window(uris, spec)` is the whole path. It reads every source (local or `s3://`),
canonicalises coordinates, recognises the variables Aurora knows under their ECMWF, CF,
CAMS, WAM and WeatherBench names, converts units, derives what can be derived exactly
(geopotential from geopotential height, specific humidity from relative humidity and
temperature), and cuts the history window the variant needs. Missing variables are an
error listing them all, unless the caller asks to fill them (`FILL_MODES`), in which case
the provenance says which ones were filled.

The window is an `xarray.Dataset` keyed by dataset names (`t2m`, `z`, `z_surface`, ...)
with dims (time, [level], latitude, longitude); statics have no time dimension.
"""

from __future__ import annotations

import contextlib
import functools
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable, Iterable, Literal, Mapping, Sequence

import numpy as np
import xarray as xr

from model_code.data.canonical import canonicalise
from model_code.data.findings import Finding
from model_code.data.grid import crop_to_patch, regrid
from model_code.data.readers import open_datasets
from model_code.data.solar import insolation_field
from model_code.data.synthetic import synthetic_field
from model_code.data.units import to_canonical
from model_code.errors import DataError
from model_code.storage import local_copy
from model_code.variables import VARIABLES, Variable, find, variable
from model_code.variants import VariantSpec

FillMode = Literal["mean", "synthetic", "zeros"]
FILL_MODES = ("mean", "synthetic", "zeros")
"""How an absent variable is filled: `mean`, Aurora's normalisation location of the variable
(and level), which the model sees as 0, a field that carries no signal; `synthetic`,
physically plausible invented fields (`data.synthetic`); `zeros`, 0 in physical units (for
mean sea-level pressure that is 76 normalisation scales below its location)."""


COMPUTED = "computed"
"""How provenance starts the origin of a variable computed rather than read (insolation)."""

FILLED_WITH = {"mean": "Aurora's normalisation means", "synthetic": "synthetic values", "zeros": "zeros"}
"""How notes name what a fill mode puts in."""


def fill_values(v: Variable, mode: FillMode, lat: np.ndarray, lon: np.ndarray, times=None, levels=None, *,
                seed: int = 0, land: np.ndarray | None = None) -> np.ndarray:
    """float32 values of `v` filled as `mode` says: static (H, W), surface (T, H, W), atmos (T, L, H, W)."""
    if mode not in FILL_MODES:
        raise DataError(f"unknown fill mode '{mode}'; expected one of {FILL_MODES}")
    if mode == "synthetic":
        return synthetic_field(v, lat, lon, times, levels, seed=seed, land=land)
    sizes = {"time": len(times) if times is not None else 0, "latitude": len(lat), "longitude": len(lon),
             "level": len(levels) if levels is not None else 0}
    out = np.zeros(tuple(sizes[d] for d in _dims(v)), dtype="float32")
    if mode == "mean":
        from aurora.normalisation import level_to_str, locations

        if v.kind == "atmos":
            for k, level in enumerate(levels):
                out[:, k] = locations[f"{v.name}_{level_to_str(level)}"]
        else:
            out[...] = locations[v.name]
    return out

# Quantities that are not Aurora variables but convert exactly into one: (kind, name) ->
# (Aurora variable name, units implied when the file gives none).
_CONVERTIBLE = {
    ("atmos", "gh"): ("z", "gpm"),
    ("atmos", "geopotential_height"): ("z", "m"),
    ("static", "orog"): ("z", "m"),
}
_RELATIVE_HUMIDITY = ("r", "relative_humidity")
_SINGLE_LEVEL_TYPES_FOR_STATIC_Z = (None, "surface")

RECOGNISED_NAMES = frozenset(
    {n for v in VARIABLES for n in (v.name, v.dataset_name, *v.aliases)}
    | {name for _, name in _CONVERTIBLE}
    | set(_RELATIVE_HUMIDITY)
)
"""Every name under which a file can hold something Aurora uses."""
GRIB_LEVEL_TYPES = frozenset({
    "isobaricInhPa", "isobaricInPa",  # pressure-level (atmospheric) variables
    "surface", "heightAboveGround", "meanSea",  # 2 m / 10 m / sea-level / surface fields
    "entireAtmosphere", "atmosphere",  # total columns (CAMS GRIB2)
    "depthBelowLandLayer",  # soil type from some producers
    "atmosphereSingleLayer",  # NCEP's total columns and total cloud (pwat, tcc)
    "lowCloudLayer", "middleCloudLayer", "highCloudLayer",  # NCEP's cloud cover by layer
})
"""GRIB level types on which producers encode the variables Aurora uses."""
_CATEGORICAL = frozenset(variable("static", n) for n in ("slt", "tvh", "tvl"))
"""Code fields: regridded by nearest neighbour, and spread into Aurora 1.5's one-hot statics."""
_CLOUD_LAYERS = {"lowCloudLayer": "lcc", "middleCloudLayer": "mcc", "highCloudLayer": "hcc",
                 "boundaryLayerCloudLayer": None, "convectiveCloudLayer": None}
"""NCEP GRIB encodes every cloud cover as `tcc` and tells them apart by level type."""


@dataclass
class Field:
    """One variable from one source, lazily loaded, with the conversion still to apply."""

    var: Variable
    data: xr.DataArray
    source: str
    convert: Callable[[np.ndarray], np.ndarray] | None = None
    note: str | None = None

    @property
    def key(self) -> str:
        return self.var.dataset_name

    @functools.cached_property
    def grid(self) -> tuple[np.ndarray, np.ndarray]:
        """Latitudes and longitudes, read once (every coordinate access builds objects);
        read-only, since every window of this field shares them."""
        lat, lon = self.data.latitude.values.copy(), self.data.longitude.values.copy()
        lat.flags.writeable = lon.flags.writeable = False
        return lat, lon

    def values(self, **selection) -> xr.DataArray:
        """Values selected by label (exact matches), loaded, converted and float32."""
        return self._loaded(self.data.isel(**{d: self._positions(d, v) for d, v in selection.items()}))

    def _positions(self, dim: str, labels):
        """Positions of `labels` along `dim`: what `sel` does, without its per-call overhead."""
        index = self.data.indexes[dim]
        found = index.get_indexer(np.atleast_1d(labels))
        if (found < 0).any():
            missing = np.atleast_1d(labels)[found < 0]
            raise KeyError(f"{self.key}: {dim} {', '.join(str(m)[:19] for m in missing[:3])} not in {self.source}")
        return found if np.ndim(labels) else int(found[0])

    def chunk(self, **positions) -> xr.DataArray:
        """Values selected by position (e.g. `time=slice(0, 8)`), for passes chunk by chunk."""
        return self._loaded(self.data.isel(**positions))

    def _loaded(self, da: xr.DataArray) -> xr.DataArray:
        values = da.values  # reads from the file
        if self.convert is not None:
            values = self.convert(values)
        # copy(data=...) rather than astype: xarray's astype goes through apply_ufunc, which
        # costs a millisecond per call, a third of a training sample on a coarse grid.
        return da.copy(deep=False, data=values.astype(np.float32, copy=False))


@dataclass
class Provenance:
    """Where every variable of a window came from; written into output attributes."""

    inputs: list[str] = field(default_factory=list)
    origin: dict[str, str] = field(default_factory=dict)
    filled: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    @property
    def from_data(self) -> list[str]:
        """The variables read from the inputs (not filled, not computed)."""
        return [k for k, origin in self.origin.items() if not origin.startswith(COMPUTED)]

    def attrs(self) -> dict[str, str]:
        """Global attributes for a CF file (JSON-encoded where structured)."""
        return {
            "input_files": json.dumps(self.inputs),
            "variable_sources": json.dumps(self.origin, sort_keys=True),
            "filled_variables": json.dumps(self.filled, sort_keys=True),
            "preprocessing_notes": json.dumps(self.notes),
        }


@dataclass
class _Relative:
    """Relative humidity kept aside to derive specific humidity once `t` is known."""

    data: xr.DataArray
    source: str


def _grib_level_type(da: xr.DataArray) -> str | None:
    return da.attrs.get("GRIB_typeOfLevel")


def _identify(name: str, da: xr.DataArray, source: str) -> Field | _Relative | None:
    """The Aurora variable `da` holds, or None when it is not one Aurora uses."""
    names = [name] + [s for s in (da.attrs.get("GRIB_shortName"),) if s and s != name]
    units = da.attrs.get("units")
    if "level" in da.dims:
        if _grib_level_type(da) not in (None, "isobaricInhPa", "isobaricInPa"):
            return None
        for n in names:
            if (v := find(n, "atmos")) is not None:
                return _field(v, da, source, units)
        for n in names:
            if (target := _CONVERTIBLE.get(("atmos", n.lower()))) is not None:
                v = variable("atmos", target[0])
                return _field(v, da, source, units or target[1], f"{v.dataset_name} from {n}")
            if n.lower() in _RELATIVE_HUMIDITY:
                return _Relative(da, source)
        return None
    if names[-1] == "tcc" and _grib_level_type(da) in _CLOUD_LAYERS:
        layer = _CLOUD_LAYERS[_grib_level_type(da)]
        return _field(variable("surface", layer), da, source, units) if layer else None
    for n in names:
        if (v := find(n, "surface")) is not None:
            return _field(v, da, source, units)
        v = find(n, "static")
        if v is not None and (v.name != "z" or _grib_level_type(da) in _SINGLE_LEVEL_TYPES_FOR_STATIC_Z):
            return _field(v, da, source, units)
        if (target := _CONVERTIBLE.get(("static", n.lower()))) is not None:
            v = variable("static", target[0])
            return _field(v, da, source, units or target[1], f"{v.dataset_name} from {n}")
    return None


def _field(v: Variable, da: xr.DataArray, source: str, units: str | None, note: str | None = None) -> Field:
    """A `Field` with its unit conversion resolved now, so bad units fail before any load."""
    probe = np.zeros(1)
    _, unit_note = to_canonical(probe, units, v.units, variable=str(da.name), source=source)
    convert = None
    if unit_note is not None:
        convert = lambda x, u=units: to_canonical(x, u, v.units, variable=str(da.name), source=source)[0]  # noqa: E731
        note = f"{note}; {unit_note}" if note else unit_note
    return Field(v, da, source, convert, note)


def _shape_for(field: Field | _Relative, kind: str, source: str) -> xr.DataArray | None:
    """Transpose to canonical dim order, or None when the array has dims Aurora cannot use."""
    da = field.data
    allowed = {"time", "level", "latitude", "longitude"}
    extra = [d for d in da.dims if d not in allowed]
    if extra:
        return None
    if kind == "static":
        if "level" in da.dims:
            return None
        if "time" in da.dims:
            da = da.isel(time=0)
        return da.transpose("latitude", "longitude").drop_vars(
            [c for c in da.coords if c not in ("latitude", "longitude")]
        )
    if "time" not in da.dims and "time" in da.coords:
        da = da.expand_dims("time")
    if "time" not in da.dims:
        raise DataError(
            f"variable '{da.name}' has no time coordinate; a {kind} variable needs its valid time",
            source=source,
        )
    order = [d for d in ("time", "level", "latitude", "longitude") if d in da.dims]
    keep = set(order)
    return da.transpose(*order).drop_vars([c for c in da.coords if c not in keep])


def _combine(a: xr.DataArray, b: xr.DataArray, key: str, sources: str) -> xr.DataArray:
    """Join two pieces of one variable: disjoint times, or disjoint levels at equal times."""
    if "time" not in a.dims:
        raise DataError(f"static variable '{key}' is given twice ({sources}); pass only one",
                        check="merge_duplicates")
    for axis in ("latitude", "longitude"):
        if a.sizes[axis] != b.sizes[axis] or not np.allclose(a[axis].values, b[axis].values):
            raise DataError(
                f"variable '{key}' comes on different grids ({sources}: {a.sizes['latitude']}x"
                f"{a.sizes['longitude']} and {b.sizes['latitude']}x{b.sizes['longitude']}); "
                "regrid them to one grid first (--regrid DEG)", check="merge_grid",
            )
    common = np.intersect1d(a.time.values, b.time.values)
    if len(common) == 0:
        if "level" in a.dims and not np.array_equal(a.level.values, b.level.values):
            raise DataError(f"variable '{key}' has different pressure levels in {sources}",
                            check="merge_levels")
        return xr.concat([a, b], dim="time", join="exact").sortby("time")
    same_times = len(common) == a.sizes["time"] == b.sizes["time"]
    if same_times and "level" in a.dims and not np.intersect1d(a.level.values, b.level.values).size:
        return xr.concat([a, b], dim="level", join="exact").sortby("level")
    raise DataError(
        f"variable '{key}' at times {', '.join(str(t)[:16] for t in common[:3])} is given by "
        f"more than one source ({sources}); pass each field once", check="merge_duplicates",
    )


@dataclass
class Source:
    """What one file holds that Aurora can use, before it is merged with other files."""

    name: str
    fields: list[Field] = field(default_factory=list)
    humidity: list[_Relative] = field(default_factory=list)
    notes: list[Finding] = field(default_factory=list)
    """Fixes made on the way in (flipped latitudes, rolled longitudes, ...)."""
    ignored: list[str] = field(default_factory=list)


def read_source(name: str, path, *, resolution: float | None = None) -> Source:
    """Open one file, canonicalise it and recognise its variables (lazily: nothing is loaded).

    With `resolution`, every recognised field is regridded to that grid, so that sources
    on different grids can be combined.
    """
    source = Source(name)
    for raw in open_datasets(path, name=name, grib_short_names=RECOGNISED_NAMES,
                             grib_level_types=GRIB_LEVEL_TYPES):
        ds, notes = canonicalise(raw, name)
        source.notes.extend(notes)
        for var_name, da in ds.data_vars.items():
            found = _identify(str(var_name), da, name)
            kind = "atmos" if isinstance(found, _Relative) else found.var.kind if found else None
            shaped = _shape_for(found, kind, name) if found is not None else None
            if shaped is None:
                source.ignored.append(f"{name}: {var_name}")
                continue
            if resolution is not None:
                shaped = regrid(shaped, resolution, categorical=getattr(found, "var", None) in _CATEGORICAL)
            found.data = shaped
            (source.humidity if isinstance(found, _Relative) else source.fields).append(found)
    return source


def merge_sources(sources: Iterable[Source], *, resolution: float | None = None):
    """Fields of all sources merged by dataset name (pieces of one variable joined), q derived."""
    fields: dict[str, Field] = {}
    humidity: list[_Relative] = []
    prov = Provenance()
    for source in sources:
        prov.inputs.append(source.name)
        prov.notes.extend(f"{n.source}: {n.message}" for n in source.notes)
        prov.ignored.extend(source.ignored)
        humidity.extend(source.humidity)
        for found in source.fields:
            key = found.key
            if key not in fields:
                fields[key] = found
                continue
            old = fields[key]
            if old.convert is not None or found.convert is not None:
                old.data, found.data, old.convert = old.values(), found.values(), None
            old.data = _combine(old.data, found.data, key, f"{old.source}, {found.source}")
            old.source = f"{old.source}, {found.source}"
    if resolution is not None:
        prov.notes.append(f"all fields regridded (bilinear) to {resolution:g}°")
    _derive_specific_humidity(fields, humidity, prov)
    _derive_one_hot(fields)
    return fields, prov


def read_fields(paths: Iterable[tuple[str, object]], *, resolution: float | None = None):
    """Recognised fields of every source, merged by dataset name, plus provenance.

    `paths` yields (name shown to users, local path).
    """
    sources = [read_source(name, path, resolution=resolution) for name, path in paths]
    return merge_sources(sources, resolution=resolution)


def saturation_vapour_pressure(t: np.ndarray) -> np.ndarray:
    """Saturation vapour pressure over water in Pa at temperature `t` in K.

    Magnus form with the coefficients of Alduchov and Eskridge (1996): 610.94 Pa *
    exp(17.625 (T - 273.15) / (T - 30.11)); within 0.4% of Wexler's formula from -40 to 50 °C.
    """
    return 610.94 * np.exp(17.625 * (t - 273.15) / (t - 30.11))


def specific_humidity(r_percent: np.ndarray, t: np.ndarray, p_pa: np.ndarray) -> np.ndarray:
    """Specific humidity in kg/kg from relative humidity (%), temperature (K), pressure (Pa).

    e = r/100 * e_s(T); q = eps e / (p - (1 - eps) e) with eps = 0.622 (ratio of the gas
    constants of dry air and water vapour).
    """
    eps = 0.622
    e = np.clip(r_percent, 0.0, None) / 100.0 * saturation_vapour_pressure(t)
    e = np.minimum(e, 0.5 * p_pa)  # above the boiling point of the level the formula breaks down
    return eps * e / (p_pa - (1.0 - eps) * e)


def _derive_specific_humidity(fields: dict[str, Field], humidity: list[_Relative], prov: Provenance) -> None:
    if "q" in fields or not humidity or "t" not in fields:
        return
    r = humidity[0]
    for other in humidity[1:]:
        r = _Relative(_combine(r.data, other.data, "r", f"{r.source}, {other.source}"), f"{r.source}, {other.source}")
    t = fields["t"]
    times = np.intersect1d(r.data.time.values, t.data.time.values)
    levels = np.intersect1d(r.data.level.values, t.data.level.values)
    if not len(times) or not len(levels):
        return
    sel = dict(time=times, level=levels)
    rh = r.data.sel(**sel)
    to_canonical(np.zeros(1), rh.attrs.get("units"), "%", variable="r", source=r.source)
    temp = t.values(**sel)
    p = (rh.level * 100.0).broadcast_like(rh).transpose(*rh.dims)
    q = xr.DataArray(
        specific_humidity(rh.values.astype("float64"), temp.values, p.values).astype("float32"),
        dims=rh.dims, coords=rh.coords, name="q",
    )
    fields["q"] = Field(variable("atmos", "q"), q, r.source, note="q from relative humidity r and temperature t")


def _derive_one_hot(fields: dict[str, Field]) -> None:
    """Aurora 1.5's one-hot soil and vegetation statics (`slt_3`: 1 where soil type 3) from the
    code fields ERA5 distributes (`slt`, `tvh`, `tvl`), where a file gives the codes."""
    for code_field in [fields[v.dataset_name] for v in _CATEGORICAL if v.dataset_name in fields]:
        name = code_field.var.name
        codes = code_field.values()
        for v in VARIABLES:
            prefix, _, k = v.name.rpartition("_")
            if v.kind == "static" and prefix == name and k.isdigit() and v.dataset_name not in fields:
                one_hot = (np.round(codes) == int(k)).astype(np.float32).rename(v.dataset_name)
                fields[v.dataset_name] = Field(v, one_hot, code_field.source, note=f"{v.name} from {name} == {k}")


def _check_same_grid(fields: list[Field]) -> None:
    lat0, lon0 = fields[0].grid
    mismatched = [
        f for f in fields[1:]
        if f.grid[0].shape != lat0.shape or f.grid[1].shape != lon0.shape
        or not np.allclose(f.grid[0], lat0, atol=1e-6) or not np.allclose(f.grid[1], lon0, atol=1e-6)
    ]
    if mismatched:
        def grid(f: Field) -> str:
            lat, lon = f.grid
            return (f"{f.key} from {f.source}: {len(lat)}x{len(lon)}, latitudes {lat[0]:g}..{lat[-1]:g}, "
                    f"longitudes {lon[0]:g}..{lon[-1]:g}")
        raise DataError(
            "input variables are on different grids; regrid them to one grid first "
            "(e.g. --regrid 1.0)",
            problems=[grid(fields[0])] + [grid(f) for f in mismatched],
        )


def _choose_times(dynamic: list[Field], spec: VariantSpec, history: int, init_time) -> np.ndarray:
    """The `history` valid times, `spec.timestep` apart, ending at the initialisation time."""
    step = np.timedelta64(int(spec.timestep.total_seconds()), "s")
    common = dynamic[0].data.time.values
    for f in dynamic[1:]:
        common = np.intersect1d(common, f.data.time.values)
    available = set(common.astype("datetime64[s]").tolist())

    def window(end: np.datetime64) -> np.ndarray:
        return np.array([end - k * step for k in range(history - 1, -1, -1)], dtype="datetime64[s]")

    if init_time is not None:
        end = np.datetime64(init_time, "s")
        missing = [t for t in window(end) if t.astype(datetime) not in available]
        if missing:
            raise DataError(
                f"initialisation {end} needs {history} time(s) {spec.timestep_hours} h apart; "
                f"missing for some variables: {', '.join(str(t) for t in missing)}",
                problems=[f"{f.key} ({f.source}) has {len(f.data.time)} times from "
                          f"{str(f.data.time.values[0])[:16]} to {str(f.data.time.values[-1])[:16]}"
                          for f in dynamic],
            )
        return window(end)
    for end in sorted(common.astype("datetime64[s]"), reverse=True):
        if all(t.astype(datetime) in available for t in window(end)):
            return window(end)
    raise DataError(
        f"the {spec.name} variant needs {history} consecutive times {spec.timestep_hours} h apart "
        "for every time-dependent variable; no such window exists in the inputs "
        f"(common times: {', '.join(str(t)[:16] for t in common[:6]) or 'none'}). "
        + ("Use --history 1 to start from a single time" if spec.min_history == 1 else ""),
        problems=[f"{f.key} ({f.source}): times {', '.join(str(t)[:16] for t in f.data.time.values[:4])}"
                  + (" ..." if f.data.sizes["time"] > 4 else "") for f in dynamic],
    )


def _choose_levels(atmos: list[Field], spec: VariantSpec, levels: Sequence[float] | None, prov: Provenance):
    wanted = tuple(levels) if levels is not None else spec.levels
    unknown = [lv for lv in wanted if lv not in spec.levels]
    if unknown:
        raise DataError(
            f"pressure level(s) {', '.join(f'{lv:g}' for lv in unknown)} hPa have no "
            f"normalisation statistics; the {spec.name} variant knows {', '.join(map(str, spec.levels))} hPa"
        )
    if not atmos:
        return np.array(wanted, dtype="float64")
    shared = atmos[0].data.level.values
    for f in atmos[1:]:
        shared = np.intersect1d(shared, f.data.level.values)
    chosen = [lv for lv in wanted if lv in shared]
    if levels is not None and len(chosen) < len(wanted):
        missing = [lv for lv in wanted if lv not in shared]
        raise DataError(
            f"requested pressure level(s) {', '.join(f'{lv:g}' for lv in missing)} hPa are not in "
            "every atmospheric variable",
            problems=[f"{f.key} ({f.source}): {', '.join(f'{lv:g}' for lv in f.data.level.values)}" for f in atmos],
        )
    if not chosen:
        raise DataError(
            f"no pressure level shared by all atmospheric variables has normalisation statistics "
            f"(known: {', '.join(map(str, spec.levels))} hPa)",
            problems=[f"{f.key} ({f.source}): {', '.join(f'{lv:g}' for lv in f.data.level.values)}" for f in atmos],
        )
    dropped = sorted(set(shared.tolist()) - set(chosen))
    if dropped:
        prov.notes.append(f"pressure levels not used: {', '.join(f'{lv:g}' for lv in dropped)} hPa")
    if len(chosen) < len(spec.levels) and levels is None:
        prov.notes.append(
            f"only {len(chosen)} of the {len(spec.levels)} levels the published {spec.name} "
            f"weights were trained on are present: {', '.join(f'{lv:g}' for lv in chosen)} hPa"
        )
    return np.array(chosen, dtype="float64")


def _missing_error(spec: VariantSpec, missing: list[Variable]) -> DataError:
    problems = []
    for v in missing:
        line = f"{v.kind} variable '{v.name}' ({v.long_name}, {v.units}; dataset name '{v.dataset_name}')"
        if v.name == "q" and v.kind == "atmos":
            line += " — or relative humidity 'r' together with temperature 't'"
        if not v.open_data:
            line += " — not in ECMWF's open data (ERA5 and the archive have it)"
        problems.append(line)
    return DataError(
        f"{len(missing)} variable(s) the {spec.name} variant needs are not in the inputs; "
        "add them, or pass --fill-missing mean|synthetic|zeros to fill them (the output will say so)",
        problems=problems,
    )


def assemble_window(
    fields: dict[str, Field],
    prov: Provenance,
    spec: VariantSpec,
    *,
    history: int | None = None,
    init_time: datetime | np.datetime64 | str | None = None,
    levels: Sequence[float] | None = None,
    fill_missing: FillMode | Mapping[str, FillMode] | None = None,
    crop: bool = False,
    seed: int = 0,
) -> xr.Dataset:
    """Cut the input window of `spec` from `fields`; fill or refuse what is missing.

    `fill_missing`: one mode for every absent variable, or a mode per dataset name (how a
    checkpoint's training filled them, `checkpoint.CheckpointInfo.filled_inputs`); an absent
    variable it does not name is refused.
    """
    history = spec.max_history if history is None else history
    if not spec.min_history <= history <= spec.max_history:
        raise DataError(
            f"history of {history} step(s); the {spec.name} variant takes "
            f"{spec.min_history} to {spec.max_history}"
        )
    modes = dict(fill_missing) if isinstance(fill_missing, Mapping) else None
    for mode in (modes or {"": fill_missing}).values():
        if mode is not None and mode not in FILL_MODES:
            raise DataError(f"unknown fill mode '{mode}'; expected one of {FILL_MODES}")

    needed = spec.inputs()
    present = [fields[v.dataset_name] for v in needed if v.dataset_name in fields and not v.computed]
    missing = [v for v in needed if v.dataset_name not in fields and not v.computed]
    for key, f in fields.items():
        if key not in {v.dataset_name for v in needed}:
            prov.ignored.append(f"{f.source}: {key} (not used by the {spec.name} variant)")
    unfilled = [v for v in missing if (modes.get(v.dataset_name) if modes is not None else fill_missing) is None]
    if unfilled:
        raise _missing_error(spec, unfilled)
    if not present:
        raise DataError(
            f"none of the {spec.name} variant's variables was found in the inputs "
            f"({', '.join(prov.inputs)})",
            problems=prov.ignored[:10],
        )
    _check_same_grid(present)

    dynamic = [f for f in present if f.var.kind != "static"]
    atmos = [f for f in present if f.var.kind == "atmos"]
    if not dynamic:
        if init_time is None:
            raise DataError("inputs hold only static fields; pass an initialisation time to fill the rest")
        end = np.datetime64(init_time, "s")
        step = np.timedelta64(int(spec.timestep.total_seconds()), "s")
        times = np.array([end - k * step for k in range(history - 1, -1, -1)])
    else:
        times = _choose_times(dynamic, spec, history, init_time)
    chosen_levels = _choose_levels(atmos, spec, levels, prov)

    data_vars: dict[str, xr.DataArray] = {}
    for f in present:
        sel = {}
        if f.var.kind != "static":
            sel["time"] = times.astype("datetime64[ns]")
        if f.var.kind == "atmos":
            sel["level"] = chosen_levels
        data_vars[f.key] = f.values(**sel)
        prov.origin[f.key] = f.source + (f" ({f.note})" if f.note else "")

    lat, lon = present[0].grid
    for v in needed:
        if v.computed:  # from the valid times, whatever a file holds
            data_vars[v.dataset_name] = xr.DataArray(insolation_field(lat, lon, times), dims=_dims(v))
            prov.origin[v.dataset_name] = f"{COMPUTED} from the valid time and the grid (aurora.insolation)"
    land = _land_from_wave_fields(data_vars)
    for v in missing:
        mode = modes[v.dataset_name] if modes is not None else fill_missing
        values = fill_values(v, mode, lat, lon, times, chosen_levels, seed=seed, land=land)
        data_vars[v.dataset_name] = xr.DataArray(values, dims=_dims(v))
        prov.filled[v.dataset_name] = mode
    for mode in dict.fromkeys(prov.filled[v.dataset_name] for v in missing):
        names = [v.dataset_name for v in missing if prov.filled[v.dataset_name] == mode]
        how = FILLED_WITH[mode] + (", as the checkpoint's training filled them" if modes is not None else "")
        prov.notes.append(f"{len(names)} variable(s) filled with {how}: " + ", ".join(names))

    coords = {
        "time": ("time", times.astype("datetime64[ns]")),
        "level": ("level", chosen_levels, {"units": "hPa", "standard_name": "air_pressure"}),
        "latitude": ("latitude", lat, {"units": "degrees_north", "standard_name": "latitude"}),
        "longitude": ("longitude", lon, {"units": "degrees_east", "standard_name": "longitude"}),
    }
    # Variables, not DataArrays: their values are already on these coordinates (selected by
    # them above), and the constructor would otherwise align every array (ms per window).
    window = xr.Dataset({k: da.variable for k, da in data_vars.items()}, coords=coords)
    for key in window.data_vars:
        _set_cf_attrs(window[key], next(v for v in needed if v.dataset_name == key))
        if key in prov.filled:
            window[key].attrs["filled"] = prov.filled[key]
    if crop:
        window, note = crop_to_patch(window, spec.patch_size)
        if note:
            prov.notes.append(note)
    window.attrs.update(prov.attrs())
    return window


def _land_from_wave_fields(data_vars: dict[str, xr.DataArray]) -> np.ndarray | None:
    """Land where a real wave field is NaN at every time: keeps synthetic fills coastal-consistent."""
    for key in ("swh", "mwp", "pp1d", "shww", "shts", "mpts"):
        if key in data_vars:
            nan = np.isnan(data_vars[key].values)
            return nan.all(axis=0) if nan.ndim == 3 else nan
    return None


def _dims(v: Variable) -> tuple[str, ...]:
    return {"static": ("latitude", "longitude"), "surface": ("time", "latitude", "longitude"),
            "atmos": ("time", "level", "latitude", "longitude")}[v.kind]


def _set_cf_attrs(da: xr.DataArray, v: Variable) -> None:
    attrs = {"units": v.units, "long_name": v.long_name, "aurora_name": v.name}
    if v.standard_name:
        attrs["standard_name"] = v.standard_name
    da.attrs = attrs


def load_window(
    uris: Sequence[str],
    spec: VariantSpec,
    *,
    regrid_to: float | None = None,
    add_fields: Callable[[dict[str, Field], Provenance], None] | None = None,
    **options,
) -> tuple[xr.Dataset, Provenance]:
    """Read `uris` (paths or `s3://` URIs) and cut the input window of `spec`.

    `add_fields(fields, provenance)` adds fields read from elsewhere on the files' grid (the
    emission statics of a checkpoint's inventories) before the window is cut. `options` are those
    of `assemble_window`. Raises `DataError` before anything heavy is loaded when the inputs cannot
    make a valid window.
    """
    if not uris:
        raise DataError("no input files given")
    with contextlib.ExitStack() as stack:
        paths = [(str(u), stack.enter_context(local_copy(u))) for u in uris]
        fields, prov = read_fields(paths, resolution=regrid_to)
        if add_fields is not None:
            add_fields(fields, prov)
        window = assemble_window(fields, prov, spec, **options)
        window.load()
    return window, prov
