"""Timing and memory helpers shared by the benchmarks.

Figures are medians of several runs, never single runs, and a comparison with a baseline
alternates the two (ours, baseline, ours, ...) so that other work on a busy machine slows
both sides alike instead of whichever happened to run during it.
"""

from __future__ import annotations

import gc
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

def status_kib(key: str, pid: int | str = "self") -> int:
    """A memory line of /proc/<pid>/status in KiB: `VmRSS` (resident now) or `VmHWM` (the
    resident high-water mark of the process image). Not `ru_maxrss` for peaks: Linux carries
    that over from the parent across the fork and exec of `subprocess`, so a child of a large
    benchmark process would report the parent's peak."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    raise KeyError(f"/proc/{pid}/status has no {key}")


SPREAD_NOTE = (
    "Spread: slowest over fastest of the timed runs behind a row (for a comparison, the larger "
    "of the two sides); close to 1 on a quiet machine, far above it when other work competed "
    "for the cores."
)


@dataclass(frozen=True)
class Timing:
    """Wall-clock samples of one measured function, in milliseconds."""

    samples_ms: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.samples_ms)

    @property
    def spread(self) -> float:
        """Slowest over fastest sample: close to 1 on a quiet machine."""
        return max(self.samples_ms) / min(self.samples_ms)


def _once_ms(fn: Callable[[], object]) -> float:
    gc.collect()  # garbage of the previous run is not this run's cost
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def time_ms(fn: Callable[[], object], repeat: int = 5, warmup: int = 1) -> Timing:
    """Run `fn` `warmup` times untimed, then `repeat` times timed."""
    for _ in range(warmup):
        fn()
    return Timing(tuple(_once_ms(fn) for _ in range(repeat)))


def median_ms(fn: Callable[[], object], repeat: int = 5, warmup: int = 1) -> float:
    """Median wall-clock time of `fn` in milliseconds."""
    return time_ms(fn, repeat, warmup).median


def paired_ms(
    ours: Callable[[], object], baseline: Callable[[], object], repeat: int = 5, warmup: int = 1,
    pause_s: float = 0.0,
) -> tuple[Timing, Timing]:
    """Time two functions in alternation; the ratio of their medians is the figure to report.

    `pause_s` (untimed) after every run lets what a run leaves busy settle before the other
    side runs: e.g. idle OpenMP threads, which spin for milliseconds after a forward pass on
    the cores a server in another process needs next."""
    for _ in range(warmup):
        ours()
        baseline()
    a, b = [], []
    for _ in range(repeat):
        a.append(_once_ms(ours))
        time.sleep(pause_s)
        b.append(_once_ms(baseline))
        time.sleep(pause_s)
    return Timing(tuple(a)), Timing(tuple(b))
