"""Client of the predictor: a window in, a forecast dataset out, over gRPC, REST or a job.

gRPC sends every tensor as `raw_input_contents` (no per-value encoding, no copy but the
one into the message); REST sends the binary-data extension (`binary=True`) or plain JSON.
Jobs go through the REST jobs routes. A stochastic variant's forecast comes back with a
`member` dimension, laid out as `auroraops forecast --members` writes one.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

import httpx
import numpy as np
import xarray as xr

from model_code.data.batch import forecast_dataset
from model_code.errors import DataError
from model_code.variants import VariantSpec
from serving import wire
from serving.members import stack_members

INFERENCE_HEADER = "inference-header-content-length"


def request_tensors(window: xr.Dataset, spec: VariantSpec) -> dict[str, np.ndarray]:
    """The request tensors of a window: coordinates, then every input variable it holds as FP32
    (the server fills those left out as the served checkpoint's training did, or names them),
    less those the server computes itself (insolation) and refuses to be sent."""
    tensors = {"latitude": window.latitude.values.astype(np.float64),
               "longitude": window.longitude.values.astype(np.float64)}
    for v in spec.inputs():
        if v.dataset_name in window and not v.computed:
            tensors[v.dataset_name] = np.ascontiguousarray(window[v.dataset_name].values, dtype=np.float32)
    return tensors


def request_parameters(window: xr.Dataset, steps: int, *, members: int = 1, seed: int = 0) -> dict[str, str | int]:
    """Init time and steps; the levels when the window sends atmospheric fields (else the
    server chooses them: the checkpoint's training levels); members and seed unless 1 and 0."""
    parameters: dict[str, str | int] = {"init_time": str(window.time.values[-1])[:19] + "Z", "steps": int(steps)}
    if any("level" in window[k].dims for k in window.data_vars):
        parameters["levels"] = ",".join(f"{lv:g}" for lv in window.level.values)
    if members != 1:
        parameters["members"] = int(members)
    if seed != 0:
        parameters["seed"] = int(seed)
    return parameters


def split_outputs(named: Mapping[str, np.ndarray], members: bool = False) -> tuple[dict[str, np.ndarray], list[int]]:
    """`{"t2m+6h": (lat, lon), ...}` -> `{"t2m": (steps, lat, lon)}` and the sorted lead hours;
    with `members`, `{"t2m+6h": (members, lat, lon)}` -> `{"t2m": (members, steps, lat, lon)}`."""
    by_var: dict[str, dict[int, np.ndarray]] = {}
    for name, values in named.items():
        var, _, lead = name.rpartition("+")
        by_var.setdefault(var, {})[int(lead.rstrip("h"))] = values
    hours = sorted(next(iter(by_var.values())))
    axis = 1 if members else 0
    return {var: np.stack([steps[h] for h in hours], axis=axis) for var, steps in by_var.items()}, hours


@dataclass(frozen=True)
class Answer:
    """A response's tensors by name, the model version that made them ("" if not said), the
    pressure levels of its atmospheric outputs (hPa; empty if not said) and all its parameters
    (`members`, `seed`, `clipped_values`, ...)."""

    outputs: dict[str, np.ndarray]
    model_version: str
    levels: tuple[float, ...] = ()
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def clipped(self) -> dict[str, int]:
        """How many values the server clipped to their physical range, by dataset name."""
        return json.loads(self.parameters.get("clipped_values") or "{}")


def _levels(text: str | None) -> tuple[float, ...]:
    return tuple(float(x) for x in text.split(",")) if text else ()


def _datatype(a: np.ndarray) -> str:
    return "FP64" if a.dtype == np.float64 else "FP32"


class GrpcClient:
    """v2 gRPC with raw tensors; `target` is `host:port` (a `grpc://` prefix is accepted).

    Tensors go into the request message in one concatenation and come out of the response as
    views of it (`serving.wire`): protobuf handles only names, shapes and parameters. A process
    that sends tensors of tens of MB should call `serving.memory.keep_freed_buffers()` once
    (`auroraops predict` does): without it, it spends most of a transfer in page faults."""

    def __init__(self, target: str, max_message_bytes: int = 2**31 - 1):
        import grpc
        from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
        from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

        self._pb = pb
        target = target.removeprefix("grpc://")
        self._channel = grpc.insecure_channel(target, options=[
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes)])
        self._stub = pb_grpc.GRPCInferenceServiceStub(self._channel)
        self._infer = self._channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")  # bytes in and out

    def ready(self, model: str) -> bool:
        return self._stub.ModelReady(self._pb.ModelReadyRequest(name=model)).ready

    def infer(self, model: str, tensors: Mapping[str, np.ndarray], parameters: Mapping[str, str | int],
              timeout: float | None = None) -> Answer:
        pb = self._pb
        request = pb.ModelInferRequest(model_name=model)
        for key, value in parameters.items():
            param = request.parameters[key]
            if isinstance(value, int):
                param.int64_param = value
            else:
                param.string_param = str(value)
        for name, values in tensors.items():
            request.inputs.add(name=name, datatype=_datatype(values), shape=list(values.shape))
        message = wire.join(request.SerializeToString(), wire.RAW_INPUT_CONTENTS,
                            [np.ascontiguousarray(values) for values in tensors.values()])
        header, raw = wire.split(self._infer(message, timeout=timeout), wire.RAW_OUTPUT_CONTENTS)
        response = pb.ModelInferResponse.FromString(header)
        from kserve.protocol.infer_type import to_http_parameters

        named = to_http_parameters(response.parameters)
        return Answer({o.name: np.frombuffer(r, dtype=np.float32).reshape(list(o.shape))
                       for o, r in zip(response.outputs, raw)}, response.model_version,
                      _levels(named.get("levels")), named)

    def close(self) -> None:
        self._channel.close()


class RestClient:
    """v2 REST (binary-data extension or JSON) and the jobs routes; `url` is `http://host:port`."""

    def __init__(self, url: str, timeout: float = 600.0):
        self.url = url.rstrip("/")
        self._http = httpx.Client(timeout=timeout)

    def ready(self, model: str) -> bool:
        r = self._http.get(f"{self.url}/v2/models/{model}/ready")
        return r.status_code == 200 and r.json().get("ready", False)

    def infer(self, model: str, tensors: Mapping[str, np.ndarray], parameters: Mapping[str, str | int],
              *, binary: bool = True) -> Answer:
        url = f"{self.url}/v2/models/{model}/infer"
        if binary:
            inputs = [{"name": n, "datatype": _datatype(a), "shape": list(a.shape),
                       "parameters": {"binary_data_size": a.nbytes}} for n, a in tensors.items()]
            header = json.dumps({"inputs": inputs, "parameters": {**parameters, "binary_data_output": True}}).encode()
            body = b"".join([header] + [np.ascontiguousarray(a).tobytes() for a in tensors.values()])
            r = self._http.post(url, content=body, headers={
                INFERENCE_HEADER: str(len(header)), "content-type": "application/octet-stream"})
        else:
            inputs = [{"name": n, "datatype": _datatype(a), "shape": list(a.shape), "data": a.ravel().tolist()}
                      for n, a in tensors.items()]
            r = self._http.post(url, json={"inputs": inputs, "parameters": dict(parameters)})
        _raise_for(r)
        if INFERENCE_HEADER in r.headers:
            n = int(r.headers[INFERENCE_HEADER])
            meta, offset, out = json.loads(r.content[:n]), n, {}
            for o in meta["outputs"]:
                size = o["parameters"]["binary_data_size"]
                out[o["name"]] = np.frombuffer(r.content[offset:offset + size], np.float32).reshape(o["shape"])
                offset += size
            named = meta.get("parameters") or {}
            return Answer(out, meta.get("model_version") or "", _levels(named.get("levels")), named)
        meta = r.json()
        named = meta.get("parameters") or {}
        return Answer({o["name"]: np.asarray(o["data"], np.float32).reshape(o["shape"]) for o in meta["outputs"]},
                      meta.get("model_version") or "", _levels(named.get("levels")), named)

    # ---- jobs -------------------------------------------------------------------------

    def submit_job(self, model: str, body: Mapping) -> dict:
        r = self._http.post(f"{self.url}/v1/models/{model}/jobs", json=dict(body))
        _raise_for(r)
        return r.json()

    def job(self, model: str, job_id: str) -> dict:
        r = self._http.get(f"{self.url}/v1/models/{model}/jobs/{job_id}")
        _raise_for(r)
        return r.json()

    def wait_job(self, model: str, job_id: str, *, timeout: float = 3600, poll_s: float = 0.5,
                 progress=None) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            state = self.job(model, job_id)
            if progress is not None:
                progress(state)
            if state["status"] in ("succeeded", "failed", "cancelled"):
                return state
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {state['status']} after {timeout:g} s")
            time.sleep(poll_s)

    def close(self) -> None:
        self._http.close()


def _raise_for(r: httpx.Response) -> None:
    if r.status_code >= 400:
        try:
            message = r.json().get("error", r.text)
        except ValueError:
            message = r.text
        raise DataError(f"server answered {r.status_code}: {message}")


def predict(client: GrpcClient | RestClient, spec: VariantSpec, window: xr.Dataset, steps: int, *,
            members: int = 1, seed: int = 0, **options) -> xr.Dataset:
    """Send `window`, get a `steps`-step forecast back as a CF dataset that names the model version.

    The forecast is on the levels the response names (the server chose them when the window
    had none) and on the window's grid less any last latitude rows Aurora dropped (a height one
    over a multiple of the patch size). A stochastic variant's has a `member` dimension
    (member m seeded `seed + m`); `clipped_values` is what the server clipped."""
    answer = client.infer(spec.model_name, request_tensors(window, spec),
                          request_parameters(window, steps, members=members, seed=seed), **options)
    outputs, hours = split_outputs(answer.outputs, members=spec.stochastic)
    init = np.datetime64(window.time.values[-1], "ns")
    n_lat = next(iter(outputs.values())).shape[-2]
    attrs = {"aurora_model_version": answer.model_version}

    def dataset(fields: Mapping[str, np.ndarray]) -> xr.Dataset:
        return forecast_dataset(fields, spec, init, [init + np.timedelta64(h, "h") for h in hours],
                                window.latitude.values[:n_lat], window.longitude.values,
                                answer.levels or window.level.values, attrs)

    if spec.stochastic:
        count = next(iter(outputs.values())).shape[0]
        ds = stack_members([dataset({k: v[m] for k, v in outputs.items()}) for m in range(count)],
                           int(answer.parameters.get("seed", seed)))
    else:
        ds = dataset(outputs)
    if "clipped_values" in answer.parameters:
        ds.attrs["clipped_values"] = json.dumps(answer.clipped, sort_keys=True)
    return ds
