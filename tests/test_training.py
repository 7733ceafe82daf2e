"""The trainer on a real hourly ERA5 series: it learns, resumes exactly, stops on NaN, refuses bad configs.

The series is the shipped ERA5 sample of 10 m wind (u10, v10) over the central USA, 25
hourly times. The tests train the tiny medium-range model on its north-west 33x64 box (the
tiny backbone's windows fit 32x64 once the grid is cropped to the patch size) at a 1 h
step. The variant's other variables are not in the file: they are filled with zeros in the
inputs and their targets are NaN, so the loss only ever compares winds with real winds.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import typing
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from auroraops.cli import main
from model_code.checkpoint import load_checkpoint
from model_code.data import windows as windows_module
from model_code.errors import ConfigError, DataError
from model_code.training import (
    Callback,
    Trainer,
    TrainingDiverged,
    TrainingStopped,
    load_config,
    save_config,
    train,
)
from model_code.training import trainer as trainer_module
from model_code.training.__main__ import main as train_main
from model_code.training.config import config_from_dict
from model_code.training.data import EpochSampler, open_data
from model_code.training.loss_config import AURORA_SURFACE_WEIGHTS

BASE = {
    "variant": "medium-range",
    "profile": "tiny",
    "timestep_hours": 1,
    "data": {"val_fraction": 0.2, "crop": True, "fill_missing": "zeros", "fill_missing_dynamic": "zeros",
             "levels": [500, 850], "batch_size": 2},
    "optim": {"lr": 1e-3},
    "rollout": {"curriculum": [[0, 1], [4, 2]]},
    "train": {"max_steps": 8, "val_every": 4, "device": "cpu", "progress": False},
    "checkpoint": {"keep_top_k": 2},
}


def make_config(data: Path, out: Path, overrides: dict | None = None):
    return config_from_dict(BASE, {"data.paths": [str(data)], "checkpoint.out_dir": str(out), **(overrides or {})})




@pytest.fixture
def hourly(hourly_box) -> Path:
    return hourly_box


def sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def log_lines(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


# --------------------------------------------------------------------------------------
# Learning


def test_a_tiny_model_learns_the_real_hourly_series_on_held_out_hours(hourly, tmp_path):
    run = tmp_path / "run"
    trainer = Trainer(make_config(hourly, run, {"checkpoint.ensemble": "average"}))
    train_end = max(trainer.data.train.times_used(i)[-1] for i in range(len(trainer.data.train)))
    val_start = min(trainer.data.val.times_used(i)[0] for i in range(len(trainer.data.val)))
    assert train_end < val_start  # validation hours are never trained on
    assert len(trainer.data.val) == 3  # the last 4.8 h: 3 inits with 2 inputs and a target

    result = trainer.fit()
    validated = [(h["step"], h["val_loss"]) for h in result.history if "val_loss" in h]
    assert [s for s, _ in validated] == [0, 4, 8]
    assert validated[-1][1] < validated[0][1], validated
    assert result.best_step == 8 and result.best_metric == validated[-1][1]
    assert [h["rollout_steps"] for h in result.history if "loss" in h] == [1, 1, 1, 1, 2, 2, 2, 2]
    final = result.history[-1]
    assert {k for k in final if k.startswith("val_loss/") and "lead" not in k} == {"val_loss/10u", "val_loss/10v"}
    assert {k for k in final if k.startswith("loss/")} == {"loss/10u", "loss/10v"}  # filled ones: no truth

    model, info = load_checkpoint(result.best_checkpoint)
    assert model.timestep == timedelta(hours=1) and info.profile == "tiny" and info.metadata["step"] == "8"
    assert len(list((run / "topk").glob("*.safetensors"))) == 2
    assert Path(result.averaged_checkpoint).is_file() and np.isfinite(result.averaged_metric)

    lines = log_lines(run)
    start = lines[0]
    assert start["event"] == "start" and start["timestep_hours"] == 1
    assert start["provenance"]["filled"]["t2m"] == "zeros (inputs only; targets NaN)"
    assert [line["step"] for line in lines if line["event"] == "step"] == list(range(1, 9))
    assert [line["step"] for line in lines if line["event"] == "validation"] == [0, 4, 8]
    assert lines[-1]["event"] == "end" and lines[-1]["reason"] == "max_steps"
    assert load_config(run / "config.yaml") == trainer.cfg


def test_activation_checkpointing_changes_no_number_and_bf16_autocast_trains(hourly, tmp_path):
    one_step = {"train.max_steps": 1, "train.val_at_start": False, "train.val_every": 1, "data.validate": False}
    runs = {}
    for name, extra in [("fp32", {}), ("checkpointed", {"train.activation_checkpointing": True}),
                        ("bf16", {"train.precision": "bf16"})]:
        runs[name] = train(make_config(hourly, tmp_path / name, {**one_step, **extra})).history[-1]
    assert runs["checkpointed"]["loss"] == pytest.approx(runs["fp32"]["loss"], rel=1e-6)
    assert runs["checkpointed"]["grad_norm"] == pytest.approx(runs["fp32"]["grad_norm"], rel=1e-4)
    assert np.isfinite(runs["bf16"]["loss"]) and np.isfinite(runs["bf16"]["val_loss"])
    assert runs["bf16"]["loss"] == pytest.approx(runs["fp32"]["loss"], rel=0.05)


def test_early_stopping_ends_the_run_when_validation_stops_improving(hourly, tmp_path):
    # min_delta so large that no validation after the first counts as an improvement
    result = train(make_config(hourly, tmp_path / "run", {
        "train.val_every": 2, "early_stopping.patience": 2, "early_stopping.min_delta": 1e9,
        "data.validate": False}))
    assert result.stop_reason == "early_stopping"
    assert result.steps == 4 and result.best_step == 0
    assert [h["step"] for h in result.history if "val_loss" in h] == [0, 2, 4]


# --------------------------------------------------------------------------------------
# Kill and resume


class Killed(Exception):
    pass


class KillAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer, step, logs):
        if step == self.step:
            raise Killed(step)


def test_a_run_killed_between_checkpoints_resumes_with_the_same_losses(hourly, tmp_path):
    # A 14 h gap before the validation period leaves 3 training samples: with batches of 1 and
    # 2 batches a step, step 2 straddles two epochs and its checkpoint lies inside the second;
    # the rollout grows from 1 to 2 steps at step 3.
    overrides = {"train.max_steps": 4, "train.val_every": 2, "train.accumulate": 2, "data.batch_size": 1,
                 "data.gap_hours": 14, "rollout.curriculum": [[0, 1], [2, 2]], "data.validate": False}
    whole = train(make_config(hourly, tmp_path / "whole", overrides))

    cfg = make_config(hourly, tmp_path / "killed", overrides)
    with pytest.raises(Killed):
        train(cfg, [KillAt(3)])  # after step 3; the last checkpoint is step 2's
    resumed = train(cfg, resume=tmp_path / "killed")

    assert [h["step"] for h in resumed.history] == [h["step"] for h in whole.history] == list(range(5))
    assert [h["epoch"] for h in whole.history[1:]] == [0, 1, 1, 2]
    assert [h["rollout_steps"] for h in whole.history[1:]] == [1, 1, 2, 2]
    for a, b in zip(whole.history, resumed.history):
        assert a.keys() == b.keys()
        for key in a:
            assert b[key] == pytest.approx(a[key], rel=1e-6, abs=1e-9), (a["step"], key)
    assert resumed.best_step == whole.best_step and resumed.best_metric == pytest.approx(whole.best_metric)
    resumed_steps = [line["step"] for line in log_lines(tmp_path / "killed") if line["event"] == "step"]
    assert resumed_steps == [1, 2, 3, 3, 4]  # step 3 was lost with the kill and done again


def test_the_epoch_sampler_gives_every_rank_its_share_of_the_same_global_batches():
    one = list(EpochSampler(11, 4, seed=3))
    ranks = [list(EpochSampler(11, 4, rank=r, world=2, seed=3)) for r in range(2)]
    assert len(one) == 8  # two whole global batches; the last 3 samples wait for another epoch
    for k in range(2):
        assert sorted(ranks[0][2 * k:2 * k + 2] + ranks[1][2 * k:2 * k + 2]) == sorted(one[4 * k:4 * k + 4])
    later = EpochSampler(11, 4, seed=3)
    later.set_epoch(0, start=1)
    assert list(later) == one[4:]
    later.set_epoch(1)
    assert list(later) != one


# --------------------------------------------------------------------------------------
# Divergence


class Hashes(Callback):
    """Checksums of each `last/` checkpoint as it was written."""

    def __init__(self) -> None:
        self.last: dict[int, str] = {}

    def on_checkpoint(self, trainer, step, path, kind):
        if kind == "last":
            self.last[step] = sha256(path)


def first_step_touching(cfg, index: int) -> int:
    """The optimiser step whose batch first has time `index` of the series among its inputs
    (batches of 2 drawn by the seed-0 sampler)."""
    with xr.open_dataset(cfg.data.paths[0]) as ds:
        time = np.datetime64(ds.time.values[index], "ns")
    train = open_data(cfg).train
    touched = {i for i in range(len(train)) if time in train.times_used(i)[:train.history]}
    order = list(EpochSampler(len(train), 2, seed=0))
    return next(k // 2 + 1 for k, i in enumerate(order) if i in touched)


def run_until_it_stops(hourly: Path, tmp_path: Path, value: float):
    """Train on a copy with u10 = `value` at one pixel of the first time that the run reaches
    at step 3 or later; returns (the error, that step, the last/ checksums, the run directory)."""
    overrides = {"data.validate": False, "train.val_every": 1, "rollout.curriculum": [[0, 1]]}
    cfg = make_config(hourly, tmp_path / "probe", overrides)
    index, step = next((i, k) for i in range(2, 16) if (k := first_step_touching(cfg, i)) >= 3)
    with xr.open_dataset(hourly) as ds:
        ds = ds.load()
    ds["u10"].encoding = {}  # stored as packed int16: a huge value would not survive
    ds["u10"].values[index, 10, 20] = value
    ds.to_netcdf(tmp_path / "bad.nc")
    hashes = Hashes()
    with pytest.raises(DataError) as err:
        Trainer(make_config(tmp_path / "bad.nc", tmp_path / "run", overrides), [hashes]).fit()
    return err.value, step, hashes, tmp_path / "run"


def test_a_nan_in_the_inputs_stops_the_run_at_its_step_naming_the_variable(hourly, tmp_path):
    error, step, hashes, run = run_until_it_stops(hourly, tmp_path, np.nan)
    assert isinstance(error, TrainingStopped)
    assert (error.step, error.variable) == (step, "u10")
    assert f"training stopped at step {step}" in str(error) and "'u10' has 1 non-finite" in str(error)
    assert_last_checkpoint_intact(error, hashes, run)


def test_a_loss_gone_nan_stops_the_run_naming_step_and_variable_and_keeps_the_last_checkpoint(hourly, tmp_path):
    # A corrupt but finite value passes the input contract; inside the model it turns every output NaN.
    error, step, hashes, run = run_until_it_stops(hourly, tmp_path, 1e30)
    assert isinstance(error, TrainingDiverged)
    assert (error.step, error.variable) == (step, "10u")
    text = str(error)
    assert f"training stopped at step {step}: the loss of '10u' at lead step 1 is not finite" in text
    assert "input '10u' of the sample(s) initialised at" in text and "(largest magnitude 1e+30)" in text
    assert_last_checkpoint_intact(error, hashes, run)


def assert_last_checkpoint_intact(error, hashes: Hashes, run: Path) -> None:
    last = run / "last" / "model.safetensors"
    assert error.checkpoint == str(last) and f"(step {error.step - 1}), untouched" in str(error)
    assert max(hashes.last) == error.step - 1 and sha256(last) == hashes.last[error.step - 1]
    model, info = load_checkpoint(str(last))
    assert info.metadata["step"] == str(error.step - 1)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_the_validator_refuses_a_nan_before_training(hourly, tmp_path):
    with xr.open_dataset(hourly) as ds:
        ds = ds.load()
    ds["u10"][9, 10, 20] = np.nan
    ds.to_netcdf(tmp_path / "nan.nc")
    with pytest.raises(DataError, match="u10") as err:
        Trainer(make_config(tmp_path / "nan.nc", tmp_path / "run"))
    assert not isinstance(err.value, TrainingStopped) and not (tmp_path / "run" / "last").exists()


# --------------------------------------------------------------------------------------
# Refused before any data are read


@pytest.mark.parametrize("overrides, field, message", [
    ({"optim.lrr": 1e-3}, "optim.lrr", "did you mean 'optim.lr'"),
    ({"optim.lr": -1e-3}, "optim.lr", "must be a finite number > 0"),
    ({"optim.lora_rank": 0}, "optim.lora_rank", "whole number >= 1"),
    ({"loss.kind": "l3"}, "loss.kind", "unknown loss 'l3'"),
    ({"loss.surface_weights.2m_t": 1.0}, "loss.surface_weights.2m_t", "predicts no variable '2m_t'"),
    ({"rollout.curriculum": [[3, 1]]}, "rollout.curriculum", "must start at step 0"),
    ({"rollout.curriculum": [[0, 1], [5, 0]]}, "rollout.curriculum", ">= 1 step"),
    ({"model.embed_dims": 64}, "model.embed_dims", "not a constructor argument of Aurora"),
    ({"variant": "high-res", "model.embed_dims": 64}, "model.embed_dims", "not a constructor argument of AuroraHighRes"),
    ({"data.batch_size": "two"}, "data.batch_size", "expected int"),
    ({"early_stopping.lead_steps": [0]}, "early_stopping.lead_steps", "model steps >= 1"),
    ({"variant": "global"}, "variant", "unknown variant 'global'"),
])
def test_bad_config_values_are_refused_naming_the_field(tmp_path, overrides, field, message):
    with pytest.raises(ConfigError) as err:
        make_config(tmp_path / "not-even-there.nc", tmp_path, overrides)
    assert err.value.field == field
    assert message in str(err.value)


def test_arguments_a_subclass_hands_on_to_aurora_are_accepted(tmp_path):
    """AuroraHighRes names only its patch size and depths and passes the rest (heads, ...) on."""
    cfg = make_config(tmp_path / "x.nc", tmp_path, {"variant": "high-res", "model.num_heads": 2})
    assert cfg.model["num_heads"] == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 is allowed on CUDA")
def test_fp16_without_cuda_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device") as err:
        make_config(tmp_path / "x.nc", tmp_path, {"train.precision": "fp16"})
    assert err.value.field == "train.precision"


def test_a_config_file_names_itself_and_the_field(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: -3e-4\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: optim\.lr: .* got -0\.0003"):
        load_config(path)


def test_a_rollout_longer_than_the_data_is_refused_from_the_time_axis_alone(hourly, tmp_path, monkeypatch):
    def must_not_run(*args, **kwargs):
        raise AssertionError("ran before the rollout was checked against the data")

    monkeypatch.setattr(windows_module, "validate_fields", must_not_run)
    monkeypatch.setattr(trainer_module, "build_model", must_not_run)
    with pytest.raises(ConfigError) as err:
        Trainer(make_config(hourly, tmp_path, {"rollout.curriculum": [[0, 1], [4, 30]]}))
    assert err.value.field == "rollout.curriculum"
    assert "30 step(s) of 1 h from 2 input time(s) spans 31 h, longer than the data: 25 time(s)" in str(err.value)

    with pytest.raises(ConfigError) as err:  # a history the data cannot give, whatever the rollout
        Trainer(make_config(hourly, tmp_path, {"timestep_hours": 6, "model.max_history_size": 5, "data.history": 5,
                                               "rollout.curriculum": [[0, 1]]}))
    assert err.value.field == "data.history" and "from 5 input time(s) spans 30 h, longer than the data" in str(err.value)

    monkeypatch.undo()  # fits the series, but not the 18 h left for training
    with pytest.raises(ConfigError, match="no training sample fits outside the validation period") as err:
        Trainer(make_config(hourly, tmp_path, {"rollout.curriculum": [[0, 20]]}))
    assert err.value.field == "rollout.curriculum"


def test_variables_sharing_no_time_are_refused_naming_each_file_and_span(hourly, tmp_path):
    with xr.open_dataset(hourly) as ds:
        ds[["u10"]].to_netcdf(tmp_path / "u10.nc")
        later = ds[["v10"]].assign_coords(time=ds.time + np.timedelta64(365, "D"))
        later.to_netcdf(tmp_path / "v10_next_year.nc")
    cfg = config_from_dict(BASE, {"data.paths": [str(tmp_path / "u10.nc"), str(tmp_path / "v10_next_year.nc")],
                                  "checkpoint.out_dir": str(tmp_path / "run")})
    with pytest.raises(DataError, match="share no time") as err:
        Trainer(cfg)
    message = str(err.value)
    assert "u10.nc): 25 time(s) from 2018-01-02T06:00" in message
    assert "v10_next_year.nc): 25 time(s) from 2019-01-02T06:00" in message


def test_configs_layer_defaults_file_and_overrides_and_read_back_equal(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("variant: medium-range\noptim:\n  lr: 3e-4\nloss:\n  surface_weights: {10u: 2.0}\n")
    cfg = load_config(path, {"model.encoder_depths": [1, 2, 1], "loss.level_weights.500": 2})
    assert cfg.optim.lr == 3e-4  # YAML 1.1 reads 3e-4 as text; a float field takes it
    assert cfg.loss.surface_weights == {**AURORA_SURFACE_WEIGHTS, "10u": 2.0}  # mappings merge
    assert cfg.loss.level_weights == {500: 2.0}
    assert cfg.loss.lead_emphasis_hours == (72.0, 120.0)  # the variant's own default
    assert cfg.model == {"encoder_depths": (1, 2, 1)}
    save_config(cfg, tmp_path / "saved.yaml")
    assert load_config(tmp_path / "saved.yaml") == cfg
    assert load_config(None, {"variant": "wave"}).loss.coastal_factor == 2.0


# --------------------------------------------------------------------------------------
# Entry points


def test_auroraops_train_runs_resumes_and_exits_1_on_a_bad_value(hourly, tmp_path, capsys):
    config = tmp_path / "train.yaml"
    save_config(make_config(hourly, tmp_path / "unused", {"data.paths": []}), config)
    out = tmp_path / "run"
    argv = ["train", "--variant", "medium-range", "--data", str(hourly), "--config", str(config),
            "--out", str(out), "--set", "train.max_steps=2", "--set", "train.val_every=2"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "training finished (max_steps) after 2 step(s)" in printed
    assert re.search(r"^\S+Z step=2 val_loss=[-+.0-9e]+ val_loss_10u=", printed, re.M)  # Katib's format
    assert load_config(out / "config.yaml").data.paths == (str(hourly),)

    assert main([*argv, "--resume", str(out)]) == 0  # already finished: nothing more to do
    assert "after 2 step(s)" in capsys.readouterr().out

    assert main([*argv, "--set", "optim.lr=-1"]) == 1
    assert "optim.lr" in capsys.readouterr().err
    assert train_main(["--config", str(config), "--data", str(tmp_path / "absent.nc")]) == 1
    assert "file not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--set"])
    assert exit_.value.code == 2


@pytest.mark.slow
def test_two_gloo_processes_under_torchrun_match_one_process(hourly, tmp_path):
    """Same global batch (2): one process with 2 samples a step, two with 1 each."""
    config = tmp_path / "ddp.yaml"
    save_config(make_config(hourly, tmp_path / "unused", {"train.max_steps": 3, "train.val_every": 3}), config)
    single = train(load_config(config, {"checkpoint.out_dir": str(tmp_path / "single")}))

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "model_code.training", "--config", str(config), "--out", str(tmp_path / "ddp")]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # torchrun's workers too
        stdout, stderr = process.communicate()
    assert process.returncode == 0, stderr[-3000:]
    lines = log_lines(tmp_path / "ddp")
    assert lines[0]["world_size"] == 2
    ddp = {(line["event"], line["step"]): line for line in lines if line["event"] in ("step", "validation")}
    for entry in single.history:
        for event, key in (("step", "loss"), ("validation", "val_loss")):
            if key in entry:
                assert ddp[event, entry["step"]][key] == pytest.approx(entry[key], rel=1e-4), (entry["step"], key)
    assert "step=3 val_loss=" in stdout


def test_the_training_doc_documents_every_config_key():
    import dataclasses

    from model_code.training.config import TrainConfig

    doc = (Path(__file__).resolve().parents[1] / "docs" / "training.md").read_text()

    def keys(cls, prefix=""):
        for f in dataclasses.fields(cls):
            tp = typing.get_type_hints(cls)[f.name]
            nested = [a for a in (tp, *typing.get_args(tp)) if dataclasses.is_dataclass(a)]
            if nested:
                yield from keys(nested[0], f"{prefix}{f.name}.")
            else:
                yield prefix + f.name

    missing = [k for k in keys(TrainConfig) if f"| `{k}` |" not in doc]
    assert not missing
