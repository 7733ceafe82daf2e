"""The KServe ModelServer of the predictors: a chosen bind address, gRPC limits, the jobs routes.

KServe 0.21 binds REST to 0.0.0.0 and gRPC to [::] with gRPC message limits from its own
command line (8 MiB by default). `AuroraModelServer` binds both to `host` (loopback by
default) and sizes gRPC messages to the variant's grid. The jobs routes are added to
KServe's FastAPI app (`kserve.model_server.app`), so they share its port, middleware and
exception handlers:

    POST   /v1/models/aurora-<variant>/jobs            submit (JSON body, see serving.jobs.JobRequest)
    GET    /v1/models/aurora-<variant>/jobs/<job_id>   poll
    DELETE /v1/models/aurora-<variant>/jobs/<job_id>   cancel
"""

from __future__ import annotations

import asyncio
import json
import time
from concurrent import futures

import grpc
from fastapi import APIRouter, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from google.protobuf.message import DecodeError
from grpc import aio
from kserve import ModelServer
from kserve.constants.constants import FASTAPI_APP_IMPORT_STRING, INFERENCE_CONTENT_LENGTH_HEADER
from kserve.errors import InvalidInput
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc
from kserve.protocol.grpc.interceptors import ExceptionToStatusInterceptor
from kserve.protocol.grpc.server import GRPCServer
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc.servicer import InferenceServicer
from kserve.protocol.infer_type import InferInput, InferRequest, InferResponse, RequestedOutput, to_grpc_parameters
from kserve.protocol.rest.server import RESTServer
from kserve.utils.utils import to_headers

from serving import telemetry, wire
from serving.codec import RequestError
from serving.jobs import JobConflict, JobManager, JobReplaced
from serving.memory import keep_freed_buffers
from serving.predictor import AuroraPredictor

SERVICE = "inference.GRPCInferenceService"


class _DataPlane(DataPlane):
    """KServe's data plane, with the served model's version and checkpoint digest in the v2
    metadata (`AuroraPredictor.metadata`; KServe 0.21 leaves versions out), and binary REST
    tensors left as bytes."""

    async def model_metadata(self, model_name: str):
        metadata = await super().model_metadata(model_name)
        model = self.get_model_from_registry(model_name)
        return {**metadata, **(model.metadata() if isinstance(model, AuroraPredictor) else {})}

    def decode_inference_request(self, body, headers, model_name: str) -> InferRequest:
        json_length = headers.get(INFERENCE_CONTENT_LENGTH_HEADER)
        if not isinstance(body, bytes) or json_length is None:
            return super().decode_inference_request(body, headers, model_name)
        return binary_request(body, json_length, model_name)


def binary_request(body: bytes, json_length: str, model_name: str) -> InferRequest:
    """A v2 REST request with the binary-data extension, its tensors as views of `body`.

    KServe 0.21 turns every binary tensor into a Python list, one `.item()` per value, before
    the model sees it: most of a REST request's time, and all of it on the event loop."""
    try:
        n = int(json_length)
        if not 0 < n <= len(body):
            raise ValueError(f"inference-header-content-length {n} is not within the body's {len(body)} bytes")
        header = json.loads(body[:n])
        inputs, offset = [], n
        for spec in header["inputs"]:
            inp = InferInput(spec["name"], spec["shape"], spec["datatype"], spec.get("data"), spec.get("parameters"))
            if inp.data is None:
                size = int((inp.parameters or {})["binary_data_size"])
                if offset + size > len(body):
                    raise ValueError(f"'{inp.name}' has binary_data_size {size}, past the body's end")
                inp._raw_data = memoryview(body)[offset:offset + size]
                offset += size
            inputs.append(inp)
        outputs = [RequestedOutput(o["name"], o.get("parameters")) for o in header.get("outputs") or []]
    except (ValueError, KeyError, TypeError, AttributeError) as e:  # JSONDecodeError is a ValueError
        raise RequestError("inputs", f"not a v2 binary-data request: {type(e).__name__} {e}") from None
    return InferRequest(model_name, inputs, request_id=header.get("id"), parameters=header.get("parameters"),
                        request_outputs=outputs or None)


class _Servicer(InferenceServicer):
    """KServe's gRPC servicer, answering model metadata with its versions too, and inference on
    the wire bytes: tensors in and out stay views of the messages (`serving.wire`) instead
    of protobuf's copies of them."""

    async def ModelMetadata(self, request, context):
        metadata = await self._data_plane.model_metadata(model_name=request.name)
        return pb.ModelMetadataResponse(name=metadata["name"], versions=metadata.get("versions", []),
                                        platform=metadata["platform"], inputs=metadata["inputs"],
                                        outputs=metadata["outputs"])

    async def ModelInfer(self, message: bytes, context) -> bytes:
        try:
            header, raw = wire.split(message, wire.RAW_INPUT_CONTENTS)
            request = pb.ModelInferRequest.FromString(header)
        except (wire.WireError, DecodeError) as e:
            raise InvalidInput(f"not a ModelInferRequest: {e}") from None
        if raw and (len(raw) != len(request.inputs) or any(i.HasField("contents") for i in request.inputs)):
            raise InvalidInput(f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs: with raw "
                               "contents every input has one and none has 'contents'")
        parsed = InferRequest.from_grpc(request)
        response, _ = await self._data_plane.infer(
            model_name=request.model_name, headers=to_headers(context), request=InferRequest(
                parsed.model_name, parsed.inputs, request_id=parsed.id, raw_inputs=raw, from_grpc=True,
                parameters=parsed.parameters, request_outputs=parsed.request_outputs,
                model_version=parsed.model_version))
        return response_bytes(response)


def response_bytes(response: InferResponse) -> bytes:
    """A serialized `ModelInferResponse` whose raw outputs (bytes or views, `codec.raw_output`)
    are copied once, into the message; through KServe's `to_grpc` when an output is not raw."""
    if not all(isinstance(o._raw_data, (bytes, bytearray, memoryview)) for o in response.outputs):
        return response.to_grpc().SerializeToString()
    header = pb.ModelInferResponse(
        id=response.id, model_name=response.model_name, model_version=response.model_version,
        parameters=to_grpc_parameters(response.parameters) if response.parameters else None,
        outputs=[{"name": o.name, "datatype": o.datatype, "shape": o.shape,
                  **({"parameters": to_grpc_parameters(o.parameters)} if o.parameters else {})}
                 for o in response.outputs])
    return wire.join(header.SerializeToString(), wire.RAW_OUTPUT_CONTENTS, [o._raw_data for o in response.outputs])


def _handlers(servicer: _Servicer) -> dict[str, grpc.RpcMethodHandler]:
    """The v2 service's method handlers as KServe's generated code makes them, with
    ModelInfer taking and giving bytes (no protobuf (de)serialiser)."""

    class Collect:
        def add_generic_rpc_handlers(self, handlers):
            pass

        def add_registered_method_handlers(self, service, handlers):
            self.handlers = handlers

    collect = Collect()
    grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, collect)
    return {**collect.handlers, "ModelInfer": grpc.unary_unary_rpc_method_handler(servicer.ModelInfer)}


class _GRPCServer(GRPCServer):
    """KServe's gRPC server on a chosen address, with our message limits and no port sharing."""

    def __init__(self, host: str, port: int, send_bytes: int, receive_bytes: int, *args, **kwargs):
        super().__init__(port, *args, kwargs={}, **kwargs)
        self._host = host
        self._options = [
            ("grpc.max_send_message_length", send_bytes),
            ("grpc.max_receive_message_length", receive_bytes),
            ("grpc.so_reuseport", 0),  # a second server on the same port must fail, not share it
        ]

    async def start(self, max_workers):
        self._server = aio.server(futures.ThreadPoolExecutor(max_workers=max_workers),
                                  interceptors=(ExceptionToStatusInterceptor(),), options=self._options)
        handlers = _handlers(_Servicer(self._data_plane, self._model_repository_extension))
        self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        self._server.add_registered_method_handlers(SERVICE, handlers)
        host = f"[{self._host}]" if ":" in self._host else self._host
        self._server.add_insecure_port(f"{host}:{self._port}")
        await self._server.start()
        await self._server.wait_for_termination()


class AuroraModelServer(ModelServer):
    """`ModelServer` bound to `host`, with gRPC limits that fit the largest variant served."""

    def __init__(self, predictors: list[AuroraPredictor], *, host: str, http_port: int, grpc_port: int, **kwargs):
        super().__init__(http_port=http_port, grpc_port=grpc_port, **kwargs)
        self.dataplane = _DataPlane(model_registry=self.registered_models)
        self.host = host
        self.predictors = predictors

    def start(self, models) -> None:
        keep_freed_buffers()  # request and response buffers of tens of MB, reused instead of faulted in again
        self._register_and_check_atleast_one_model_is_ready(models)
        self._rest_server = RESTServer(
            FASTAPI_APP_IMPORT_STRING, self.dataplane, self.model_repository_extension, self.http_port,
            grace_period=self.grace_period, event_loop=self.event_loop,
            timeout_keep_alive=self.timeout_keep_alive)
        self._rest_server.config.host = self.host
        self.servers.append(self._rest_server.start())
        if self.enable_grpc:
            send = max(p.limits.grpc_send_bytes for p in self.predictors)
            receive = max(p.limits.grpc_receive_bytes for p in self.predictors)
            self._grpc_server = _GRPCServer(
                self.host, self.grpc_port, send, receive,
                self.dataplane, self.model_repository_extension, grace_period=self.grace_period)
            self.servers.append(self._grpc_server.start(self.max_threads))
        self.setup_event_loop()
        self.register_signal_handler()
        asyncio.run(self._serve())


def add_body_limit(app: FastAPI, max_bytes: int) -> None:
    """Refuse request bodies over `max_bytes` (413) before reading them."""

    @app.middleware("http")
    async def body_limit(request: Request, call_next):
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > max_bytes:
            return JSONResponse(status_code=413, content={
                "error": f"payload: request body of {int(length) / 2**20:.1f} MiB exceeds this server's limit of "
                         f"{max_bytes / 2**20:.1f} MiB; submit a forecast job by reference"})
        return await call_next(request)


def add_job_routes(app: FastAPI, predictor: AuroraPredictor, jobs: JobManager) -> None:
    router = APIRouter(prefix=f"/v1/models/{predictor.name}/jobs", tags=["jobs"])
    variant = predictor.variant

    def count(endpoint: str, code: int, start: float) -> None:
        labels = dict(variant=variant, protocol="jobs", endpoint=endpoint,
                      model_version=predictor.loaded.served.model_version)
        telemetry.REQUEST_SECONDS.labels(**labels).observe(time.perf_counter() - start)
        telemetry.REQUESTS.labels(**labels, code=str(code)).inc()
        if code >= 400:
            telemetry.REQUEST_ERRORS.labels(**labels, code=str(code)).inc()

    @router.post("")
    async def submit(request: Request):
        start = time.perf_counter()
        try:
            body = await request.json()
        except ValueError:
            count("submit", 400, start)
            raise InvalidInput("body: not valid JSON") from None
        try:
            state, new = await run_in_threadpool(jobs.submit, body)
        except JobConflict as e:
            count("submit", 409, start)
            return JSONResponse(status_code=409, content={"error": str(e)})
        except InvalidInput:
            count("submit", 400, start)
            raise
        count("submit", 201 if new else 200, start)
        return JSONResponse(status_code=201 if new else 200, content=_public(state))

    async def answer(action: str, lookup, job_id: str):
        start = time.perf_counter()
        try:
            state = await run_in_threadpool(lookup, job_id)
        except JobReplaced as e:
            count(action, 410, start)
            return JSONResponse(status_code=410, content={"error": str(e)})
        if state is None:
            count(action, 404, start)
            return JSONResponse(status_code=404, content={"error": f"job_id: no job '{job_id}'"})
        count(action, 200, start)
        return _public(state)

    @router.get("/{job_id}")
    async def poll(job_id: str):
        return await answer("poll", jobs.state, job_id)

    @router.delete("/{job_id}")
    async def cancel(job_id: str):
        return await answer("cancel", jobs.cancel, job_id)

    app.include_router(router)


def _public(state) -> dict:
    """The job as clients see it: its record less the members' generator states (kilobytes of
    opaque bytes per member that only a resume reads)."""
    from dataclasses import asdict

    record = {k: v for k, v in asdict(state).items() if k != "rng"}
    return {**record, "output_uri": state.output_uri}


def serve(predictors: list[AuroraPredictor], *, host: str = "127.0.0.1", http_port: int = 8080,
          grpc_port: int = 8081, jobs_dir: str | None = None, job_attempts: int = 3, job_max_steps: int = 120) -> None:
    """Load the predictors (one per variant), recover their jobs and serve until SIGTERM/SIGINT.

    Jobs of each variant are indexed under `<jobs_dir>/<variant>`.
    """
    from kserve.model_server import app
    from serving.jobs import join

    for predictor in predictors:
        predictor.load()
    # JSON text takes several bytes per value, so the body limit is a multiple of the tensor limit
    add_body_limit(app, 8 * max(p.limits.max_request_bytes for p in predictors))
    if jobs_dir is not None:
        for predictor in predictors:
            jobs = JobManager(predictor.variant, join(jobs_dir, predictor.variant), lambda p=predictor: p.loaded,
                              max_steps=job_max_steps, max_attempts=job_attempts, lock=predictor.model_lock,
                              device=str(predictor.device), max_members=predictor.max_members,
                              run_forward=predictor.on_model_thread)
            add_job_routes(app, predictor, jobs)
            jobs.start()
    AuroraModelServer(predictors, host=host, http_port=http_port, grpc_port=grpc_port).start(predictors)
