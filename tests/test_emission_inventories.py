"""User emission inventories (`data.emissions`, model_code/data/emissions.py): units, remapping,
refusals, the air-pollution model's emission statics and new static inputs, training and forecasts.

No real emission inventory ships with the project, so the inventories are small synthetic flux
maps written to tmp_path (NetCDF, and one GRIB written with eccodes). The meteorology is real: the
IFS 10° global sample (8 six-hourly times), on which the air-pollution variant runs at a 6 h step;
what it lacks (surface fields, species, the other statics) is filled with labelled synthetic fields.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import shutil

import numpy as np
import pytest
import torch
import xarray as xr

from conftest import IFS_8_STEPS
from fields import area_weighted_mean
from model_code.checkpoint import load_weights, read_checkpoint_info
from model_code.data.emissions import (AVOGADRO, LOG_EPS, MOLAR_MASS, YEAR_S, EmissionInventory, model_overrides,
                                       onto_grid, read_flux, read_inventories)
from model_code.data.grid import cell_areas
from model_code.errors import ConfigError, DataError
from model_code.forecast import ForecastJob, forecast_steps, run_forecast_job
from model_code.training import Trainer, load_config, save_config
from model_code.training.config import config_from_dict
from model_code.training.data import open_data
from model_code.variants import build_model


FINE_LAT, FINE_LON = np.arange(88.75, -90, -2.5), np.arange(1.25, 360, 2.5)
"""A global 2.5° inventory grid, 4 x 4 cells in each 10° cell of the IFS sample."""
IFS_LAT, IFS_LON = np.linspace(90, -90, 19), np.arange(36) * 10.0
BOX = (FINE_LAT[:, None] > 45) & (FINE_LAT[:, None] < 55) & (FINE_LON[None, :] > 5) & (FINE_LON[None, :] < 25)
"""A source region filling exactly the IFS cells centred at 50°N, 10°E and 20°E."""
SOURCE, BACKGROUND = 2e-9, 1e-11  # kg m-2 s-1


def write_inventory(path, flux, *, units: str | None = "kg m-2 s-1", name: str = "emi_nox", lat=FINE_LAT,
                    lon=FINE_LON, **dims) -> str:
    attrs = {} if units is None else {"units": units}
    coords = {**dims, "lat": lat, "lon": lon}
    xr.Dataset({name: ((*dims, "lat", "lon"), flux, attrs)}, coords=coords).to_netcdf(path)
    return str(path)


def box_inventory(path) -> str:
    return write_inventory(path, np.where(BOX, SOURCE, BACKGROUND))


def config(tmp_path, emissions: list[dict], **overrides):
    return config_from_dict({
        "variant": "air-pollution", "profile": "tiny", "timestep_hours": 6, "head_init": "zero",
        "data": {"paths": [str(IFS_8_STEPS)], "val_period": ["2024-06-04T06:00", "2024-06-05T00:00"],
                 "fill_missing": "synthetic", "fill_missing_dynamic": "synthetic", "emissions": emissions},
        "train": {"max_steps": 2, "val_every": 2, "val_at_start": False, "device": "cpu", "progress": False},
        "checkpoint": {"out_dir": str(tmp_path / "run"), "keep_top_k": 0},
    }, overrides)


@pytest.fixture(scope="module")
def inventories(tmp_path_factory) -> list[dict]:
    """NOx on the species' statics and the same map as a new static input `fire_nox`."""
    path = box_inventory(tmp_path_factory.mktemp("emissions") / "nox.nc")
    return [{"path": path, "variable": "emi_nox", "species": "nox"},
            {"path": path, "variable": "emi_nox", "name": "fire_nox"}]


@pytest.fixture(scope="module")
def data(tmp_path_factory, inventories):
    return open_data(config(tmp_path_factory.mktemp("run"), inventories))


def expected_box() -> np.ndarray:
    """The box inventory on the IFS grid: each 10° cell is wholly source or wholly background."""
    box = (np.abs(IFS_LAT[:, None] - 50) < 1) & np.isin(IFS_LON, (10, 20))[None, :]
    return np.where(box, SOURCE, BACKGROUND)


# ---- units -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("units", "species", "molar_mass", "per_unit"), [
    ("kg m-2 s-1", "nox", None, 1.0),
    ("kg m**-2 s**-1", "nox", None, 1.0),
    ("g m-2 s-1", "nox", None, 1e-3),
    ("kg m-2 yr-1", "nox", None, 1 / YEAR_S),
    ("kg/m2/d", "co", None, 1 / 86400),
    ("mol m-2 s-1", "so2", None, MOLAR_MASS["so2"] * 1e-3),
    ("molecules cm-2 s-1", "ammonia", None, MOLAR_MASS["ammonia"] * 1e-3 * 1e4 / AVOGADRO),
    ("mol m-2 s-1", None, 30.0, 30e-3),
])
def test_emission_fluxes_are_converted_to_kg_per_m2_per_s(tmp_path, units, species, molar_mass, per_unit):
    flux = np.random.default_rng(0).random((72, 144))
    inv = EmissionInventory(write_inventory(tmp_path / "f.nc", flux, units=units), "emi_nox", species=species,
                            name=None if species else "mine", molar_mass=molar_mass)
    read, notes = read_flux(inv)
    np.testing.assert_allclose(read.values, flux * per_unit, rtol=1e-12)
    assert read.attrs["units"] == "kg m-2 s-1" and (per_unit == 1.0) == (not any("converted" in n for n in notes))


@pytest.mark.parametrize(("units", "says"), [
    ("kg", "has units 'kg', not an emission flux; accepted: an amount (kg, g, mol, molecules)"),
    ("kg m-2", "has units 'kg m-2', not an emission flux"),
    (None, "has no units attribute; give its units in data.emissions[].units"),
])
def test_unknown_or_missing_units_are_refused_naming_file_variable_and_the_accepted_units(tmp_path, units, says):
    path = write_inventory(tmp_path / "f.nc", np.ones((72, 144)), units=units)
    with pytest.raises(DataError, match="accepted") as e:
        read_flux(EmissionInventory(path, "emi_nox", species="nox"))
    assert e.value.source == path and "'emi_nox'" in e.value.message and says in e.value.message


def test_an_amount_in_mol_for_a_new_static_needs_its_molar_mass_and_the_units_key_replaces_the_files(tmp_path):
    path = write_inventory(tmp_path / "f.nc", np.ones((72, 144)), units="mol m-2 s-1")
    with pytest.raises(DataError, match="an amount in mol needs the molar mass"):
        read_flux(EmissionInventory(path, "emi_nox", name="mine"))
    read, _ = read_flux(EmissionInventory(path, "emi_nox", name="mine", units="g m-2 d-1"))  # the file's is wrong
    np.testing.assert_allclose(read.values, 1e-3 / 86400)


def test_a_time_axis_is_averaged_and_another_axis_refused(tmp_path):
    flux = np.stack([np.full((72, 144), 1e-10), np.full((72, 144), 3e-10)])
    times = np.array(["2020-01-01", "2020-02-01"], dtype="datetime64[ns]")
    read, notes = read_flux(EmissionInventory(write_inventory(tmp_path / "t.nc", flux, time=times), "emi_nox",
                                              species="nox"))
    np.testing.assert_allclose(read.values, 2e-10)
    assert "the mean of its 2 times" in notes
    path = write_inventory(tmp_path / "s.nc", flux, sector=[1, 2])
    with pytest.raises(DataError, match=r"has dims \('sector', 'latitude', 'longitude'\)"):
        read_flux(EmissionInventory(path, "emi_nox", species="nox"))


# ---- remapping and coverage --------------------------------------------------------------------------


def test_the_conservative_remap_keeps_the_area_weighted_total():
    flux = xr.DataArray(np.random.default_rng(1).lognormal(-22, 2, (72, 144)), name="emi_nox",
                        dims=("latitude", "longitude"), coords={"latitude": FINE_LAT, "longitude": FINE_LON})
    coarse = onto_grid(flux, IFS_LAT, IFS_LON, source="f.nc")
    total_fine = np.sum(cell_areas(FINE_LAT, FINE_LON) * flux.values)
    total_coarse = np.sum(cell_areas(IFS_LAT, IFS_LON) * coarse)
    assert abs(total_coarse / total_fine - 1) < 1e-6 and (coarse > 0).all()


def test_an_inventory_that_does_not_cover_the_domain_is_refused_naming_the_file_and_the_uncovered_extent(tmp_path):
    lat, lon = np.arange(69.75, 20, -0.5), np.arange(0.25, 60, 0.5)  # 20-70°N, 0-60°E
    path = write_inventory(tmp_path / "europe.nc", np.ones((len(lat), len(lon))) * 1e-10, lat=lat, lon=lon)
    flux, _ = read_flux(EmissionInventory(path, "emi_nox", species="nox"))
    with pytest.raises(DataError) as e:
        onto_grid(flux, IFS_LAT, IFS_LON, source=path)
    assert e.value.source == path
    assert ("'emi_nox' covers latitudes 70 to 20 and longitudes 0 to 60, not the data's domain (latitudes 90 to -90, "
            "longitudes 0 to 350): the grid's cells at latitudes 90 to 80, 10 to -90 and at longitudes 70 to 350 lie "
            "outside it" in e.value.message)


def test_a_bad_inventory_fails_when_the_data_are_opened_naming_the_config_item(tmp_path):
    lat, lon = np.arange(69.75, 20, -0.5), np.arange(0.25, 60, 0.5)
    path = write_inventory(tmp_path / "europe.nc", np.ones((len(lat), len(lon))), lat=lat, lon=lon)
    cfg = config(tmp_path, [{"path": box_inventory(tmp_path / "nox.nc"), "variable": "emi_nox", "species": "nox"},
                            {"path": path, "variable": "emi_nox", "species": "co"}])
    with pytest.raises(DataError, match=r"data\.emissions\[1\]: 'emi_nox' covers latitudes 70 to 20") as e:
        Trainer(cfg)  # opens the data first: no model is built
    assert e.value.source == path


@pytest.mark.parametrize(("value", "what"), [(-1e-12, "negative"), (np.nan, "NaN or infinite")])
def test_negative_or_nan_fluxes_over_the_domain_are_refused_and_nan_outside_it_is_not(value, what):
    values = np.full((72, 144), 1e-10)
    values[10, 20] = value  # 63.75°N, 51.25°E
    flux = xr.DataArray(values, name="emi_nox", dims=("latitude", "longitude"),
                        coords={"latitude": FINE_LAT, "longitude": FINE_LON})
    with pytest.raises(DataError, match=f"has 1 {what} flux value.s. over the data's domain, first at latitude "
                                        "63.75, longitude 51.25"):
        onto_grid(flux, IFS_LAT, IFS_LON, source="f.nc")
    europe_lat, europe_lon = np.array([50.0, 40.0]), np.array([10.0, 20.0, 30.0])  # a regional grid far from it
    np.testing.assert_allclose(onto_grid(flux, europe_lat, europe_lon, source="f.nc"), 1e-10)


# ---- the config -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("variant", "item", "extra", "field", "says"), [
    ("medium-range", {"species": "nox"}, {}, "data.emissions", "only the air-pollution variant"),
    ("air-pollution", {"species": "nox", "name": "mine"}, {}, "data.emissions[0].species", "give one of species"),
    ("air-pollution", {}, {}, "data.emissions[0].species", "give one of species"),
    ("air-pollution", {"species": "pm10"}, {}, "data.emissions[0].species", "must be one of 'ammonia'"),
    ("air-pollution", {"species": "nox", "path": ""}, {}, "data.emissions[0].path", "NetCDF or GRIB file"),
    ("air-pollution", {"species": "nox", "variable": ""}, {}, "data.emissions[0].variable", "flux variable"),
    ("air-pollution", {"species": "nox", "units": "ppb"}, {}, "data.emissions[0].units", "'ppb' is not an emission"),
    ("air-pollution", {"species": "nox", "molar_mass": 0}, {}, "data.emissions[0].molar_mass", "g mol-1 > 0"),
    ("air-pollution", {"name": "mine", "units": "mol m-2 s-1"}, {}, "data.emissions[0].molar_mass",
     "a new static input needs its molar mass"),
    ("air-pollution", {"name": "pm2p5"}, {}, "data.emissions[0].name", "a new name"),
    ("air-pollution", {"name": "Fire-NOx"}, {}, "data.emissions[0].name", "lower-case letters"),
    ("air-pollution", {"name": "mine"}, {"distil.teacher": "t.safetensors"}, "data.emissions[0].name",
     "the teacher (distil.teacher) takes no new static input"),
])
def test_the_config_refuses_what_cannot_work_naming_the_field(variant, item, extra, field, says):
    inventory = {"path": "nox.nc", "variable": "emi_nox", **item}
    with pytest.raises(ConfigError) as e:
        config_from_dict({"variant": variant, "data": {"emissions": [inventory]}}, extra)
    assert e.value.field == field and says in e.value.message


def test_a_species_given_twice_is_refused_and_the_config_round_trips(tmp_path):
    nox = {"path": "nox.nc", "variable": "emi_nox", "species": "nox"}
    with pytest.raises(ConfigError) as e:
        config_from_dict({"variant": "air-pollution", "data": {"emissions": [nox, nox]}})
    assert e.value.field == "data.emissions[1].species" and "species nox is given by two inventories" in e.value.message
    cfg = config_from_dict({"variant": "air-pollution", "data": {"emissions": [
        nox, {"path": "fire.grib", "variable": "noxfire", "name": "fire_nox", "units": "g m-2 d-1"}]}})
    assert cfg.data.emissions[1] == EmissionInventory("fire.grib", "noxfire", name="fire_nox", units="g m-2 d-1")
    save_config(cfg, tmp_path / "train.yaml")  # what `auroraops train --config` reads
    assert load_config(tmp_path / "train.yaml") == cfg


# ---- the model's inputs ---------------------------------------------------------------------------------


def test_a_mapped_species_fills_the_training_batch_statics_with_the_inventorys_pattern(data):
    statics = data.train[0].inputs.static_vars
    grid = xr.DataArray(expected_box(), dims=("latitude", "longitude"),
                        coords={"latitude": IFS_LAT, "longitude": IFS_LON})
    mean = float(area_weighted_mean(grid))
    np.testing.assert_allclose(statics["static_nox"].numpy(), expected_box() / mean, rtol=1e-5)
    np.testing.assert_allclose(statics["static_nox_log"].numpy(), np.log1p(expected_box() / mean / LOG_EPS), rtol=1e-5)
    assert data.emissions[0].scale == pytest.approx(mean, rel=1e-9)
    for sample in (data.train[len(data.train) - 1], data.val[0]):  # every sample, validation too
        torch.testing.assert_close(sample.inputs.static_vars["static_nox"], statics["static_nox"])
    assert "static_nox" not in data.filled_inputs and data.filled_inputs["static_co"] == "synthetic"
    assert any(n.startswith("emission inventory ") and "static_nox = flux / " in n for n in data.provenance.notes)


def test_a_grib_inventory_maps_as_the_same_netcdf_one(tmp_path):
    import eccodes

    flux = np.where(BOX, SOURCE, BACKGROUND)
    handle = eccodes.codes_grib_new_from_samples("regular_ll_sfc_grib2")
    for key, value in dict(Ni=144, Nj=72, latitudeOfFirstGridPointInDegrees=88.75,
                           longitudeOfFirstGridPointInDegrees=1.25, latitudeOfLastGridPointInDegrees=-88.75,
                           longitudeOfLastGridPointInDegrees=358.75, iDirectionIncrementInDegrees=2.5,
                           jDirectionIncrementInDegrees=2.5, paramId=210085).items():  # noxfire, kg m**-2 s**-1
        eccodes.codes_set(handle, key, value)
    eccodes.codes_set_values(handle, flux.ravel())
    with open(tmp_path / "gfas.grib", "wb") as f:
        eccodes.codes_write(handle, f)
    eccodes.codes_release(handle)
    gfas = EmissionInventory(str(tmp_path / "gfas.grib"), "noxfire", species="nox")  # units from the GRIB tables
    grib = read_inventories([gfas], IFS_LAT, IFS_LON)
    netcdf = read_inventories([EmissionInventory(box_inventory(tmp_path / "nox.nc"), "emi_nox", species="nox")],
                              IFS_LAT, IFS_LON)
    np.testing.assert_allclose(grib.species["static_nox"].values, netcdf.species["static_nox"].values, rtol=1e-5)


def test_a_new_named_static_reaches_the_model_with_its_own_normalisation(data):
    sample = data.train[0]
    fire = sample.inputs.static_vars["fire_nox"]
    np.testing.assert_allclose(fire.numpy(), expected_box(), rtol=1e-6)  # kg m-2 s-1
    location, scale = data.emissions[1].location, data.emissions[1].scale
    areas, flux = cell_areas(IFS_LAT, IFS_LON), expected_box()  # area-weighted mean and standard deviation
    assert location == pytest.approx(np.sum(areas * flux) / areas.sum(), rel=1e-9)
    assert scale == pytest.approx(math.sqrt(np.sum(areas * (flux - location) ** 2) / areas.sum()), rel=1e-9)
    overrides = model_overrides(data.emissions)
    assert overrides == {"emission_statics": {"fire_nox": [location, scale]}}
    model = build_model(data.spec, "tiny", seed=1, overrides=overrides)
    assert model.static_vars[-1] == "fire_nox" and model.surf_stats["fire_nox"] == (location, scale)
    (pred,) = forecast_steps(model, sample.inputs, 1)
    moved = dataclasses.replace(sample.inputs, static_vars={**sample.inputs.static_vars, "fire_nox": fire * 50})
    (other,) = forecast_steps(model, moved, 1)
    assert not torch.equal(pred.surf_vars["pm2p5"], other.surf_vars["pm2p5"])  # the model sees it
    lacking = dataclasses.replace(sample.inputs, static_vars={k: v for k, v in sample.inputs.static_vars.items()
                                                              if k != "fire_nox"})
    with pytest.raises(DataError, match="static inputs from emission inventories that the batch lacks: fire_nox"):
        list(forecast_steps(model, lacking, 1))


def test_published_weights_load_with_the_new_static_embedded_at_zero_and_forecast_as_before(tmp_path, data):
    published = build_model(data.spec, "tiny", seed=3)
    path = tmp_path / "aurora-0.4-air-pollution.ckpt"  # the published format: a state dict saved by torch
    torch.save(published.state_dict(), path)
    model = build_model(data.spec, "tiny", seed=4, overrides=model_overrides(data.emissions))
    load_weights(model, str(path))
    zeroed = [k for k in model.state_dict() if k.endswith(("weights.fire_nox", "weights.static_fire_nox"))]
    assert zeroed and all(not model.state_dict()[k].any() for k in zeroed)
    batch = data.train[0].inputs
    plain = dataclasses.replace(batch, static_vars={k: v for k, v in batch.static_vars.items() if k != "fire_nox"})
    (before,), (after,) = forecast_steps(published, plain, 1), forecast_steps(model, batch, 1)
    for name in data.spec.output_surf_vars:
        torch.testing.assert_close(after.surf_vars[name], before.surf_vars[name])


# ---- training, the checkpoint and forecasts from it ------------------------------------------------------


def test_a_two_step_run_with_inventories_checkpoints_a_model_whose_forecast_reads_them_again(tmp_path):
    path = box_inventory(tmp_path / "nox.nc")
    trainer = Trainer(config(tmp_path, [{"path": path, "variable": "emi_nox", "species": "nox"},
                                        {"path": path, "variable": "emi_nox", "name": "fire_nox"}]))
    trainer.fit()
    assert trainer.model.static_vars[-1] == "fire_nox"
    best = str(tmp_path / "run" / "best.safetensors")
    info = read_checkpoint_info(best)
    assert info.emissions == trainer.data.emissions and len(info.emissions) == 2
    fire = info.emissions[1]
    assert json.loads(info.metadata["model_overrides"])["emission_statics"] == {"fire_nox": [fire.location, fire.scale]}
    job = ForecastJob("air-pollution", (str(IFS_8_STEPS),), 2, str(tmp_path / "forecast.nc"), checkpoint=best)
    result = run_forecast_job(job)
    assert np.isfinite(result.dataset["pm2p5"].values).all() and result.dataset.sizes["time"] == 2
    trained = trainer.data.train[0].inputs.static_vars
    for key in ("static_nox", "static_nox_log", "fire_nox"):
        np.testing.assert_allclose(result.window[key].values, trained[key].numpy())
    assert "static_nox" not in result.provenance.filled and "fire_nox" not in result.dataset

    write_inventory(path, np.where(BOX, 2 * SOURCE, 2 * BACKGROUND))  # the fluxes doubled since training
    doubled = run_forecast_job(dataclasses.replace(job, out=str(tmp_path / "doubled.nc")))
    for key in ("static_nox", "fire_nox"):  # mapped with the recorded numbers, not this file's own mean
        np.testing.assert_allclose(doubled.window[key].values, 2 * trained[key].numpy(), rtol=1e-6)

    shutil.move(path, tmp_path / "moved.nc")
    with pytest.raises(DataError, match=re.escape("which a forecast reads again from the paths its training "
                                                  f"recorded: {path}: file not found")) as e:
        run_forecast_job(dataclasses.replace(job, out=str(tmp_path / "again.nc")))
    assert e.value.source == best and not (tmp_path / "again.nc").exists()
