"""(serving) The predictor over sockets against the model in-process, payload transport, cold start, a swap.

1. Latency: one v2 request (gRPC with raw tensors; REST with the binary extension; our
   clients) for a 2-step forecast of the tiny medium-range model on a 32x64 window, against
   `forecast_steps` on the same window in this process (same checkpoint). Paired,
   alternating, medians; target ratio <= 1.3 for gRPC. Then 6 clients that send back to
   back, per protocol: requests/s of all of them against the same forecast called back to
   back in this process, alternating rounds, medians; target ratio >= 0.8.
2. Payload throughput: 4 MB and 64 MB FP32 tensors through an echo model on the same KServe
   server (benchmarks/serving_echo.py): gRPC raw_input_contents, REST binary extension, REST
   JSON; beside them, the bytes as one message to a bytes-in, bytes-out gRPC echo (gRPC's
   Python layer alone) and the same round trip over a plain loopback TCP socket between two
   processes (the wire's limit on this machine). MB/s = tensor MB / round-trip seconds (the
   tensor travels both ways); target >= 500 MB/s for 64 MB over gRPC.
3. Cold start: process start to `ready` (imports, checkpoint load, warm-up forwards), beside
   what a fresh process takes to import the server's modules and to load the checkpoint, and
   the imports' time by top-level package; target: cold start less the checkpoint load <= 3 s.
4. A swap under load: a server following `models:/aurora-medium-range@champion` (`--follow 1`,
   a sqlite MLflow registry) answers 4 gRPC clients that never stop while the alias moves
   between two registered versions several times. Against the same server's steady state:
   request latency during a swap, alias move to the first answer of the new version, failed
   requests, and answers of the old version after the new one answered (must be 0).
"""

from __future__ import annotations

import collections
import json
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
from serving.memory import keep_freed_buffers
from serving.process import ServerProcess, free_port, wait_until_answers
from timing import paired_ms, time_ms

VARIANT = "medium-range"
STEPS = 2
"""Rollout steps of every request the latency and concurrency rows send."""
CLIENTS = 6
"""Clients that send at once in the concurrency rows."""
ECHO = Path(__file__).with_name("serving_echo.py")
COLD_START_TARGET_S = 3.0
"""Process start to ready, less the checkpoint load."""
REQUEST_TARGET = 1.3
"""One gRPC request over the in-process forecast, at most."""
CLIENTS_TARGET = 0.8
"""Concurrent clients' requests/s over the in-process sequential forecasts/s, at least."""
TRANSPORT_TARGET_MB_S = 500
"""A 64 MB tensor over gRPC, at least."""
IMPORT_ROWS = 8
"""Packages named in the imports' profile; the rest are summed."""


def _window(grid, seed=1):
    spec = get_variant(VARIANT)
    if grid == "global":
        lat, lon = regular_grid(0.25)
    else:
        lat, lon = np.linspace(90, -90, grid[0]), np.linspace(0, 360, grid[1], endpoint=False)
    end = np.datetime64("2024-06-01T12:00")
    times = np.array([end - np.timedelta64(6, "h"), end])
    return synthetic_window(spec, lat, lon, times, seed=seed).astype("float32")


def latency(checkpoint: str, workdir: Path, repeat: int) -> dict:
    spec = get_variant(VARIANT)
    server = ServerProcess(VARIANT, checkpoint, workdir / "latency").start(timeout=600)
    try:
        window = _window(spec.tiny_grid)
        model, _ = load_checkpoint(checkpoint)
        tensors, params = request_tensors(window, spec), request_parameters(window, STEPS)

        def sender(connect):
            """The request, over a connection of its own."""
            client = connect()
            return lambda: client.infer(server.name, tensors, params)

        def local():
            list(forecast_steps(model, window_to_batch(window, spec), STEPS))

        requests, concurrent = {}, {}
        for (path, protocol), connect in {("gRPC", "grpc-v2"): lambda: GrpcClient(server.grpc),
                                          ("REST binary", "rest-v2"): lambda: RestClient(server.url)}.items():
            inside = _request_seconds(server, protocol)
            ours, base = paired_ms(sender(connect), local, repeat=max(10, 10 * repeat), warmup=3, pause_s=0.05)
            seconds, count = (b - a for a, b in zip(inside, _request_seconds(server, protocol)))
            requests[path] = {"ms": ours.median, "inprocess_ms": base.median, "ratio": ours.median / base.median,
                              "spread": max(ours.spread, base.spread), "inside_ms": seconds / count * 1e3}
            before = _batch_sizes(server)
            concurrent[path] = concurrency(lambda c=connect: sender(c), local, rounds=max(3, repeat))
            passes, answered = (b - a for a, b in zip(before, _batch_sizes(server)))
            concurrent[path]["mean_batch"] = answered / passes
        return {"cold_start_s": server.started_s, "requests": requests, "concurrent": concurrent}
    finally:
        server.stop()


def _metrics(server: ServerProcess) -> list[str]:
    return urllib.request.urlopen(f"{server.url}/metrics", timeout=30).read().decode().splitlines()


def _batch_sizes(server: ServerProcess) -> tuple[float, float]:
    """The server's `aurora_batch_size` histogram: (forward passes, requests in them)."""
    lines = _metrics(server)
    return tuple(next(float(line.split()[-1]) for line in lines if line.startswith(f"aurora_batch_size_{part}{{"))
                 for part in ("count", "sum"))


def _request_seconds(server: ServerProcess, protocol: str) -> tuple[float, float]:
    """The server's `aurora_request_seconds` of `protocol`'s inference requests: (seconds, requests),
    the time each spent in the predictor, from decoding its tensors to encoding the answer."""
    lines = [line for line in _metrics(server) if f'protocol="{protocol}"' in line and 'endpoint="infer"' in line]
    return tuple(sum(float(line.split()[-1]) for line in lines if line.startswith(f"aurora_request_seconds_{part}{{"))
                 for part in ("sum", "count"))


def concurrency(sender, local, rounds: int, clients: int = CLIENTS, seconds: float = 5.0) -> dict:
    """Requests/s of `clients` threads that send back to back (`sender()` gives each its own
    connection), against `local` called back to back on one thread: the same model
    in-process, sequentially. The two alternate, `rounds` times each; medians."""
    served, inprocess = [], []
    for _ in range(rounds):
        served.append(_per_second([sender() for _ in range(clients)], seconds))
        inprocess.append(_per_second([local], seconds))
    ours, base = statistics.median(served), statistics.median(inprocess)
    return {"served_per_s": ours, "inprocess_per_s": base, "ratio": ours / base,
            "spread": max(max(served) / min(served), max(inprocess) / min(inprocess))}


def _per_second(calls: list, seconds: float) -> float:
    """Calls per second of all `calls` together, each called back to back on its own thread."""
    done = [0] * len(calls)
    deadline = time.monotonic() + seconds

    def loop(k: int) -> None:
        while time.monotonic() < deadline:
            calls[k]()
            done[k] += 1

    threads = [threading.Thread(target=loop, args=(k,)) for k in range(len(calls))]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done) / (time.monotonic() - start)


TCP_ECHO = """
import socket, struct, sys
listener = socket.create_server(("127.0.0.1", 0))
print(listener.getsockname()[1], flush=True)
conn, _ = listener.accept()
buffer = bytearray(int(sys.argv[1]))
while True:
    head = conn.recv(8, socket.MSG_WAITALL)
    if len(head) < 8:
        break
    view = memoryview(buffer)[:struct.unpack("<Q", head)[0]]
    got = 0
    while got < len(view):
        got += conn.recv_into(view[got:])
    conn.sendall(view)
"""


def loopback_tcp(sizes_mb: tuple[int, ...], repeat: int) -> dict[int, float]:
    """Round trips of a tensor's bytes over a plain loopback TCP socket to an echo in another
    process, no protocol at all: what the wire itself carries on this machine (MB/s)."""
    import socket
    import struct

    proc = subprocess.Popen([sys.executable, "-c", TCP_ECHO, str(max(sizes_mb) * 2**20)], stdout=subprocess.PIPE,
                            text=True)
    try:
        conn = socket.create_connection(("127.0.0.1", int(proc.stdout.readline())))
        rates = {}
        for mb in sizes_mb:
            payload = np.random.default_rng(0).bytes(mb * 2**20)
            back = bytearray(len(payload))

            def round_trip():
                conn.sendall(struct.pack("<Q", len(payload)))
                conn.sendall(payload)
                view, got = memoryview(back), 0
                while got < len(back):
                    got += conn.recv_into(view[got:])

            round_trip()
            assert back == payload
            rates[mb] = mb / (time_ms(round_trip, repeat=repeat * 3, warmup=0).median / 1e3)
        conn.close()
        return rates
    finally:
        proc.wait(60)


GRPC_ECHO = """
import asyncio, sys
import grpc
from grpc import aio
from serving.memory import keep_freed_buffers

async def main():
    keep_freed_buffers()  # as the server does
    limit = [("grpc.max_send_message_length", 2**31 - 1), ("grpc.max_receive_message_length", 2**31 - 1)]
    server = aio.server(options=limit)

    async def echo(message, context):
        return message

    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    await server.wait_for_termination()

asyncio.run(main())
"""


def grpc_bytes_echo(sizes_mb: tuple[int, ...], repeat: int) -> dict[int, float]:
    """Round trips of a tensor's bytes as one gRPC message to a bytes-in, bytes-out echo in
    another process (grpc.aio, no protobuf, no KServe): what gRPC's Python layer itself
    costs above the wire (MB/s)."""
    import grpc

    proc = subprocess.Popen([sys.executable, "-c", GRPC_ECHO], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[1])
    try:
        limit = [("grpc.max_send_message_length", 2**31 - 1), ("grpc.max_receive_message_length", 2**31 - 1)]
        channel = grpc.insecure_channel(f"127.0.0.1:{int(proc.stdout.readline())}", options=limit)
        echo = channel.unary_unary("/Echo/Echo")
        rates = {}
        for mb in sizes_mb:
            payload = np.random.default_rng(0).bytes(mb * 2**20)
            assert echo(payload) == payload
            rates[mb] = mb / (time_ms(lambda: echo(payload), repeat=repeat * 3, warmup=0).median / 1e3)
        channel.close()
        return rates
    finally:
        proc.terminate()
        proc.wait(60)


START_PROFILE = """
import json, sys, time
t0 = time.perf_counter()
import serving.server, serving.predictor  # what `auroraops serve` imports before it loads
from model_code.checkpoint import load_checkpoint
t1 = time.perf_counter()
load_checkpoint(sys.argv[1])
t2 = time.perf_counter()
print(json.dumps({"imports_s": t1 - t0, "load_s": t2 - t1}))
"""


def start_profile(checkpoint: str) -> dict:
    """What a fresh process takes to import the server's modules, then to load the checkpoint;
    and, from a second process under `python -X importtime`, how the imports' time divides
    among top-level packages (which makes imports slower, so only its shares are used)."""
    def child(*options: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, *options, "-c", START_PROFILE, checkpoint], capture_output=True,
                              text=True, check=True, cwd=Path(__file__).resolve().parents[1])

    profile = json.loads(child().stdout.strip().splitlines()[-1])
    by_package, dynamo = import_self_times(child("-X", "importtime").stderr)
    total = sum(by_package.values())
    profile["import_shares"] = {name: t / total for name, t in by_package.most_common()}
    profile["dynamo_share"] = dynamo / total
    return profile


def import_self_times(report: str) -> tuple[collections.Counter, float]:
    """From `python -X importtime`'s report: the self time (s) of the modules of each top-level
    package, and the cumulative time of `torch._dynamo` (which torchvision.ops imports)."""
    by_package: collections.Counter = collections.Counter()
    dynamo = 0.0
    for line in report.splitlines():
        fields = line.removeprefix("import time:").split("|")
        if len(fields) != 3 or not fields[0].strip().isdigit():
            continue
        self_us, cumulative_us, name = int(fields[0]), int(fields[1]), fields[2].strip()
        by_package[name.split(".")[0]] += self_us / 1e6
        if name == "torch._dynamo":
            dynamo = cumulative_us / 1e6
    return by_package, dynamo


def throughput(workdir: Path, repeat: int) -> list[dict]:
    keep_freed_buffers()  # this process is the client, and does what `auroraops predict` does
    http, grpc = free_port(), free_port()
    log = (workdir / "echo.log").open("w")
    proc = subprocess.Popen([sys.executable, str(ECHO), str(http), str(grpc)], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until_answers([f"http://127.0.0.1:{http}/v2/models/echo/ready"], proc, workdir / "echo.log",
                           timeout=300, name="echo server", interval=0.3)
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
        for mb, rate in grpc_bytes_echo((4, 64), repeat).items():
            rows.append({"mb": mb, "path": "gRPC bytes echo, no protobuf or KServe (gRPC's own floor)",
                         "ms": mb / rate * 1e3, "mb_s": rate})
        for mb, rate in loopback_tcp((4, 64), repeat).items():
            rows.append({"mb": mb, "path": "loopback TCP, no protocol (the limit)", "ms": mb / rate * 1e3, "mb_s": rate})
        return sorted(rows, key=lambda r: r["mb"])
    finally:
        proc.terminate()
        proc.wait(60)


def swap(workdir: Path, repeat: int) -> dict:
    from adapters import registry

    spec = get_variant(VARIANT)
    name = spec.model_name
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
        results["throughput"] = throughput(workdir, repeat)
        results["start"] = start_profile(checkpoint)
        results["swap"] = swap(workdir, repeat)
    return results


def table(results: dict) -> str:
    lat, start, sw = results["latency"], results["start"], results["swap"]
    lines = [
        f"| one request, {STEPS} steps, 32x64 | request (ms) | of which in the predictor, mean (ms) | "
        "in-process (ms) | ratio | spread |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {path} | {r['ms']:.1f} | {r['inside_ms']:.1f} | {r['inprocess_ms']:.1f} | {r['ratio']:.2f} | "
              f"{r['spread']:.1f} |" for path, r in lat["requests"].items()]
    lines += [
        "", f"| {CLIENTS} clients at once | served (requests/s) | in-process, sequential (forecasts/s) | ratio | "
        "spread | requests per forward pass |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {path} | {r['served_per_s']:.1f} | {r['inprocess_per_s']:.1f} | {r['ratio']:.2f} | {r['spread']:.1f} | "
              f"{r['mean_batch']:.1f} |" for path, r in lat["concurrent"].items()]
    lines += [
        "", "| measure | value |", "|---|---|",
        f"| cold start: process start to ready (s) | {lat['cold_start_s']:.1f} |",
        f"| of which, in a fresh process: importing the server's modules (s) | {start['imports_s']:.1f} |",
        f"| of which, in a fresh process: loading the checkpoint (s) | {start['load_s']:.2f} |",
        f"| cold start less the checkpoint load (s; target <= {COLD_START_TARGET_S:g}) | "
        f"{lat['cold_start_s'] - start['load_s']:.1f} |",
        "", "| the imports, by top-level package (self time of its modules, `-X importtime`) | share | seconds |",
        "|---|---|---|",
    ]
    shares = list(start["import_shares"].items())
    lines += [f"| {name} | {share:.0%} | {share * start['imports_s']:.2f} |" for name, share in shares[:IMPORT_ROWS]]
    rest = sum(share for _, share in shares[IMPORT_ROWS:])
    lines += [
        f"| {len(shares) - IMPORT_ROWS} other packages | {rest:.0%} | {rest * start['imports_s']:.2f} |",
        f"| (torch._dynamo, imported by torchvision.ops for timm, for aurora: part of the rows above) | "
        f"{start['dynamo_share']:.0%} | {start['dynamo_share'] * start['imports_s']:.2f} |",
        "", "| tensor | path | round trip (ms) | MB/s |", "|---|---|---|---|",
    ]
    lines += [f"| {r['mb']} MB | {r['path']} | {r['ms']:.0f} | {r['mb_s']:.0f} |" for r in results["throughput"]]
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
    return "\n".join(lines + ["", verdicts(results)])


def verdicts(results: dict) -> str:
    """Each target of this benchmark against its figure, unrounded."""
    lat, start = results["latency"], results["start"]
    grpc, clients = lat["requests"]["gRPC"]["ratio"], min(r["ratio"] for r in lat["concurrent"].values())
    transport = next(r["mb_s"] for r in results["throughput"] if r["mb"] == 64 and r["path"] == "gRPC raw")
    cold = lat["cold_start_s"] - start["load_s"]
    rows = [
        (f"one gRPC request at most {REQUEST_TARGET:g}x the in-process forecast", f"{grpc:.3f}x", grpc <= REQUEST_TARGET),
        (f"{CLIENTS} concurrent clients at least {CLIENTS_TARGET:g}x the in-process sequential forecasts",
         f"{clients:.2f}x (the lower of gRPC and REST)", clients >= CLIENTS_TARGET),
        (f"a 64 MB tensor over gRPC at least {TRANSPORT_TARGET_MB_S} MB/s", f"{transport:.0f} MB/s",
         transport >= TRANSPORT_TARGET_MB_S),
        (f"cold start less the checkpoint load at most {COLD_START_TARGET_S:g} s", f"{cold:.2f} s",
         cold <= COLD_START_TARGET_S),
    ]
    return "\n".join(["| target | figure | verdict |", "|---|---|---|"]
                     + [f"| {target} | {figure} | {'met' if met else '**not met**'} |" for target, figure, met in rows])


if __name__ == "__main__":
    print(table(run(int(sys.argv[1]) if len(sys.argv) > 1 else 3)))
