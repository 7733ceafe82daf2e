"""The request schema of the predictor: open-inference tensors <-> input windows and forecasts.

A request carries one FP32 tensor per input variable, named by its dataset name (`t2m`,
`z`, `lsm`, ...; docs/variables.md), shaped (history, lat, lon) for surface variables,
(history, level, lat, lon) for atmospheric ones and (lat, lon) for static ones, plus the
`latitude` (lat,) and `longitude` (lon,) tensors (FP32 or FP64) and parameters:
`init_time` (ISO 8601, the time of the last history step), `steps` (rollout length),
`levels` (hPa, comma-separated; default: the variant's 13), and for stochastic variants
`members` and `seed`. Variables the server computes (insolation, from the valid times and
the grid) are never sent. The response carries one tensor per output variable and lead
time, named `<variable>+<hours>h` (e.g. `t2m+6h`), shaped (lat, lon) or (level, lat, lon),
with a leading member axis for stochastic variants.

Every problem raises `RequestError`, a `kserve.errors.InvalidInput` that KServe answers
as HTTP 400 or gRPC INVALID_ARGUMENT; its message starts with the offending field.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Mapping, Sequence

import numpy as np
import xarray as xr
from aurora import Batch
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse, to_http_parameters

from model_code.data.batch import fields_to_batch
from model_code.data.contract import grid_fit_problem
from model_code.data.solar import insolation_field
from model_code.errors import DataError
from model_code.forecast import check_forecast_request
from model_code.variables import Variable
from model_code.variants import VariantSpec

COORDINATES = ("latitude", "longitude")
PARAMETERS = ("init_time", "steps", "levels", "members", "seed")
_FLOAT_TYPES = {"FP32": np.float32, "FP64": np.float64}
_SLACK_BYTES = 4 * 2**20
_GRPC_MAX_BYTES = 2**31 - 1
"""gRPC cannot carry a message of 2 GiB or more."""


class RequestError(InvalidInput):
    """A bad request, answered 400 / INVALID_ARGUMENT; `field` names the tensor or parameter."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field}: {message}")


@dataclass(frozen=True)
class Limits:
    """What one inline request may hold; larger forecasts go through jobs by reference."""

    max_steps: int
    max_request_bytes: int
    """Tensor bytes of one request (all inputs together)."""
    max_response_bytes: int
    """Tensor bytes of one response (all lead times and members together)."""
    max_members: int = 1
    """Ensemble members of one request: each costs a whole rollout (1 for deterministic variants)."""

    @classmethod
    def for_variant(cls, spec: VariantSpec, max_steps: int, max_request_bytes: int | None = None,
                    max_members: int = 16) -> "Limits":
        """Room for the variant's native grid: a whole input window in, `max_steps` out (below 2 GiB)."""
        request = max_request_bytes or native_input_bytes(spec)
        response = min(_GRPC_MAX_BYTES - _SLACK_BYTES, max_steps * native_output_step_bytes(spec))
        return cls(max_steps=max_steps, max_request_bytes=request, max_response_bytes=response,
                   max_members=max_members if spec.stochastic else 1)

    @property
    def grpc_receive_bytes(self) -> int:
        """Twice the tensor limit, so an oversized payload reaches the codec and is named there."""
        return min(_GRPC_MAX_BYTES, 2 * self.max_request_bytes + _SLACK_BYTES)

    @property
    def grpc_send_bytes(self) -> int:
        return min(_GRPC_MAX_BYTES, self.max_response_bytes + _SLACK_BYTES)


def sent_inputs(spec: VariantSpec) -> tuple[Variable, ...]:
    """The inputs a request carries: all but those the server computes (insolation)."""
    return tuple(v for v in spec.inputs() if not v.computed)


def native_input_bytes(spec: VariantSpec) -> int:
    """FP32 bytes of a full input window on the variant's native grid (~586 MB at 0.25°)."""
    h, w = spec.grid.shape
    sent = sent_inputs(spec)
    dynamic = sum(1 for v in sent if v.kind == "surface") + sum(len(spec.levels) for v in sent if v.kind == "atmos")
    return 4 * h * w * (spec.max_history * dynamic + sum(1 for v in sent if v.kind == "static"))


def native_output_step_bytes(spec: VariantSpec) -> int:
    """FP32 bytes of one predicted step on the native grid (~287 MB at 0.25°)."""
    h, w = spec.grid.shape
    return 4 * h * w * (len(spec.output_surf_vars) + len(spec.output_atmos_vars) * len(spec.levels))


@dataclass(frozen=True)
class ForecastRequest:
    """One decoded, contract-checked request: the model's input batch (sharing the request's
    memory), the time of its last input step, the rollout length, and the ensemble members
    (member m seeded `seed + m`; stochastic variants only)."""

    batch: Batch
    init_time: np.datetime64
    steps: int
    members: int = 1
    seed: int = 0

    @property
    def levels(self) -> tuple[float, ...]:
        """Pressure levels of the atmospheric inputs and outputs (hPa)."""
        return self.batch.metadata.atmos_levels

    @property
    def batch_key(self) -> tuple:
        """Requests with equal keys share grid, levels, history, statics and steps: one batch
        (of a deterministic variant; `AuroraPredictor.predict` runs stochastic ones alone)."""
        b = self.batch
        digest = hashlib.blake2b(digest_size=16)
        for t in (b.metadata.lat, b.metadata.lon, *(b.static_vars[k] for k in sorted(b.static_vars))):
            digest.update(t.numpy().tobytes())
        history = next(iter(b.surf_vars.values())).shape[1]
        return digest.hexdigest(), b.metadata.atmos_levels, history, self.steps

    @property
    def nbytes(self) -> int:
        """Bytes of the input fields (FP32), the filled ones included."""
        b = self.batch
        return sum(t.nbytes for d in (b.surf_vars, b.static_vars, b.atmos_vars) for t in d.values())


class StaticCache:
    """Static fields by grid, so clients may leave them out after the first request on a grid."""

    def __init__(self, capacity: int = 8):
        self.capacity = capacity
        self._fields: dict[str, dict[str, np.ndarray]] = {}

    @staticmethod
    def grid_key(lat: np.ndarray, lon: np.ndarray) -> str:
        digest = hashlib.blake2b(digest_size=16)
        digest.update(np.asarray(lat, np.float64).tobytes())
        digest.update(np.asarray(lon, np.float64).tobytes())
        return digest.hexdigest()

    def get(self, key: str) -> dict[str, np.ndarray]:
        return self._fields.get(key, {})

    def put(self, key: str, fields: Mapping[str, np.ndarray]) -> None:
        merged = {**self._fields.pop(key, {}), **fields}
        self._fields[key] = merged  # most recent last
        while len(self._fields) > self.capacity:
            self._fields.pop(next(iter(self._fields)))

    def load(self, ds: xr.Dataset, spec: VariantSpec) -> None:
        """Cache the static fields of `ds` (dataset names) on its grid."""
        fields = {v.dataset_name: ds[v.dataset_name].values.astype(np.float32)
                  for v in spec.inputs() if v.kind == "static" and v.dataset_name in ds}
        if not fields:
            raise DataError(f"no static variable of the {spec.name} variant in the static file; expected "
                            + ", ".join(v.dataset_name for v in spec.inputs() if v.kind == "static"))
        self.put(self.grid_key(ds.latitude.values, ds.longitude.values), fields)


# ---- parameters --------------------------------------------------------------------------


def parse_init_time(value: Any) -> np.datetime64:
    """ISO 8601 (`2024-06-01T12:00`, `...Z`, `...+00:00`) to a naive UTC datetime64."""
    if not isinstance(value, str):
        raise RequestError("init_time", f"must be an ISO 8601 string such as 2024-06-01T12:00Z; got {value!r}")
    try:
        t = datetime.fromisoformat(value.strip())
    except ValueError:
        raise RequestError("init_time", f"'{value}' is not ISO 8601; expected e.g. 2024-06-01T12:00Z") from None
    if t.tzinfo is not None:
        t = t.astimezone(timezone.utc).replace(tzinfo=None)
    return np.datetime64(t, "ns")


def parse_steps(value: Any, limits: Limits, step_bytes: int) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError("steps", f"must be an integer; got {value!r}")
    if not 1 <= value <= limits.max_steps:
        raise RequestError("steps", f"must lie within 1..{limits.max_steps} on this server; got {value}")
    if value * step_bytes > limits.max_response_bytes:
        raise RequestError(
            "steps", f"{value} steps of {step_bytes / 2**20:.1f} MiB exceed the response limit of "
            f"{limits.max_response_bytes / 2**20:.0f} MiB; submit a forecast job by reference instead")
    return value


def _whole_number(name: str, value: Any) -> int:
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(name, f"must be an integer; got {value!r}")
    return value


def parse_members(value: Any, spec: VariantSpec, limits: Limits, steps: int, step_bytes: int) -> int:
    """Ensemble members: 1 by default; more only from a stochastic variant, within the server's
    limits on members and on response bytes (every member answers every step)."""
    members = _whole_number("members", value)
    if members < 1:
        raise RequestError("members", f"must be at least 1; got {members}")
    try:
        check_forecast_request(spec, steps, None, members)
    except DataError as e:
        raise RequestError("members", str(e)) from None
    if members > limits.max_members:
        raise RequestError("members", f"{members} members exceed this server's limit of {limits.max_members}; "
                           "submit a forecast job by reference, or split the ensemble over requests with "
                           "other seeds")
    if members * steps * step_bytes > limits.max_response_bytes:
        raise RequestError("members", f"{members} members x {steps} steps of {step_bytes / 2**20:.1f} MiB exceed "
                           f"the response limit of {limits.max_response_bytes / 2**20:.0f} MiB; submit a forecast "
                           "job by reference instead")
    return members


def parse_seed(value: Any, members: int) -> int:
    seed = _whole_number("seed", value)
    if not 0 <= seed <= 2**63 - 1 - members:
        raise RequestError("seed", f"must lie within 0..2^63-1 with its members (seed + member); got {seed}")
    return seed


def parse_levels(value: Any, spec: VariantSpec, n_levels: int) -> tuple[float, ...]:
    if value is None:
        if n_levels != len(spec.levels):
            raise RequestError("levels", f"the atmospheric tensors have {n_levels} level(s), so the parameter "
                               f"'levels' (hPa, comma-separated) is required; known: {list(spec.levels)}")
        return tuple(float(lv) for lv in spec.levels)
    try:
        items = value.split(",") if isinstance(value, str) else list(value)
        levels = tuple(float(lv) for lv in items)
    except (TypeError, ValueError):
        raise RequestError("levels", f"must be pressure levels in hPa, e.g. '500,850,1000'; got {value!r}") from None
    if len(levels) != n_levels:
        raise RequestError("levels", f"{len(levels)} level(s) given but the atmospheric tensors have {n_levels}")
    if len(set(levels)) != len(levels):
        raise RequestError("levels", f"pressure levels repeat: {list(levels)}")
    unknown = [lv for lv in levels if lv not in spec.levels]
    if unknown:
        raise RequestError("levels", f"{unknown} hPa have no normalisation statistics; known: {list(spec.levels)}")
    return levels


# ---- tensors -----------------------------------------------------------------------------


def _coordinate(name: str, values: np.ndarray) -> np.ndarray:
    if values.ndim != 1 or values.size < 2:
        raise RequestError(name, f"must be a 1-D tensor of at least 2 values; got shape {list(values.shape)}")
    if not np.all(np.isfinite(values)):
        raise RequestError(name, "contains NaN or inf")
    if name == "latitude":
        if np.any(np.abs(values) > 90):
            raise RequestError(name, f"must lie within [-90, 90]; found {values.min():g} to {values.max():g}")
        if not np.all(np.diff(values) < 0):
            raise RequestError(name, "must be strictly decreasing (north to south)")
    else:
        if np.any(values < 0) or np.any(values >= 360):
            raise RequestError(name, f"must lie within [0, 360); found {values.min():g} to {values.max():g}")
        if not np.all(np.diff(values) > 0):
            raise RequestError(name, "must be strictly increasing")
    return values.astype(np.float64)


def _finite(name: str, values: np.ndarray, var: Variable) -> None:
    bad = np.isinf(values) if var.nan_by_design else ~np.isfinite(values)
    if bad.any():
        first = np.unravel_index(int(np.argmax(bad)), values.shape)
        what = "inf" if var.nan_by_design else "NaN or inf"
        raise RequestError(name, f"{int(bad.sum())} {what} value(s), first at index {list(map(int, first))}; "
                                 "one NaN input pixel turns the whole output field to NaN")


@dataclass(frozen=True)
class InputFills:
    """The inputs a request may leave out because the model was trained without them, and how
    they are filled then: as its training did (`CheckpointInfo.filled_inputs`)."""

    modes: Mapping[str, str]
    """Dataset name -> fill mode (`ingest.FILL_MODES`)."""
    levels: tuple[float, ...] | None = None
    """Pressure levels (hPa) of the filled atmospheric inputs when the request has none:
    those the model was trained on."""


def build_request(
    tensors: Mapping[str, np.ndarray],
    parameters: Mapping[str, Any],
    spec: VariantSpec,
    limits: Limits,
    statics: StaticCache | None = None,
    fills: InputFills | None = None,
) -> ForecastRequest:
    """Check decoded tensors and parameters field by field against the variant's contract
    (`model_code.data.contract`), then build the model's batch from them.

    Every rule of the contract is checked here on the arrays, without building a dataset
    (the times are made one model step apart, so their spacing holds by construction). An
    input the request leaves out is taken from `statics` (static fields sent earlier on this
    grid) or filled as `fills` says; any other missing input is a `RequestError`. Computed
    inputs (insolation) are computed here from the history's valid times and the grid, as
    ingest computes them; a request that sends one is refused like any unknown tensor, so a
    client never believes its own values were used.
    """
    from model_code.data.ingest import fill_values

    expected = {v.dataset_name: v for v in sent_inputs(spec)}
    computed = {v.dataset_name: v for v in spec.inputs() if v.computed}
    unknown = sorted(set(tensors) - set(expected) - set(COORDINATES))
    if unknown:
        if unknown[0] in computed:
            raise RequestError(unknown[0], f"unknown input of the {spec.name} variant: the server computes it "
                               "from init_time, the history times and the grid; leave it out of the request")
        raise RequestError(unknown[0], f"unknown input of the {spec.name} variant; expected "
                           + ", ".join(list(COORDINATES) + list(expected)))
    payload = sum(a.nbytes for a in tensors.values())
    if payload > limits.max_request_bytes:
        raise RequestError("payload", f"{payload / 2**20:.1f} MiB of tensors exceed this server's limit of "
                           f"{limits.max_request_bytes / 2**20:.1f} MiB; submit a forecast job by reference")
    for name in COORDINATES:
        if name not in tensors:
            raise RequestError(name, f"missing coordinate tensor ({'lat' if name == 'latitude' else 'lon'},)")
    lat = _coordinate("latitude", np.asarray(tensors["latitude"]))
    lon = _coordinate("longitude", np.asarray(tensors["longitude"]))
    grid = (lat.size, lon.size)
    if (problem := grid_fit_problem(*grid, spec.patch_size)) is not None:
        raise RequestError("window", problem)

    cached = statics.get(statics.grid_key(lat, lon)) if statics is not None else {}
    modes = dict(fills.modes) if fills is not None else {}
    dynamic = [v for v in expected.values() if v.kind != "static"]
    for v in expected.values():
        if v.dataset_name not in tensors and v.dataset_name not in modes and not (
                v.kind == "static" and v.dataset_name in cached):
            raise RequestError(v.dataset_name, f"missing {v.kind} variable ({v.long_name}, {v.units})")
    given = [v for v in dynamic if v.dataset_name in tensors]
    if not given:
        raise RequestError(dynamic[0].dataset_name, "missing: a request needs at least one time-dependent input")
    first = tensors[given[0].dataset_name]
    history = first.shape[0] if first.ndim else 0
    if not spec.min_history <= history <= spec.max_history:
        raise RequestError(given[0].dataset_name, f"history of {history} step(s); the {spec.name} variant "
                           f"takes {spec.min_history} to {spec.max_history} (first axis)")
    atmos = [v for v in given if v.kind == "atmos"]
    params = dict(parameters)
    unknown_params = sorted(set(params) - {*PARAMETERS, "binary_data_output"})
    if unknown_params:
        raise RequestError(unknown_params[0], f"unknown parameter; expected {', '.join(PARAMETERS)}")
    if "init_time" not in params:
        raise RequestError("init_time", "missing parameter (ISO 8601 time of the last history step)")
    init = parse_init_time(params["init_time"])
    if atmos:
        n_levels = tensors[atmos[0].dataset_name].shape[1] if tensors[atmos[0].dataset_name].ndim > 1 else 0
        levels = parse_levels(params.get("levels"), spec, n_levels)
    elif params.get("levels") is None and fills is not None and fills.levels:
        levels = tuple(float(lv) for lv in fills.levels)
    else:
        levels = parse_levels(params.get("levels"), spec, len(spec.levels) if params.get("levels") is None
                              else len(str(params["levels"]).split(",")))
    step = np.timedelta64(int(spec.timestep.total_seconds()), "s")
    times = np.array([init - (history - 1 - k) * step for k in range(history)])

    supplied_statics = {}
    fields = {}
    for v in expected.values():
        name = v.dataset_name
        if name not in tensors and name not in cached:
            fields[name] = fill_values(v, modes[name], lat, lon, times, levels)
            continue
        values = tensors[name] if name in tensors else cached[name]
        shape = {"surface": (history, *grid), "atmos": (history, len(levels), *grid), "static": grid}[v.kind]
        if values.shape != shape:
            dims = {"surface": "time, latitude, longitude", "atmos": "time, level, latitude, longitude",
                    "static": "latitude, longitude"}[v.kind]
            raise RequestError(name, f"shape {list(values.shape)}; expected {list(shape)} = ({dims})")
        if values.dtype != np.float32:
            raise RequestError(name, f"datatype {values.dtype}; expected FP32")
        _finite(name, values, v)
        if v.kind == "static" and name in tensors:
            supplied_statics[name] = values
        fields[name] = values
    for name in computed:  # insolation, the one computed input, as ingest computes it
        fields[name] = insolation_field(lat, lon, times)
    step_bytes = 4 * lat.size * lon.size * output_channels(spec, len(levels))
    steps = parse_steps(params.get("steps", 1), limits, step_bytes)
    members = parse_members(params.get("members", 1), spec, limits, steps, step_bytes)
    seed = parse_seed(params.get("seed", 0), members)
    if statics is not None and supplied_statics:
        statics.put(statics.grid_key(lat, lon), supplied_statics)
    return ForecastRequest(fields_to_batch(fields, lat, lon, init, levels, spec), init, steps, members, seed)


def output_channels(spec: VariantSpec, n_levels: int) -> int:
    return len(spec.output_surf_vars) + len(spec.output_atmos_vars) * n_levels


# ---- v2 (REST and gRPC) ------------------------------------------------------------------


def _tensor(inp, limits: Limits) -> np.ndarray:
    name = inp.name
    dtype = _FLOAT_TYPES.get(inp.datatype)
    if dtype is None:
        raise RequestError(name, f"datatype {inp.datatype}; expected FP32 (FP64 allowed for latitude/longitude)")
    if dtype is np.float64 and name not in COORDINATES:
        raise RequestError(name, "datatype FP64; expected FP32")
    shape = [int(s) for s in inp.shape]
    if any(s < 0 for s in shape):
        raise RequestError(name, f"negative dimension in shape {shape}")
    count = int(np.prod(shape, dtype=np.int64))
    if count * np.dtype(dtype).itemsize > limits.max_request_bytes:
        raise RequestError("payload", f"tensor '{name}' of shape {shape} exceeds this server's limit of "
                           f"{limits.max_request_bytes / 2**20:.1f} MiB; submit a forecast job by reference")
    raw = inp._raw_data
    if raw is not None:
        if len(raw) != count * np.dtype(dtype).itemsize:
            raise RequestError(name, f"{len(raw)} bytes do not match shape {shape} of {inp.datatype}")
        return np.frombuffer(raw, dtype=dtype).reshape(shape)
    data = inp.data
    try:
        values = np.asarray(data, dtype=dtype)
    except (TypeError, ValueError):
        raise RequestError(name, f"data are not {inp.datatype} numbers") from None
    if values.size != count:
        raise RequestError(name, f"{values.size} values do not match shape {shape}")
    return values.reshape(shape)


def request_parameters(request: InferRequest) -> dict[str, Any]:
    """Request parameters as plain values, from REST (dict) or gRPC (InferParameter map)."""
    return to_http_parameters(request.parameters) if request.parameters else {}


def decode_v2(request: InferRequest, spec: VariantSpec, limits: Limits, statics: StaticCache | None,
              fills: InputFills | None = None) -> ForecastRequest:
    tensors: dict[str, np.ndarray] = {}
    for inp in request.inputs:
        if inp.name in tensors:
            raise RequestError(inp.name, "given twice")
        tensors[inp.name] = _tensor(inp, limits)
    return build_request(tensors, request_parameters(request), spec, limits, statics, fills)


def lead_hours(init_time: np.datetime64, valid_times: Sequence[np.datetime64]) -> list[int]:
    init = np.datetime64(init_time, "ns")
    return [int((np.datetime64(t, "ns") - init) // np.timedelta64(1, "h")) for t in valid_times]


def output_name(dataset_name: str, hours: int) -> str:
    return f"{dataset_name}+{hours}h"


def raw_output(name: str, values: np.ndarray, parameters: Mapping[str, Any] | None = None) -> InferOutput:
    """An FP32 output whose bytes are a view of `values`: a gRPC answer copies them once, into
    the message (`server.response_bytes`); KServe's REST encoding reads them as an array."""
    values = np.ascontiguousarray(values, dtype=np.float32)
    out = InferOutput(name=name, shape=list(values.shape), datatype="FP32",
                      parameters={**(parameters or {}), "binary_data_size": values.nbytes})
    out._raw_data = memoryview(values).cast("B")
    return out


def response_parameters(decoded: ForecastRequest, hours: Sequence[int], clipped: Mapping[str, int],
                        model_version: str) -> dict[str, Any]:
    """What every answer says beside its tensors: times, levels, members and seed, how many
    values were clipped to their physical range (JSON, by dataset name), and the model."""
    return {"init_time": str(decoded.init_time)[:19] + "Z", "lead_hours": ",".join(map(str, hours)),
            "levels": ",".join(f"{lv:g}" for lv in decoded.levels), "members": decoded.members,
            "seed": decoded.seed, "clipped_values": json.dumps(dict(clipped), sort_keys=True),
            "model_version": model_version}


def encode_v2(
    request: InferRequest, forecast: Mapping[str, np.ndarray], hours: Sequence[int], model_name: str,
    decoded: ForecastRequest, *, model_version: str, stochastic: bool = False,
    clipped: Mapping[str, int] | None = None,
) -> InferResponse:
    """One FP32 tensor per variable and lead time; `forecast` maps names to (steps, ...) arrays,
    or (members, steps, ...) for a stochastic variant, whose tensors keep the member axis first.
    The response names the model that made it: `model_version` and a parameter of that name."""
    outputs = []
    for name, values in forecast.items():
        for k, h in enumerate(hours):
            outputs.append(raw_output(output_name(name, h), values[:, k] if stochastic else values[k],
                                      {"lead_hours": h, "variable": name}))
    return InferResponse(
        response_id=request.id or "", model_name=model_name, infer_outputs=outputs, model_version=model_version,
        use_binary_outputs=request.use_binary_outputs,
        parameters=response_parameters(decoded, hours, clipped or {}, model_version),
    )


# ---- v1 REST -----------------------------------------------------------------------------


def decode_v1(body: Any, spec: VariantSpec, limits: Limits, statics: StaticCache | None,
              fills: InputFills | None = None) -> list[ForecastRequest]:
    """`{"instances": [{name: nested lists, ...}], "parameters": {...}}`: one forecast per instance."""
    if not isinstance(body, dict) or not isinstance(body.get("instances"), list) or not body["instances"]:
        raise RequestError("instances", "expected a JSON object with a non-empty list 'instances'")
    parameters = body.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise RequestError("parameters", "must be a JSON object")
    requests = []
    for i, instance in enumerate(body["instances"]):
        if not isinstance(instance, dict):
            raise RequestError(f"instances[{i}]", "must be an object of tensors by variable name")
        tensors = {}
        for name, data in instance.items():
            dtype = np.float64 if name in COORDINATES else np.float32
            try:
                tensors[name] = np.asarray(data, dtype=dtype)
            except (TypeError, ValueError):
                raise RequestError(name, "must be a nested list of numbers of one rectangular shape") from None
        requests.append(build_request(tensors, parameters, spec, limits, statics, fills))
    return requests


def encode_v1(forecast: Mapping[str, np.ndarray], hours: Sequence[int], decoded: ForecastRequest, *,
              model_version: str, clipped: Mapping[str, int] | None = None) -> dict:
    """One prediction: outputs (steps, ...) per variable, or (members, steps, ...) for a
    stochastic variant, beside the response parameters of v2."""
    clipped = dict(clipped or {})
    parameters = response_parameters(decoded, hours, clipped, model_version)
    return {
        "model_version": model_version,
        "init_time": parameters["init_time"],
        "lead_hours": list(hours),
        "levels": [float(lv) for lv in decoded.levels],
        "members": decoded.members,
        "seed": decoded.seed,
        "clipped_values": clipped,
        "outputs": {name: values.tolist() for name, values in forecast.items()},
    }
