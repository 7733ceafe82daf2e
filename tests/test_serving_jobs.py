"""Forecast jobs by reference on a real server: S3 (moto on 127.0.0.1) in and out, idempotent
submits, cancellation, and a crash mid-job that leaves a state the restarted server finishes."""

from __future__ import annotations

import json
import time
from pathlib import Path

import boto3
import httpx
import pytest

from model_code.checkpoint import save_checkpoint
from model_code.variants import build_model, get_variant
from serving.jobs import JOB_STATE, MARKER, JobManager
from serving.process import ServerProcess
from test_serving import make_window

MODEL = "aurora-medium-range"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    spec = get_variant("medium-range")
    path = tmp_path_factory.mktemp("ckpt") / "medium-range.safetensors"
    return save_checkpoint(build_model(spec, "tiny", seed=3), spec, "tiny", str(path))


@pytest.fixture(scope="module")
def input_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("inputs") / "window.nc"
    make_window("medium-range", grid=(64, 128)).to_netcdf(path)
    return path


def submit(server, body: dict) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/models/{MODEL}/jobs", json=body, timeout=60)


def wait(server, job_id: str, until, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = httpx.get(f"{server.url}/v1/models/{MODEL}/jobs/{job_id}", timeout=30).json()
        if until(state):
            return state
        time.sleep(0.2)
    raise TimeoutError(f"job {job_id}: {state}")


def test_job_reads_and_writes_s3_one_file_per_lead_time_with_a_marker(checkpoint, input_file, bucket, s3_endpoint,
                                                                     tmp_path):
    s3 = boto3.client("s3")
    s3.upload_file(str(input_file), bucket, "in/window.nc")
    server = ServerProcess("medium-range", checkpoint, tmp_path, env={
        "AWS_ENDPOINT_URL": s3_endpoint, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1"}).start(timeout=300)
    try:
        body = {"inputs": [f"s3://{bucket}/in/window.nc"], "output_uri": f"s3://{bucket}/out/run1", "steps": 3,
                "idempotency_key": "run-1"}
        r = submit(server, body)
        assert r.status_code == 201, r.text
        job_id = r.json()["job_id"]
        again = submit(server, body)  # a retried submit finds the same job
        assert again.status_code == 200 and again.json()["job_id"] == job_id
        clash = submit(server, {**body, "steps": 4})
        assert clash.status_code == 409 and clash.json()["error"].startswith("idempotency_key:")

        state = wait(server, job_id, lambda s: s["status"] in ("succeeded", "failed"))
        assert state["status"] == "succeeded", state
        keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="out/run1/")["Contents"])
        assert keys == [f"out/run1/{n}" for n in (MARKER, JOB_STATE, "step_001.nc", "step_002.nc", "step_003.nc")]
        stored = json.loads(s3.get_object(Bucket=bucket, Key=f"out/run1/{JOB_STATE}")["Body"].read())
        assert stored["status"] == "succeeded" and stored["steps_done"] == 3

        bad = [({"inputs": ["http://example.org/x.nc"]}, "inputs[0]:"), ({"inputs": ["s3://"]}, "inputs[0]:"),
               ({"inputs": ["/no/such/file.nc"]}, "inputs[0]:"), ({"steps": 0}, "steps:"),
               ({"output_uri": "ftp://host/out"}, "output_uri:"), ({"format": "grib"}, "format:"),
               ({"colour": "red"}, "colour:")]
        for change, field in bad:
            r = submit(server, {**body, "idempotency_key": None, **change})
            assert r.status_code == 400 and r.json()["error"].startswith(field), (change, r.text)
        taken = submit(server, {**body, "idempotency_key": "run-2"})
        assert taken.status_code == 409 and taken.json()["error"].startswith("output_uri:")

        failing = submit(server, {**body, "inputs": [f"s3://{bucket}/in/missing.nc"], "output_uri":
                                  f"s3://{bucket}/out/run3", "idempotency_key": "run-3"}).json()
        state = wait(server, failing["job_id"], lambda s: s["status"] in ("succeeded", "failed"))
        assert state["status"] == "failed" and "not found" in state["error"]
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="out/run3/")["Contents"]]
        assert keys == [f"out/run3/{JOB_STATE}"]  # no marker, no partial output
        assert httpx.get(f"{server.url}/v2/health/ready").json() == {"ready": True}
    finally:
        server.stop()


@pytest.mark.slow
def test_a_crash_mid_job_leaves_a_consistent_state_that_a_restart_finishes(checkpoint, input_file, tmp_path):
    out = tmp_path / "out"
    server = ServerProcess("medium-range", checkpoint, tmp_path / "server").start(timeout=300)
    try:
        job = submit(server, {"inputs": [str(input_file)], "output_uri": str(out), "steps": 40,
                              "idempotency_key": "crash"}).json()
        cancel = submit(server, {"inputs": [str(input_file)], "output_uri": str(tmp_path / "cancelled"),
                                 "steps": 5, "idempotency_key": "cancel"}).json()
        httpx.delete(f"{server.url}/v1/models/{MODEL}/jobs/{cancel['job_id']}")  # still queued behind "crash"
        wait(server, job["job_id"], lambda s: s["steps_done"] >= 2)
        server.kill()
    finally:
        server.stop()

    state = json.loads((out / JOB_STATE).read_text())
    assert state["status"] == "running" and state["attempts"] == 1
    assert not (out / MARKER).exists()
    written = sorted(p.name for p in out.glob("step_*.nc"))
    assert written == [f"step_{k:03d}.nc" for k in range(1, len(written) + 1)]  # whole files only; a step
    # killed mid-write is at most a hidden `.step_NNN.nc.tmp-*`, which the restarted job removes

    restarted = ServerProcess("medium-range", checkpoint, tmp_path / "server").start(timeout=300)
    try:
        state = wait(restarted, job["job_id"], lambda s: s["status"] in ("succeeded", "failed"))
        assert state["status"] == "succeeded" and state["attempts"] == 2 and "resumed" in state["note"]
        assert (out / MARKER).exists() and len(list(out.glob("step_*.nc"))) == 40
        assert not list(out.glob(".*tmp*"))
        cancelled = httpx.get(f"{restarted.url}/v1/models/{MODEL}/jobs/{cancel['job_id']}").json()
        assert cancelled["status"] == "cancelled" and not (tmp_path / "cancelled" / MARKER).exists()
    finally:
        restarted.stop()


def test_a_job_interrupted_too_often_is_marked_failed_with_the_reason(checkpoint, input_file, tmp_path):
    """The state repeated crashes leave, read by a starting job manager: failed, named, no marker."""
    out = tmp_path / "out"
    out.mkdir()
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    state = {"job_id": "j1", "variant": "medium-range", "status": "running", "steps_done": 7, "files": [],
             "error": None, "attempts": 3, "created": "", "updated": "", "model": None, "note": None,
             "request": {"inputs": [str(input_file)], "output_uri": str(out), "steps": 40, "init_time": None,
                         "history": None, "levels": None, "fill_missing": None, "format": "nc",
                         "idempotency_key": "j1"}}
    (out / JOB_STATE).write_text(json.dumps(state))
    (jobs / "j1.json").write_text(json.dumps({"job_id": "j1", "output_uri": str(out)}))
    manager = JobManager("medium-range", str(jobs), lambda: None, max_steps=40)
    manager.start()
    got = manager.state("j1")
    assert got.status == "failed" and "interrupted 3 time(s)" in got.error
    assert json.loads((out / JOB_STATE).read_text())["status"] == "failed"
    assert not (out / MARKER).exists()


# ---- resuming, and ids that outlive their outputs --------------------------------------------------


@pytest.fixture
def manager(checkpoint, tmp_path):
    """A job manager on the tiny checkpoint, as the predictor builds one."""
    from model_code.checkpoint import load_checkpoint
    from serving.served import Loaded, resolve

    identity, path = resolve(checkpoint)
    model, info = load_checkpoint(path)
    loaded = Loaded(model, identity, info.spec)

    def make(jobs_dir: str = "jobs") -> JobManager:
        return JobManager("medium-range", str(tmp_path / jobs_dir), lambda: loaded, max_steps=40)
    return make


def test_a_job_killed_after_3_of_6_lead_times_resumes_at_lead_4_with_the_files_of_an_uninterrupted_run(
        manager, input_file, tmp_path):
    """The state a kill after step 3 leaves (whole step files 1-3, the record `running`), read by
    a starting job manager: it writes steps 4-6 only, and they equal an uninterrupted job's to the bit."""
    import shutil

    import numpy as np
    import xarray as xr

    jobs = manager()
    whole, _ = jobs.submit({"inputs": [str(input_file)], "output_uri": str(tmp_path / "whole"), "steps": 6,
                            "idempotency_key": "whole"})
    jobs.run(jobs.state(whole.job_id))
    assert jobs.state(whole.job_id).status == "succeeded"

    killed = tmp_path / "killed"
    killed.mkdir()
    record = json.loads((tmp_path / "whole" / JOB_STATE).read_text())
    record.update(job_id="killed", status="running", steps_done=3, files=record["files"][:3],
                  request={**record["request"], "output_uri": str(killed), "idempotency_key": "killed"})
    (killed / JOB_STATE).write_text(json.dumps(record))
    for name in record["files"]:
        shutil.copy(tmp_path / "whole" / name, killed / name)
    written = {name: (killed / name).stat().st_mtime_ns for name in record["files"]}
    (tmp_path / "jobs" / "killed.json").write_text(json.dumps({"job_id": "killed", "output_uri": str(killed)}))

    restarted = manager()
    restarted.start()
    deadline = time.monotonic() + 120
    while restarted.state("killed").status not in ("succeeded", "failed") and time.monotonic() < deadline:
        time.sleep(0.1)
    state = restarted.state("killed")
    assert state.status == "succeeded" and state.attempts == 2 and "resumed after step 3" in state.note
    assert {name: (killed / name).stat().st_mtime_ns for name in written} == written  # steps 1-3 not rewritten
    for k in range(1, 7):
        with xr.open_dataset(killed / f"step_{k:03d}.nc") as a, xr.open_dataset(tmp_path / "whole" / f"step_{k:03d}.nc") as b:
            for v in b.data_vars:
                np.testing.assert_array_equal(a[v].values, b[v].values, err_msg=f"step {k} {v}")
            assert a.attrs["aurora_model_sha256"] == state.model["sha256"]


def test_polling_an_old_job_after_its_output_uri_was_reused_names_both_jobs(manager, tmp_path):
    from serving.jobs import JobReplaced

    jobs = manager()
    out = str(tmp_path / "out")
    first, _ = jobs.submit({"inputs": [str(tmp_path)], "output_uri": out, "steps": 2, "idempotency_key": "a"})
    jobs.run(jobs.state(first.job_id))  # the input is a folder, not data: the job fails
    assert jobs.state(first.job_id).status == "failed"
    second, new = jobs.submit({"inputs": [str(tmp_path)], "output_uri": out, "steps": 2, "idempotency_key": "b"})
    assert new and jobs.state(second.job_id).job_id == second.job_id
    with pytest.raises(JobReplaced, match=f"job '{first.job_id}' wrote to {out}, which now holds job "
                                          f"'{second.job_id}'"):
        jobs.state(first.job_id)


@pytest.mark.slow
def test_a_job_on_the_full_grid_writes_the_in_process_forecast(manager, tmp_path):
    """A 721x1440 window (the medium-range native grid, ~586 MB) through the job path, two steps
    (the second computed while the first is written), against `forecast_steps` in this process."""
    import numpy as np
    import xarray as xr

    from model_code.data.batch import window_to_batch
    from model_code.data.synthetic import regular_grid, synthetic_window
    from model_code.forecast import forecast_steps

    spec = get_variant("medium-range")
    lat, lon = regular_grid(0.25)
    end = np.datetime64("2024-06-01T12:00")
    window = synthetic_window(spec, lat, lon, np.array([end - np.timedelta64(6, "h"), end]), seed=2).astype("float32")
    source = tmp_path / "global.nc"
    window.to_netcdf(source)

    jobs = manager()
    state, _ = jobs.submit({"inputs": [str(source)], "output_uri": str(tmp_path / "out"), "steps": 2,
                            "idempotency_key": "full-grid"})
    jobs.run(jobs.state(state.job_id))
    state = jobs.state(state.job_id)
    assert state.status == "succeeded" and state.steps_done == 2, state.error
    assert (tmp_path / "out" / MARKER).exists()

    model = jobs.current().model
    predictions = list(forecast_steps(model, window_to_batch(window, spec), 2))
    for k, prediction in enumerate(predictions, start=1):
        with xr.open_dataset(tmp_path / "out" / f"step_{k:03d}.nc") as step:
            assert step.sizes["latitude"] == 720 and step.sizes["longitude"] == 1440  # Aurora drops the last row
            for v in spec.outputs():
                got = step[v.dataset_name].values[0]
                source_vars = prediction.surf_vars if v.kind == "surface" else prediction.atmos_vars
                np.testing.assert_array_equal(got, source_vars[v.name][0, 0].numpy(), err_msg=f"step {k} {v.name}")


# ---- ensembles ---------------------------------------------------------------------------------------


@pytest.fixture
def ensemble_jobs(tmp_path):
    """A job manager on a tiny ensemble-v1.5 checkpoint, and an input file."""
    from model_code.checkpoint import load_checkpoint
    from serving.served import Loaded, resolve

    spec = get_variant("ensemble-v1.5")
    path = save_checkpoint(build_model(spec, "tiny", seed=3), spec, "tiny", str(tmp_path / "ensemble.safetensors"))
    identity, local = resolve(path)
    model, info = load_checkpoint(local)
    loaded = Loaded(model, identity, info.spec)
    window = tmp_path / "window.nc"
    make_window("ensemble-v1.5").to_netcdf(window)

    def make() -> JobManager:
        return JobManager("ensemble-v1.5", str(tmp_path / "jobs"), lambda: loaded, max_steps=40)
    return make, window


def test_an_ensemble_job_resumed_after_2_of_4_steps_writes_the_uninterrupted_jobs_files_noise_included(
        ensemble_jobs, tmp_path):
    """Three members, killed after step 2: the restarted job restores every member's generator
    state from the record and writes steps 3-4 bit for bit as the uninterrupted job did, which
    is `forecast(..., members=3, seed=5)` in this process. Without those states, or when a clip
    moved an input it would read back, it starts again from step 1 and says why."""
    import shutil

    import numpy as np
    import xarray as xr

    from model_code.data.ingest import load_window
    from model_code.forecast import forecast

    make, window = ensemble_jobs
    jobs = make()
    body = {"inputs": [str(window)], "steps": 4, "members": 3, "seed": 5}
    whole, _ = jobs.submit({**body, "output_uri": str(tmp_path / "whole"), "idempotency_key": "whole"})
    partial, _ = jobs.submit({**body, "steps": 2, "output_uri": str(tmp_path / "partial"), "idempotency_key": "p"})
    for job in (whole, partial):
        jobs.run(jobs.state(job.job_id))
        assert jobs.state(job.job_id).status == "succeeded", jobs.state(job.job_id).error
    assert len(jobs.state(partial.job_id).rng) == 3  # each member's generator state after step 2

    loaded = jobs.current()
    spec = loaded.spec
    read, _ = load_window([str(window)], spec)
    local = forecast(loaded.model, spec, read, 4, members=3, seed=5)
    for k in range(4):
        with xr.open_dataset(tmp_path / "whole" / f"step_{k + 1:03d}.nc") as step:
            assert step.sizes["member"] == 3
            for v in local.data_vars:
                np.testing.assert_array_equal(step[v].values[:, 0], local[v].values[:, k], err_msg=f"step {k + 1} {v}")

    def killed(name: str, *, rng: bool = True) -> Path:
        """The state a kill after step 2 of the whole job leaves: the partial job's steps and record."""
        out = tmp_path / name
        out.mkdir()
        record = json.loads((tmp_path / "partial" / JOB_STATE).read_text())
        record.update(job_id=name, status="running", request={
            **json.loads((tmp_path / "whole" / JOB_STATE).read_text())["request"], "output_uri": str(out),
            "idempotency_key": name}, rng=record["rng"] if rng else None)
        (out / JOB_STATE).write_text(json.dumps(record))
        for step in record["files"]:
            shutil.copy(tmp_path / "partial" / step, out / step)
        (tmp_path / "jobs" / f"{name}.json").write_text(json.dumps({"job_id": name, "output_uri": str(out)}))
        return out

    resumed, without_rng, clipped = killed("resumed"), killed("without-rng", rng=False), killed("clipped")
    with xr.open_dataset(clipped / "step_002.nc") as step:  # as if a negative humidity had been clipped
        step = step.load()
    step.attrs["clipped_values"] = json.dumps({**json.loads(step.attrs["clipped_values"]), "q": 4})
    step.to_netcdf(clipped / "step_002.nc")

    restarted = make()
    restarted.start()
    deadline = time.monotonic() + 120
    names = ("resumed", "without-rng", "clipped")
    while any(restarted.state(n).status not in ("succeeded", "failed") for n in names):
        assert time.monotonic() < deadline, [restarted.state(n) for n in names]
        time.sleep(0.1)
    notes = {n: restarted.state(n).note for n in names}
    assert all(restarted.state(n).status == "succeeded" for n in names), [restarted.state(n).error for n in names]
    assert "resumed after step 2" in notes["resumed"]
    assert "recomputed from step 1" in notes["without-rng"]
    assert "recomputed from step 1: written step(s) 2 hold model inputs clipped" in notes["clipped"]
    for out in (resumed, without_rng, clipped):
        for k in range(1, 5):
            with xr.open_dataset(out / f"step_{k:03d}.nc") as a, \
                    xr.open_dataset(tmp_path / "whole" / f"step_{k:03d}.nc") as b:
                for v in b.data_vars:
                    np.testing.assert_array_equal(a[v].values, b[v].values, err_msg=f"{out.name} step {k} {v}")


def test_a_job_refuses_members_its_variant_cannot_give(manager, input_file, tmp_path):
    from serving.codec import RequestError

    with pytest.raises(RequestError, match="members: the medium-range variant is deterministic"):
        manager().submit({"inputs": [str(input_file)], "output_uri": str(tmp_path / "out"), "steps": 2, "members": 2})
    with pytest.raises(RequestError, match="members: must be a positive integer"):
        manager().submit({"inputs": [str(input_file)], "output_uri": str(tmp_path / "out"), "steps": 2, "members": 0})


def test_the_load_inline_batches_and_job_steps_all_run_on_the_model_thread(checkpoint, input_file, tmp_path):
    """One thread runs every forward of the served model, so the process keeps one OpenMP team
    (`AuroraPredictor.on_model_thread` says why); a swap's load and warm-up run on a thread of
    their own that has ended by the time the new model serves."""
    import threading

    import numpy as np

    from model_code.data.batch import window_to_batch
    from serving.codec import ForecastRequest
    from serving.predictor import AuroraPredictor

    predictor = AuroraPredictor("medium-range", checkpoint)
    threads = []
    original = predictor._load

    def load(*args):
        loaded = original(*args)
        loaded.model.backbone.register_forward_pre_hook(lambda *_: threads.append(threading.current_thread()))
        threads.append(("loaded", threading.current_thread()))
        return loaded

    predictor._load = load
    predictor.load()
    model_thread = threads[0][1]  # where the load and its warm-up ran
    assert model_thread is not threading.current_thread()

    window = make_window("medium-range")
    request = ForecastRequest(window_to_batch(window, predictor.spec), window.time.values[-1], steps=2)
    predictor.on_model_thread(predictor.run_batch, [(predictor.loaded, request)])
    jobs = JobManager("medium-range", str(tmp_path / "jobs"), lambda: predictor.loaded, max_steps=4,
                      lock=predictor.model_lock, run_forward=predictor.on_model_thread)
    state, _ = jobs.submit({"inputs": [str(input_file)], "output_uri": str(tmp_path / "out"), "steps": 2})
    jobs.run(jobs.state(state.job_id))
    assert jobs.state(state.job_id).status == "succeeded"
    forwards = [t for t in threads[1:] if not isinstance(t, tuple)]
    assert len(forwards) == 2 + 2 and set(forwards) == {model_thread}  # the inline batch's 2 steps, the job's 2

    swapped = predictor._load_apart(checkpoint)
    loader = threads[-1]
    assert loader[0] == "loaded" and loader[1] is not model_thread and not loader[1].is_alive()
    assert np.isfinite(next(iter(predictor.run_batch([(swapped, request)])[0][0].values()))).all()
