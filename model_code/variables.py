"""The catalogue of every variable the Aurora variants read or predict.

Each variable has Aurora's name (the key of `aurora.Batch`), a dataset name (the name in
xarray datasets and files written by this project: ERA5/CAMS netCDF names, which start
with a letter as CF recommends), CF metadata, the names other producers give it, and the
range a physically plausible value lies in.

Sources for names and units: ECMWF parameter database (codes.ecmwf.int/grib/param-db),
the CF standard name table (v84), Aurora's `docs/batch.md` and its example notebooks for
CAMS and HRES-WAM data. Bounds are generous physical limits (record extremes plus a
margin), used by the synthetic generator and the validators; they are not climatology.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["surface", "static", "atmos"]

G0 = 9.80665
"""Standard gravity in m s-2 (WMO), to turn geopotential height (m) into geopotential."""


@dataclass(frozen=True)
class Variable:
    """One physical variable as Aurora sees it and as files name it."""

    name: str
    """Aurora's name, the key in `Batch.surf_vars`, `static_vars` or `atmos_vars`."""
    kind: Kind
    units: str
    """CF/UDUNITS units that values are in once ingested."""
    long_name: str
    standard_name: str | None = None
    key: str | None = None
    """Name in datasets and files; defaults to `name`."""
    aliases: tuple[str, ...] = ()
    """Other names for the same quantity in GRIB (shortName), netCDF and Zarr sources."""
    bounds: tuple[float | None, float | None] = (None, None)
    """Plausible physical range in `units` (None: unbounded on that side)."""
    nan_by_design: bool = False
    """True where the variant's own data is NaN in places (wave fields over land)."""
    clip: tuple[float | None, float | None] | None = None
    """Physical range a forecast of it is clipped to, where models are known to leave it
    (negative humidity, cloud cover above 1); each clip is counted in the output's notes."""
    open_data: bool = True
    """False: ECMWF's real-time open data (IFS/AIFS) does not carry it; ERA5 or the
    operational archive does, and a forecast without it fills it only when asked."""
    computed: bool = False
    """Computed exactly from the valid time and the grid (insolation), never read."""

    @property
    def dataset_name(self) -> str:
        return self.key or self.name


def _v(name: str, kind: Kind, units: str, long_name: str, standard_name: str | None = None, **kw) -> Variable:
    return Variable(name, kind, units, long_name, standard_name, **kw)


_WAVE = dict(nan_by_design=True)
_FRACTION = dict(bounds=(0.0, 1.0), clip=(0.0, 1.0))
_ARCHIVE = dict(open_data=False)
_HEIGHT = (0.0, 35.0)
_PERIOD = (0.0, 40.0)
_DIRECTION = (0.0, 360.0)

VARIABLES: tuple[Variable, ...] = (
    # Meteorological surface-level variables (all variants).
    _v("2t", "surface", "K", "2 metre temperature", "air_temperature", key="t2m",
       aliases=("t2m", "2m_temperature"), bounds=(170.0, 350.0)),
    _v("10u", "surface", "m s-1", "10 metre U wind component", "eastward_wind", key="u10",
       aliases=("u10", "10m_u_component_of_wind"), bounds=(-120.0, 120.0)),
    _v("10v", "surface", "m s-1", "10 metre V wind component", "northward_wind", key="v10",
       aliases=("v10", "10m_v_component_of_wind"), bounds=(-120.0, 120.0)),
    _v("msl", "surface", "Pa", "Mean sea level pressure", "air_pressure_at_mean_sea_level",
       aliases=("prmsl", "mean_sea_level_pressure"), bounds=(85000.0, 110000.0)),
    # Aurora 1.5: more surface-level inputs (ECMWF short names, ERA5 netCDF names as keys).
    _v("2d", "surface", "K", "2 metre dewpoint temperature", "dew_point_temperature", key="d2m",
       aliases=("d2m", "2m_dewpoint_temperature"), bounds=(170.0, 330.0)),
    _v("tcwv", "surface", "kg m-2", "Total column vertically-integrated water vapour",
       "atmosphere_mass_content_of_water_vapor", aliases=("total_column_water_vapour", "pwat"),
       bounds=(0.0, 120.0), clip=(0.0, None)),
    _v("tcc", "surface", "1", "Total cloud cover", "cloud_area_fraction", aliases=("total_cloud_cover",),
       **_FRACTION, **_ARCHIVE),
    _v("100u", "surface", "m s-1", "100 metre U wind component", "eastward_wind", key="u100",
       aliases=("u100", "100m_u_component_of_wind"), bounds=(-150.0, 150.0)),
    _v("100v", "surface", "m s-1", "100 metre V wind component", "northward_wind", key="v100",
       aliases=("v100", "100m_v_component_of_wind"), bounds=(-150.0, 150.0)),
    _v("sp", "surface", "Pa", "Surface pressure", "surface_air_pressure", aliases=("surface_pressure",),
       bounds=(40000.0, 110000.0)),
    _v("lcc", "surface", "1", "Low cloud cover", "low_type_cloud_area_fraction", aliases=("low_cloud_cover",),
       **_FRACTION, **_ARCHIVE),
    _v("mcc", "surface", "1", "Medium cloud cover", "medium_type_cloud_area_fraction",
       aliases=("medium_cloud_cover",), **_FRACTION, **_ARCHIVE),
    _v("hcc", "surface", "1", "High cloud cover", "high_type_cloud_area_fraction", aliases=("high_cloud_cover",),
       **_FRACTION, **_ARCHIVE),
    _v("skt", "surface", "K", "Skin temperature", "surface_temperature", aliases=("skin_temperature",),
       bounds=(170.0, 360.0)),
    _v("stl1", "surface", "K", "Soil temperature level 1 (0-7 cm)", "soil_temperature",
       aliases=("soil_temperature_level_1",), bounds=(170.0, 360.0), **_ARCHIVE),
    _v("swvl1", "surface", "m3 m-3", "Volumetric soil water layer 1 (0-7 cm)",
       "volume_fraction_of_condensed_water_in_soil", aliases=("volumetric_soil_water_layer_1",),
       bounds=(-0.001, 1.0), clip=(0.0, None), **_ARCHIVE),  # GRIB packing leaves values just below 0
    _v("ci", "surface", "1", "Sea ice area fraction", "sea_ice_area_fraction", key="siconc",
       aliases=("ci", "sea_ice_cover"), **_FRACTION, **_ARCHIVE),
    _v("scaled_sd", "surface", "kg m-2", "Snow depth as water equivalent (ERA5 sd in m x 1000), "
       "log-transformed inside the model", "surface_snow_amount", aliases=("sd", "sdwe", "snow_depth"),
       bounds=(0.0, 1e5), clip=(0.0, None), **_ARCHIVE),
    _v("insolation", "surface", "1", "Top-of-atmosphere insolation relative to the solar constant "
       "(aurora.insolation; negative at night)", bounds=(-1.0, 1.5), computed=True),
    # Aurora 1.5: surface-level outputs that are never inputs (accumulations over the last hour).
    _v("i10fg", "surface", "m s-1", "10 metre wind gust", "wind_speed_of_gust", aliases=("gust",),
       bounds=(0.0, 150.0), clip=(0.0, None), **_ARCHIVE),
    _v("blh", "surface", "m", "Boundary layer height", "atmosphere_boundary_layer_thickness",
       aliases=("hpbl",), bounds=(0.0, 8000.0), clip=(0.0, None), **_ARCHIVE),
    _v("uvb_1h", "surface", "J m-2", "Downward UV radiation at the surface, last hour",
       bounds=(0.0, 1e6), clip=(0.0, None), **_ARCHIVE),
    _v("ssrd_1h", "surface", "J m-2", "Surface short-wave radiation downwards, last hour",
       "integral_wrt_time_of_surface_downwelling_shortwave_flux_in_air", bounds=(0.0, 5e6), clip=(0.0, None)),
    _v("ttr_1h", "surface", "J m-2", "Top net long-wave radiation, last hour",
       "integral_wrt_time_of_toa_net_upward_longwave_flux", bounds=(-2e6, 0.0), clip=(None, 0.0)),
    _v("scaled_tp_1h", "surface", "kg m-2", "Total precipitation, last hour (ERA5 tp in m x 1000)",
       "precipitation_amount", bounds=(0.0, 500.0), clip=(0.0, None)),
    _v("scaled_sf_1h", "surface", "kg m-2", "Snowfall as water equivalent, last hour (ERA5 sf in m x 1000)",
       "snowfall_amount", bounds=(0.0, 200.0), clip=(0.0, None)),
    # Static variables.
    _v("lsm", "static", "1", "Land-sea mask (land fraction)", "land_area_fraction",
       aliases=("land_sea_mask",), bounds=(0.0, 1.0)),
    _v("slt", "static", "1", "Soil type (ECMWF code 0-7)", "soil_type",
       aliases=("soil_type",), bounds=(0.0, 7.0)),
    _v("z", "static", "m2 s-2", "Surface geopotential", "surface_geopotential", key="z_surface",
       aliases=("geopotential_at_surface",), bounds=(-5000.0, 90000.0)),
    # Aurora 1.5 statics: ERA5 invariants, scaled in Aurora's own static file (location 0, scale 1).
    _v("anor", "static", "radians", "Angle of sub-gridscale orography", bounds=(-1.6, 1.6), **_ARCHIVE),
    _v("isor", "static", "1", "Anisotropy of sub-gridscale orography", bounds=(0.0, 1.0), **_ARCHIVE),
    _v("slor", "static", "1", "Slope of sub-gridscale orography", bounds=(0.0, 1.0), **_ARCHIVE),
    _v("sdor", "static", "m", "Standard deviation of orography", bounds=(0.0, 2000.0), **_ARCHIVE),
    _v("sdfor", "static", "m", "Standard deviation of filtered subgrid orography", bounds=(0.0, 2000.0),
       **_ARCHIVE),
    _v("cvh", "static", "1", "High vegetation cover", "vegetation_area_fraction", bounds=(0.0, 1.0), **_ARCHIVE),
    _v("cvl", "static", "1", "Low vegetation cover", "vegetation_area_fraction", bounds=(0.0, 1.0), **_ARCHIVE),
    _v("cl", "static", "1", "Lake cover", bounds=(0.0, 1.0), **_ARCHIVE),
    _v("dl", "static", "m", "Lake total depth", bounds=(0.0, 2000.0), **_ARCHIVE),
    _v("tvh", "static", "1", "Type of high vegetation (ECMWF code 0-19)", aliases=("type_of_high_vegetation",),
       bounds=(0.0, 20.0), **_ARCHIVE),
    _v("tvl", "static", "1", "Type of low vegetation (ECMWF code 0-20)", aliases=("type_of_low_vegetation",),
       bounds=(0.0, 20.0), **_ARCHIVE),
    *(_v(f"slt_{k}", "static", "1", f"Soil type {k} (1 where ECMWF soil type is {k}, else 0)",
         bounds=(0.0, 1.0), **_ARCHIVE) for k in range(8)),
    *(_v(f"tvh_{k}", "static", "1", f"High vegetation type {k} (1 where ECMWF tvh is {k}, else 0)",
         bounds=(0.0, 1.0), **_ARCHIVE) for k in (0, 3, 4, 5, 6, 18, 19)),
    *(_v(f"tvl_{k}", "static", "1", f"Low vegetation type {k} (1 where ECMWF tvl is {k}, else 0)",
         bounds=(0.0, 1.0), **_ARCHIVE) for k in (0, 1, 2, 7, 9, 10, 11, 13, 16, 17)),
    # Atmospheric variables on pressure levels.
    _v("z", "atmos", "m2 s-2", "Geopotential", "geopotential",
       aliases=("geopotential",), bounds=(-10000.0, 350000.0)),
    _v("t", "atmos", "K", "Temperature", "air_temperature",
       aliases=("temperature",), bounds=(150.0, 350.0)),
    _v("u", "atmos", "m s-1", "U component of wind", "eastward_wind",
       aliases=("u_component_of_wind",), bounds=(-250.0, 250.0)),
    _v("v", "atmos", "m s-1", "V component of wind", "northward_wind",
       aliases=("v_component_of_wind",), bounds=(-250.0, 250.0)),
    _v("q", "atmos", "kg kg-1", "Specific humidity", "specific_humidity",
       aliases=("specific_humidity",), bounds=(0.0, 0.05), clip=(0.0, None)),
    # Air pollution: surface concentrations and total columns (CAMS names and units).
    _v("pm1", "surface", "kg m-3", "Particulate matter d < 1 um",
       "mass_concentration_of_pm1_ambient_aerosol_particles_in_air",
       aliases=("particulate_matter_1um",), bounds=(0.0, 0.05)),
    _v("pm2p5", "surface", "kg m-3", "Particulate matter d < 2.5 um",
       "mass_concentration_of_pm2p5_ambient_aerosol_particles_in_air",
       aliases=("particulate_matter_2.5um",), bounds=(0.0, 0.05)),
    _v("pm10", "surface", "kg m-3", "Particulate matter d < 10 um",
       "mass_concentration_of_pm10_ambient_aerosol_particles_in_air",
       aliases=("particulate_matter_10um",), bounds=(0.0, 0.1)),
    _v("tcco", "surface", "kg m-2", "Total column carbon monoxide",
       "atmosphere_mass_content_of_carbon_monoxide",
       aliases=("total_column_carbon_monoxide",), bounds=(0.0, 1.0)),
    _v("tc_no", "surface", "kg m-2", "Total column nitrogen monoxide",
       "atmosphere_mass_content_of_nitrogen_monoxide",
       aliases=("total_column_nitrogen_monoxide",), bounds=(0.0, 0.01)),
    _v("tcno2", "surface", "kg m-2", "Total column nitrogen dioxide",
       "atmosphere_mass_content_of_nitrogen_dioxide",
       aliases=("total_column_nitrogen_dioxide",), bounds=(0.0, 0.01)),
    _v("gtco3", "surface", "kg m-2", "Total column ozone",
       "atmosphere_mass_content_of_ozone",
       aliases=("total_column_ozone",), bounds=(0.0, 0.03)),
    _v("tcso2", "surface", "kg m-2", "Total column sulphur dioxide",
       "atmosphere_mass_content_of_sulfur_dioxide",
       aliases=("total_column_sulphur_dioxide",), bounds=(0.0, 0.1)),
    # Air pollution: mass mixing ratios on pressure levels.
    _v("co", "atmos", "kg kg-1", "Carbon monoxide mass mixing ratio",
       "mass_fraction_of_carbon_monoxide_in_air", aliases=("carbon_monoxide",), bounds=(0.0, 1e-3)),
    _v("no", "atmos", "kg kg-1", "Nitrogen monoxide mass mixing ratio",
       "mass_fraction_of_nitrogen_monoxide_in_air", aliases=("nitrogen_monoxide",), bounds=(0.0, 1e-4)),
    _v("no2", "atmos", "kg kg-1", "Nitrogen dioxide mass mixing ratio",
       "mass_fraction_of_nitrogen_dioxide_in_air", aliases=("nitrogen_dioxide",), bounds=(0.0, 1e-4)),
    _v("go3", "atmos", "kg kg-1", "Ozone mass mixing ratio",
       "mass_fraction_of_ozone_in_air", aliases=("ozone",), bounds=(0.0, 1e-4)),
    _v("so2", "atmos", "kg kg-1", "Sulphur dioxide mass mixing ratio",
       "mass_fraction_of_sulfur_dioxide_in_air", aliases=("sulphur_dioxide",), bounds=(0.0, 1e-4)),
    # Air pollution: emission statics as distributed with Aurora's 0.4 degree static file
    # (already scaled to order one, hence no physical unit).
    *(
        _v(f"static_{species}{suffix}", "static", "1",
           f"{label} emissions{' (log)' if suffix else ''}, scaled as in Aurora's static file",
           bounds=(None, None) if suffix else (0.0, None))
        for species, label in (("ammonia", "Ammonia"), ("co", "Carbon monoxide"),
                               ("nox", "Nitrogen oxides"), ("so2", "Sulphur dioxide"))
        for suffix in ("", "_log")
    ),
    # Ocean waves (ECMWF WAM short names). NaN over land and sea ice by design.
    _v("swh", "surface", "m", "Significant height of combined wind waves and swell",
       "sea_surface_wave_significant_height", bounds=_HEIGHT, **_WAVE),
    _v("mwd", "surface", "degree", "Mean wave direction",
       "sea_surface_wave_from_direction", bounds=_DIRECTION, **_WAVE),
    _v("mwp", "surface", "s", "Mean wave period",
       "sea_surface_wave_mean_period", bounds=_PERIOD, **_WAVE),
    _v("pp1d", "surface", "s", "Peak wave period",
       "sea_surface_wave_period_at_variance_spectral_density_maximum", bounds=_PERIOD, **_WAVE),
    _v("shww", "surface", "m", "Significant height of wind waves",
       "sea_surface_wind_wave_significant_height", bounds=_HEIGHT, **_WAVE),
    _v("mdww", "surface", "degree", "Mean direction of wind waves",
       "sea_surface_wind_wave_from_direction", bounds=_DIRECTION, **_WAVE),
    _v("mpww", "surface", "s", "Mean period of wind waves",
       "sea_surface_wind_wave_mean_period", bounds=_PERIOD, **_WAVE),
    _v("shts", "surface", "m", "Significant height of total swell",
       "sea_surface_swell_wave_significant_height", bounds=_HEIGHT, **_WAVE),
    _v("mdts", "surface", "degree", "Mean direction of total swell",
       "sea_surface_swell_wave_from_direction", bounds=_DIRECTION, **_WAVE),
    _v("mpts", "surface", "s", "Mean period of total swell",
       "sea_surface_swell_wave_mean_period", bounds=_PERIOD, **_WAVE),
    _v("swh1", "surface", "m", "Significant wave height of first swell partition",
       "sea_surface_primary_swell_wave_significant_height", bounds=_HEIGHT, **_WAVE),
    _v("mwd1", "surface", "degree", "Mean wave direction of first swell partition",
       "sea_surface_primary_swell_wave_from_direction", bounds=_DIRECTION, **_WAVE),
    _v("mwp1", "surface", "s", "Mean wave period of first swell partition",
       "sea_surface_primary_swell_wave_mean_period", bounds=_PERIOD, **_WAVE),
    _v("swh2", "surface", "m", "Significant wave height of second swell partition",
       "sea_surface_secondary_swell_wave_significant_height", bounds=_HEIGHT, **_WAVE),
    _v("mwd2", "surface", "degree", "Mean wave direction of second swell partition",
       "sea_surface_secondary_swell_wave_from_direction", bounds=_DIRECTION, **_WAVE),
    _v("mwp2", "surface", "s", "Mean wave period of second swell partition",
       "sea_surface_secondary_swell_wave_mean_period", bounds=_PERIOD, **_WAVE),
    _v("wind", "surface", "m s-1", "10 metre wind speed (wave model forcing)", "wind_speed",
       bounds=(0.0, 100.0), **_WAVE),
    _v("dwi", "surface", "degree", "10 metre wind direction (wave model forcing)",
       "wind_from_direction", bounds=_DIRECTION, **_WAVE),
    _v("10u_wave", "surface", "m s-1", "10 metre U wind component seen by the wave model",
       "eastward_wind", key="u10_wave", bounds=(-100.0, 100.0), **_WAVE),
    _v("10v_wave", "surface", "m s-1", "10 metre V wind component seen by the wave model",
       "northward_wind", key="v10_wave", bounds=(-100.0, 100.0), **_WAVE),
    _v("wmb", "static", "m", "Model bathymetry of the wave model (0 on land)",
       "sea_floor_depth_below_mean_sea_level", bounds=(0.0, 12000.0)),
    _v("lat_mask", "static", "1", "Latitude mask: 1 inside the wave model's latitude domain",
       bounds=(0.0, 1.0)),
)

_BY_KIND_NAME = {(v.kind, v.name): v for v in VARIABLES}
_BY_KEY = {v.dataset_name: v for v in VARIABLES}
assert len(_BY_KEY) == len(VARIABLES), "dataset names must be unique"


def variable(kind: Kind, name: str) -> Variable:
    """The catalogue entry for Aurora variable `name` of `kind`."""
    return _BY_KIND_NAME[(kind, name)]


def by_key(key: str) -> Variable:
    """The catalogue entry for a dataset name such as `t2m` or `z_surface`."""
    return _BY_KEY[key]


def find(name: str, kind: Kind) -> Variable | None:
    """Match a name found in a file (Aurora, dataset, GRIB or long name) to a variable."""
    lowered = name.lower()
    for v in VARIABLES:
        if v.kind != kind:
            continue
        if lowered in (v.name.lower(), v.dataset_name.lower()) or lowered in v.aliases:
            return v
    return None
