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
5. A swap under load: a server following `models:/aurora-medium-range@champion` (`--follow 1`,
   a sqlite MLflow registry) answers 4 gRPC clients that never stop while the alias moves
   between two registered versions several times. Against the same server's steady state:
   request latency during a swap, alias move to the first answer of the new version, failed
   requests, and answers of the old version after the new one answered (must be 0).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import threading
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
                assert np.array_equal(call().outputs["x"], x)
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


def swap(workdir: Path, repeat: int) -> dict:
    from pipelines import registry

    spec, name = get_variant(VARIANT), f"aurora-{VARIANT}"
    store = f"sqlite:///{workdir / 'mlruns.db'}"
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = store
    try:
        versions = [registry.register(save_checkpoint(build_model(spec, "tiny", seed=s), spec, "tiny",
                                                      str(workdir / f"v{s}.safetensors")), variant=VARIANT)
                    for s in (1, 2)]
        registry.client().set_registered_model_alias(name, "champion", versions[0])
        server = ServerProcess(VARIANT, f"models:/{name}@champion", workdir / "swap", args=["--follow", "1"],
                               env={"MLFLOW_TRACKING_URI": store}).start(timeout=600)
        window = _window(spec.tiny_grid)
        tensors, params = request_tensors(window, spec), request_parameters(window, 1)
        answers: list[tuple[float, float, str]] = []  # (sent, answered, version)
        failures: list[str] = []
        stop = threading.Event()

        def client_loop() -> None:
            client = GrpcClient(server.grpc)
            while not stop.is_set():
                sent = time.monotonic()
                try:
                    version = client.infer(name, tensors, params, timeout=60).model_version
                except Exception as e:  # every failure counts
                    failures.append(repr(e))
                    continue
                answers.append((sent, time.monotonic(), version))
            client.close()

        clients = [threading.Thread(target=client_loop, daemon=True) for _ in range(4)]
        try:
            for c in clients:
                c.start()
            time.sleep(5)
            swaps = []  # (alias moved, first answer of the new version, the new version)
            for k in range(max(3, repeat)):
                new = versions[(k + 1) % 2]
                moved = time.monotonic()
                registry.client().set_registered_model_alias(name, "champion", new)
                while not any(v == new and t > moved for _, t, v in answers) and time.monotonic() < moved + 120:
                    time.sleep(0.05)
                swaps.append((moved, min(t for _, t, v in answers if v == new and t > moved), new))
                time.sleep(5)
        finally:
            stop.set()
            for c in clients:
                c.join(timeout=120)
            server.stop()
    finally:
        if previous is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = previous

    def during(sent, answered):
        return any(sent < first and answered > moved for moved, first, _ in swaps)

    steady = [1e3 * (t - s) for s, t, _ in answers if not during(s, t)]
    swapping = [1e3 * (t - s) for s, t, _ in answers if during(s, t)]
    until = [m for m, _, _ in swaps[1:]] + [float("inf")]  # each swap's version serves until the next move
    stale = sum(1 for s, _, v in answers for (_, first, new), end in zip(swaps, until) if first < s < end and v != new)
    return {"swaps": len(swaps), "answers": len(answers), "failures": len(failures),
            "stale": stale, "to_first_new_s": statistics.median(first - moved for moved, first, _ in swaps),
            "steady_ms": statistics.median(steady), "steady_p95_ms": _p95(steady),
            "swap_ms": statistics.median(swapping), "swap_p95_ms": _p95(swapping), "swap_max_ms": max(swapping),
            "swap_answers": len(swapping)}


def _p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1]


def run(repeat: int = 3) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        workdir = Path(tmp)
        spec = get_variant(VARIANT)
        checkpoint = save_checkpoint(build_model(spec, "tiny", seed=0), spec, "tiny", str(workdir / "tiny.safetensors"))
        results = {"latency": latency(checkpoint, workdir, repeat)}
        results["latency"].pop("batch")
        results["throughput"] = throughput(workdir, repeat)
        results["job"] = global_job(checkpoint, workdir)
        results["swap"] = swap(workdir, repeat)
    return results


def table(results: dict) -> str:
    lat, job, sw = results["latency"], results["job"], results["swap"]
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
    lines += [
        "", f"Swap under load ({sw['swaps']} alias moves, 4 gRPC clients, {sw['answers']} answers):", "",
        "| measure | value |", "|---|---|",
        f"| request latency, steady state: median / p95 (ms) | {sw['steady_ms']:.0f} / {sw['steady_p95_ms']:.0f} |",
        f"| request latency during a swap ({sw['swap_answers']} answers): median / p95 / max (ms) | "
        f"{sw['swap_ms']:.0f} / {sw['swap_p95_ms']:.0f} / {sw['swap_max_ms']:.0f} |",
        f"| alias moved to first answer of the new version, median (s; polling every 1 s) | {sw['to_first_new_s']:.1f} |",
        f"| failed requests | {sw['failures']} |",
        f"| answers of the old version after the new one answered | {sw['stale']} |",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(run(int(sys.argv[1]) if len(sys.argv) > 1 else 3)))
