"""`AuroraPredictor`: one variant behind KServe's v1 REST, v2 REST and v2 gRPC endpoints.

The weights load once (`load`), a warm-up forward runs before the model reports ready (the
first forward is ~3x slower than later ones), concurrent small requests on the same grid are
merged into one forward pass, and the same model runs forecast jobs by reference
(`serving.jobs`) between requests.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

import numpy as np
import torch
import xarray as xr
from aurora import Batch
from kserve import Model
from kserve.errors import InvalidInput
from kserve.model import InferenceVerb
from kserve.protocol.infer_type import InferRequest, InferResponse

from model_code.checkpoint import load_checkpoint
from model_code.data.batch import window_to_batch
from model_code.data.synthetic import synthetic_window
from model_code.errors import DataError
from model_code.forecast import forecast_steps
from model_code.storage import local_copy
from model_code.variants import VariantSpec, get_variant
from serving import codec, metrics
from serving.batching import MicroBatcher
from serving.codec import ForecastRequest, Limits, StaticCache

Forecast = tuple[dict[str, np.ndarray], list[int]]
"""Per output variable an array (steps, [level], lat, lon), and the lead times in hours."""


def resolve_model_uri(uri: str) -> str:
    """A checkpoint path or s3:// URI for `uri`; `models:/aurora-V@alias` goes through the registry."""
    if not uri.startswith("models:/"):
        return uri
    try:
        from pipelines.registry import resolve_checkpoint
    except ImportError as e:
        raise DataError(f"cannot resolve '{uri}': the model registry module is not available ({e})") from None
    return resolve_checkpoint(uri)


def merge_batches(batches: Sequence[Batch]) -> Batch:
    """Stack batches of one grid, levels and static fields along the batch axis."""
    first = batches[0]
    if len(batches) == 1:
        return first
    return dataclasses.replace(
        first,
        surf_vars={k: torch.cat([b.surf_vars[k] for b in batches]) for k in first.surf_vars},
        atmos_vars={k: torch.cat([b.atmos_vars[k] for b in batches]) for k in first.atmos_vars},
        metadata=dataclasses.replace(first.metadata, time=tuple(t for b in batches for t in b.metadata.time)),
    )


class AuroraPredictor(Model):
    """The KServe model `aurora-<variant>`."""

    def __init__(
        self,
        variant: str,
        model_uri: str,
        *,
        device: str = "cpu",
        autocast: bool = False,
        max_steps: int = 20,
        max_request_bytes: int | None = None,
        max_batch: int = 8,
        batch_wait_ms: float = 5.0,
        static_uri: str | None = None,
    ):
        self.spec: VariantSpec = get_variant(variant)
        super().__init__(f"aurora-{self.spec.name}")
        self.model_uri = model_uri
        self.device = torch.device(device)
        self.autocast = autocast
        self.limits = Limits.for_variant(self.spec, max_steps, max_request_bytes)
        self.statics = StaticCache()
        self.static_uri = static_uri
        self.model_lock = threading.Lock()
        """Held for every forward pass: inline batches and job steps take turns."""
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"{self.name}-forward")
        self._batcher = MicroBatcher(self.run_batch, self._executor, max_batch=max_batch,
                                     wait_s=batch_wait_ms / 1000)
        self.model = None
        self.checkpoint = None
        self.fills: codec.InputFills | None = None
        """Inputs a request may leave out: those the checkpoint's training filled, filled alike."""

    # ---- lifecycle ---------------------------------------------------------------------

    def load(self) -> bool:
        path = resolve_model_uri(self.model_uri)
        model, info = load_checkpoint(path, variant=self.spec.name)
        self.spec = info.spec  # its time step and history
        model.autocast_backbone = self.autocast  # bf16 autocast of the backbone; weights stay FP32
        self.model = model.to(self.device).eval()
        self.checkpoint = info
        self.fills = codec.InputFills(info.filled_inputs, info.training_levels) if info.filled_inputs else None
        if self.static_uri:
            with local_copy(self.static_uri) as p:
                self.statics.load(xr.open_dataset(p).load(), self.spec)
        self._warm_up()
        metrics.MODEL_INFO.labels(variant=self.spec.name).info(
            {"version": info.metadata.get("registered_version", ""), "uri": self.model_uri,
             "profile": info.profile, "autocast": str(self.autocast).lower()})
        self.ready = True
        return self.ready

    def _warm_up(self) -> None:
        """Two forwards on a synthetic window of the variant's small grid, before `ready`."""
        h, w = self.spec.tiny_grid
        lat = np.linspace(90, -90, h)
        lon = np.linspace(0, 360, w, endpoint=False)
        step = np.timedelta64(self.spec.timestep_hours, "h")
        end = np.datetime64("2024-01-01T00:00")
        times = np.array([end - k * step for k in range(self.spec.max_history - 1, -1, -1)])
        window = synthetic_window(self.spec, lat, lon, times).astype("float32")
        self.run_batch([ForecastRequest(window=window, steps=2)])

    # ---- forward ------------------------------------------------------------------------

    def run_batch(self, requests: Sequence[ForecastRequest]) -> list[Forecast]:
        """One rollout for requests sharing a batch key; split back per request."""
        steps = requests[0].steps
        batch = merge_batches([window_to_batch(r.window, self.spec) for r in requests]).to(self.device)
        with self.model_lock:
            predictions = list(forecast_steps(self.model, batch, steps))
        metrics.BATCH_SIZE.labels(variant=self.spec.name).observe(len(requests))
        metrics.ROLLOUT_STEPS.labels(variant=self.spec.name).observe(steps)
        results = []
        for i, request in enumerate(requests):
            outputs = {}
            for v in self.spec.outputs():
                source = "surf_vars" if v.kind == "surface" else "atmos_vars"
                outputs[v.dataset_name] = np.stack(
                    [getattr(p, source)[v.name][i, 0].float().numpy() for p in predictions])
            valid = [np.datetime64(p.metadata.time[i], "ns") for p in predictions]
            results.append((outputs, codec.lead_hours(request.window, valid)))
        return results

    # ---- request lifecycle ----------------------------------------------------------------

    async def __call__(self, body, headers=None, verb: InferenceVerb = InferenceVerb.PREDICT):
        protocol = ("grpc-v2" if body.from_grpc else "rest-v2") if isinstance(body, InferRequest) else "rest-v1"
        labels = dict(variant=self.spec.name, protocol=protocol, endpoint="infer")
        start = time.perf_counter()
        code = "200"
        try:
            return await super().__call__(body, headers, verb)
        except InvalidInput:
            code = "400"
            raise
        except Exception:
            code = "500"
            raise
        finally:
            metrics.REQUEST_SECONDS.labels(**labels).observe(time.perf_counter() - start)
            metrics.REQUESTS.labels(**labels, code=code).inc()
            if code != "200":
                metrics.REQUEST_ERRORS.labels(**labels, code=code).inc()

    async def preprocess(self, payload, headers=None) -> tuple[Any, list[ForecastRequest]]:
        if isinstance(payload, InferRequest):
            request = await asyncio.to_thread(codec.decode_v2, payload, self.spec, self.limits, self.statics,
                                              self.fills)
            forecasts = [request]
        else:
            forecasts = await asyncio.to_thread(codec.decode_v1, payload, self.spec, self.limits, self.statics,
                                                self.fills)
        nbytes = sum(v.nbytes for f in forecasts for v in f.window.data_vars.values())
        metrics.PAYLOAD_BYTES.labels(variant=self.spec.name, direction="in").observe(nbytes)
        return payload, forecasts

    def validate(self, payload):
        return payload  # decoded and checked in preprocess

    async def predict(self, payload, headers=None, response_headers=None):
        body, forecasts = payload
        results = await asyncio.gather(*(self._batcher.submit(f.batch_key, f) for f in forecasts))
        return body, forecasts, results

    async def postprocess(self, result, headers=None, response_headers=None) -> dict | InferResponse:
        body, forecasts, results = result
        nbytes = sum(a.nbytes for outputs, _ in results for a in outputs.values())
        metrics.PAYLOAD_BYTES.labels(variant=self.spec.name, direction="out").observe(nbytes)
        if isinstance(body, InferRequest):
            (outputs, hours), = results
            return codec.encode_v2(body, outputs, hours, self.name, forecasts[0].window)
        return {"predictions": [codec.encode_v1(outputs, hours, f.window)
                                for f, (outputs, hours) in zip(forecasts, results)]}

    # ---- metadata (GET /v2/models/<name>) -------------------------------------------------

    def get_input_types(self) -> list[dict]:
        shapes = {"surface": [-1, -1, -1], "atmos": [-1, -1, -1, -1], "static": [-1, -1]}
        return ([{"name": c, "datatype": "FP32", "shape": [-1]} for c in codec.COORDINATES]
                + [{"name": v.dataset_name, "datatype": "FP32", "shape": shapes[v.kind]} for v in self.spec.inputs()])

    def get_output_types(self) -> list[dict]:
        shapes = {"surface": [-1, -1], "atmos": [-1, -1, -1]}
        return [{"name": f"{v.dataset_name}+<hours>h", "datatype": "FP32", "shape": shapes[v.kind]}
                for v in self.spec.outputs()]
