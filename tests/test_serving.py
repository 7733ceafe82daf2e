"""The predictor as users meet it: real `auroraops serve` processes on 127.0.0.1, tiny models.

Each variant answers v1 REST, v2 REST and v2 gRPC, and a generic open-inference client
(tritonclient, gRPC in its own process: see tests/triton_grpc.py) gets exactly what an
in-process forward gives. Every kind of bad input is answered 400 / INVALID_ARGUMENT naming
its field, and the server keeps serving.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient
import xarray as xr
from tritonclient.utils import InferenceServerException

from model_code.checkpoint import load_checkpoint, save_checkpoint
from model_code.data.batch import window_to_batch
from model_code.data.synthetic import synthetic_window
from model_code.forecast import forecast_steps
from model_code.variants import VARIANTS, build_model, get_variant
from serving.process import ServerProcess

TRITON_GRPC = Path(__file__).with_name("triton_grpc.py")
MAX_REQUEST_BYTES = 3_000_000
"""Above every variant's 32x64 request (~1.2-2.3 MB), below a 64x128 one."""
STEPS = 2


def make_window(variant: str, grid=None, seed: int = 1) -> xr.Dataset:
    spec = get_variant(variant)
    h, w = grid or spec.tiny_grid
    lat = np.linspace(90, -90, h)
    lon = np.linspace(0, 360, w, endpoint=False)
    step = np.timedelta64(spec.timestep_hours, "h")
    end = np.datetime64("2024-06-01T12:00")
    times = np.array([end - k * step for k in range(spec.max_history - 1, -1, -1)])
    return synthetic_window(spec, lat, lon, times, seed=seed).astype("float32")


def tensors_of(window: xr.Dataset, variant: str) -> dict[str, np.ndarray]:
    spec = get_variant(variant)
    out = {"latitude": window.latitude.values.astype(np.float64), "longitude": window.longitude.values.astype(np.float64)}
    out.update({v.dataset_name: window[v.dataset_name].values.astype(np.float32) for v in spec.inputs()})
    return out


PARAMS = {"init_time": "2024-06-01T12:00:00Z", "steps": STEPS}


def reference(checkpoint: str, variant: str, window: xr.Dataset, steps: int = STEPS) -> dict[str, np.ndarray]:
    """The same forecast from an in-process forward, named as the server names outputs."""
    spec = get_variant(variant)
    model, _ = load_checkpoint(checkpoint)
    predictions = list(forecast_steps(model, window_to_batch(window, spec), steps))
    out = {}
    for k, p in enumerate(predictions, start=1):
        for v in spec.outputs():
            source = p.surf_vars if v.kind == "surface" else p.atmos_vars
            out[f"{v.dataset_name}+{k * spec.timestep_hours}h"] = source[v.name][0, 0].numpy()
    return out


def assert_same(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert sorted(got) == sorted(want)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-5, err_msg=name)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("checkpoints")
    out = {}
    for name in VARIANTS:
        spec = get_variant(name)
        out[name] = save_checkpoint(build_model(spec, "tiny", seed=3), spec, "tiny", str(root / f"{name}.safetensors"))
    return out


@pytest.fixture(scope="module")
def server(checkpoints, tmp_path_factory):
    """One server process serving all four variants (one import of torch and KServe, not four)."""
    proc = ServerProcess(list(VARIANTS), [checkpoints[v] for v in VARIANTS], tmp_path_factory.mktemp("server"),
                         args=["--max-request-bytes", str(MAX_REQUEST_BYTES)])
    proc.start(timeout=300)
    yield proc
    proc.stop()


def triton_grpc(server: ServerProcess, model: str, tensors: dict, cases: list[dict], tmp_path: Path):
    """Run cases through tritonclient.grpc in a child process: (outputs of case 0, per-case errors)."""
    np.savez(tmp_path / "in.npz", **tensors)
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    subprocess.run([sys.executable, str(TRITON_GRPC), server.grpc, model, str(tmp_path / "in.npz"),
                    str(tmp_path / "cases.json"), str(tmp_path / "out.npz")], check=True, timeout=120)
    errors = json.loads((tmp_path / "errors.json").read_text())
    outputs = dict(np.load(tmp_path / "out.npz")) if (tmp_path / "out.npz").exists() else {}
    return outputs, errors


def triton_http_infer(server: ServerProcess, model: str, tensors: dict, parameters: dict, dtypes: dict | None = None):
    client = httpclient.InferenceServerClient(server.url.removeprefix("http://"), network_timeout=120)
    inputs = []
    for name, values in tensors.items():
        datatype = (dtypes or {}).get(name) or ("FP64" if values.dtype == np.float64 else "FP32")
        inp = httpclient.InferInput(name, list(values.shape), datatype)
        inp.set_data_from_numpy(values, binary_data=True)
        inputs.append(inp)
    result = client.infer(model, inputs, parameters=parameters)
    return {o["name"]: result.as_numpy(o["name"]) for o in result.get_response()["outputs"]}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_each_variant_answers_every_protocol_with_the_in_process_forecast(variant, server, checkpoints, tmp_path):
    model = f"aurora-{variant}"
    window = make_window(variant)
    tensors = tensors_of(window, variant)
    want = reference(checkpoints[variant], variant, window)

    grpc_out, errors = triton_grpc(server, model, tensors, [{"parameters": PARAMS}], tmp_path)
    assert errors == [{"code": None, "message": ""}]
    assert_same(grpc_out, want)

    assert_same(triton_http_infer(server, model, tensors, PARAMS), want)

    # JSON has no NaN: null stands for it both ways (wave fields are NaN over land by design)
    instance = {name: np.where(np.isnan(values), None, values).tolist() for name, values in tensors.items()}
    r = httpx.post(f"{server.url}/v1/models/{model}:predict", timeout=120,
                   json={"instances": [instance], "parameters": PARAMS})
    assert r.status_code == 200, r.text
    (prediction,) = r.json()["predictions"]
    assert prediction["lead_hours"] == [k * get_variant(variant).timestep_hours for k in range(1, STEPS + 1)]
    # Every answer names its model; the v2 metadata names it with the checkpoint's digest.
    sha = "sha256:" + hashlib.sha256(Path(checkpoints[variant]).read_bytes()).hexdigest()
    assert prediction["model_version"] == sha[:19]
    metadata = httpx.get(f"{server.url}/v2/models/{model}").json()
    assert metadata["name"] == model and metadata["versions"] == [sha[:19]] and sha in metadata["platform"]
    v1 = {f"{name}+{h}h": np.asarray(values[k], np.float32)
          for name, values in prediction["outputs"].items() for k, h in enumerate(prediction["lead_hours"])}
    assert_same(v1, want)


def _bad_cases(tmp_path: Path) -> list[tuple[str, dict]]:
    """(field named in the error, case) for every kind of bad input; arrays go to .npy files."""
    window = make_window("medium-range")
    t = window.t2m.values

    def array(name: str, values: np.ndarray) -> str:
        path = tmp_path / f"{name}-{len(list(tmp_path.glob('*.npy')))}.npy"
        np.save(path, values)
        return str(path)

    nan = t.copy()
    nan[1, 5, 7] = np.nan
    inf = t.copy()
    inf[0, 0, 0] = np.inf
    big = tensors_of(make_window("medium-range", grid=(64, 128)), "medium-range")
    return [
        ("t2m", {"parameters": PARAMS, "replace": {"t2m": array("t2m", t[:, :, :60])}}),
        ("t2m", {"parameters": PARAMS, "replace": {"t2m": array("t2m", t.astype(np.float64))}}),
        ("t2m", {"parameters": PARAMS, "replace": {"t2m": array("t2m", t.astype(np.int32))}}),
        ("msl", {"parameters": PARAMS, "drop": ["msl"]}),
        ("sst", {"parameters": PARAMS, "replace": {"sst": array("sst", t)}}),
        ("t2m", {"parameters": PARAMS, "replace": {"t2m": array("t2m", nan)}}),
        ("t2m", {"parameters": PARAMS, "replace": {"t2m": array("t2m", inf)}}),
        ("latitude", {"parameters": PARAMS, "replace": {"latitude": array("lat", window.latitude.values[::-1].copy())}}),
        ("init_time", {"parameters": {**PARAMS, "init_time": "01/06/2024 12:00"}}),
        ("init_time", {"parameters": {"steps": 1}}),
        ("steps", {"parameters": {**PARAMS, "steps": 99}}),
        ("levels", {"parameters": {**PARAMS, "levels": "500,850"}}),
        ("payload", {"parameters": PARAMS, "replace": {n: array(n, a) for n, a in big.items()}}),
    ]


def test_bad_input_is_answered_invalid_argument_naming_the_field_and_the_server_keeps_serving(
        server, checkpoints, tmp_path):
    model = "aurora-medium-range"
    window = make_window("medium-range")
    tensors = tensors_of(window, "medium-range")
    cases = _bad_cases(tmp_path)

    # gRPC: every case, then a good request on the same server
    _, errors = triton_grpc(server, model, tensors, [c for _, c in cases] + [{"parameters": PARAMS}], tmp_path)
    for (field, case), error in zip(cases, errors):
        assert error["code"] == "StatusCode.INVALID_ARGUMENT", (field, error)
        assert error["message"].startswith(f"{field}:"), (field, error)
    assert errors[-1]["code"] is None

    # REST (binary extension): the same cases answer 400 naming the field
    for field, case in cases:
        named = {n: a for n, a in tensors.items() if n not in case.get("drop", [])}
        named.update({n: np.load(p) for n, p in case.get("replace", {}).items()})
        dtypes = {n: "INT32" for n, a in named.items() if a.dtype == np.int32}
        with pytest.raises(InferenceServerException) as err:
            triton_http_infer(server, model, named, case["parameters"], dtypes)
        assert err.value.status() == "400", (field, err.value)
        assert err.value.message().startswith(f"{field}:"), (field, err.value.message())

    assert_same(triton_http_infer(server, model, tensors, PARAMS), reference(checkpoints["medium-range"], "medium-range", window))
    assert httpx.get(f"{server.url}/v2/health/ready").json() == {"ready": True}


def test_v1_and_oversized_bodies_are_refused_with_4xx(server):
    r = httpx.post(f"{server.url}/v1/models/aurora-wave:predict", json={"instances": "t2m"})
    assert r.status_code == 400 and r.json()["error"].startswith("instances:")
    r = httpx.post(f"{server.url}/v2/models/aurora-wave/infer", content=b"0" * (8 * MAX_REQUEST_BYTES + 1),
                   headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"].startswith("payload:")


def test_bytes_that_are_not_an_inference_request_are_refused_and_the_server_keeps_serving(server):
    import grpc

    with grpc.insecure_channel(server.grpc) as channel:
        infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        with pytest.raises(grpc.RpcError) as err:
            infer(b"\x3a\xff\xff\xff\xff\x0f")  # raw_input_contents longer than the message
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "not a ModelInferRequest" in err.value.details()
    # a binary-extension REST body whose JSON header length is past its end
    r = httpx.post(f"{server.url}/v2/models/aurora-medium-range/infer", content=b'{"inputs": []}',
                   headers={"inference-header-content-length": "999", "content-type": "application/octet-stream"})
    assert r.status_code == 400 and r.json()["error"].startswith("inputs: not a v2 binary-data request")
    # a binary tensor whose byte count does not match its shape
    header = json.dumps({"inputs": [{"name": "latitude", "shape": [4], "datatype": "FP32",
                                     "parameters": {"binary_data_size": 8}}]}).encode()
    r = httpx.post(f"{server.url}/v2/models/aurora-medium-range/infer", content=header + bytes(8),
                   headers={"inference-header-content-length": str(len(header)),
                            "content-type": "application/octet-stream"})
    assert r.status_code == 400 and r.json()["error"] == "latitude: 8 bytes do not match shape [4] of FP32"
    assert httpx.get(f"{server.url}/v2/health/ready").json() == {"ready": True}


def test_metrics_are_exported_on_the_kserve_metrics_endpoint(server):
    triton_http_infer(server, "aurora-wave", tensors_of(make_window("wave"), "wave"), PARAMS)
    text = httpx.get(f"{server.url}/metrics").text
    digest = httpx.get(f"{server.url}/v2/models/aurora-wave").json()["versions"][0]  # sha256:<12 hex>, unregistered
    assert (f'aurora_requests_total{{code="200",endpoint="infer",model_version="{digest}",protocol="rest-v2",'
            'variant="wave"}') in text
    assert 'aurora_request_seconds_bucket{endpoint="infer"' in text
    assert 'aurora_model_info{' in text and 'variant="wave"' in text
    assert "aurora_rollout_steps_bucket" in text and "aurora_payload_bytes_bucket" in text


def test_auroraops_predict_over_grpc_and_rest_writes_the_forecast(server, checkpoints, tmp_path):
    window = make_window("high-res")
    window.to_netcdf(tmp_path / "input.nc")
    want = reference(checkpoints["high-res"], "high-res", window)
    for protocol, url in (("grpc", server.grpc), ("rest", server.url)):
        out = tmp_path / f"{protocol}.nc"
        done = subprocess.run(
            [sys.executable, "-m", "auroraops", "predict", "--url", url, "--variant", "high-res", "--input",
             str(tmp_path / "input.nc"), "--steps", str(STEPS), "--out", str(out), "--protocol", protocol],
            capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        ds = xr.load_dataset(out)
        assert ds.attrs["aurora_variant"] == "high-res" and ds.attrs["Conventions"] == "CF-1.10"
        assert ds.lead_time.attrs["standard_name"] == "forecast_period"  # the layout of a local forecast
        served = httpx.get(f"{server.url}/v2/models/aurora-high-res").json()["versions"][0]
        assert ds.attrs["aurora_model_version"] == served and served.startswith("sha256:")
        assert f"model version {served}" in done.stdout
        got = {f"{name}+{int(h)}h": ds[name].values[k]
               for name in ds.data_vars for k, h in enumerate(ds.lead_time.values.astype("timedelta64[h]").astype(int))}
        assert_same(got, want)


def batch_sizes(server: ServerProcess, variant: str) -> tuple[float, float]:
    """The `aurora_batch_size` histogram of a variant: (forward passes, requests in them)."""
    lines = httpx.get(f"{server.url}/metrics").text.splitlines()
    return tuple(next(float(line.split()[-1]) for line in lines
                      if line.startswith(f'aurora_batch_size_{part}{{variant="{variant}"}}')) for part in ("count", "sum"))


def run_at_once(client, n: int, timeout: float) -> None:
    """`client` on `n` threads at once; returns when all have finished (or `timeout` passed)."""
    threads = [threading.Thread(target=client) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)


def test_requests_that_arrive_during_a_forward_pass_share_the_next_one(server):
    """Six clients send at once: the first request runs alone (nothing is waiting when it
    arrives), the others arrive during its 20-step rollout and go together into one pass."""
    tensors = tensors_of(make_window("medium-range"), "medium-range")
    passes, requests = batch_sizes(server, "medium-range")
    start = threading.Barrier(6)
    failures = []

    def client():
        start.wait()
        try:
            triton_http_infer(server, "aurora-medium-range", tensors, {**PARAMS, "steps": 20})
        except Exception as e:  # any failure counts
            failures.append(repr(e))

    run_at_once(client, 6, timeout=300)
    assert failures == []
    after = batch_sizes(server, "medium-range")
    assert after[1] - requests == 6
    assert after[0] - passes <= 2  # one alone, then the five that waited (or all six at once)


@pytest.mark.slow
def test_eight_clients_for_twenty_seconds_see_no_errors(server):
    tensors = tensors_of(make_window("medium-range"), "medium-range")
    counts, failures = [], []
    deadline = time.monotonic() + 20

    def client():
        n = 0
        try:
            while time.monotonic() < deadline:
                out = triton_http_infer(server, "aurora-medium-range", tensors, {**PARAMS, "steps": 1})
                assert len(out) == len(get_variant("medium-range").outputs())
                n += 1
        except Exception as e:  # any failure counts
            failures.append(repr(e))
        counts.append(n)

    run_at_once(client, 8, timeout=120)
    assert failures == []
    assert sum(counts) >= 8 and min(counts) >= 1
    assert httpx.get(f"{server.url}/v2/health/ready").json() == {"ready": True}
    metrics = httpx.get(f"{server.url}/metrics").text
    batches, _ = batch_sizes(server, "medium-range")
    requests = sum(float(line.split()[-1]) for line in metrics.splitlines()
                   if line.startswith("aurora_requests_total{") and 'variant="medium-range"' in line
                   and 'code="200"' in line and 'endpoint="infer"' in line)
    assert batches < requests  # concurrent requests were merged into shared forward passes


def test_a_request_may_leave_out_what_the_checkpoint_was_trained_without():
    """Inputs the checkpoint's training filled are filled alike when a request omits them, at
    the training levels; any other missing input is still a 400 naming it."""
    from model_code.data.ingest import fill_values
    from model_code.variables import variable
    from serving import codec

    spec = get_variant("medium-range")
    window = make_window("medium-range")
    fills = codec.InputFills({v.dataset_name: "mean" for v in spec.inputs() if v.dataset_name != "t2m"}, (500.0, 850.0))
    limits = codec.Limits.for_variant(spec, max_steps=4)
    given = {k: v for k, v in tensors_of(window, "medium-range").items() if k in ("latitude", "longitude", "t2m")}
    request = codec.build_request(given, PARAMS, spec, limits, fills=fills)
    batch = request.batch
    assert request.levels == (500, 850)
    np.testing.assert_array_equal(batch.surf_vars["2t"][0].numpy(), window["t2m"].values)
    expected = fill_values(variable("atmos", "t"), "mean", window.latitude.values, window.longitude.values,
                           window.time.values, (500.0, 850.0))  # Aurora's means of t at 500 and 850 hPa
    np.testing.assert_array_equal(batch.atmos_vars["t"][0].numpy(), expected)
    with pytest.raises(codec.RequestError, match="t2m: missing surface variable"):
        codec.build_request({k: v for k, v in given.items() if k != "t2m"} | {"u10": window["u10"].values},
                           PARAMS, spec, limits, fills=fills)
    with pytest.raises(codec.RequestError, match="u10: missing surface variable"):
        codec.build_request(given, PARAMS, spec, limits)  # a checkpoint trained on every input fills none
