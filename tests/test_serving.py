"""The predictor as users meet it: real `auroraops serve` processes on 127.0.0.1, tiny models.

Each variant answers v1 REST, v2 REST and v2 gRPC, and a generic open-inference client
(tritonclient, gRPC in its own process: see tests/triton_grpc.py) gets exactly what an
in-process `forecast` gives (clipped alike; a stochastic variant's members seeded alike).
Every kind of bad input is answered 400 / INVALID_ARGUMENT naming its field, and the server
keeps serving.
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
from model_code.data.synthetic import synthetic_window
from model_code.forecast import forecast
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
    """A request's tensors: every input but those the server computes (insolation)."""
    spec = get_variant(variant)
    out = {"latitude": window.latitude.values.astype(np.float64), "longitude": window.longitude.values.astype(np.float64)}
    out.update({v.dataset_name: window[v.dataset_name].values.astype(np.float32) for v in spec.inputs()
                if not v.computed})
    return out


PARAMS = {"init_time": "2024-06-01T12:00:00Z", "steps": STEPS}


def reference_dataset(checkpoint: str, variant: str, window: xr.Dataset, steps: int = STEPS, *,
                      members: int = 1, seed: int = 0) -> xr.Dataset:
    """The same forecast from an in-process `forecast`, as `auroraops forecast` makes it."""
    model, _ = load_checkpoint(checkpoint)
    return forecast(model, get_variant(variant), window, steps, members=members, seed=seed)


def named(ds: xr.Dataset, variant: str) -> dict[str, np.ndarray]:
    """A forecast dataset's values named as the server names outputs; a stochastic variant's
    with the member axis first."""
    stochastic = get_variant(variant).stochastic
    out = {}
    for name in ds.data_vars:
        for k, lead in enumerate(ds.lead_time.values):
            hours = int(lead // np.timedelta64(1, "h"))
            out[f"{name}+{hours}h"] = ds[name].values[:, k] if stochastic else ds[name].values[k]
    return out


def reference(checkpoint: str, variant: str, window: xr.Dataset, steps: int = STEPS, *, members: int = 1,
              seed: int = 0) -> dict[str, np.ndarray]:
    """`reference_dataset` named as the server names outputs."""
    return named(reference_dataset(checkpoint, variant, window, steps, members=members, seed=seed), variant)


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
    model = get_variant(variant).model_name
    window = make_window(variant)
    tensors = tensors_of(window, variant)
    local = reference_dataset(checkpoints[variant], variant, window)
    want = named(local, variant)

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
    assert prediction["members"] == 1 and prediction["seed"] == 0
    assert prediction["clipped_values"] == json.loads(local.attrs.get("clipped_values", "{}"))
    # Every answer names its model; the v2 metadata names it with the checkpoint's digest.
    sha = "sha256:" + hashlib.sha256(Path(checkpoints[variant]).read_bytes()).hexdigest()
    assert prediction["model_version"] == sha[:19]
    metadata = httpx.get(f"{server.url}/v2/models/{model}").json()
    assert metadata["name"] == model and metadata["versions"] == [sha[:19]] and sha in metadata["platform"]
    stochastic = get_variant(variant).stochastic
    v1 = {f"{name}+{h}h": np.asarray(values, np.float32)[:, k] if stochastic else np.asarray(values[k], np.float32)
          for name, values in prediction["outputs"].items() for k, h in enumerate(prediction["lead_hours"])}
    # nor infinity: a tiny random Aurora 1.5 overflows its snow depth (exp of its log) to inf
    assert_same(v1, {name: np.where(np.isinf(values), np.nan, values) for name, values in want.items()})
    computed = [v.dataset_name for v in get_variant(variant).inputs() if v.computed]
    assert not {i["name"] for i in metadata["inputs"]} & set(computed)  # insolation is never sent


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


# ---- members, computed inputs, clipped values --------------------------------------------------

ENSEMBLE = "ensemble-v1.5"


def test_an_ensemble_over_rest_and_grpc_is_the_in_process_forecast_of_its_seed(server, checkpoints, tmp_path):
    """Three members of ensemble-v1.5: a leading member axis, members that differ, each one the
    in-process `forecast` of seed + member; the answer says its members and clipped counts."""
    from serving.client import GrpcClient, RestClient, predict

    model, spec = get_variant(ENSEMBLE).model_name, get_variant(ENSEMBLE)
    window = make_window(ENSEMBLE)
    tensors = tensors_of(window, ENSEMBLE)
    local = reference_dataset(checkpoints[ENSEMBLE], ENSEMBLE, window, members=3, seed=7)
    want = named(local, ENSEMBLE)
    params = {**PARAMS, "members": 3, "seed": 7}

    grpc_out, errors = triton_grpc(server, model, tensors, [{"parameters": params}], tmp_path)
    assert errors == [{"code": None, "message": ""}]
    assert_same(grpc_out, want)
    rest_out = triton_http_infer(server, model, tensors, params)
    assert_same(rest_out, want)
    t = rest_out["t2m+12h"]
    assert t.shape == (3, *spec.tiny_grid)
    assert np.abs(t[0] - t[1]).max() > 1e-3 and np.abs(t[1] - t[2]).max() > 1e-3  # the members differ
    other = triton_http_infer(server, model, tensors, {**params, "seed": 8})
    np.testing.assert_array_equal(other["t2m+12h"][0], t[1])  # member 0 of seed 8 is member 1 of seed 7

    for client, options in ((GrpcClient(server.grpc), {}), (RestClient(server.url), {"binary": True})):
        ds = predict(client, spec, window, STEPS, members=3, seed=7, **options)
        client.close()
        assert ds.sizes["member"] == 3 and list(ds.member.values) == [0, 1, 2]
        assert ds.t2m.dims == ("member", "time", "latitude", "longitude")
        for name in local.data_vars:
            np.testing.assert_allclose(ds[name].values, local[name].values, rtol=1e-5, atol=1e-5, err_msg=name)
        assert json.loads(ds.attrs["clipped_values"]) == json.loads(local.attrs["clipped_values"])
        assert sum(json.loads(ds.attrs["clipped_values"]).values()) > 0  # the tiny model leaves cloud cover

    instance = {name: values.tolist() for name, values in tensors.items()}
    r = httpx.post(f"{server.url}/v1/models/{model}:predict", timeout=120,
                   json={"instances": [instance], "parameters": {**PARAMS, "members": 2, "seed": 7}})
    assert r.status_code == 200, r.text
    (prediction,) = r.json()["predictions"]
    assert prediction["members"] == 2 and prediction["seed"] == 7
    t2m = np.asarray(prediction["outputs"]["t2m"], np.float32)
    assert t2m.shape == (2, STEPS, *spec.tiny_grid)
    np.testing.assert_allclose(t2m, local.t2m.values[:2], rtol=1e-5, atol=1e-5)


def test_auroraops_predict_members_writes_what_auroraops_forecast_members_writes(server, checkpoints, tmp_path):
    window = make_window(ENSEMBLE)
    window.to_netcdf(tmp_path / "input.nc")
    common = ["--variant", ENSEMBLE, "--input", str(tmp_path / "input.nc"), "--steps", str(STEPS),
              "--members", "3", "--seed", "11"]
    served = subprocess.run([sys.executable, "-m", "auroraops", "predict", "--url", server.grpc, *common,
                             "--out", str(tmp_path / "served.nc")], capture_output=True, text=True, timeout=120)
    assert served.returncode == 0, served.stderr
    assert "3 member(s), seed 11" in served.stdout
    local = subprocess.run([sys.executable, "-m", "auroraops", "forecast", "--checkpoint", checkpoints[ENSEMBLE],
                            *common, "--out", str(tmp_path / "local.nc")], capture_output=True, text=True, timeout=120)
    assert local.returncode == 0, local.stderr
    a, b = xr.load_dataset(tmp_path / "served.nc"), xr.load_dataset(tmp_path / "local.nc")
    assert a.sizes["member"] == b.sizes["member"] == 3
    assert sorted(a.data_vars) == sorted(b.data_vars)
    for name in b.data_vars:
        np.testing.assert_allclose(a[name].values, b[name].values, rtol=1e-5, atol=1e-5, err_msg=name)
    assert json.loads(a.attrs["clipped_values"]) == json.loads(b.attrs["clipped_values"])


def test_members_of_a_deterministic_variant_and_a_sent_insolation_are_refused_naming_them(
        server, checkpoints, tmp_path):
    variant = "medium-range-v1.5"
    model = get_variant(variant).model_name
    window = make_window(variant)
    tensors = tensors_of(window, variant)
    np.save(tmp_path / "insolation.npy", window.insolation.values)
    cases = [
        ("members", {"parameters": {**PARAMS, "members": 2}}),
        ("members", {"parameters": {**PARAMS, "members": 0}}),
        ("seed", {"parameters": {**PARAMS, "seed": "seven"}}),
        ("insolation", {"parameters": PARAMS, "replace": {"insolation": str(tmp_path / "insolation.npy")}}),
    ]
    _, errors = triton_grpc(server, model, tensors, [c for _, c in cases] + [{"parameters": PARAMS}], tmp_path)
    for (field, _), error in zip(cases, errors):
        assert error["code"] == "StatusCode.INVALID_ARGUMENT", (field, error)
        assert error["message"].startswith(f"{field}:"), (field, error)
    assert errors[-1]["code"] is None
    assert variant in errors[0]["message"] and "deterministic" in errors[0]["message"]
    assert "computes it" in errors[3]["message"]

    for field, case in cases:
        named_tensors = {**tensors, **{n: np.load(p) for n, p in case.get("replace", {}).items()}}
        with pytest.raises(InferenceServerException) as err:
            triton_http_infer(server, model, named_tensors, case["parameters"])
        assert err.value.status() == "400" and err.value.message().startswith(f"{field}:"), (field, err.value)

    # more members than the server allows (16 by default) are refused before any compute
    ensemble = tensors_of(make_window(ENSEMBLE), ENSEMBLE)
    with pytest.raises(InferenceServerException) as err:
        triton_http_infer(server, get_variant(ENSEMBLE).model_name, ensemble, {**PARAMS, "members": 17})
    assert err.value.status() == "400" and err.value.message().startswith("members: 17 members exceed")

    assert_same(triton_http_infer(server, model, tensors, PARAMS), reference(checkpoints[variant], variant, window))
    assert httpx.get(f"{server.url}/v2/health/ready").json() == {"ready": True}


def test_a_job_with_members_writes_every_member_in_each_step_file(server, checkpoints, tmp_path):
    window = make_window(ENSEMBLE)
    window.to_netcdf(tmp_path / "window.nc")
    jobs = f"{server.url}/v1/models/{get_variant(ENSEMBLE).model_name}/jobs"
    body = {"inputs": [str(tmp_path / "window.nc")], "output_uri": str(tmp_path / "out"), "steps": STEPS,
            "members": 2, "seed": 3}
    r = httpx.post(jobs, json=body, timeout=60)
    assert r.status_code == 201, r.text
    deadline = time.monotonic() + 120
    while (state := httpx.get(f"{jobs}/{r.json()['job_id']}").json())["status"] not in ("succeeded", "failed"):
        assert time.monotonic() < deadline, state
        time.sleep(0.2)
    assert state["status"] == "succeeded", state
    assert "rng" not in state  # the members' generator states stay in the record beside the outputs
    from model_code.data.ingest import load_window

    read, _ = load_window([str(tmp_path / "window.nc")], get_variant(ENSEMBLE))  # as the job and the CLI read it
    local = reference_dataset(checkpoints[ENSEMBLE], ENSEMBLE, read, members=2, seed=3)
    for k, name in enumerate(state["files"]):
        step = xr.load_dataset(tmp_path / "out" / name)
        assert step.sizes["member"] == 2 and step.t2m.dims == ("member", "time", "latitude", "longitude")
        for v in local.data_vars:
            np.testing.assert_allclose(step[v].values[:, 0], local[v].values[:, k], rtol=1e-5, atol=1e-5,
                                       err_msg=f"{name} {v}")

    r = httpx.post(f"{server.url}/v1/models/{get_variant('medium-range-v1.5').model_name}/jobs",
                   json={**body, "output_uri": str(tmp_path / "refused")}, timeout=60)
    assert r.status_code == 400 and r.json()["error"].startswith("members: the medium-range-v1.5 variant")


def test_an_ensemble_is_refused_before_compute_when_its_answer_would_exceed_the_response_limit():
    """Members count in the response size as steps do: 3 members x 2 steps of a 4-step limit."""
    from serving import codec

    spec = get_variant(ENSEMBLE)
    window = make_window(ENSEMBLE)
    step_bytes = 4 * window.latitude.size * window.longitude.size * codec.output_channels(spec, len(spec.levels))
    limits = codec.Limits(max_steps=4, max_request_bytes=MAX_REQUEST_BYTES, max_response_bytes=4 * step_bytes,
                          max_members=16)
    tensors = tensors_of(window, ENSEMBLE)
    assert codec.build_request(tensors, {**PARAMS, "members": 2}, spec, limits).members == 2
    with pytest.raises(codec.RequestError, match=r"members: 3 members x 2 steps of .* exceed the response limit"):
        codec.build_request(tensors, {**PARAMS, "members": 3}, spec, limits)
    request = codec.build_request(tensors, PARAMS, spec, limits)
    np.testing.assert_array_equal(request.batch.surf_vars["insolation"][0].numpy(), window.insolation.values)


def test_ensemble_requests_that_arrive_together_each_get_the_forecast_of_their_own_seed(server, checkpoints):
    """Four clients at once, each its own seed: none is merged into another's forward pass (one
    noise tensor per pass would change its members), and each gets its seed's ensemble."""
    model = get_variant(ENSEMBLE).model_name
    window = make_window(ENSEMBLE)
    tensors = tensors_of(window, ENSEMBLE)
    passes, requests = batch_sizes(server, ENSEMBLE)
    start = threading.Barrier(4)
    answers, failures = {}, []

    def client(seed: int):
        start.wait()
        try:
            answers[seed] = triton_http_infer(server, model, tensors, {**PARAMS, "members": 2, "seed": seed})
        except Exception as e:  # any failure counts
            failures.append(repr(e))

    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert failures == [] and sorted(answers) == [0, 1, 2, 3]
    after = batch_sizes(server, ENSEMBLE)
    assert after[1] - requests == 4 and after[0] - passes == 4  # one pass (of its members) per request
    for seed, got in answers.items():
        assert_same(got, reference(checkpoints[ENSEMBLE], ENSEMBLE, window, members=2, seed=seed))
