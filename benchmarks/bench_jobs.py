"""(jobs) A full-grid forecast job against a plain script doing the same work.

    python benchmarks/bench_jobs.py                       # CPU: prints the table (benchmarks/run.py --only jobs)
    python benchmarks/bench_jobs.py --device cuda --write benchmarks/gpu_job.md   # on a GPU machine
    python benchmarks/bench_jobs.py --dry-run             # the same code on a 64x128 grid: checks the script

A synthetic medium-range window on the full 0.25° grid (721x1440, 2 times, 13 levels, ~586
MB of fields in one NetCDF), 1 step of the tiny model. Ours: a job by reference submitted to
a running `auroraops serve` (the model loaded), submit to succeeded, polled every 50 ms.
Baseline: `plain_job.py` in a fresh process, read with xarray to the written step (the model
loaded before its clock starts). The two alternate; medians. Memory: the server's peak
resident memory above its size when ready, against the plain script's peak above its size
before reading; the target is at most 2x (one input window + one output step). On a CPU the
tiny model's activations on the full grid are host memory too, so the plain script reports
the forward's own working memory, and the data path is the peak less that.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model_code.checkpoint import save_checkpoint  # noqa: E402
from model_code.storage import write_atomic  # noqa: E402
from model_code.variants import build_model, get_variant  # noqa: E402
from serving.client import RestClient  # noqa: E402
from serving.process import ServerProcess  # noqa: E402
from timing import status_kib  # noqa: E402

VARIANT = "medium-range"
PLAIN = Path(__file__).with_name("plain_job.py")


def run(repeat: int = 3, device: str = "cpu", grid: str | tuple[int, int] = "global") -> dict:
    import bench_serving  # the synthetic window of the serving benchmark

    with tempfile.TemporaryDirectory(prefix="bench-jobs-") as tmp:
        workdir = Path(tmp)
        spec = get_variant(VARIANT)
        checkpoint = save_checkpoint(build_model(spec, "tiny", seed=0), spec, "tiny", str(workdir / "tiny.safetensors"))
        source = workdir / "global.nc"
        window = bench_serving._window(grid)
        window_shape = window.t2m.shape[-2:]
        window.to_netcdf(source)
        del window
        server = ServerProcess(VARIANT, checkpoint, workdir / "server", args=["--device", device]).start(timeout=600)
        try:
            ready_mb = status_kib("VmRSS", server.process.pid) / 1024
            rest = RestClient(server.url)
            ours, plain = [], []
            for k in range(repeat):
                clock = time.perf_counter()
                state = rest.submit_job(server.name, {"inputs": [str(source)], "output_uri": str(workdir / f"job{k}"),
                                                      "steps": 1, "idempotency_key": f"bench-{k}"})
                state = rest.wait_job(server.name, state["job_id"], timeout=3600, poll_s=0.05)
                ours.append(time.perf_counter() - clock)
                assert state["status"] == "succeeded", state
                done = subprocess.run([sys.executable, str(PLAIN), checkpoint, str(source), str(workdir / f"plain{k}.nc"),
                                       device], capture_output=True, text=True, check=True)
                plain.append(json.loads(done.stdout.strip().splitlines()[-1]))
            peak_mb = status_kib("VmHWM", server.process.pid) / 1024 - ready_mb
        finally:
            server.stop()
    job_s = sorted(ours)[len(ours) // 2]
    plain_s = sorted(p["seconds"] for p in plain)[len(plain) // 2]
    window_mb, step_mb = plain[0]["input_mb"], plain[0]["output_mb"]
    return {"grid": f"{window_shape[0]}x{window_shape[1]}", "job_s": job_s, "plain_s": plain_s, "ratio": job_s / plain_s,
            "spread": max(max(ours) / min(ours), max(p["seconds"] for p in plain) / min(p["seconds"] for p in plain)),
            "job_peak_mb": peak_mb, "plain_peak_mb": max(p["peak_above_start_mb"] for p in plain),
            "forward_mb": max(p["forward_mb"] for p in plain),
            "window_mb": window_mb, "step_mb": step_mb, "memory_target_mb": 2 * (window_mb + step_mb)}


def table(r: dict) -> str:
    return "\n".join([
        "| measure | job (ours) | plain script | ratio / target |", "|---|---|---|---|",
        f"| 1 step, {r['grid']}, tiny model: seconds (median) | {r['job_s']:.1f} | {r['plain_s']:.1f} | "
        f"{r['ratio']:.2f} (target <= 1.5; spread {r['spread']:.2f}) |",
        f"| peak resident memory above the start (MB) | {r['job_peak_mb']:.0f} | {r['plain_peak_mb']:.0f} | "
        f"target <= {r['memory_target_mb']:.0f} (2 x ({r['window_mb']:.0f} MB window + {r['step_mb']:.0f} MB step)) |",
        f"| of which the forward's own working memory (MB) | {r['forward_mb']:.0f} (same forward) | "
        f"{r['forward_mb']:.0f} | |",
        f"| the data path: peak less the forward's memory (MB) | {r['job_peak_mb'] - r['forward_mb']:.0f} | "
        f"{r['plain_peak_mb'] - r['forward_mb']:.0f} | target <= {r['memory_target_mb']:.0f} |",
    ])


def main(argv: list[str] | None = None) -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs of each side (default 3)")
    parser.add_argument("--device", default="cpu", help="torch device of the server and the plain script")
    parser.add_argument("--write", metavar="PATH", help="also write the table to this file (atomically)")
    parser.add_argument("--dry-run", action="store_true", help="a 64x128 grid on the CPU: checks the script")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("no CUDA device (use --device cpu, or --dry-run to check the script)")
    device = "cpu" if args.dry_run else args.device
    text = table(run(args.repeat, device, (64, 128) if args.dry_run else "global"))
    where = torch.cuda.get_device_name(0) if device.startswith("cuda") else "CPU" + (" (dry run, 64x128)" if args.dry_run else "")
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = f"Measured {date} on {where} with `python benchmarks/bench_jobs.py {' '.join(argv or sys.argv[1:])}`:\n\n{text}"
    print(text)
    if args.write:
        write_atomic(args.write, lambda p: Path(p).write_text(text + "\n"))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    sys.exit(main())
