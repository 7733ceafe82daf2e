"""Start-up of the command line: `auroraops --help` and a few command helps against the interpreter floor.

Each run is a fresh process of the installed console script, so it pays what a user's
`--help` pays: the interpreter, the parser of every command and what their modules import.
The floor, `python -c pass`, is the same interpreter doing nothing. The commands and the
floor take turns (one round runs each once) so that other work on a busy machine slows all
alike; medians of the timed rounds, after one untimed round. Target: every help in at most
0.5 s.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from timing import SPREAD_NOTE, Timing  # noqa: E402

TARGET_S = 0.5
AURORAOPS = str(Path(sys.executable).parent / "auroraops")
FLOOR = "python -c pass"
COMMANDS = {
    FLOOR: [sys.executable, "-c", "pass"],
    "auroraops --help": [AURORAOPS, "--help"],
    "auroraops serve --help": [AURORAOPS, "serve", "--help"],
    "auroraops pipeline run --help": [AURORAOPS, "pipeline", "run", "--help"],
    "auroraops evaluate --help": [AURORAOPS, "evaluate", "--help"],
}


def _once_s(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def run(repeat: int = 10) -> dict:
    samples: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for round_ in range(repeat + 1):
        for name, argv in COMMANDS.items():
            seconds = _once_s(argv)
            if round_:  # the first round warms the file cache
                samples[name].append(seconds)
    timings = {name: Timing(tuple(1e3 * s for s in runs)) for name, runs in samples.items()}
    return {"repeat": repeat, "median_s": {name: t.median / 1e3 for name, t in timings.items()},
            "spread": {name: t.spread for name, t in timings.items()}}


def table(results: dict) -> str:
    median, spread = results["median_s"], results["spread"]
    floor = median[FLOOR]
    lines = [f"| command, median of {results['repeat']} runs | seconds | above the floor (s) | target | spread |",
             "|---|---|---|---|---|",
             f"| `{FLOOR}` (the interpreter floor) | {floor:.2f} | | | {spread[FLOOR]:.2f} |"]
    for name in COMMANDS:
        if name != FLOOR:
            verdict = "meets" if median[name] <= TARGET_S else "misses"
            lines.append(f"| `{name}` | {median[name]:.2f} | {median[name] - floor:.2f} | "
                         f"<= {TARGET_S} s ({verdict}) | {spread[name]:.2f} |")
    return "\n".join(lines + ["", SPREAD_NOTE])


if __name__ == "__main__":
    results = run(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
    print(table(results))
    print(json.dumps(results))
