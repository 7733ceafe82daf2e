"""(e) Training: the trainer's step time against a bare PyTorch loop, and skill on a real hourly series.

Harness overhead. The tiny medium-range model on a synthetic window of every input on the
5.625° global grid (33x64; Aurora drops the last row), written once by the project's writer
and cached in `outputs/bench/` (git-ignored). Both sides train the same seeded model on the
same batch (the trainer's own first batch, kept in memory) with the same loss (`build_loss`
of the variant's default `LossConfig`):

- ours: `Trainer(cfg).fit()` with its data replaced by that batch repeated in memory, so
  every step is the harness's own: the rollout module, the loss, backward, gradient
  clipping, AdamW with parameter groups, the scheduler, accumulation bookkeeping, the
  history and the callbacks (the JSON-lines log writes a line per step). A callback notes
  when each step ends and stops the run after the last timed one, before any validation
  or checkpoint.
- bare: forward through `aurora.rollout`, the same loss, `backward`, the same gradient
  clipping (`clip_grad_norm_` at the config's norm: training math, not harness), and
  `torch.optim.AdamW`.

The two alternate step by step in one process (a callback of the trainer runs one bare step
after each of its steps); each run builds both models afresh, warms up for `WARMUP` steps
and times the next `STEPS` of each; a time is the median over runs of the mean time per
step, and ours / bare the median of the runs' ratios.

Skill. The tiny medium-range model trained at a 1 h step on the real hourly ERA5 10 m wind
sample (25 hours over the central USA); the variant's other inputs are filled with zeros
and their targets are NaN, so only 10u and 10v are trained and scored. The last hours are
held out (`data.val_fraction`, the trainer's own split: no time is shared with training);
the final weights forecast every held-out window and are scored by latitude-weighted RMSE
against persistence and the mean of the training hours.
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from aurora import rollout

from model_code.data.samples import Sample, pair_predictions
from model_code.data.synthetic import regular_grid, synthetic_window
from model_code.data.windows import WindowDataset
from model_code.data.writers import write_dataset
from model_code.training import Callback, Trainer, TrainConfig
from model_code.training.config import config_from_dict, with_overrides
from model_code.training.data import open_data
from model_code.training.loss_weights import latitude_weights
from model_code.training.losses import build_loss
from model_code.variants import VARIANTS, VariantSpec, build_model
from timing import SPREAD_NOTE, Timing

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "outputs" / "bench"
SPEC = VARIANTS["medium-range"]
THREADS = 2

HARNESS_GRID = 5.625
HARNESS_TIMES = 8
HARNESS_BATCH = 1
WARMUP = 3
STEPS = 30
TARGET = 1.05

ERA5_HOURLY = ROOT / "data" / "samples" / "era5_d2m_u10_v10_usa_2018-01-02_hourly.nc"
SKILL_STEPS = 800
SKILL_BATCH = 2
SKILL_LR = 1e-3
SKILL_WARMUP = 10
HOLD_OUT = 0.375
LEADS = (1, 6)
SCORED = ("10u", "10v")
GPU_RESULT = Path(__file__).with_name("gpu_training_step.md")


# --------------------------------------------------------------------------------------
# Timing the trainer's steps (also used by gpu_training_step.py)


class Enough(Exception):
    """Raised by `StepClock` after the last step wanted: `fit` stops there, before it validates
    or writes a checkpoint (an exception from a callback stops a run, by design)."""


class StepClock(Callback):
    """When each optimiser step ended, after the trainer's own callbacks, and its loss."""

    def __init__(self, stop_after: int) -> None:
        self.stop_after = stop_after
        self.ends: list[float] = []
        self.losses: list[float] = []

    def on_step_end(self, trainer, step, logs):
        if trainer.device.type == "cuda":
            torch.cuda.synchronize(trainer.device)
        self.ends.append(time.perf_counter())
        self.losses.append(logs["loss"])
        if step >= self.stop_after:
            raise Enough


def fixed_batch_trainer(cfg: TrainConfig, callbacks: Sequence[Callback]) -> tuple[Trainer, Sample]:
    """A `Trainer` of `cfg` whose training data is its own first batch, on its device, repeated in
    memory: its steps then time the harness, not the loader or the copy to the device."""
    trainer = Trainer(cfg, callbacks)
    batch = next(iter(trainer.loader)).to(trainer.device)
    trainer.loader = [batch] * cfg.train.max_steps
    return trainer, batch


def fit_until_enough(trainer: Trainer) -> None:
    try:
        trainer.fit()
    except Enough:
        pass
    finally:
        trainer.close()


def step_times_ms(ends: list[float], warmup: int) -> list[float]:
    """Duration of each step after the first `warmup` ones, from consecutive step ends."""
    return [(b - a) * 1e3 for a, b in zip(ends[warmup - 1:], ends[warmup:])]


# --------------------------------------------------------------------------------------
# Harness overhead


def harness_data() -> Path:
    """The cached synthetic file (written atomically the first time)."""
    path = OUT / f"training_medium_range_{HARNESS_GRID:g}deg_{HARNESS_TIMES}t.nc"
    if not path.exists():
        lat, lon = regular_grid(HARNESS_GRID)
        times = np.datetime64("2024-01-01T00:00", "ns") + np.arange(HARNESS_TIMES) * np.timedelta64(6, "h")
        OUT.mkdir(parents=True, exist_ok=True)
        write_dataset(synthetic_window(SPEC, lat, lon, times), str(path))
    return path


def harness_config(data: Path, out: Path) -> TrainConfig:
    steps = WARMUP + STEPS
    return config_from_dict({
        "variant": SPEC.name,
        "profile": "tiny",
        "data": {"paths": [str(data)], "val_fraction": 0.3, "crop": True, "batch_size": HARNESS_BATCH,
                 "validate": False},
        "train": {"max_steps": steps, "val_every": steps, "val_at_start": False, "device": "cpu",
                  "progress": False},
        "checkpoint": {"out_dir": str(out), "keep_top_k": 0},
    })


class BareLoop:
    """The same model, batch and loss in the plainest loop: forward, loss, backward, AdamW step."""

    def __init__(self, cfg: TrainConfig, spec: VariantSpec, batch: Sample) -> None:
        self.model = build_model(spec, cfg.profile, seed=cfg.train.seed, overrides=cfg.model).train()
        self.loss_fn = build_loss(spec, cfg.loss)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.optim.lr,
                                           weight_decay=cfg.optim.weight_decay)
        self.batch = batch
        self.clip = cfg.train.clip_grad_norm

    def step(self) -> float:
        batch = self.batch
        self.optimizer.zero_grad(set_to_none=True)
        predictions = list(rollout(self.model, batch.inputs, steps=max(batch.lead_steps)))
        result = self.loss_fn(pair_predictions(predictions, batch), batch.lead_steps)
        result.total.backward()
        if self.clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.optimizer.step()
        return float(result.total.detach())


class Interleaved(Callback):
    """After every step of the trainer, one step of the bare loop, each timed on its own.

    The two alternate step by step, so a slow moment of a shared machine slows both alike.
    A trainer step is timed from the end of the bare step before it to the trainer's next
    `on_step_end`, after its own callbacks: everything `fit` does for a step.
    """

    def __init__(self, stop_after: int) -> None:
        self.stop_after = stop_after
        self.bare: BareLoop | None = None
        self.ours_ms: list[float] = []
        self.bare_ms: list[float] = []
        self.ours_losses: list[float] = []
        self.bare_losses: list[float] = []
        self.resumed: float | None = None

    def on_step_end(self, trainer, step, logs):
        end = time.perf_counter()
        if self.resumed is not None:
            self.ours_ms.append((end - self.resumed) * 1e3)
        self.ours_losses.append(logs["loss"])
        start = time.perf_counter()
        self.bare_losses.append(self.bare.step())
        self.bare_ms.append((time.perf_counter() - start) * 1e3)
        if step >= self.stop_after:
            raise Enough
        self.resumed = time.perf_counter()


@dataclass(frozen=True)
class HarnessResult:
    grid: tuple[int, int]
    parameters: int
    ours: Timing
    """Mean time per step of each run (ms)."""
    bare: Timing
    first_loss: tuple[float, float]
    """Loss of the first step, ours and bare: equal when both compute the same thing."""

    @property
    def ratio(self) -> float:
        """Median over runs of ours / bare: both sides of a run saw the same moments of the machine."""
        return statistics.median(o / b for o, b in zip(self.ours.samples_ms, self.bare.samples_ms))

    @property
    def extra_ms(self) -> float:
        """Median over runs of ours - bare."""
        return statistics.median(o - b for o, b in zip(self.ours.samples_ms, self.bare.samples_ms))


def run_harness(repeat: int = 5, log=print) -> HarnessResult:
    torch.set_num_threads(THREADS)
    data = harness_data()
    ours, bare = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeat):
            cfg = harness_config(data, Path(tmp) / f"run{r}")
            steps = Interleaved(stop_after=WARMUP + STEPS)
            trainer, batch = fixed_batch_trainer(cfg, [steps])
            steps.bare = BareLoop(cfg, trainer.spec, batch)
            grid, parameters = tuple(batch.targets[0].spatial_shape), trainer.parameter_count
            fit_until_enough(trainer)
            first = (steps.ours_losses[0], steps.bare_losses[0])
            if not math.isclose(*first, rel_tol=1e-5):
                raise RuntimeError(f"the trainer and the bare loop disagree on the first loss ({first[0]} "
                                   f"against {first[1]}): they do not compute the same step")
            # ours_ms[k] is step k + 2 (step 1 has no start mark); bare_ms[k] is step k + 1
            ours.append(statistics.fmean(steps.ours_ms[WARMUP - 1:]))
            bare.append(statistics.fmean(steps.bare_ms[WARMUP:]))
            log(f"  run {r + 1}: trainer {ours[-1]:.1f} ms/step, bare loop {bare[-1]:.1f} ms/step")
    return HarnessResult(grid, parameters, Timing(tuple(ours)), Timing(tuple(bare)), first)


def harness_table(h: HarnessResult) -> str:
    verdict = "met" if h.ratio <= TARGET else "**not met**"
    spread = max(h.ours.spread, h.bare.spread)
    return "\n".join([
        "| loop | per step (ms) | ours / bare (median of the runs' ratios) | target | spread |",
        "|---|--:|--:|---|--:|",
        f"| ours: `Trainer.fit` (clipping, AdamW groups, cosine schedule, JSON-lines log) "
        f"| {h.ours.median:.1f} | **{h.ratio:.3f}x** | <= {TARGET:g}x: {verdict} | {spread:.2f}x |",
        f"| bare: rollout, `build_loss`, `backward`, `clip_grad_norm_`, `torch.optim.AdamW` "
        f"| {h.bare.median:.1f} | 1.000x | | |",
        "",
        SPREAD_NOTE,
    ])


def harness_summary(h: HarnessResult) -> str:
    ratios = sorted(o / b for o, b in zip(h.ours.samples_ms, h.bare.samples_ms))
    return (f"The tiny model ({h.parameters / 1e6:.2f} M parameters) on a {h.grid[0]}x{h.grid[1]} grid, "
            f"batch of {HARNESS_BATCH}: the harness adds {h.extra_ms:.1f} ms to a {h.bare.median:.1f} ms step "
            f"({100 * (h.ratio - 1):+.1f}%; the runs' ratios range from {ratios[0]:.3f}x to {ratios[-1]:.3f}x). "
            "Both sides start from the same seeded weights and agree on the loss of the first step "
            f"({h.first_loss[0]:.6g} and {h.first_loss[1]:.6g}); later losses differ only because the "
            "trainer follows its schedule and exempts norms and biases from weight decay. "
            "Nothing is subtracted: the trainer's figure includes all of its per-step work above; only "
            "validation and checkpoints (every `val_every` steps, none here) are left out.")


# --------------------------------------------------------------------------------------
# Skill on the real hourly series


def skill_config(out: Path, steps: int = SKILL_STEPS, overrides: dict | None = None) -> TrainConfig:
    return config_from_dict({
        "variant": SPEC.name,
        "profile": "tiny",
        "timestep_hours": 1,
        "data": {"paths": [str(ERA5_HOURLY)], "val_fraction": HOLD_OUT, "crop": True, "fill_missing": "zeros",
                 "fill_missing_dynamic": "zeros", "levels": [850], "batch_size": SKILL_BATCH},
        "optim": {"lr": SKILL_LR},
        "schedule": {"warmup_steps": SKILL_WARMUP},
        "rollout": {"curriculum": [[0, 1]]},
        "train": {"max_steps": steps, "val_every": steps, "val_at_start": False, "device": "cpu",
                  "progress": False},
        "early_stopping": {"lead_steps": [LEADS[0]]},
        "checkpoint": {"out_dir": str(out), "keep_top_k": 0},
    }, overrides)


def _input_times(dataset: WindowDataset, index: int) -> np.ndarray:
    step = np.timedelta64(int(dataset.spec.timestep.total_seconds()), "s")
    return dataset.init_times[index] - step * np.arange(dataset.history - 1, -1, -1)


def climatology(dataset: WindowDataset) -> tuple[dict[str, torch.Tensor], np.ndarray]:
    """Mean of every hour the training samples read (inputs and targets, each hour once) at
    each grid point, on the predictions' grid; and those hours."""
    fields: dict[np.datetime64, dict[str, torch.Tensor]] = {}
    for i in range(len(dataset)):
        sample = dataset[i]
        inputs = sample.inputs.crop(dataset.spec.patch_size)
        for j, t in enumerate(_input_times(dataset, i)):
            fields[t] = {v: inputs.surf_vars[v][0, j] for v in SCORED}
        for target in sample.targets:
            fields[np.datetime64(target.metadata.time[0], "ns")] = {v: target.surf_vars[v][0, 0] for v in SCORED}
    hours = np.array(sorted(fields), dtype="datetime64[ns]")
    return {v: torch.stack([f[v] for f in fields.values()]).mean(0) for v in SCORED}, hours


@torch.no_grad()
def scores(model, dataset: WindowDataset, lead: int, clim: dict[str, torch.Tensor]) -> dict[tuple[str, str], float]:
    """Latitude-weighted RMSE at `lead` of the model, persistence and climatology, per scored variable:
    the square root of the mean over forecasts of the area-weighted mean squared error (weights
    normalised to mean 1 over the grid, as WeatherBench 2)."""
    squared = defaultdict(list)
    for i in range(len(dataset)):
        sample = dataset[i]
        ((prediction, target),) = pair_predictions(list(rollout(model, sample.inputs, steps=lead)), sample)
        last = sample.inputs.crop(dataset.spec.patch_size)
        weights = latitude_weights(target.metadata.lat, target.metadata.lon)
        for v in SCORED:
            truth = target.surf_vars[v][0, 0]
            guesses = {"model": prediction.surf_vars[v][0, 0], "persistence": last.surf_vars[v][0, -1],
                       "climatology": clim[v]}
            for name, guess in guesses.items():
                squared[(name, v)].append(float((weights * (guess - truth) ** 2).mean()))
    return {key: math.sqrt(statistics.fmean(values)) for key, values in squared.items()}


@dataclass(frozen=True)
class SkillResult:
    grid: tuple[int, int]
    box: str
    """Where the scored grid lies, e.g. "49.0°N to 36.4°N, 108.0°W to 91.4°W"."""
    parameters: int
    steps: int
    rollout_steps: int
    """The longest rollout trained on."""
    train_samples: int
    train_hours: np.ndarray
    held_out: tuple[np.datetime64, np.datetime64]
    forecasts: dict[int, int]
    rmse: dict[int, dict[tuple[str, str], float]]
    wall_s: float
    cpu_s: float
    first_loss: float
    last_loss: float
    val_loss: float


def run_skill(steps: int = SKILL_STEPS, log=print, overrides: dict | None = None) -> SkillResult:
    torch.set_num_threads(THREADS)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = skill_config(Path(tmp), steps, overrides)
        trainer = Trainer(cfg)
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            result = trainer.fit()
        finally:
            trainer.close()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        model = trainer.model.eval()
        datasets = {LEADS[0]: trainer.data.val}
        for lead in LEADS[1:]:
            datasets[lead] = open_data(with_overrides(cfg, {"early_stopping.lead_steps": [lead]})).val
        clim, hours = climatology(trainer.data.train)
        rmse = {lead: scores(model, ds, lead, clim) for lead, ds in datasets.items()}
    held = np.concatenate([ds.times_used(i) for ds in datasets.values() for i in range(len(ds))])
    losses = [h["loss"] for h in result.history if "loss" in h]
    target = trainer.data.val[0].targets[0]
    skill = SkillResult(
        grid=tuple(target.spatial_shape), box=_box(target.metadata.lat, target.metadata.lon),
        parameters=trainer.parameter_count, steps=result.steps, rollout_steps=cfg.rollout.longest,
        train_samples=len(trainer.data.train), train_hours=hours,
        held_out=(held.min(), held.max()), forecasts={lead: len(ds) for lead, ds in datasets.items()},
        rmse=rmse, wall_s=wall, cpu_s=cpu, first_loss=losses[0], last_loss=losses[-1],
        val_loss=result.history[-1]["val_loss"],
    )
    for lead in LEADS:
        log("  " + ", ".join(f"+{lead} h {v} {name} {rmse[lead][(name, v)]:.3f}" for v in SCORED
                             for name in ("model", "persistence", "climatology")))
    return skill


def _degrees(x: float, positive: str, negative: str) -> str:
    return f"{abs(x):.1f}°{positive if x >= 0 else negative}"


def _box(lat: torch.Tensor, lon: torch.Tensor) -> str:
    lon = (lon.double() + 180) % 360 - 180
    return (f"{_degrees(float(lat[0]), 'N', 'S')} to {_degrees(float(lat[-1]), 'N', 'S')}, "
            f"{_degrees(float(lon[0]), 'E', 'W')} to {_degrees(float(lon[-1]), 'E', 'W')}")


def _hour(t: np.datetime64) -> str:
    return str(t)[:13].replace("T", " ") + " UTC"


def skill_table(s: SkillResult) -> str:
    lines = ["| lead | variable | model RMSE (m/s) | persistence | climatology (training hours' mean) "
             "| model / persistence | beats persistence | forecasts |",
             "|---|---|--:|--:|--:|--:|---|--:|"]
    for lead in LEADS:
        for v in SCORED:
            r = s.rmse[lead]
            ratio = r[("model", v)] / r[("persistence", v)]
            lines.append(f"| +{lead} h | {v} | {r[('model', v)]:.3f} | {r[('persistence', v)]:.3f} "
                         f"| {r[('climatology', v)]:.3f} | {ratio:.2f}x | {'yes' if ratio < 1 else 'no'} "
                         f"| {s.forecasts[lead]} |")
    return "\n".join(lines)


def _listed(values: list[str]) -> str:
    return " and ".join(values)


def _versus(s: SkillResult, lead: int, other: str) -> str:
    """E.g. "1.44x and 1.14x persistence's": the model's RMSE over `other`'s, per scored variable."""
    return _listed([f"{s.rmse[lead][('model', v)] / s.rmse[lead][(other, v)]:.2f}x" for v in SCORED]) + f" {other}'s"


def skill_summary(s: SkillResult) -> str:
    """What the table says, with the figures of this run."""
    first, last = LEADS[0], LEADS[-1]
    r = s.rmse[first]
    beats = [v for v in SCORED if r[("model", v)] < r[("persistence", v)]]
    verdict = "**met**" if len(beats) == len(SCORED) else (
        f"met for {_listed(beats)} only, so **not met**" if beats else "**not met**")
    persistence = _listed([f"{r[('persistence', v)]:.2f}" for v in SCORED])
    mean = _listed([f"{r[('climatology', v)]:.2f}" for v in SCORED])
    text = (
        f"Training: {s.steps} steps of {SKILL_BATCH} samples ({s.train_samples} training samples from the "
        f"{len(s.train_hours)} hours {_hour(s.train_hours[0])} to {_hour(s.train_hours[-1])}) took "
        f"{s.wall_s:.0f} s ({s.cpu_s:.0f} CPU-seconds) for the tiny model ({s.parameters / 1e6:.2f} M "
        f"parameters) on the {s.grid[0]}x{s.grid[1]} grid ({s.box}); the training loss fell from {s.first_loss:.4g} "
        f"to {s.last_loss:.4g}, and the validation loss at the end was {s.val_loss:.4g}. Held out: "
        f"{_hour(s.held_out[0])} to {_hour(s.held_out[1])}, every window of it, so +{first} h is scored on "
        f"{s.forecasts[first]} forecasts and +{last} h on {s.forecasts[last]}: few, all from one day, so the "
        "figures check that training learns something real rather than measure skill.\n\n"
        f"The target, beating persistence at the first lead time (+{first} h), is {verdict}: the model's "
        f"+{first} h RMSE is {_versus(s, first, 'persistence')} for {_listed(list(SCORED))}, and "
        f"{_versus(s, first, 'climatology')}. An hour ahead, persistence errs by {persistence} m/s, "
        f"against {mean} m/s for the mean of the training hours"
    )
    if len(beats) < len(SCORED):
        text += (": the hourly change is small, and a model that starts from random weights has to learn "
                 "to reproduce the field it is given before it can improve on it")
    text += (f". At +{last} h the model's RMSE is {_versus(s, last, 'persistence')} and "
             f"{_versus(s, last, 'climatology')}")
    if s.rollout_steps < last:
        text += f" (it was trained on rollouts of at most {s.rollout_steps} step{'s' if s.rollout_steps > 1 else ''})"
    return text + "."


def gpu_result() -> str:
    """The figures of `gpu_training_step.py --write`, or what says there are none."""
    if GPU_RESULT.exists():
        return GPU_RESULT.read_text().strip()
    return ("**Not measured**: no GPU was available to the run that wrote this page, and no GPU run "
            f"has recorded its figures (`{GPU_RESULT.relative_to(ROOT)}`, written by the script's "
            "`--write`). `--dry-run` runs the same code on the CPU with the tiny model on a 5.625° grid, "
            "which checks that the script works, not what a GPU does.")


if __name__ == "__main__":
    h = run_harness()
    print(harness_table(h))
    print()
    print(harness_summary(h))
    print()
    s = run_skill()
    print(skill_table(s))
    print()
    print(skill_summary(s))
