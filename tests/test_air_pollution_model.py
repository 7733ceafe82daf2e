"""The air-pollution model, as trained here, keeps its samples and its zero: each sample of a batch gets
its own forecast (the published class adds every sample's earlier field to every other's prediction),
and the training normalisation leaves its species' zero at zero (the model clamps and log-transforms
them in normalised units), on the real GEMS column series."""

from __future__ import annotations

import dataclasses

from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from conftest import GEMS_TCCO2
from model_code.data.batch import window_to_batch
from model_code.data.ingest import load_window
from model_code.data.synthetic import synthetic_window
from model_code.forecast import forecast_steps
from model_code.training.config import config_from_dict
from model_code.training.trainer import Trainer
from model_code.variants import build_model, get_variant


SPEC = get_variant("air-pollution")


def _batch(seed: int):
    h, w = SPEC.tiny_grid
    end = np.datetime64("2024-01-01T12:00")
    times = end - np.arange(SPEC.max_history)[::-1] * np.timedelta64(SPEC.timestep_hours, "h")
    window = synthetic_window(SPEC, np.linspace(90, -90, h), np.linspace(0, 360, w, endpoint=False), times,
                              seed=seed)
    return window_to_batch(window, SPEC)


def _stack(a, b):
    """One batch of `a` then `b` (the statics are `a`'s: one set per batch)."""
    cat = lambda x, y: {k: torch.cat([x[k], y[k]]) for k in x}  # noqa: E731
    return dataclasses.replace(a, surf_vars=cat(a.surf_vars, b.surf_vars), atmos_vars=cat(a.atmos_vars, b.atmos_vars),
                               metadata=dataclasses.replace(a.metadata, time=a.metadata.time + b.metadata.time))


def test_a_batch_of_two_gives_each_sample_its_own_forecast():
    model = build_model(SPEC, "tiny", seed=0)
    first = _batch(1)
    second = dataclasses.replace(_batch(2), static_vars=first.static_vars)  # a batch shares its statics
    with torch.no_grad():
        alone = [model(first), model(second)]
        together = model(_stack(first, second))
    for name in ("pm2p5", "tcco", "2t"):  # predicted as changes (pm2p5 to the older input, tcco to the newer) and not
        assert together.surf_vars[name].shape == (2, *alone[0].surf_vars[name].shape[1:])
        for i in range(2):
            torch.testing.assert_close(together.surf_vars[name][i], alone[i].surf_vars[name][0], rtol=1e-4, atol=1e-6)
    for name in ("co", "no2"):
        torch.testing.assert_close(together.atmos_vars[name][1], alone[1].atmos_vars[name][0], rtol=1e-4, atol=1e-6)
    assert not torch.equal(alone[0].surf_vars["tcco"], alone[1].surf_vars["tcco"])  # the samples differ


@pytest.fixture(scope="module")
def column_series(tmp_path_factory) -> Path:
    """The real GEMS total-column CO2 (every 4th point, 4.5°) in the slot of total-column CO, scaled
    into its range (as `benchmarks/held_out.py` gives it to the model)."""
    with xr.open_dataset(GEMS_TCCO2) as ds:
        tcco = (ds["tcco2"].isel(latitude=slice(2, None, 4), longitude=slice(0, None, 4)) * 1e-5).astype("float32")
    tcco.attrs = {"units": "kg m-2"}
    path = tmp_path_factory.mktemp("gems") / "tcco.nc"
    xr.Dataset({"tcco": tcco}).to_netcdf(path)
    return path


def test_training_normalisation_keeps_the_species_zero_so_untrained_heads_forecast_persistence(column_series, tmp_path):
    cfg = config_from_dict({
        "variant": "air-pollution", "profile": "tiny", "head_init": "zero",
        "data": {"paths": [str(column_series)], "val_period": ["2006-01-06T00:00", "2006-01-08T18:00"],
                 "crop": True, "fill_missing": "mean", "fill_missing_dynamic": "mean", "levels": [500, 850],
                 "normalisation": "training"},
        "train": {"max_steps": 1, "device": "cpu"}, "checkpoint": {"out_dir": str(tmp_path / "run")}})
    model = Trainer(cfg).model
    location, scale = model.surf_stats["tcco"]
    values = xr.open_dataset(column_series)["tcco"].sel(time=slice(None, "2006-01-05T18:00"))
    assert location == 0.0 and 0.99 < scale / float(np.sqrt((values ** 2).mean())) < 1.01  # area weights: ~1
    window, _ = load_window([str(column_series)], cfg.spec, init_time="2006-01-07T00:00", fill_missing="mean",
                            crop=True, levels=(500, 850))
    batch = window_to_batch(window, cfg.spec)
    newest = batch.surf_vars["tcco"][0, -1]
    for pred in forecast_steps(model.eval(), batch, 2):  # a change of zero, twice: the newest input twice
        field = pred.surf_vars["tcco"][0, 0]
        torch.testing.assert_close(field, newest[:field.shape[0], :field.shape[1]], rtol=1e-5, atol=0)
