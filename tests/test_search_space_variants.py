"""The model's shape in the search: medium-range history, high-res patch size and heads, the full
profile's backbone, checked as training configs, against a real file's grid, in Optuna and in Katib."""

from __future__ import annotations

import argparse
import re

import numpy as np
import optuna
import pytest
import torch
import xarray as xr
import yaml
from kubeflow_katib_api import models as km

from k8s_schemas import errors, katib_validator
from model_code.data.batch import window_to_batch
from model_code.data.contract import grid_fit_problem
from model_code.data.synthetic import synthetic_window
from model_code.errors import ConfigError, DataError
from model_code.training.config import load_config
from model_code.training.entry import add_arguments, config_from_args
from model_code.training.search_space import config_space, search_space, suggest, to_overrides
from model_code.variants import VARIANTS, build_model, get_variant
from adapters.cluster import outcome_of
from adapters.katib import tuning_objects

optuna.logging.set_verbosity(optuna.logging.WARNING)


def names(space) -> list[str]:
    return [p.name for p in space]


def by_name(space) -> dict:
    return {p.name: p for p in space}


# --------------------------------------------------------------------------------------
# What each variant and profile searches


def test_without_the_architecture_search_every_variant_searches_what_it_did():
    for variant in VARIANTS:
        for profile in ("tiny", "full"):
            assert names(search_space(profile, 1000, variant=variant)) == names(search_space(profile, 1000))


def test_medium_range_searches_its_history_and_a_sampled_value_is_the_specs():
    for profile in ("tiny", "full"):
        history = by_name(search_space(profile, 1000, variant="medium-range", architecture=True))["history"]
        assert history.choices == (2, 3, 4)
    assert "history" not in names(search_space("tiny", 1000, variant="wave", architecture=True))

    space = search_space("tiny", 20, variant="medium-range", architecture=True)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(12):
        values = suggest(study.ask(), space)
        cfg = load_config(None, {"variant": "medium-range", "train.max_steps": 20, **to_overrides(values, space)})
        assert cfg.model["max_history_size"] == cfg.spec.max_history == cfg.data.history == values["history"]
        seen.add(values["history"])
    assert seen == {2, 3, 4}


def test_the_full_profile_searches_its_backbone_only_without_starting_weights(tmp_path):
    space = by_name(search_space("full", 1000, variant="wave", architecture=True))
    assert {"window_size", "latent_levels", "depth"} <= set(space)
    assert (2, 6, 12) in space["window_size"].choices and 4 in space["latent_levels"].choices  # Aurora's own
    assert space["depth"].keys == ("model.encoder_depths", "model.decoder_depths")
    assert not {"window_size", "latent_levels", "depth"} & set(names(search_space("full", 1000, variant="wave")))

    scratch = load_config(None, {"variant": "wave", "profile": "full"})
    assert {"window_size", "latent_levels", "depth"} <= set(names(config_space(scratch, architecture=True)))
    assert names(config_space(scratch)) == names(search_space("full", scratch.train.max_steps))
    weights = str(tmp_path / "aurora-0.25-wave.ckpt")
    published = load_config(None, {"variant": "wave", "profile": "full", "weights": weights})
    with pytest.raises(ConfigError, match="fix the model's shape") as raised:
        config_space(published, architecture=True)
    assert raised.value.field == "weights"
    assert names(config_space(published)) == names(search_space("full", published.train.max_steps))


def test_high_res_searches_patch_sizes_that_fit_its_grids_and_heads():
    spec = get_variant("high-res")
    for profile, grid in (("tiny", spec.tiny_grid), ("full", spec.grid.shape)):
        space = by_name(search_space(profile, 1000, variant="high-res", architecture=True))
        assert {"patch_size", "heads"} <= set(space)
        assert spec.patch_size in space["patch_size"].choices
        if profile == "tiny":  # divisors of the variant's: they fit any grid the loader takes for it
            assert all(spec.patch_size % p == 0 for p in space["patch_size"].choices)
        assert all(grid_fit_problem(*grid, p) is None for p in space["patch_size"].choices)
        for p in space["patch_size"].choices:
            for heads in space["heads"].choices:
                cfg = load_config(None, {"variant": "high-res", "profile": profile, "model.patch_size": p,
                                         "model.num_heads": heads})
                assert (cfg.model["patch_size"], cfg.model["num_heads"]) == (p, heads)
    assert "patch_size" not in names(search_space("full", 1000, variant="high-res"))


@pytest.mark.parametrize("overrides, field, message", [
    ({"model.window_size": [2, 6]}, "model.window_size", "three whole numbers >= 1"),
    ({"model.window_size": [2, 0, 12]}, "model.window_size", "got (2, 0, 12)"),
    ({"model.window_size": 8}, "model.window_size", "e.g. [2, 6, 12]"),
    ({"model.latent_levels": 1}, "model.latent_levels", "whole number >= 2"),
    ({"model.latent_levels": 2.5}, "model.latent_levels", "got 2.5"),
    ({"model.patch_size": 0}, "model.patch_size", "whole number >= 1"),
    ({"model.patch_size": True}, "model.patch_size", "got True"),
    ({"model.num_heads": 3}, "model.num_heads", "must divide the embedding dimension 32"),  # the tiny profile's
    ({"model.embed_dim": 48, "model.num_heads": 32}, "model.num_heads", "dimension 48"),
    ({"profile": "full", "model.num_heads": 7}, "model.num_heads", "dimension 512"),  # Aurora's default width
])
def test_shape_values_that_cannot_build_a_model_are_refused_naming_the_key(overrides, field, message):
    with pytest.raises(ConfigError) as raised:
        load_config(None, {"variant": "high-res", **overrides})
    assert raised.value.field == field
    assert message in str(raised.value)


# --------------------------------------------------------------------------------------
# A patch size against a real file's grid


def run_config(data, tmp_path, patch_size: int, **extra):
    return load_config(None, {
        "variant": "high-res", "timestep_hours": 1, "model.patch_size": patch_size,
        "data.paths": [str(data)], "data.crop": True, "data.fill_missing": "zeros",
        "data.fill_missing_dynamic": "zeros", "data.levels": [500, 850],
        "train.device": "cpu", "checkpoint.out_dir": str(tmp_path / "run"), **extra})


@pytest.fixture
def broken_values(hourly_box, tmp_path):
    """The real ERA5 box with its coordinates as they are and every 10 m u-wind value infinite:
    any check that reads the values refuses it."""
    path = tmp_path / "era5_box_infinite_u10.nc"
    with xr.open_dataset(hourly_box) as ds:
        broken = ds.load()
    broken["u10"] = xr.full_like(broken["u10"], np.inf)
    broken.to_netcdf(path)
    return path


@pytest.fixture
def data_reads(monkeypatch):
    """Every dataset `open_data` builds, which is where the values are first read (validated)."""
    from model_code.training import data as training_data

    calls = []
    real = training_data.WindowDataset.from_fields

    def recorded(*args, **kwargs):
        calls.append(kwargs.get("validate"))
        return real(*args, **kwargs)

    monkeypatch.setattr(training_data.WindowDataset, "from_fields", recorded)
    return calls


@pytest.mark.parametrize("patch_size, why", [
    (12, "31x60"),  # 31 rows after the crop to 10: 7 over a multiple of 12
    (4, "31x60"),  # 60 columns fit, 31 rows do not
    (1, "exceed 1 to drop the row over them"),  # divides both, but would keep the row the targets drop
])
def test_a_patch_size_the_real_grid_does_not_fit_is_refused_before_any_value_is_read(
        broken_values, data_reads, tmp_path, patch_size, why):
    from model_code.training.data import open_data

    with pytest.raises(ConfigError, match="does not fit") as raised:
        open_data(run_config(broken_values, tmp_path, patch_size))
    assert raised.value.field == "model.patch_size"
    assert why in str(raised.value)
    assert data_reads == []


def test_a_patch_size_that_fits_goes_on_to_the_values(broken_values, data_reads, tmp_path):
    """The control: 5 divides the 60 columns and the 30 rows the targets keep, so the check lets
    it through and the validator reads the values, which it refuses."""
    from model_code.training.data import open_data

    with pytest.raises(DataError, match="infinite value") as raised:
        open_data(run_config(broken_values, tmp_path, 5))
    assert not isinstance(raised.value, ConfigError)
    assert data_reads == [True]


# --------------------------------------------------------------------------------------
# Optuna and Katib over the new space


def synthetic_batch(spec, h: int, w: int):
    end = np.datetime64("2024-01-01T12:00")
    times = end - np.arange(spec.max_history)[::-1] * np.timedelta64(spec.timestep_hours, "h")
    window = synthetic_window(spec, np.linspace(90, -90, h), np.linspace(0, 360, w, endpoint=False), times)
    return window_to_batch(window, spec)


@pytest.mark.parametrize("variant", ["medium-range", "high-res"])
def test_optuna_trials_over_the_shape_build_models_that_forecast(variant):
    """Every trial's values make a checked config whose tiny model runs on the variant's tiny grid."""
    space = search_space("tiny", 20, variant=variant, architecture=True)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(4):
        trial = study.ask()
        cfg = load_config(None, {"variant": variant, "train.max_steps": 20,
                                 **to_overrides(suggest(trial, space), space)})
        model = build_model(cfg.spec, cfg.profile, overrides=cfg.model)
        h, w = cfg.spec.tiny_grid
        with torch.no_grad():
            prediction = model(synthetic_batch(cfg.spec, h, w))
        assert model.patch_size == cfg.model.get("patch_size", cfg.spec.patch_size)
        assert model.max_history_size == cfg.spec.max_history
        assert torch.isfinite(prediction.surf_vars["2t"]).all()
        study.tell(trial, 0.0)


def test_every_full_profile_window_runs_with_every_latent_level_count():
    """Aurora's Swin blocks pad the latent grid to the window; each pair of searched values
    works, shown on a model of the tiny width (the shapes do not depend on it)."""
    spec = get_variant("medium-range")
    space = by_name(search_space("full", 1000, variant="medium-range", architecture=True))
    batch = synthetic_batch(spec, 32, 64)
    for window in space["window_size"].choices:
        for levels in space["latent_levels"].choices:
            model = build_model(spec, "tiny", overrides={"window_size": window, "latent_levels": levels})
            with torch.no_grad():
                prediction = model(batch)
            assert prediction.atmos_vars["z"].shape == (1, 1, len(spec.levels), 32, 64)
            assert torch.isfinite(prediction.atmos_vars["z"]).all()


def test_optuna_records_a_window_size_as_text_that_configures_the_tuple():
    scratch = load_config(None, {"variant": "medium-range", "profile": "full", "train.max_steps": 1000})
    space = config_space(scratch, architecture=True)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=2))
    for _ in range(6):
        trial = study.ask()
        values = suggest(trial, space)
        assert isinstance(values["window_size"], tuple) and trial.params["window_size"] == \
            "[" + ",".join(map(str, values["window_size"])) + "]"
        # What `tune` keeps of the best trial is Optuna's record: it configures the same run.
        recorded = to_overrides(trial.params, space)
        assert recorded == to_overrides(values, space)
        cfg = load_config(None, {"variant": "medium-range", "profile": "full", "train.max_steps": 1000, **recorded})
        assert cfg.model["window_size"] == values["window_size"]
        assert cfg.model["encoder_depths"] == (values["depth"],) * 3 == cfg.model["decoder_depths"]
        assert cfg.spec.max_history == values["history"]
        study.tell(trial, 0.0)


@pytest.mark.parametrize("variant, values, expected", [
    ("high-res", {"window_size": "[2,8,16]", "latent_levels": "6", "depth": "4", "patch_size": "12", "heads": "32"},
     {"window_size": (2, 8, 16), "latent_levels": 6, "encoder_depths": (4, 4, 4), "decoder_depths": (4, 4, 4),
      "patch_size": 12, "num_heads": 32}),
    ("medium-range", {"window_size": "[2,4,8]", "latent_levels": "8", "depth": "6", "history": "3"},
     {"window_size": (2, 4, 8), "latent_levels": 8, "encoder_depths": (6, 6, 6), "decoder_depths": (6, 6, 6),
      "max_history_size": 3}),
])
def test_katib_renders_the_shape_and_a_trial_command_configures_it(tmp_path, variant, values, expected):
    cfg = load_config(None, {"variant": variant, "profile": "full", "train.max_steps": 1000})
    space = config_space(cfg, architecture=True)
    cm, experiment = tuning_objects(cfg, namespace="ml", space=space)
    body = experiment.to_dict()
    assert errors(katib_validator(), body) == []
    listed = {p["name"]: p for p in body["spec"]["parameters"]}
    assert listed["window_size"] == {"name": "window_size", "parameterType": "categorical",
                                     "feasibleSpace": {"list": ["[2,4,8]", "[2,6,12]", "[2,8,16]"]}}
    assert set(values) <= set(listed)

    # Substitute the values as Katib does (all text) and parse them as the trainer's CLI does.
    command = body["spec"]["trialTemplate"]["trialSpec"]["spec"]["trainer"]["command"]
    text = {"trialName": "trial-1", "lr": "0.0001", "weight_decay": "0.01", "min_lr_ratio": "0.1",
            "lora": "full", "lora_rank": "8", "surface_scale": "0.25", "warmup_steps": "100", **values}
    argv = [re.sub(r"\$\{trialParameters\.(\w+)\}", lambda m: text[m[1]], a) for a in command]
    config = tmp_path / "train.yaml"
    config.write_text(cm["data"]["train.yaml"])
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    trial = config_from_args(parser.parse_args(["--config", str(config), *argv[5:]]))
    assert dict(trial.model) == expected
    assert trial.data.history == expected.get("max_history_size")

    # The best trial's assignments, as Katib reports them, read back to the same values.
    best = {"bestTrialName": "trial-1", "parameterAssignments": [{"name": k, "value": v} for k, v in values.items()],
            "observation": {"metrics": [{"name": "val_score", "min": "0.5", "max": "1", "latest": "0.5"}]}}
    reported = outcome_of(km.V1beta1Experiment.from_dict({**body, "status": {"currentOptimalTrial": best}}), space)
    assert reported.best_parameters["window_size"] == expected["window_size"]
    assert load_config(None, {"variant": variant, "profile": "full", "train.max_steps": 1000,
                              **to_overrides(reported.best_parameters, space)}).model == trial.model


def test_auroraops_tune_renders_the_shape_only_when_asked_and_never_over_starting_weights(tmp_path, capsys):
    from auroraops.cli import main

    argv = ["tune", "--variant", "medium-range", "--trials", "4", "--set", "train.max_steps=300"]
    out = tmp_path / "plain.yaml"
    assert main([*argv, "--render-katib", str(out)]) == 0
    _, plain = yaml.safe_load_all(out.read_text())
    out = tmp_path / "shape.yaml"
    assert main([*argv, "--render-katib", str(out), "--search-architecture"]) == 0
    _, shape = yaml.safe_load_all(out.read_text())
    assert errors(katib_validator(), shape) == []
    added = [p["name"] for p in shape["spec"]["parameters"]][len(plain["spec"]["parameters"]):]
    assert added == ["history"]  # the tiny profile: its depth and heads are searched anyway
    capsys.readouterr()

    weights = tmp_path / "aurora-0.25-finetuned.ckpt"
    assert main([*argv, "--render-katib", str(tmp_path / "x.yaml"), "--search-architecture",
                 "--set", f"weights={weights}"]) == 1
    assert "weights: the starting weights" in capsys.readouterr().err
    assert not (tmp_path / "x.yaml").exists()


def test_the_pipelines_tune_step_refuses_a_shape_search_before_a_warm_start(tmp_path):
    from components.steps import tune_params

    with pytest.raises(ConfigError) as raised:
        tune_params("medium-range", str(tmp_path / "train.nc"), {}, tmp_path / "study", n_trials=2,
                    architecture=True, warm_start="champion")
    assert raised.value.field == "search_architecture"
    assert not (tmp_path / "study").exists()
