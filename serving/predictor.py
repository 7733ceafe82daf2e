"""`AuroraPredictor`: one variant behind KServe's v1 REST, v2 REST and v2 gRPC endpoints.

The weights load once (`load`), a warm-up forward runs before the model reports ready (the
first forward is ~3x slower than later ones), concurrent small requests on the same grid are
merged into one forward pass (a stochastic variant's never are: `run_batch` says why), and
the same model runs forecast jobs by reference (`serving.jobs`) between requests. Every answer names the model that gave it
(`served.ServedModel`): the registry version in each response and job, the registry name,
version and checkpoint digest in the v2 metadata, the version in the Prometheus labels.

With `follow_s`, a `models:/NAME@ALIAS` predictor reads the alias again every `follow_s`
seconds; when it names another version, the new checkpoint is downloaded, checked against
its registered digest, loaded and warmed up beside the old one, then swapped in between two
forward passes. A request or job keeps the model it started with to its end.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence, TypeVar

import numpy as np
import torch
import xarray as xr
from aurora import Batch
from kserve import Model
from kserve.errors import InvalidInput
from kserve.logging import KSERVE_LOGGER_NAME
from kserve.model import InferenceVerb
from kserve.protocol.infer_type import InferRequest, InferResponse

from model_code.checkpoint import load_checkpoint
from model_code.data.batch import clip_to_physical, window_to_batch
from model_code.data.synthetic import synthetic_window
from model_code.errors import DataError
from model_code.forecast import forecast_steps
from model_code.storage import local_copy
from model_code.variants import VariantSpec, get_variant
from serving import codec, members, served, telemetry
from serving.batching import MicroBatcher
from serving.codec import ForecastRequest, Limits, StaticCache
from serving.served import Loaded

T = TypeVar("T")

Forecast = tuple[dict[str, np.ndarray], list[int], Loaded, dict[str, int]]
"""Per output variable an array (steps, [level], lat, lon), or (members, steps, ...) for a
stochastic variant, clipped to its physical range; the lead times in hours; the model that
made them; and how many values each clip moved (by dataset name, all members together)."""

logger = logging.getLogger(f"{KSERVE_LOGGER_NAME}.aurora")
"""Under KServe's logger, so the server's log shows swaps beside KServe's own lines."""


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
        max_members: int = 16,
        static_uri: str | None = None,
        follow_s: float | None = None,
        expect_sha256: str | None = None,
    ):
        spec = get_variant(variant)
        super().__init__(spec.model_name)
        self.variant = spec.name
        self.model_uri = model_uri
        self.device = torch.device(device)
        self.autocast = autocast
        self.max_steps, self.max_request_bytes, self.max_members = max_steps, max_request_bytes, max_members
        self.statics = StaticCache()
        self.static_uri = static_uri
        if follow_s is not None and (follow_s <= 0 or not served.is_registry_uri(model_uri) or "@" not in model_uri
                                     or expect_sha256):
            raise DataError(f"--follow needs a positive interval and a models:/NAME@ALIAS model, and no "
                            f"--model-sha256 (the alias decides); got {follow_s}, {model_uri}")
        self.follow_s = follow_s
        self.expect_sha256 = expect_sha256 or None
        """The digest the deployment expects (from the InferenceService): loading anything else fails."""
        self.model_lock = threading.Lock()
        """Held for every forward pass and for a swap: inline batches and job steps take turns."""
        self.loaded: Loaded | None = None
        """The model serving now; replaced as a whole by `swap`."""
        self._spec = spec
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"{self.name}-forward")
        """The model's thread: every forward pass runs on it (`on_model_thread`)."""
        self._batcher = MicroBatcher(self.run_batch, self._executor, max_batch=max_batch)
        self._stop = threading.Event()
        self._own_pass = itertools.count()

    @property
    def spec(self) -> VariantSpec:
        """The variant as the serving checkpoint was built (its step and history)."""
        return self.loaded.spec if self.loaded is not None else self._spec

    @property
    def limits(self) -> Limits:
        return self.limits_for(self.spec)

    def limits_for(self, spec: VariantSpec) -> Limits:
        return Limits.for_variant(spec, self.max_steps, self.max_request_bytes, self.max_members)

    @property
    def model(self):
        return self.loaded.model if self.loaded is not None else None

    # ---- lifecycle ---------------------------------------------------------------------

    def load(self) -> bool:
        self.loaded = self.on_model_thread(self._load, self.model_uri, self.expect_sha256)
        if self.static_uri:
            with local_copy(self.static_uri) as p:
                self.statics.load(xr.open_dataset(p).load(), self.spec)
        self._announce(self.loaded)
        if self.follow_s is not None:
            threading.Thread(target=self._follow, name=f"{self.name}-follow", daemon=True).start()
        self.ready = True
        return self.ready

    def _load(self, uri: str, expect_sha256: str | None = None) -> Loaded:
        """Download (registry URIs), check the digest, build, warm up: a `Loaded` ready to swap in."""
        with tempfile.TemporaryDirectory(prefix="auroraops-serve-") as tmp:
            identity, path = served.resolve(uri, tmp)
            if expect_sha256 and identity.sha256 != expect_sha256:
                raise DataError(f"{uri}: the checkpoint has digest {identity.sha256}, but this deployment "
                                f"expects {expect_sha256}; nothing is served from it")
            model, info = load_checkpoint(path, variant=self._spec.name)
        model.autocast_backbone = self.autocast  # bf16 autocast of the backbone; weights stay FP32
        fills = codec.InputFills(info.filled_inputs, info.training_levels) if info.filled_inputs else None
        loaded = Loaded(model.to(self.device).eval(), identity, info.spec, fills)
        self._warm_up(loaded)
        return loaded

    def _load_apart(self, uri: str) -> Loaded:
        """`_load` beside the serving model, on a thread that ends with it (`on_model_thread` says why)."""
        with ThreadPoolExecutor(1, thread_name_prefix=f"{self.name}-load") as loader:
            return loader.submit(self._load, uri).result()

    def swap(self, new: Loaded) -> Loaded:
        """Serve `new` from the next forward pass on; returns the model it replaced."""
        with self.model_lock:
            old, self.loaded = self.loaded, new
        telemetry.MODEL_SWAPS.labels(variant=self.variant).inc()
        self._announce(new)
        logger.info("%s now serves %s (before: %s)", self.name, new.served.label, old.served.label if old else None)
        return old

    def _follow(self) -> None:
        """Swap in the version the alias names, whenever it names another; keep serving on errors."""
        while not self._stop.wait(self.follow_s):
            try:
                named = served.describe_uri(self.model_uri)
                if named.sha256 != self.loaded.served.sha256:
                    self.swap(self._load_apart(self.model_uri))
            except Exception as e:  # the registry or the store may be away: the current model keeps serving
                telemetry.FOLLOW_ERRORS.labels(variant=self.variant).inc()
                logger.warning("%s: could not follow %s (%s); still serving %s", self.name, self.model_uri, e,
                               self.loaded.served.label)

    def stop(self) -> None:
        self._stop.set()

    def _announce(self, loaded: Loaded) -> None:
        model = loaded.served
        telemetry.MODEL_INFO.labels(variant=self.variant).info(
            {"version": model.model_version, "name": model.name or "", "sha256": model.sha256, "uri": model.uri,
             "autocast": str(self.autocast).lower()})

    def _warm_up(self, loaded: Loaded) -> None:
        """Two forwards on a synthetic window of the variant's small grid, before it serves."""
        spec = loaded.spec
        h, w = spec.tiny_grid
        lat = np.linspace(90, -90, h)
        lon = np.linspace(0, 360, w, endpoint=False)
        step = np.timedelta64(spec.timestep_hours, "h")
        end = np.datetime64("2024-01-01T00:00")
        times = np.array([end - k * step for k in range(spec.max_history - 1, -1, -1)])
        window = synthetic_window(spec, lat, lon, times).astype("float32")
        self.run_batch([(loaded, ForecastRequest(window_to_batch(window, spec), window.time.values[-1], steps=2))])

    def on_model_thread(self, fn: Callable[..., T], *args) -> T:
        """`fn(*args)` run on the model's thread, where the first load, inline batches and job
        steps all run.

        torch's CPU threads are an OpenMP team per calling thread, kept while that thread lives.
        Once a second long-lived thread has run torch's parallel kernels, a small machine has more
        OpenMP threads than cores, and OpenMP's idle threads stop spinning and sleep, so every
        parallel region waits for them to wake: the tiny model's 2-step forecast took 31 ms with
        one team and 58 ms on either thread once two existed (2 cores). A swap loads on a thread
        of its own that ends with the load (`_load_apart`), and its team with it."""
        return self._executor.submit(fn, *args).result()

    # ---- forward ------------------------------------------------------------------------

    def run_batch(self, items: Sequence[tuple[Loaded, ForecastRequest]]) -> list[Forecast]:
        """One rollout for requests sharing a batch key (one model among them); split back per request.

        A stochastic variant's request runs alone (`predict` gives it a key of its own) and its
        members one after another, member m on generators seeded `seed + m`, as
        `model_code.forecast.forecast` runs them: Aurora draws one noise tensor per forward for
        the whole batch, so merging requests or members into one pass would change the noise
        each one sees and its answer would no longer be the forecast of its seed."""
        loaded = items[0][0]
        if loaded.spec.stochastic:
            return [self._run_members(loaded, request) for _, request in items]
        requests = [r for _, r in items]
        steps = requests[0].steps
        batch = merge_batches([r.batch for r in requests]).to(self.device)
        with self.model_lock:
            predictions = list(forecast_steps(loaded.model, batch, steps))
        telemetry.BATCH_SIZE.labels(variant=self.variant).observe(len(requests))
        telemetry.ROLLOUT_STEPS.labels(variant=self.variant).observe(steps)
        results = []
        for i, request in enumerate(requests):
            outputs, clipped = clip_to_physical(self._outputs(loaded, predictions, i), loaded.spec)
            valid = [np.datetime64(p.metadata.time[i], "ns") for p in predictions]
            results.append((outputs, codec.lead_hours(request.init_time, valid), loaded, clipped))
        return results

    def _run_members(self, loaded: Loaded, request: ForecastRequest) -> Forecast:
        """Every member of one request: (members, steps, ...) per output variable."""
        batch = request.batch.to(self.device)
        runs = []
        for m in range(request.members):
            # The lock outside the forked generators: a job's members set and read the global
            # generator state under the same lock, so neither sees the other's draws.
            with self.model_lock, members.seeded(request.seed + m, self.device):
                predictions = list(forecast_steps(loaded.model, batch, request.steps))
            runs.append(self._outputs(loaded, predictions, 0))
        telemetry.BATCH_SIZE.labels(variant=self.variant).observe(1)
        telemetry.ROLLOUT_STEPS.labels(variant=self.variant).observe(request.steps)
        stacked = {name: np.stack([run[name] for run in runs]) for name in runs[0]}
        outputs, clipped = clip_to_physical(stacked, loaded.spec)
        valid = [np.datetime64(p.metadata.time[0], "ns") for p in predictions]
        return outputs, codec.lead_hours(request.init_time, valid), loaded, clipped

    @staticmethod
    def _outputs(loaded: Loaded, predictions: Sequence[Batch], i: int) -> dict[str, np.ndarray]:
        """Batch element `i` of a rollout's predictions: (steps, [level], lat, lon) per variable."""
        outputs = {}
        for v in loaded.spec.outputs():
            source = "surf_vars" if v.kind == "surface" else "atmos_vars"
            outputs[v.dataset_name] = np.stack([getattr(p, source)[v.name][i, 0].float().numpy() for p in predictions])
        return outputs

    # ---- request lifecycle ----------------------------------------------------------------

    async def __call__(self, body, headers=None, verb: InferenceVerb = InferenceVerb.PREDICT):
        protocol = ("grpc-v2" if body.from_grpc else "rest-v2") if isinstance(body, InferRequest) else "rest-v1"
        # The version serving when the request arrives; its answer names the one that made it.
        labels = dict(variant=self.variant, protocol=protocol, endpoint="infer",
                      model_version=self.loaded.served.model_version if self.loaded else "")
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
            telemetry.REQUEST_SECONDS.labels(**labels).observe(time.perf_counter() - start)
            telemetry.REQUESTS.labels(**labels, code=code).inc()
            if code != "200":
                telemetry.REQUEST_ERRORS.labels(**labels, code=code).inc()

    async def preprocess(self, payload, headers=None) -> tuple[Any, list[ForecastRequest], Loaded]:
        loaded = self.loaded  # the request is read for, and answered by, this model
        limits = self.limits_for(loaded.spec)
        if isinstance(payload, InferRequest):
            request = await asyncio.to_thread(codec.decode_v2, payload, loaded.spec, limits, self.statics,
                                              loaded.fills)
            forecasts = [request]
        else:
            forecasts = await asyncio.to_thread(codec.decode_v1, payload, loaded.spec, limits, self.statics,
                                                loaded.fills)
        nbytes = sum(f.nbytes for f in forecasts)
        telemetry.PAYLOAD_BYTES.labels(variant=self.variant, direction="in").observe(nbytes)
        return payload, forecasts, loaded

    def validate(self, payload):
        return payload  # decoded and checked in preprocess

    async def predict(self, payload, headers=None, response_headers=None):
        body, forecasts, loaded = payload
        results = await asyncio.gather(*(self._batcher.submit(self._batch_key(loaded, f), (loaded, f))
                                         for f in forecasts))
        return body, forecasts, results

    def _batch_key(self, loaded: Loaded, request: ForecastRequest) -> tuple:
        """Deterministic requests of one model and batch key share forward passes; a stochastic
        one gets a key of its own (`run_batch` says why)."""
        if loaded.spec.stochastic:
            return loaded.served.sha256, "own pass", next(self._own_pass)
        return loaded.served.sha256, request.batch_key

    async def postprocess(self, result, headers=None, response_headers=None) -> dict | InferResponse:
        body, forecasts, results = result
        nbytes = sum(a.nbytes for outputs, *_ in results for a in outputs.values())
        telemetry.PAYLOAD_BYTES.labels(variant=self.variant, direction="out").observe(nbytes)
        if isinstance(body, InferRequest):
            (outputs, hours, loaded, clipped), = results
            return codec.encode_v2(body, outputs, hours, self.name, forecasts[0],
                                   model_version=loaded.served.model_version, stochastic=loaded.spec.stochastic,
                                   clipped=clipped)
        return {"predictions": [codec.encode_v1(outputs, hours, f, model_version=loaded.served.model_version,
                                                clipped=clipped)
                                for f, (outputs, hours, loaded, clipped) in zip(forecasts, results)]}

    # ---- metadata (GET /v2/models/<name>) -------------------------------------------------

    def metadata(self) -> dict:
        """What `GET /v2/models/<name>` adds to the inputs and outputs: the registry's version and
        name (the model name), and the checkpoint digest (as the platform, the one other field
        the v2 metadata has)."""
        model = self.loaded.served
        return {"versions": [model.model_version], "platform": f"pytorch aurora checkpoint {model.sha256}"}

    def get_input_types(self) -> list[dict]:
        """What a request sends: computed inputs (insolation) are not among them."""
        shapes = {"surface": [-1, -1, -1], "atmos": [-1, -1, -1, -1], "static": [-1, -1]}
        return ([{"name": c, "datatype": "FP32", "shape": [-1]} for c in codec.COORDINATES]
                + [{"name": v.dataset_name, "datatype": "FP32", "shape": shapes[v.kind]}
                   for v in codec.sent_inputs(self.spec)])

    def get_output_types(self) -> list[dict]:
        """Per lead time; a stochastic variant's lead with the member axis first."""
        shapes = {"surface": [-1, -1], "atmos": [-1, -1, -1]}
        member = [-1] if self.spec.stochastic else []
        return [{"name": f"{v.dataset_name}+<hours>h", "datatype": "FP32", "shape": member + shapes[v.kind]}
                for v in self.spec.outputs()]
