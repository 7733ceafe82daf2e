"""(serving) The predictor over sockets against the model in-process, payload transport, a global job.

1. Latency: one v2 gRPC request (raw tensors, our client) for a 1-step forecast of the tiny
   medium-range model on a 32x64 window, against `forecast_steps` on the same batch in this
   process (same checkpoint). Paired, alternating, medians; target ratio <= 1.2.
2. Payload throughput: 4 MB and 64 MB FP32 tensors through an echo model on the same KServe
   server (benchmarks/serving_echo.py): gRPC raw_input_contents, REST binary extension, REST
   JSON. MB/s = tensor MB / round-trip seconds (the tensor travels both ways).
3. A by-reference job on a synthetic full 0.25° input (721x1440, 2 times, 13 levels, ~586 MB
   of fields in one NetCDF) with the tiny model, 1 step: submit-to-succeeded wall time and the
   server's peak resident memory (VmHWM).
4. Cold start: process start to `ready` (imports, checkpoint load, warm-up forwards).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

from model_code.checkpoint import load_checkpoint, save_checkpoint
from model_code.data.batch import window_to_batch
from model_code.data.synthetic import regular_grid, synthetic_window
from model_code.forecast import forecast_steps
from model_code.variants import build_model, get_variant
from serving.client import GrpcClient, RestClient, request_parameters, request_tensors
from serving.process import ServerProcess, free_port
from timing import paired_ms, time_ms

VARIANT = "medium-range"
ECHO = Path(__file__).with_name("serving_echo.py")


def _window(grid, seed=1):
    spec = get_variant(VARIANT)
    if grid == "global":
        lat, lon = regular_grid(0.25)
    else:
        lat, lon = np.linspace(90, -90, grid[0]), np.linspace(0, 360, grid[1], endpoint=False)
    end = np.datetime64("2024-06-01T12:00")
    times = np.array([end - np.timedelta64(6, "h"), end])
    return synthetic_window(spec, lat, lon, times, seed=seed).astype("float32")


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def latency(checkpoint: str, workdir: Path, repeat: int) -> dict:
    spec = get_variant(VARIANT)
    server = ServerProcess(VARIANT, checkpoint, workdir / "latency").start(timeout=600)
    try:
        window = _window(spec.tiny_grid)
        model, _ = load_checkpoint(checkpoint)
        batch = window_to_batch(window, spec)
        client = GrpcClient(server.grpc)
        tensors, params = request_tensors(window, spec), request_parameters(window, 1)

        def remote():
            client.infer(server.name, tensors, params)

        def local():
            list(forecast_steps(model, window_to_batch(window, spec), 1))

        ours, base = paired_ms(remote, local, repeat=max(10, 10 * repeat), warmup=3)
        client.close()
        return {"cold_start_s": server.started_s, "grpc_ms": ours.median, "inprocess_ms": base.median,
                "ratio": ours.median / base.median, "spread": max(ours.spread, base.spread), "batch": batch}
    finally:
        server.stop()


def throughput(workdir: Path, repeat: int) -> list[dict]:
    http, grpc = free_port(), free_port()
    log = (workdir / "echo.log").open("w")
    proc = subprocess.Popen([sys.executable, str(ECHO), str(http), str(grpc)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/models/echo/ready", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError((workdir / "echo.log").read_text()[-2000:])
                time.sleep(0.3)
        rest, grpc_client = RestClient(f"http://127.0.0.1:{http}"), GrpcClient(f"127.0.0.1:{grpc}")
        rows = []
        for mb in (4, 64):
            x = np.random.default_rng(0).standard_normal(mb * 2**20 // 4, dtype=np.float32)
            for name, call, n in (
                ("gRPC raw", lambda: grpc_client.infer("echo", {"x": x}, {}), repeat * 3),
                ("REST binary", lambda: rest.infer("echo", {"x": x}, {}, binary=True), repeat * 2),
                ("REST JSON", lambda: rest.infer("echo", {"x": x}, {}, binary=False), 1 if mb > 4 else repeat),
            ):
                out = call()
                assert np.array_equal(out["x"], x)
                t = time_ms(call, repeat=n, warmup=0)
                rows.append({"mb": mb, "path": name, "ms": t.median, "mb_s": mb / (t.median / 1e3)})
        return rows
    finally:
        proc.terminate()
        proc.wait(60)


def global_job(checkpoint: str, workdir: Path) -> dict:
    path = workdir / "global.nc"
    clock = time.perf_counter()
    _window("global").to_netcdf(path)
    prepare_s = time.perf_counter() - clock
    server = ServerProcess(VARIANT, checkpoint, workdir / "job").start(timeout=600)
    try:
        rest = RestClient(server.url)
        clock = time.perf_counter()
        state = rest.submit_job(server.name, {"inputs": [str(path)], "output_uri": str(workdir / "out"), "steps": 1})
        state = rest.wait_job(server.name, state["job_id"], timeout=3600, poll_s=1)
        wall = time.perf_counter() - clock
        assert state["status"] == "succeeded", state
        return {"input_mb": path.stat().st_size / 1e6, "prepare_s": prepare_s, "job_s": wall,
                "peak_rss_mb": _peak_rss_mb(server.process.pid)}
    finally:
        server.stop()


def run(repeat: int = 3) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        workdir = Path(tmp)
        spec = get_variant(VARIANT)
        checkpoint = save_checkpoint(build_model(spec, "tiny", seed=0), spec, "tiny", str(workdir / "tiny.safetensors"))
        results = {"latency": latency(checkpoint, workdir, repeat)}
        results["latency"].pop("batch")
        results["throughput"] = throughput(workdir, repeat)
        results["job"] = global_job(checkpoint, workdir)
    return results


def table(results: dict) -> str:
    lat, job = results["latency"], results["job"]
    lines = [
        "| measure | value |", "|---|---|",
        f"| gRPC request, 1 step, 32x64 (ms) | {lat['grpc_ms']:.1f} |",
        f"| in-process forward, same batch (ms) | {lat['inprocess_ms']:.1f} |",
        f"| ratio (target <= 1.2) | {lat['ratio']:.2f} |",
        f"| cold start: process start to ready (s) | {lat['cold_start_s']:.1f} |",
        f"| job, 721x1440 synthetic input ({job['input_mb']:.0f} MB NetCDF), 1 step, tiny model (s) | {job['job_s']:.1f} |",
        f"| job: server peak resident memory (MB) | {job['peak_rss_mb']:.0f} |",
        "", "| tensor | path | round trip (ms) | MB/s |", "|---|---|---|---|",
    ]
    lines += [f"| {r['mb']} MB | {r['path']} | {r['ms']:.0f} | {r['mb_s']:.1f} |" for r in results["throughput"]]
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(run(int(sys.argv[1]) if len(sys.argv) > 1 else 3)))
