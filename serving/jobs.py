"""Forecast jobs by reference: input URIs in, one file per lead time out, state beside the outputs.

A global 0.25° input (~586 MB) and its outputs (~287 MB per step) do not belong in a request,
so a job names input files (NetCDF/Zarr/GRIB, paths or s3://) and an output URI, and the
predictor writes

    <output_uri>/step_001.nc ... step_NNN.nc   one file per lead time, each written atomically
    <output_uri>/job.json                      status, steps done, error (rewritten atomically)
    <output_uri>/_SUCCESS                      only after every step is written

The job id is derived from the variant and the client's idempotency key, so a retried submit
finds the same job. `<jobs_dir>/<job_id>.json` points from the id to the output URI; a lookup
checks that the job record there is the same job (an output URI reused after a failure holds
another job's record: `JobReplaced`). On start the predictor reads every pointer and resumes
jobs left queued or running by a crash until `max_attempts`, after which the job is marked
failed with the reason. A job resumes after its last complete lead time: Aurora's input for
the next step is the last steps it wrote (at full precision), so the files it adds are
bit-identical to those of an uninterrupted run (`forecast.forecast_steps`); a job whose
first run used another model than the one serving now starts again from step 1, so no job
mixes two models. Every job record and step file names the model that made it
(`served.ServedModel`). A failed or cancelled job never has a `_SUCCESS` marker.

A job of a stochastic variant may ask for `members`: each step file holds every member (a
leading `member` dimension), member m seeded `seed + m` as `auroraops forecast` seeds it, so
the job's files equal that command's forecast. The members advance together, one step each
in turn, each on its own generator state; the record keeps every member's state after the
last step written (`JobState.rng`), and a resumed job restores it, so the steps it adds are
those of the uninterrupted job, noise included. A resume reads back clipped values
(`Variable.clip`); where a clip moved an input the model would have taken unclipped, the job
starts again from step 1 instead, and its `note` says so.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import queue
import shutil
import threading
import traceback
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import xarray as xr

from model_code.data.batch import dataset_to_prediction, predictions_to_dataset, window_to_batch
from model_code.data.ingest import FILL_MODES, load_window
from model_code.data.writers import write_dataset
from model_code.errors import DataError
from model_code.forecast import check_forecast_request, forecast_steps
from model_code.storage import is_s3, local_copy, s3_client, split_s3, write_atomic
from model_code.variables import by_key
from model_code.variants import VariantSpec
from serving import members as ensemble
from serving import telemetry
from serving.codec import RequestError
from serving.memory import release_free_memory
from serving.served import Loaded

STATES = ("queued", "running", "succeeded", "failed", "cancelled")
FINAL = ("succeeded", "failed", "cancelled")
JOB_STATE = "job.json"
"""The job record beside a job's outputs (`JobState`)."""
MARKER = "_SUCCESS"
"""Written beside a job's outputs after its last step, never by a failed or cancelled job."""
FORMATS = {"nc": ".nc", "zarr": ".zarr"}


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# ---- storage: small text objects, local or s3 -------------------------------------------


def join(base: str, name: str) -> str:
    return f"{base.rstrip('/')}/{name}"


def read_text(uri: str) -> str | None:
    """The text at `uri`, or None when there is none."""
    if not is_s3(uri):
        path = Path(uri).expanduser()
        return path.read_text() if path.is_file() else None
    from botocore.exceptions import ClientError

    bucket, key = split_s3(uri)
    try:
        return s3_client().get_object(Bucket=bucket, Key=key)["Body"].read().decode()
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
            return None
        raise


def read_exists(uri: str) -> bool:
    """Whether a file (or Zarr store) exists at `uri`."""
    if not is_s3(uri):
        return Path(uri).expanduser().exists()
    from botocore.exceptions import ClientError

    bucket, key = split_s3(uri)
    try:
        s3_client().head_object(Bucket=bucket, Key=key)
        return True
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return False
        raise


def write_text(uri: str, text: str) -> None:
    write_atomic(uri, lambda p: p.write_text(text))


def delete(uri: str) -> None:
    if is_s3(uri):
        bucket, key = split_s3(uri)
        s3_client().delete_object(Bucket=bucket, Key=key)
    else:
        Path(uri).expanduser().unlink(missing_ok=True)


def remove_partial_writes(uri: str) -> None:
    """Delete the temporary files a killed process left mid-write in a local output folder
    (`write_atomic` names them `.NAME.tmp-*`; on S3 an upload is whole or absent)."""
    if is_s3(uri):
        return
    root = Path(uri).expanduser()
    for tmp in root.glob(".*.tmp-*") if root.is_dir() else ():
        shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink(missing_ok=True)


def list_json(prefix: str) -> list[str]:
    """URIs of the `*.json` objects directly under `prefix`."""
    if not is_s3(prefix):
        root = Path(prefix).expanduser()
        return sorted(str(p) for p in root.glob("*.json")) if root.is_dir() else []
    bucket, key = split_s3(prefix)
    paginator = s3_client().get_paginator("list_objects_v2")
    uris = []
    for page in paginator.paginate(Bucket=bucket, Prefix=key + "/", Delimiter="/"):
        uris += [f"s3://{bucket}/{o['Key']}" for o in page.get("Contents", []) if o["Key"].endswith(".json")]
    return sorted(uris)


# ---- the job ------------------------------------------------------------------------------


def _check_uri(field_name: str, uri: Any) -> str:
    if not isinstance(uri, str) or not uri.strip():
        raise RequestError(field_name, f"must be a path or s3://bucket/key URI; got {uri!r}")
    uri = uri.strip()
    if "://" in uri and not uri.startswith(("s3://", "file://")):
        raise RequestError(field_name, f"'{uri}': only local paths, file:// and s3:// URIs are supported")
    if uri.startswith("file://"):
        uri = uri[len("file://"):]
    if is_s3(uri):
        bucket, key = uri[5:].partition("/")[::2]
        if not bucket or not key.strip("/"):
            raise RequestError(field_name, f"'{uri}' must name a bucket and a key: s3://bucket/key")
    return uri


@dataclass(frozen=True)
class JobRequest:
    """What a client submits (the JSON body of POST .../jobs), checked field by field."""

    inputs: tuple[str, ...]
    output_uri: str
    steps: int
    init_time: str | None = None
    history: int | None = None
    levels: tuple[float, ...] | None = None
    fill_missing: str | None = None
    format: str = "nc"
    idempotency_key: str | None = None
    members: int = 1
    """Ensemble members (stochastic variants only), member m seeded `seed + m`."""
    seed: int = 0

    @classmethod
    def from_json(cls, body: Any, max_steps: int, *, spec: VariantSpec | None = None,
                  max_members: int = 16) -> "JobRequest":
        """Check `body` field by field; with `spec`, whether the variant can give its members."""
        if not isinstance(body, dict):
            raise RequestError("body", "expected a JSON object")
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(body) - known)
        if unknown:
            raise RequestError(unknown[0], f"unknown field; expected {', '.join(sorted(known))}")
        inputs = body.get("inputs")
        if isinstance(inputs, str):
            inputs = [inputs]
        if not isinstance(inputs, list) or not inputs:
            raise RequestError("inputs", "must be a non-empty list of paths or s3:// URIs")
        inputs = tuple(_check_uri(f"inputs[{i}]", u) for i, u in enumerate(inputs))
        for i, uri in enumerate(inputs):
            if not is_s3(uri) and not Path(uri).expanduser().exists():
                raise RequestError(f"inputs[{i}]", f"'{uri}' does not exist on the server")
        if "output_uri" not in body:
            raise RequestError("output_uri", "missing (a directory path or s3:// prefix for the step files)")
        output_uri = _check_uri("output_uri", body["output_uri"]).rstrip("/")
        steps = body.get("steps")
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= max_steps:
            raise RequestError("steps", f"must be an integer within 1..{max_steps}; got {steps!r}")
        fmt = body.get("format", "nc")
        if fmt not in FORMATS:
            raise RequestError("format", f"must be one of {', '.join(FORMATS)}; got {fmt!r}")
        fill = body.get("fill_missing")
        if fill is not None and fill not in FILL_MODES:
            raise RequestError("fill_missing", f"must be one of {', '.join(FILL_MODES)}; got {fill!r}")
        init_time = body.get("init_time")
        if init_time is not None:
            from serving.codec import parse_init_time

            parse_init_time(init_time)
        history = body.get("history")
        if history is not None and (isinstance(history, bool) or not isinstance(history, int) or history < 1):
            raise RequestError("history", f"must be a positive integer; got {history!r}")
        levels = body.get("levels")
        if levels is not None:
            try:
                levels = tuple(float(lv) for lv in levels)
            except (TypeError, ValueError):
                raise RequestError("levels", f"must be a list of pressure levels in hPa; got {levels!r}") from None
        key = body.get("idempotency_key")
        if key is not None and (not isinstance(key, str) or not 1 <= len(key) <= 200):
            raise RequestError("idempotency_key", "must be a string of 1 to 200 characters")
        members = body.get("members", 1)
        if isinstance(members, bool) or not isinstance(members, int) or members < 1:
            raise RequestError("members", f"must be a positive integer; got {members!r}")
        if spec is not None:
            try:
                check_forecast_request(spec, steps, None, members)
            except DataError as e:
                raise RequestError("members", str(e)) from None
        if members > max_members:
            raise RequestError("members", f"{members} members exceed this server's limit of {max_members}")
        seed = body.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= 2**63 - 1 - members:
            raise RequestError("seed", f"must be an integer within 0..2^63-1 with its members; got {seed!r}")
        return cls(inputs, output_uri, steps, init_time, history, levels, fill, fmt, key, members, seed)


def job_id_for(variant: str, key: str | None) -> str:
    """Deterministic for a client key (a retried submit finds its job), random without one."""
    if key is None:
        return uuid.uuid4().hex[:20]
    return hashlib.sha256(f"{variant}\0{key}".encode()).hexdigest()[:20]


@dataclass
class JobState:
    """The content of `<output_uri>/job.json`."""

    job_id: str
    variant: str
    request: dict
    status: str = "queued"
    steps_done: int = 0
    files: list[str] = field(default_factory=list)
    error: str | None = None
    attempts: int = 0
    created: str = field(default_factory=_now)
    updated: str = field(default_factory=_now)
    model: dict | None = None
    """The `ServedModel` (uri, sha256, version, name) its steps were made with, once it ran."""
    note: str | None = None
    rng: list[dict] | None = None
    """A stochastic job's generator state per member after step `steps_done` (`members.rng_state`),
    what a resumed job's next step draws its noise from; None for deterministic variants."""

    @property
    def output_uri(self) -> str:
        return self.request["output_uri"]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> "JobState":
        return cls(**json.loads(text))


class JobCancelled(Exception):
    """Raised inside a running job when a client cancelled it."""


class JobReplaced(RequestError):
    """A job id whose output URI now holds another job's record (HTTP 410)."""


class JobManager:
    """Queue, run and track the jobs of one predictor; one job runs at a time, in a thread.

    `current()` gives the model serving now (`served.Loaded`); a job takes it when it starts
    and runs on it to its end, one step at a time under `lock` (and on the predictor's model
    thread, through `run_forward`), so inline requests keep being
    answered while a job runs and a swap of the served model waits for the step in progress.
    """

    def __init__(self, variant: str, jobs_dir: str, current: Callable[[], Loaded], *, max_steps: int,
                 max_attempts: int = 3, lock: threading.Lock | None = None, device: str = "cpu",
                 max_members: int = 16, run_forward: Callable[..., Any] | None = None):
        self.variant = variant
        self.jobs_dir = jobs_dir.rstrip("/")
        self.current = current
        self.max_steps = max_steps
        self.max_members = max_members
        self.max_attempts = max_attempts
        self.lock = lock or threading.Lock()
        self.device = device
        self.run_forward = run_forward or (lambda fn, *args: fn(*args))
        """Runs each step's forward: the predictor's `on_model_thread` in a server."""
        self._queue: queue.Queue[str] = queue.Queue()
        self._cancelled: set[str] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._status: dict[str, str] = {}
        """Last known status of every job, for the `aurora_jobs` gauge."""

    # ---- index and state ----------------------------------------------------------------

    def _pointer(self, job_id: str) -> str:
        return join(self.jobs_dir, f"{job_id}.json")

    def state(self, job_id: str) -> JobState | None:
        """The record of `job_id`, None when there is none; `JobReplaced` when its output URI
        now holds another job's record (the URI was reused after this job failed)."""
        text = read_text(self._pointer(job_id))
        if text is None:
            return None
        output_uri = json.loads(text)["output_uri"]
        state_text = read_text(join(output_uri, JOB_STATE))
        if not state_text:
            return None
        state = JobState.from_json(state_text)
        if state.job_id != job_id:
            raise JobReplaced("job_id", f"job '{job_id}' wrote to {output_uri}, which now holds job "
                              f"'{state.job_id}' ({state.status}); the outputs of '{job_id}' were replaced")
        return state

    def _save(self, state: JobState) -> None:
        state.updated = _now()
        write_text(join(state.output_uri, JOB_STATE), state.to_json())
        self._status[state.job_id] = state.status
        for s in STATES:
            telemetry.JOBS.labels(variant=self.variant, state=s).set(
                sum(1 for v in self._status.values() if v == s))

    # ---- API --------------------------------------------------------------------------

    def submit(self, body: Any) -> tuple[JobState, bool]:
        """The job for `body` and whether it is new; conflicting reuse raises `JobConflict`."""
        from model_code.variants import get_variant

        request = JobRequest.from_json(body, self.max_steps, spec=get_variant(self.variant),
                                       max_members=self.max_members)
        job_id = job_id_for(self.variant, request.idempotency_key)
        with self._lock:
            try:
                existing = self.state(job_id)
            except JobReplaced:
                existing = None  # its outputs belong to another job now: this submit starts it again
            if existing is not None:
                if existing.request != _plain(request):
                    raise JobConflict("idempotency_key", f"'{request.idempotency_key}' was used for job {job_id} "
                                      "with a different request")
                return existing, False
            other_text = read_text(join(request.output_uri, JOB_STATE))
            if other_text is not None:
                other = JobState.from_json(other_text)
                if other.status not in ("failed", "cancelled"):
                    raise JobConflict("output_uri", f"'{request.output_uri}' belongs to job {other.job_id} "
                                      f"({other.status}); choose another output URI")
            if read_text(join(request.output_uri, MARKER)) is not None:
                raise JobConflict("output_uri", f"'{request.output_uri}' already holds a complete forecast "
                                  f"({MARKER}); choose another output URI")
            state = JobState(job_id=job_id, variant=self.variant, request=_plain(request))
            self._save(state)
            write_text(self._pointer(job_id), json.dumps({"job_id": job_id, "output_uri": request.output_uri}))
        self._queue.put(job_id)
        return state, True

    def cancel(self, job_id: str) -> JobState | None:
        state = self.state(job_id)
        if state is None or state.status in FINAL:
            return state
        self._cancelled.add(job_id)
        if state.status == "queued":  # the runner skips it when it comes up
            state.status = "cancelled"
            self._save(state)
        return state

    def start(self) -> None:
        """Recover jobs a previous process left unfinished, then start the runner thread."""
        for uri in list_json(self.jobs_dir):
            pointer = json.loads(read_text(uri) or "{}")
            try:
                state = self.state(pointer.get("job_id", ""))
            except JobReplaced:
                continue  # the output URI went to a later job, which has its own pointer
            if state is None:
                continue
            self._status[state.job_id] = state.status
            if state.status in FINAL:
                continue
            if read_text(join(state.output_uri, MARKER)) is not None:
                state.status, state.note = "succeeded", "completed before a restart"
                self._save(state)
            elif state.attempts >= self.max_attempts:
                state.status = "failed"
                state.error = (f"interrupted {state.attempts} time(s) (the server stopped during the job, e.g. "
                               "out of memory); not retried again; resubmit with a new idempotency key")
                self._save(state)
            else:
                state.status = "queued"
                state.note = f"interrupted after step {state.steps_done} by a server restart"
                self._save(state)
                self._queue.put(state.job_id)
        self._thread = threading.Thread(target=self._loop, name=f"jobs-{self.variant}", daemon=True)
        self._thread.start()

    # ---- runner -------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            job_id = self._queue.get()
            try:
                state = self.state(job_id)
            except JobReplaced:
                continue
            if state is None or state.status in FINAL:
                continue
            self.run(state)

    def run(self, state: JobState) -> None:
        loaded = self.current()
        resume = self._resumable(state, loaded)
        try:
            inexact = resume and self._clipped_inputs(state, loaded)
        except (OSError, ValueError):  # a step that cannot be read back is not continued from
            resume, inexact = False, []
        if inexact:
            resume = False
            state.note = (f"{state.note}; " if state.note else "") + (
                f"recomputed from step 1: written step(s) {', '.join(map(str, inexact))} hold model inputs "
                "clipped to their physical range, which the uninterrupted forecast went on with unclipped")
        elif not resume and state.steps_done:
            state.note = (f"{state.note}; " if state.note else "") + (
                f"recomputed from step 1: step {state.steps_done} was made with {state.model['sha256'][:19]}, "
                f"this server serves {loaded.served.sha256[:19]}" if state.model else "recomputed from step 1")
        elif resume:
            state.note = (f"{state.note}; " if state.note else "") + f"resumed after step {state.steps_done}"
        state.status, state.attempts, state.error = "running", state.attempts + 1, None
        if not resume:
            state.steps_done, state.files, state.rng = 0, [], None
        state.model = dataclasses.asdict(loaded.served)
        self._save(state)
        remove_partial_writes(state.output_uri)
        try:
            self._run(state, loaded)
        except JobCancelled:
            state.status, state.error = "cancelled", f"cancelled by a client after {state.steps_done} step(s)"
        except DataError as e:
            state.status, state.error = "failed", str(e)
        except Exception as e:  # the job fails, the server keeps serving
            state.status = "failed"
            state.error = f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=3)}"
        self._cancelled.discard(state.job_id)
        self._save(state)
        release_free_memory()

    def _resumable(self, state: JobState, loaded: Loaded) -> bool:
        """Whether the steps already written can be continued: the same model made them, in a
        format read back exactly, and every one of them is there; for a stochastic job, with
        each member's generator state for this kind of device."""
        if not (state.steps_done > 0 and state.model is not None and state.model["sha256"] == loaded.served.sha256
                and state.request["format"] == "nc" and len(state.files) == state.steps_done
                and all(read_exists(join(state.output_uri, f)) for f in state.files[-loaded.spec.max_history:])):
            return False
        if not loaded.spec.stochastic:
            return True
        rng = state.rng or []
        on_gpu = self._device.type == "cuda"
        return len(rng) == state.request.get("members", 1) and all(("cuda" in r) == on_gpu for r in rng)

    def _clipped_inputs(self, state: JobState, loaded: Loaded) -> list[int]:
        """The written steps a resume would read back (the input history) in which a clip moved
        a model input further than the model itself clips it before the next step: read back,
        they would make another next step than the one the uninterrupted job made."""
        model_clips = getattr(loaded.model, "rollout_input_clipping", None) or {}
        inputs = {v.dataset_name for v in loaded.spec.inputs() if v.kind != "static"}
        recent = state.files[-(state.request.get("history") or loaded.spec.max_history):]
        found = []
        for k, name in enumerate(recent, start=state.steps_done - len(recent) + 1):
            with local_copy(join(state.output_uri, name)) as path, xr.open_dataset(path) as ds:
                counts = json.loads(ds.attrs.get("clipped_values", "{}"))
            if any(n and key in inputs and not _within(by_key(key), model_clips.get(by_key(key).name))
                   for key, n in counts.items()):
                found.append(k)
        return found

    @property
    def _device(self):
        import torch

        return torch.device(self.device)

    def _run(self, state: JobState, loaded: Loaded) -> None:
        r, spec = state.request, loaded.spec
        n_members, seed = r.get("members", 1), r.get("seed", 0)
        fills, levels = r["fill_missing"], r["levels"]
        if fills is None and loaded.fills is not None:
            fills, levels = dict(loaded.fills.modes), levels or loaded.fills.levels
        window, _ = load_window(r["inputs"], spec, history=r["history"], init_time=r["init_time"],
                                levels=levels, fill_missing=fills)
        batch = window_to_batch(window, spec)
        init = window.time.values[-1]
        suffix = FORMATS[r["format"]]
        done = self._predictions([join(state.output_uri, f) for f in state.files[-window.sizes["time"]:]], spec,
                                 n_members)
        rng = None
        if spec.stochastic:
            rng = state.rng if state.steps_done else ensemble.initial_states(seed, n_members, self._device)
        attrs = {"aurora_job": state.job_id, "aurora_model_version": loaded.served.model_version,
                 "aurora_model_sha256": loaded.served.sha256, "aurora_model_uri": loaded.served.uri,
                 **({"aurora_registered_model": loaded.served.name} if loaded.served.name else {})}
        del window  # the batch holds what the model needs
        steps = self._forward(loaded, batch, r["steps"] - state.steps_done, done, state.steps_done, rng)
        writing: tuple[Future, int, str, list | None] | None = None  # the step being written while the next computes

        def written() -> None:
            """Wait for the step in writing, then record it (the record never runs ahead of the files)."""
            future, k, name, rng_after = writing
            future.result()
            state.steps_done, state.files, state.rng = k, state.files + [name], rng_after
            self._save(state)

        with ThreadPoolExecutor(1, thread_name_prefix=f"job-{state.job_id}-write") as writer:
            try:
                for k, (predictions, rng_after) in enumerate(steps, start=state.steps_done + 1):
                    runs = [predictions_to_dataset([p], spec, init, attrs) for p in predictions]  # copies on the host
                    ds = ensemble.stack_members(runs, seed) if spec.stochastic else runs[0]
                    del predictions, runs
                    if writing:
                        written()
                    if state.job_id in self._cancelled:
                        raise JobCancelled()
                    name = f"step_{k:03d}{suffix}"
                    writing = (writer.submit(write_dataset, ds, join(state.output_uri, name)), k, name, rng_after)
                    del ds
            finally:
                if writing and state.steps_done < writing[1]:
                    written()
        write_text(join(state.output_uri, MARKER), "")
        state.status = "succeeded"

    @staticmethod
    def _predictions(uris: list[str], spec: VariantSpec, n_members: int) -> list[list]:
        """Per member, the predictions written to `uris` (oldest first), as `forecast_steps(done=...)`
        continues from them: one member for a deterministic variant."""
        done: list[list] = [[] for _ in range(n_members if spec.stochastic else 1)]
        for uri in uris:
            with local_copy(uri) as path, xr.open_dataset(path) as ds:
                ds = ds.load()
            for m, predictions in enumerate(done):
                predictions.append(dataset_to_prediction(ds.isel(member=m) if spec.stochastic else ds, spec))
        return done

    def _forward(self, loaded: Loaded, batch, steps: int, done: list[list], steps_done: int,
                 rng: list[dict] | None):
        """The job's steps through `loaded.model`, holding the lock one forward at a time: per
        step, every member's prediction and (stochastic) every member's generator state after it.

        Each member's forward runs on that member's own generator state, restored before and
        read after it inside forked generators, so inline requests and other members in
        between change none of its draws."""
        if steps < 1:
            return
        device = self._device
        batch = batch.to(device)
        generators = [forecast_steps(loaded.model, batch, steps, done=d, steps_done=steps_done) for d in done]
        states = list(rng) if rng is not None else None
        def member_step(m: int):
            with self.lock:
                if states is None:
                    return next(generators[m])
                with ensemble.forked_rng(device):
                    ensemble.set_rng_state(states[m], device)
                    prediction = next(generators[m])
                    states[m] = ensemble.rng_state(device)
                    return prediction

        try:
            for _ in range(steps):
                predictions = [self.run_forward(member_step, m) for m in range(len(generators))]
                yield predictions, (list(states) if states is not None else None)
        finally:
            for generator in reversed(generators):  # each restores the inference mode the one before set
                generator.close()


def _within(v, model_clip: dict | None) -> bool:
    """Whether the model's own clip of a rolled-out input (`rollout_input_clipping`) is at least
    as tight as `v.clip`, so clipping first changes nothing it goes on with."""
    if v.clip is None:
        return True
    lo, hi = v.clip
    model_lo, model_hi = (model_clip or {}).get("min"), (model_clip or {}).get("max")
    return ((lo is None or (model_lo is not None and model_lo >= lo))
            and (hi is None or (model_hi is not None and model_hi <= hi)))


class JobConflict(RequestError):
    """A submit that clashes with an existing job (HTTP 409)."""


def _plain(request: JobRequest) -> dict:
    d = asdict(request)
    d["inputs"] = list(d["inputs"])
    d["levels"] = list(d["levels"]) if d["levels"] is not None else None
    return d
