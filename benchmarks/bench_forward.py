"""(b) Tiny forward and 4-step rollout of each variant on the CPU.

Each variant's tiny profile (~1 M parameters, seeded random weights) runs on its
`spec.tiny_grid` with a synthetic window of `spec.max_history` times: the figures measure
the model and the rollout loop, not data loading. A single forward and a 4-step rollout
(`forecast_steps`, as forecasts run) are each the median of 5 after warming up; the very
first forward is reported on its own, as it pays for one-off allocations.

There is no outside baseline here; two ratios measured in the same run check the figures
instead: rollout / forward should be close to 4 (the rollout is four forwards plus a
little bookkeeping), and cold / warm says how much the first call costs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from model_code.data.batch import window_to_batch
from model_code.data.synthetic import synthetic_window
from model_code.forecast import forecast_steps
from model_code.variants import VARIANTS, VariantSpec, build_model
from timing import SPREAD_NOTE, Timing, time_ms

THREADS = 2
STEPS = 4


@dataclass(frozen=True)
class ForwardRow:
    variant: str
    grid: tuple[int, int]
    history: int
    parameters: int
    cold_ms: float
    forward: Timing
    rollout: Timing

    @property
    def rollout_over_forward(self) -> float:
        return self.rollout.median / self.forward.median

    @property
    def cold_over_warm(self) -> float:
        return self.cold_ms / self.forward.median


def synthetic_batch(spec: VariantSpec):
    """The batch of a synthetic window on the variant's tiny grid, ending 2024-01-01 00 UTC."""
    h, w = spec.tiny_grid
    lat = np.linspace(90.0, -90.0, h)
    lon = np.linspace(0.0, 360.0, w, endpoint=False)
    step = np.timedelta64(int(spec.timestep.total_seconds()), "s")
    end = np.datetime64("2024-01-01T00:00:00", "s")
    times = end - step * np.arange(spec.max_history - 1, -1, -1)
    return window_to_batch(synthetic_window(spec, lat, lon, times), spec)


def bench_variant(spec: VariantSpec, repeat: int = 5) -> ForwardRow:
    batch = synthetic_batch(spec)
    model = build_model(spec, "tiny")

    def forward():
        with torch.inference_mode():
            model(batch)

    cold = time_ms(forward, repeat=1, warmup=0).median  # also the first of two warm-ups
    forward_timing = time_ms(forward, repeat=repeat, warmup=1)
    rollout_timing = time_ms(lambda: list(forecast_steps(model, batch, STEPS)), repeat=repeat, warmup=1)
    return ForwardRow(
        spec.name, spec.tiny_grid, spec.max_history, sum(p.numel() for p in model.parameters()),
        cold, forward_timing, rollout_timing,
    )


def run(repeat: int = 5) -> list[ForwardRow]:
    torch.set_num_threads(THREADS)
    return [bench_variant(spec, repeat) for spec in VARIANTS.values()]


def table(rows: list[ForwardRow]) -> str:
    lines = [
        f"| variant | grid | history | parameters | first forward (ms) | forward (ms) "
        f"| {STEPS}-step rollout (ms) | rollout / forward | cold / warm | spread |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.variant} | {r.grid[0]}x{r.grid[1]} | {r.history} | {r.parameters / 1e6:.2f} M "
            f"| {r.cold_ms:.1f} | {r.forward.median:.1f} | {r.rollout.median:.1f} "
            f"| {r.rollout_over_forward:.2f}x | {r.cold_over_warm:.2f}x "
            f"| {max(r.forward.spread, r.rollout.spread):.2f}x |"
        )
    lines.append("")
    lines.append(SPREAD_NOTE)
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(run()))
