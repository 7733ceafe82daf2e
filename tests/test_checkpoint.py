"""Checkpoints: bit-identical round trips, self-description, no arbitrary unpickling, S3."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from model_code.checkpoint import load_checkpoint, save_checkpoint
from model_code.data.batch import window_to_batch
from model_code.data.synthetic import synthetic_window
from model_code.errors import DataError
from model_code.forecast import forecast_steps
from model_code.variants import VARIANTS, build_model, get_variant


def batch_for(spec):
    h, w = spec.tiny_grid
    end = np.datetime64("2024-01-01T12:00")
    times = np.array([end - np.timedelta64(spec.timestep_hours, "h"), end])
    window = synthetic_window(spec, np.linspace(90, -90, h), np.linspace(0, 360, w, endpoint=False), times)
    return window_to_batch(window, spec)


def outputs(model, batch):
    torch.manual_seed(0)  # the ensemble's noise: a stochastic model is a function of its seed
    return [p.surf_vars["2t"] for p in forecast_steps(model, batch, 2)]


def assert_identical(a, b):
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_safetensors_round_trip_is_bit_identical(name, tmp_path):
    spec = get_variant(name)
    model = build_model(spec, "tiny", seed=7)
    uri = save_checkpoint(model, spec, "tiny", str(tmp_path / "m.safetensors"))
    loaded, info = load_checkpoint(uri)
    assert (info.variant, info.profile) == (name, "tiny")
    batch = batch_for(spec)
    assert_identical(outputs(model, batch), outputs(loaded, batch))


def test_checkpoint_describes_itself(tmp_path):
    spec = get_variant("wave")
    uri = save_checkpoint(build_model(spec), spec, "tiny", str(tmp_path / "w.safetensors"), extra={"run": "abc"})
    _, info = load_checkpoint(uri)
    assert info.metadata["model_class"] == "AuroraWave"
    assert info.metadata["run"] == "abc" and '"embed_dim": 32' in info.metadata["model_kwargs"]


def test_checkpoint_of_another_variant_is_refused(tmp_path):
    spec = get_variant("medium-range")
    uri = save_checkpoint(build_model(spec), spec, "tiny", str(tmp_path / "m.safetensors"))
    with pytest.raises(DataError, match="checkpoint holds variant 'medium-range', not 'wave'"):
        load_checkpoint(uri, variant="wave")


def test_published_ckpt_format_loads_weights_only(tmp_path):
    """Aurora's published checkpoints are plain state dicts saved with torch.save."""
    spec = get_variant("medium-range")
    model = build_model(spec, "tiny", seed=5)
    path = tmp_path / "aurora.ckpt"
    torch.save(model.state_dict(), path)
    loaded, info = load_checkpoint(str(path), variant="medium-range", profile="tiny")
    batch = batch_for(spec)
    assert_identical(outputs(model, batch), outputs(loaded, batch))


class Payload:
    def __reduce__(self):
        return (print, ("this ran while loading",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickled_objects_are_never_executed(tmp_path, capsys):
    path = tmp_path / "evil.ckpt"
    with open(path, "wb") as f:
        pickle.dump({"weights": Payload()}, f)
    with pytest.raises(DataError, match="weights-only loading"):
        load_checkpoint(str(path), variant="medium-range", profile="tiny")
    assert "this ran" not in capsys.readouterr().out


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    spec = get_variant("medium-range")
    uri = save_checkpoint(build_model(spec), spec, "tiny", str(tmp_path / "m.safetensors"))
    data = open(uri, "rb").read()
    open(uri, "wb").write(data[: len(data) // 2])
    with pytest.raises(DataError, match="not a readable safetensors checkpoint") as err:
        load_checkpoint(uri)
    assert "m.safetensors" in str(err.value)


def test_checkpoint_name_must_say_safetensors(tmp_path):
    spec = get_variant("medium-range")
    with pytest.raises(DataError, match="must end in .safetensors"):
        save_checkpoint(build_model(spec), spec, "tiny", str(tmp_path / "m.pt"))


def test_s3_round_trip(bucket, tmp_path):
    spec = get_variant("air-pollution")
    model = build_model(spec, "tiny", seed=11)
    uri = save_checkpoint(model, spec, "tiny", f"s3://{bucket}/models/ap.safetensors")
    loaded, info = load_checkpoint(uri)
    assert info.uri == uri
    batch = batch_for(spec)
    assert_identical(outputs(model, batch), outputs(loaded, batch))


def test_missing_s3_object_is_named(bucket):
    with pytest.raises(DataError, match="object not found") as err:
        load_checkpoint(f"s3://{bucket}/nope.safetensors")
    assert f"s3://{bucket}/nope.safetensors" in str(err.value)
