"""`auroraops compress` and its job: every method from a trained checkpoint on real data, the
refusals before any work, and a compressed checkpoint served as any other."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

from auroraops.cli import main
from conftest import BRITISH_ISLES
from model_code.checkpoint import load_checkpoint, read_checkpoint_info, save_checkpoint
from model_code.compression import job as compression_job
from model_code.compression.job import CompressJob, compress_checkpoint
from model_code.data.batch import window_to_batch
from model_code.errors import ConfigError, DataError
from model_code.forecast import forecast_steps
from model_code.training.config import config_from_dict
from model_code.training.trainer import train
from model_code.variants import build_model, get_variant

CONFIG = {
    "variant": "medium-range", "profile": "tiny", "timestep_hours": 6, "head_init": "zero",
    "data": {"paths": [str(BRITISH_ISLES)], "val_period": ["2019-03-20T00:00", "2019-03-21T00:00"], "crop": True,
             "fill_missing": "mean", "fill_missing_dynamic": "mean", "levels": [500, 850], "history": 2,
             "batch_size": 2, "normalisation": "training"},
    "optim": {"lr": 1e-3}, "schedule": {"warmup_steps": 2},
    "train": {"max_steps": 8, "val_every": 4, "device": "cpu", "progress": False},
    "checkpoint": {"keep_top_k": 0},
}
"""The demo's treatment of the real March series, 8 steps: a trained model to compress."""



@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("trained")
    result = train(config_from_dict({**CONFIG, "checkpoint": {**CONFIG["checkpoint"], "out_dir": str(out)}}))
    return result.best_checkpoint


@pytest.fixture(scope="module")
def march(tmp_path_factory) -> str:
    """Two days of the real series: enough windows to calibrate on and to fine-tune briefly."""
    path = tmp_path_factory.mktemp("data") / "march_17-21.nc"
    with xr.open_dataset(BRITISH_ISLES) as ds:
        ds.sel(time=slice("2019-03-17", "2019-03-21")).to_netcdf(path)
    return str(path)


def first_window_forecast(uri: str, data: str) -> np.ndarray:
    model, info = load_checkpoint(uri)
    window = compression_job._windows(CompressJob(checkpoint=uri, method="bf16", out="x.safetensors", data=(data,)),
                                      info, 1)[0]
    (step,) = forecast_steps(model, window_to_batch(window, info.spec), 1)
    return step.surf_vars["2t"].float().numpy()


@pytest.mark.parametrize("method, options", [
    ("int8-dynamic", []), ("int8-static", ["--calibration-windows", "3"]), ("bf16", []),
    ("prune", ["--mlp-fraction", "0.3", "--steps", "4"]), ("distil", ["--steps", "4"]),
])
def test_every_method_writes_a_checkpoint_that_records_it_and_forecasts_near_its_source(
        method, options, trained, march, tmp_path, capsys):
    out = tmp_path / f"{method}.safetensors"
    argv = ["compress", "--variant", "medium-range", "--checkpoint", trained, "--method", method, "--data", march,
            "--out", str(out), "--json", "--work-dir", str(tmp_path / "work"), *options]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    info = read_checkpoint_info(str(out))
    assert info.compression["method"] == summary["method"] == method
    assert summary["latency_ms"] > 0 and summary["reference_latency_ms"] > 0
    if method == "distil":
        assert info.compression["teacher"] == trained and summary["parameters"] < summary["reference_parameters"] / 2
    if method == "prune":
        assert summary["parameters"] < summary["reference_parameters"]
    if method in ("int8-dynamic", "int8-static"):
        assert summary["weight_bytes"] < summary["reference_weight_bytes"] / 2  # int8 weights, float heads
    ours, theirs = first_window_forecast(str(out), march), first_window_forecast(trained, march)
    assert np.isfinite(ours).all()
    if method in ("int8-dynamic", "int8-static", "bf16"):  # post-training: the same model, rounded
        assert np.abs(ours - theirs).max() < 1.0  # K, on a 2 m temperature field of ~280 K


def test_refused_before_any_model_is_loaded(trained, march, tmp_path, monkeypatch):
    monkeypatch.setattr("model_code.checkpoint.load_checkpoint", lambda *a, **k: pytest.fail("loaded a model"))
    out = str(tmp_path / "out.safetensors")
    with pytest.raises(ConfigError, match="unknown compression method"):
        compress_checkpoint(CompressJob(checkpoint=trained, method="int4", out=out, data=(march,)))
    with pytest.raises(ConfigError, match="mlp_fraction must be in"):
        compress_checkpoint(CompressJob(checkpoint=trained, method="prune", out=out, data=(march,), mlp_fraction=1))
    with pytest.raises(ConfigError, match="needs training steps"):
        compress_checkpoint(CompressJob(checkpoint=trained, method="distil", out=out, data=(march,)))
    with pytest.raises(DataError, match="holds variant 'medium-range', not 'wave'"):
        compress_checkpoint(CompressJob(checkpoint=trained, method="bf16", out=out, data=(march,), variant="wave"))
    spec = get_variant("medium-range")
    quantised = save_checkpoint(build_model(spec, "tiny"), spec, "tiny", str(tmp_path / "q.safetensors"),
                                compression={"method": "int8-dynamic", "layers": 62})
    with pytest.raises(DataError, match="already compressed"):
        compress_checkpoint(CompressJob(checkpoint=quantised, method="bf16", out=out, data=(march,)))


def test_a_student_wider_than_its_teacher_is_refused_before_training(trained, march, tmp_path, monkeypatch):
    monkeypatch.setattr("model_code.training.trainer.train", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(ConfigError, match="embed_factor: must lie in"):
        compress_checkpoint(CompressJob(checkpoint=trained, method="distil", out=str(tmp_path / "s.safetensors"),
                                        data=(march,), steps=2, embed_factor=2.0))


def test_a_calibration_set_of_another_variant_is_refused(trained, tmp_path):
    from model_code.compression.quantise import quantise_static
    from model_code.data.synthetic import synthetic_window

    model, info = load_checkpoint(trained)
    wave = get_variant("wave")
    h, w = wave.tiny_grid
    window = synthetic_window(wave, np.linspace(90, -90, h), np.linspace(0, 360, w, endpoint=False),
                              np.array(["2024-01-01T00", "2024-01-01T06"], dtype="datetime64[ns]"))
    with pytest.raises(DataError):
        quantise_static(model, [window_to_batch(window, wave)], info.spec)


@pytest.mark.slow
def test_a_compressed_checkpoint_is_served_as_any_other(trained, march, tmp_path):
    import httpx

    from serving.process import ServerProcess

    out = tmp_path / "int8.safetensors"
    result = compress_checkpoint(CompressJob(checkpoint=trained, method="int8-dynamic", out=str(out), data=(march,)))
    model, info = load_checkpoint(result.out)
    window = compression_job._windows(CompressJob(checkpoint=str(out), method="bf16", out="x.safetensors",
                                                  data=(march,)), info, 1)[0]
    (expected,) = forecast_steps(model, window_to_batch(window, info.spec), 1)

    from serving.client import RestClient, predict

    spec = get_variant("medium-range")
    server = ServerProcess("medium-range", str(out), tmp_path / "server", args=["--max-steps", "2"]).launch()
    try:
        server.wait_ready()
        ds = predict(RestClient(server.url), spec, window, 1)
        metadata = httpx.get(f"{server.url}/v2/models/{spec.model_name}").json()
    finally:
        server.stop()
    assert metadata["name"] == "aurora-medium-range"
    served = ds.t2m.values[0]
    np.testing.assert_allclose(served, expected.surf_vars["2t"][0, 0].numpy()[: served.shape[0]], rtol=1e-6, atol=1e-4)
