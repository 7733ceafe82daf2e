"""The winner is what is served: a local predictor that follows `models:/aurora-V@champion`.

A real `auroraops serve --follow` process on 127.0.0.1 reads a real MLflow registry (sqlite),
answers clients that never stop, and swaps in the new champion when the alias moves: no
request fails, every answer names the version that made it, and each answer is that
version's own forecast (no request mixes two models).
"""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient

from model_code.checkpoint import save_checkpoint
from model_code.variants import build_model, get_variant
from serving.process import ServerProcess
from test_serving import PARAMS, make_window, reference, tensors_of

VARIANT, NAME = "medium-range", "aurora-medium-range"


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    """Two registered versions (different weights), version 1 the champion."""
    from adapters import registry

    root = tmp_path_factory.mktemp("follow")
    patch = pytest.MonkeyPatch()
    patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlruns.db'}")
    spec = get_variant(VARIANT)
    checkpoints = [save_checkpoint(build_model(spec, "tiny", seed=s), spec, "tiny", str(root / f"v{s}.safetensors"))
                   for s in (1, 2)]
    versions = [registry.register(c, variant=VARIANT) for c in checkpoints]
    registry.client().set_registered_model_alias(NAME, "champion", versions[0])
    yield root, checkpoints, registry
    patch.undo()


def infer(client, tensors: dict) -> tuple[str, dict]:
    inputs = []
    for name, values in tensors.items():
        inp = httpclient.InferInput(name, list(values.shape), "FP64" if values.dtype == np.float64 else "FP32")
        inp.set_data_from_numpy(values, binary_data=True)
        inputs.append(inp)
    result = client.infer(NAME, inputs, parameters=PARAMS)
    response = result.get_response()
    assert response["parameters"]["model_version"] == response["model_version"]
    return response["model_version"], {o["name"]: result.as_numpy(o["name"]) for o in response["outputs"]}


@pytest.mark.slow
def test_a_following_server_swaps_to_the_new_champion_under_load_with_no_failed_request(registered):
    root, checkpoints, registry = registered
    window = make_window(VARIANT)
    tensors = tensors_of(window, VARIANT)
    expected = {str(v): reference(c, VARIANT, window) for v, c in ((1, checkpoints[0]), (2, checkpoints[1]))}
    server = ServerProcess(VARIANT, f"models:/{NAME}@champion", root / "server", args=["--follow", "1"],
                           env={"MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlruns.db'}"}).start(timeout=300)
    answers: list[tuple[int, float, str]] = []  # (client, time answered, model version)
    failures: list[str] = []
    mixed: list[str] = []
    stop = threading.Event()

    def client_loop(k: int) -> None:
        client = httpclient.InferenceServerClient(server.url.removeprefix("http://"), network_timeout=60)
        while not stop.is_set():
            try:
                version, outputs = infer(client, tensors)
            except Exception as e:  # every failure counts: a swap must not fail a request
                failures.append(f"{type(e).__name__}: {e}")
                continue
            answers.append((k, time.monotonic(), version))
            # The named version's own forecast (to the float rounding of a shared batch), not the other's.
            other = expected["2" if version == "1" else "1"]
            if not (all(np.allclose(outputs[n], want, rtol=1e-4, atol=1e-3) for n, want in expected[version].items())
                    and not all(np.allclose(outputs[n], want, rtol=1e-2) for n, want in other.items())):
                mixed.append(version)

    try:
        clients = [threading.Thread(target=client_loop, args=(k,), daemon=True) for k in range(4)]
        for c in clients:
            c.start()
        time.sleep(3)
        registry.client().set_registered_model_alias(NAME, "champion", "2")  # promotion moves the alias
        moved = time.monotonic()
        deadline = moved + 60
        while time.monotonic() < deadline and not any(v == "2" for _, t, v in answers):
            time.sleep(0.2)
        time.sleep(2)  # answers after the swap
        stop.set()
        for c in clients:
            c.join(timeout=60)
        metadata = httpclient.InferenceServerClient(server.url.removeprefix("http://")).get_model_metadata(NAME)
        log = server.log.read_text()
    finally:
        server.stop()

    assert failures == [] and mixed == []
    before = [v for _, t, v in answers if t < moved]
    assert before and set(before) == {"1"}
    first_new = min(t for _, t, v in answers if v == "2")
    assert first_new - moved < 30, "the swap took longer than the interval and a load"
    for k in range(4):  # each client sees version 1, then version 2, never back
        versions = [v for c, _, v in sorted(answers, key=lambda a: a[1]) if c == k]
        assert versions == sorted(versions) and versions[-1] == "2", versions
    assert metadata["versions"] == ["2"]
    sha2 = "sha256:" + hashlib.sha256(Path(checkpoints[1]).read_bytes()).hexdigest()
    assert sha2 in metadata["platform"]
    assert "now serves aurora-medium-range/2 (before: aurora-medium-range/1)" in log


@pytest.mark.parametrize("uri, options", [
    ("models:/aurora-medium-range/1", {"follow_s": 5}),  # an exact version never moves
    ("checkpoints/best.safetensors", {"follow_s": 5}),
    ("models:/aurora-medium-range@champion", {"follow_s": 0}),
    ("models:/aurora-medium-range@champion", {"follow_s": 5, "expect_sha256": "sha256:" + "0" * 64}),
])
def test_follow_is_refused_unless_it_names_an_alias_to_follow(uri, options):
    from model_code.errors import DataError
    from serving.predictor import AuroraPredictor

    with pytest.raises(DataError, match="--follow needs a positive interval and a models:/NAME@ALIAS model"):
        AuroraPredictor(VARIANT, uri, **options)
