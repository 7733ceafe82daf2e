"""(m) Compression: speed, memory and skill per technique.

    .venv/bin/python benchmarks/bench_compression.py            # both parts; prints the tables and draws the plot
    .venv/bin/python benchmarks/bench_compression.py --smoke    # tiny everything (under 2 minutes): checks the script
    .venv/bin/python benchmarks/run.py --only compression --write docs/benchmarks.md   # the doc's section

Part 1, speed and memory: the full 1.26 B-parameter medium-range architecture (seeded random
weights: the time of a step does not depend on the values) on a 64x128 global grid (a
synthetic window from `synthetic_window` at 2.8125°, cropped to the patch size), torch on 2
threads. fp32 against int8-dynamic, int8-static (calibrated on 2 other synthetic windows),
bf16, 30 % of the MLP units pruned and a distilled student's architecture
(`student_overrides(spec, "full")`, random weights). Each technique's model is built and
compressed afresh and freed before the next, beside the one fp32 model all are timed against
(never more than two full models at once): one-step forwards (`forward_hours`, as
`CompressResult` times them), warmed up, then `repeat` pairs timed in turns (fp32, technique,
fp32, ...); the speed-up is the median of the pairs' ratios. Memory: the weights' bytes
(`weight_bytes`), the resident memory the prepared model holds, and the process's peak
resident memory while preparing it and running its first forward, both above the resident
size before it was built (the peak count is restarted per technique through
`/proc/self/clear_refs`). The int8 models drop the float weights they were made from
(`keep_float=False`), as a model loaded from an int8 checkpoint does.

Part 2, the cost in skill on real data (`held_out.py`, the demo pipeline's protocol): for each
seed, a tiny teacher trained with the demo's config (`pipelines.demo.CONFIG`, `train.seed`) on
the March 2019 series without its held-out days (1-16 March trains, 17-21 validates), then each technique from that teacher through `compress_checkpoint` on the
same series (the pipeline's compress step; prune and distil train on it, so it must not hold
the held-out days), and every checkpoint scored on the held-out 22-31 March
(`score_checkpoint`, 4 six-hour steps) at +6, +12 and +24 h: latitude-weighted RMSE of 2 m
temperature over the whole grid.

`--smoke` runs the same code on the tiny profile in part 1 and with one seed and short
training and scoring in part 2: it checks the script, and its figures measure nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model_code.data.batch import window_to_batch  # noqa: E402
from model_code.data.synthetic import regular_grid, synthetic_window  # noqa: E402
from model_code.forecast import forward_hours  # noqa: E402
from model_code.variants import build_model, get_variant  # noqa: E402
import held_out  # noqa: E402
from held_out import MARCH, MARCH_T2M, TEST_PERIOD  # noqa: E402

LEADS = MARCH_T2M.leads
from serving.memory import release_free_memory  # noqa: E402
from timing import SPREAD_NOTE, Timing, paired_ms, status_kib  # noqa: E402

SPEC = get_variant("medium-range")
THREADS = 2
TECHNIQUES = ("int8-dynamic", "int8-static", "bf16", "prune", "distil")
LABELS = {"fp32": "fp32", "int8-dynamic": "int8 dynamic", "int8-static": "int8 static", "bf16": "bf16",
          "prune": "pruned (30 % of MLP units)", "distil": "distilled student"}
SHORT = {"fp32": "fp32", "int8-dynamic": "int8 dyn.", "int8-static": "int8 static", "bf16": "bf16",
         "prune": "pruned 30 %", "distil": "student"}

RESOLUTION = 2.8125
"""65x128 global grid, 64x128 once cropped to the patch size (4)."""
SMOKE_RESOLUTION = 5.625
CALIBRATION_WINDOWS = 2
MLP_FRACTION = 0.3
DEPTH_FACTOR = EMBED_FACTOR = 0.5
REPEAT = 3

SEEDS = (0, 1, 2)
PRUNE_STEPS = 30
DISTIL_STEPS = 150
MAX_INITS = 48

GOALS = (
    # (name, techniques any of which may meet it, least speed-up on the full architecture, largest RMSE increase)
    ("int8 >= 1.5x faster on CPU with <= 1 % RMSE increase", ("int8-dynamic", "int8-static"), 1.5, 0.01),
    ("a distilled student >= 2x faster within 3 % of its teacher's RMSE", ("distil",), 2.0, 0.03),
    ("30 % of MLP units pruned >= 1.2x faster within 1 %", ("prune",), 1.2, 0.01),
)
"""The issue's goals. Skill: the mean over seeds of the relative RMSE change against the
teacher, at every one of +6, +12 and +24 h (a decrease meets it)."""

FIGURE = ROOT / "docs" / "figures" / "compression_tradeoff.png"
SMOKE_FIGURE = ROOT / "outputs" / "bench" / "compression_tradeoff-smoke.png"


@dataclass(frozen=True)
class Settings:
    profile: str = "full"
    resolution: float = RESOLUTION
    repeat: int = REPEAT
    seeds: tuple[int, ...] = SEEDS
    teacher_steps: int | None = None
    """None: the demo config's own (150)."""
    prune_steps: int = PRUNE_STEPS
    distil_steps: int = DISTIL_STEPS
    max_inits: int = MAX_INITS
    smoke: bool = False


SMOKE = Settings(profile="tiny", resolution=SMOKE_RESOLUTION, repeat=2, seeds=(0,), teacher_steps=5, prune_steps=3,
                 distil_steps=3, max_inits=4, smoke=True)


def _log(line: str) -> None:
    print(line, flush=True)


# --------------------------------------------------------------------------------------
# Part 1: speed and memory of one step of the full architecture


def _batch(resolution: float, seed: int, end: str):
    """A synthetic medium-range window of `SPEC.max_history` times ending at `end`, as a
    batch cropped to the patch size."""
    lat, lon = regular_grid(resolution)
    step = np.timedelta64(int(SPEC.timestep.total_seconds()), "s")
    times = np.datetime64(end, "ns") - step * np.arange(SPEC.max_history - 1, -1, -1)
    return window_to_batch(synthetic_window(SPEC, lat, lon, times, seed=seed), SPEC).crop(SPEC.patch_size)


def _forward(model, batch) -> None:
    with torch.inference_mode():
        forward_hours(model, batch, model.timestep.total_seconds() / 3600)


def _parameters(model) -> int:
    """Parameters, the int8 layers' packed weights included (as `CompressResult` counts them)."""
    from model_code.compression.job import _int8_weights

    return sum(p.numel() for p in model.parameters()) + _int8_weights(model)


def _rss_kib() -> int:
    return status_kib("VmRSS")


def _restart_peak() -> bool:
    """Restart the process's resident high-water mark (`VmHWM`) at its current size."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _settle() -> None:
    """Free what the previous model left: Python's garbage, then the heap's free memory."""
    gc.collect()
    release_free_memory()


@dataclass(frozen=True)
class SpeedRow:
    technique: str
    parameters: int
    weight_bytes: int
    prepare_s: float
    held_mb: float
    """Resident memory the prepared model holds, above the size before it was built."""
    peak_mb: float | None
    """Peak resident memory while preparing it and running its first forward, above the same
    size (None where the peak count cannot be restarted)."""
    own: Timing
    fp32: Timing
    """The fp32 forwards timed in turns with this technique's (empty for the fp32 row)."""

    @property
    def speedup(self) -> float:
        """Median over the pairs of fp32 / technique."""
        if not self.fp32.samples_ms:
            return 1.0
        return statistics.median(f / t for f, t in zip(self.fp32.samples_ms, self.own.samples_ms))

    @property
    def spread(self) -> float:
        return max(self.own.spread, self.fp32.spread) if self.fp32.samples_ms else self.own.spread


@dataclass(frozen=True)
class SpeedResult:
    profile: str
    grid: tuple[int, int]
    threads: int
    repeat: int
    rows: list[SpeedRow]

    def row(self, technique: str) -> SpeedRow:
        return next(r for r in self.rows if r.technique == technique)


def _prepared(technique: str, profile: str, calibration) -> torch.nn.Module:
    """`technique`'s model of `profile`, built from seeded random weights and compressed in place."""
    from model_code.compression.distil import student_overrides
    from model_code.compression.prune import prune
    from model_code.compression.quantise import quantise_dynamic, quantise_static, to_bf16

    if technique == "distil":
        return build_model(SPEC, profile, seed=0, overrides=student_overrides(
            SPEC, profile, depth_factor=DEPTH_FACTOR, embed_factor=EMBED_FACTOR))
    model = build_model(SPEC, profile, seed=0)
    if technique == "fp32":
        return model
    if technique == "int8-dynamic":
        return quantise_dynamic(model, inplace=True, keep_float=False)[0]
    if technique == "int8-static":
        return quantise_static(model, calibration, SPEC, source=f"{len(calibration)} synthetic windows",
                               inplace=True, keep_float=False)[0]
    if technique == "bf16":
        return to_bf16(model, inplace=True)[0]
    if technique == "prune":
        return prune(model, mlp_fraction=MLP_FRACTION)[0]
    raise ValueError(technique)


def _measured_build(technique: str, profile: str, calibration, batch):
    """(model, seconds to prepare, MB held, MB peak) of `technique`; the first forward included in the peak."""
    _settle()
    before = _rss_kib()
    restarted = _restart_peak()
    start = time.perf_counter()
    model = _prepared(technique, profile, calibration)
    seconds = time.perf_counter() - start
    held = (_rss_kib() - before) * 1024 / 1e6
    _forward(model, batch)  # the first forward: its one-off allocations count in the peak, not in the timing
    peak = (status_kib("VmHWM") - before) * 1024 / 1e6 if restarted else None
    return model, seconds, held, peak


def run_speed(settings: Settings = Settings(), log: Callable[[str], None] = _log) -> SpeedResult:
    from model_code.compression.quantise import weight_bytes

    torch.set_num_threads(THREADS)
    batch = _batch(settings.resolution, seed=0, end="2024-01-01T06:00")
    calibration = [_batch(settings.resolution, seed=s, end=f"2024-01-0{1 + s}T18:00")
                   for s in range(1, CALIBRATION_WINDOWS + 1)]
    grid = tuple(batch.spatial_shape)
    log(f"  {settings.profile} profile, {grid[0]}x{grid[1]} grid, {THREADS} threads, {settings.repeat} pairs")
    reference, seconds, held, peak = _measured_build("fp32", settings.profile, calibration, batch)
    rows = []
    fp32_samples: list[float] = []
    for technique in TECHNIQUES:
        model, prep_s, held_mb, peak_mb = _measured_build(technique, settings.profile, calibration, batch)
        own, fp32 = paired_ms(lambda: _forward(model, batch), lambda: _forward(reference, batch),
                              repeat=settings.repeat, warmup=1)
        fp32_samples += fp32.samples_ms
        rows.append(SpeedRow(technique, _parameters(model), weight_bytes(model), prep_s, held_mb, peak_mb, own, fp32))
        log(f"  {technique}: {own.median:.0f} ms against fp32 {fp32.median:.0f} ms, {rows[-1].speedup:.2f}x, "
            f"weights {rows[-1].weight_bytes / 1e6:.0f} MB, held {held_mb:.0f} MB, "
            f"peak {'n/a' if peak_mb is None else f'{peak_mb:.0f}'} MB")
        del model
        _settle()
    fp32_row = SpeedRow("fp32", _parameters(reference), weight_bytes(reference), seconds, held, peak,
                        Timing(tuple(fp32_samples)), Timing(()))
    del reference
    _settle()
    return SpeedResult(settings.profile, grid, THREADS, settings.repeat, [fp32_row, *rows])


def size_label(n: int) -> str:
    return f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.1f} M" if n >= 1e6 else f"{n / 1e3:.0f} k"


def speed_table(s: SpeedResult) -> str:
    lines = [f"| model | parameters | weights (MB) | one step (ms, median) | fp32 in the same pairs (ms) "
             f"| speed-up (median of {s.repeat} pair ratios) | spread | RSS held (MB) | peak RSS growth (MB) "
             f"| preparing (s) |",
             "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for r in s.rows:
        fp32 = f"{r.fp32.median:.0f}" if r.fp32.samples_ms else "–"
        speedup = f"**{r.speedup:.2f}x**" if r.technique != "fp32" else "1.00x"
        peak = "n/a" if r.peak_mb is None else f"{r.peak_mb:.0f}"
        lines.append(f"| {LABELS[r.technique]} | {size_label(r.parameters)} | {r.weight_bytes / 1e6:.0f} "
                     f"| {r.own.median:.0f} | {fp32} | {speedup} | {r.spread:.2f}x | {r.held_mb:.0f} | {peak} "
                     f"| {r.prepare_s:.1f} |")
    lines += ["", "The fp32 row's time is the median of every fp32 forward of all the pairs; its memory is that "
              "of the reference model itself. " + SPREAD_NOTE]
    return "\n".join(lines)


def speed_summary(s: SpeedResult) -> str:
    fp32 = s.row("fp32")
    faster = sorted(s.rows[1:], key=lambda r: -r.speedup)
    parts = [f"{LABELS[r.technique]} {r.speedup:.2f}x" for r in faster]
    smaller = sorted(s.rows[1:], key=lambda r: r.weight_bytes)
    text = (f"The {s.profile} architecture ({size_label(fp32.parameters)} parameters, {fp32.weight_bytes / 1e6:.0f} MB "
            f"of fp32 weights) takes {fp32.own.median / 1e3:.2f} s for one step on the {s.grid[0]}x{s.grid[1]} "
            f"grid with {s.threads} threads. Speed-ups over fp32, fastest first: {', '.join(parts)}. "
            f"Smallest weights: {LABELS[smaller[0].technique]} ({smaller[0].weight_bytes / 1e6:.0f} MB, "
            f"{fp32.weight_bytes / smaller[0].weight_bytes:.1f}x less than fp32).")
    peaks = [r for r in s.rows if r.peak_mb is not None]
    if peaks:
        top = max(peaks, key=lambda r: r.peak_mb)
        text += (f" The largest peak growth is {LABELS[top.technique]}'s ({top.peak_mb:.0f} MB): preparing a "
                 "compressed model starts from the fp32 model it compresses (int8-dynamic keeps every float "
                 "weight until the last layer is swapped), so a technique's peak is above what its model then "
                 "holds.")
    return text


# --------------------------------------------------------------------------------------
# Part 2: the cost in skill on the real March series


@dataclass
class SeedRun:
    seed: int
    teacher: str
    teacher_steps: int
    teacher_parameters: int
    inits: int
    rmse: dict[str, dict[int, float]] = field(default_factory=dict)
    """`{"teacher" | technique: {lead hours: RMSE}}`."""
    persistence: dict[int, float] = field(default_factory=dict)
    compressed: dict[str, dict] = field(default_factory=dict)
    """`CompressResult.summary()` per technique."""

    def change(self, technique: str, lead: int) -> float:
        """Relative RMSE change against this seed's teacher (positive: worse)."""
        return self.rmse[technique][lead] / self.rmse["teacher"][lead] - 1


@dataclass(frozen=True)
class SkillResult:
    runs: list[SeedRun]
    settings: Settings
    held_out: tuple[str, str]
    train_series: str
    wall_s: float

    def values(self, fn: Callable[[SeedRun], float]) -> list[float]:
        return [fn(r) for r in self.runs]


def _teacher(series: held_out.Series, out: Path, seed: int, steps: int | None):
    from model_code.compression.job import _short_run

    cfg = held_out.config(series, out, seed)
    if steps is not None:  # the schedule fitted to a short run, as the compression job fits its runs
        cfg = _short_run(cfg, steps)
    return held_out.train(cfg)


def _job(technique: str, teacher: str, series: held_out.Series, out: Path, settings: Settings):
    from model_code.compression.job import CompressJob

    options = {"prune": {"mlp_fraction": MLP_FRACTION, "steps": settings.prune_steps},
               "distil": {"steps": settings.distil_steps, "depth_factor": DEPTH_FACTOR,
                          "embed_factor": EMBED_FACTOR}}.get(technique, {})
    return CompressJob(checkpoint=teacher, method=technique, out=str(out / f"{technique}.safetensors"),
                       variant=SPEC.name, data=(series.train,), work_dir=str(out / f"{technique}-run"), **options)


def run_skill(settings: Settings = Settings(), log: Callable[[str], None] = _log) -> SkillResult:
    from model_code.compression.job import compress_checkpoint

    torch.set_num_threads(THREADS)
    start = time.perf_counter()
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-compression-") as tmp, warnings.catch_warnings():
        # every model built from the demo's config (its own 2t statistics) says so; once is enough
        warnings.filterwarnings("ignore", message="The normalisation statics for the following")
        series = held_out.series(Path(tmp) / "series", MARCH_T2M)
        for seed in settings.seeds:
            out = Path(tmp) / f"seed{seed}"
            clock = time.perf_counter()
            trained = _teacher(series, out / "teacher", seed, settings.teacher_steps)
            teacher = trained.best_checkpoint
            scores, inits = held_out.score(teacher, series, settings.max_inits, out / "teacher-scores.json")
            run = SeedRun(seed, teacher, trained.steps, 0, inits)
            run.rmse["teacher"] = {lead: scores["model"][lead] for lead in LEADS}
            run.persistence = {lead: scores["persistence"][lead] for lead in LEADS}
            log(f"  seed {seed}: teacher ({trained.steps} steps, best at {trained.best_step}) "
                f"{time.perf_counter() - clock:.0f} s; RMSE " + ", ".join(
                    f"+{lead} h {run.rmse['teacher'][lead]:.3f} (persistence {run.persistence[lead]:.3f})"
                    for lead in LEADS) + f" on {inits} inits")
            for technique in TECHNIQUES:
                clock = time.perf_counter()
                result = compress_checkpoint(_job(technique, teacher, series, out, settings))
                run.compressed[technique] = result.summary()
                scores, _ = held_out.score(result.out, series, settings.max_inits, out / f"{technique}-scores.json")
                run.rmse[technique] = {lead: scores["model"][lead] for lead in LEADS}
                log(f"  seed {seed}: {technique} {time.perf_counter() - clock:.0f} s; tiny latency "
                    f"{result.speedup:.2f}x; RMSE change " + ", ".join(
                        f"+{lead} h {100 * run.change(technique, lead):+.2f} %" for lead in LEADS))
            run.teacher_parameters = run.compressed[TECHNIQUES[0]]["reference_parameters"]
            runs.append(run)
    return SkillResult(runs, settings, (TEST_PERIOD[0], TEST_PERIOD[1]), f"{MARCH.name} without "
                       f"{TEST_PERIOD[0][:10]} .. {TEST_PERIOD[1][:10]}", time.perf_counter() - start)


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def _spread(values: list[float], fmt: str = "{:.3f}", scale: float = 1.0, suffix: str = "") -> str:
    """`mean (min..max)`, or the single value of one seed."""
    v = [x * scale for x in values]
    mean = fmt.format(statistics.fmean(v)) + suffix
    return mean if len(v) == 1 else f"{mean} ({fmt.format(min(v))}..{fmt.format(max(v))})"


def skill_table(s: SkillResult) -> str:
    heads = "".join(f" +{lead} h RMSE (K) | change |" for lead in LEADS)
    lines = [f"| model | parameters |{heads} tiny CPU speed-up (`CompressResult`) |",
             "|---|--:|" + "--:|--:|" * len(LEADS) + "--:|"]
    for name in ("teacher", *TECHNIQUES):
        cells = []
        for lead in LEADS:
            cells.append(_spread(s.values(lambda r: r.rmse[name][lead])))
            cells.append("–" if name == "teacher" else
                         _spread(s.values(lambda r: r.change(name, lead)), "{:+.2f}", 100, " %"))
        if name == "teacher":
            params, speed = size_label(s.runs[0].teacher_parameters), "1.00x"
        else:
            params = size_label(s.runs[0].compressed[name]["parameters"])
            speed = _spread(s.values(lambda r: r.compressed[name]["speedup"]), "{:.2f}", suffix="x")
        label = "teacher (fp32)" if name == "teacher" else LABELS[name]
        lines.append(f"| {label} | {params} | " + " | ".join(cells) + f" | {speed} |")
    cells = []
    for lead in LEADS:
        cells += [_spread(s.values(lambda r: r.persistence[lead])), "–"]
    lines.append("| persistence | – | " + " | ".join(cells) + " | – |")
    n = len(s.runs)
    lines += ["", (f"Mean over {n} seeds ({', '.join(str(r.seed) for r in s.runs)}), with the smallest and largest "
                   "in brackets; change: the RMSE against the same seed's teacher (positive is worse)."
                   if n > 1 else f"One seed ({s.runs[0].seed}); change: the RMSE against its teacher "
                   "(positive is worse).")
              + " The tiny CPU speed-up is `CompressResult.speedup`: the teacher's median one-step latency over "
                "the compressed model's, timed in turns on the first window of the training series "
                f"({s.runs[0].compressed[TECHNIQUES[0]]['timed_on']}); the tiny model is too small for these "
                "ratios to say anything of the full architecture (part 1)."]
    return "\n".join(lines)


def skill_summary(s: SkillResult) -> str:
    r0 = s.runs[0]
    worst = {t: max(statistics.fmean(s.values(lambda r: r.change(t, lead))) for lead in LEADS) for t in TECHNIQUES}
    order = sorted(TECHNIQUES, key=lambda t: worst[t])
    beats = all(r.rmse["teacher"][lead] < r.persistence[lead] for r in s.runs for lead in LEADS)
    steps = sorted({r.teacher_steps for r in s.runs})
    text = (f"Each teacher trained {'/'.join(map(str, steps))} steps of the demo's config (the tiny medium-range "
            f"model, {size_label(r0.teacher_parameters)} parameters) on {s.train_series}; prune recovered for "
            f"{s.settings.prune_steps} steps and the student (depth and embedding factors {DEPTH_FACTOR:g}) "
            f"trained {s.settings.distil_steps} steps, both with the teacher's own training config "
            f"(`compress_checkpoint`). Scored on {r0.inits} initialisations in {s.held_out[0][:10]} .. "
            f"{s.held_out[1][:10]}, never trained on. The teachers "
            + ("beat persistence at every lead and seed. " if beats else "do not beat persistence at every lead "
               "and seed, so the changes below are those of a weak model. ")
            + "Worst mean change over the three leads, smallest first: "
            + ", ".join(f"{LABELS[t]} {100 * worst[t]:+.2f} %" for t in order)
            + f". Part 2 took {_duration(s.wall_s)}.")
    if s.settings.smoke:
        text += " (Smoke run: short training and few initialisations; the figures check the script only.)"
    return text


# --------------------------------------------------------------------------------------
# The goals, the plot


def goals_table(speed: SpeedResult, skill: SkillResult) -> str:
    lines = ["| goal | technique | speed-up, " + f"{speed.profile} architecture (part 1) "
             "| RMSE change, worst of +6/+12/+24 h (mean over seeds; worst seed) | verdict |",
             "|---|---|--:|--:|---|"]
    verdicts = []
    for name, techniques, least_speedup, most_change in GOALS:
        met_any = False
        for t in techniques:
            speedup = speed.row(t).speedup
            mean_worst = max(statistics.fmean(skill.values(lambda r: r.change(t, lead))) for lead in LEADS)
            seed_worst = max(r.change(t, lead) for r in skill.runs for lead in LEADS)
            fast, close = speedup >= least_speedup, mean_worst <= most_change
            met = fast and close
            met_any |= met
            why = [] if met else ([f"speed-up below {least_speedup:g}x"] if not fast else []) + (
                [f"RMSE above +{100 * most_change:g} %"] if not close else [])
            lines.append(f"| {name} | {LABELS[t]} | {speedup:.2f}x | {100 * mean_worst:+.2f} % ({100 * seed_worst:+.2f} %) "
                         f"| {'met' if met else '**not met**: ' + ', '.join(why)} |")
        verdicts.append(f"{name}: {'met' if met_any else '**not met**'}")
    lines += ["", "Goals: " + "; ".join(verdicts) + "."]
    if speed.profile != "full" or skill.settings.smoke:
        lines.append("(Smoke run: the tiny profile's speed and short training; these verdicts say nothing of "
                     "the goals.)")
    return "\n".join(lines)


def plot(speed: SpeedResult, skill: SkillResult, path: Path, lead: int = 12) -> Path:
    """Speed-up (part 1) against RMSE change at `lead` (part 2: mean, min..max bars), one point per technique."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    ax.axhline(0, color="0.6", lw=0.8)
    for limit in sorted({g[3] for g in GOALS}):
        ax.axhline(100 * limit, color="0.75", lw=0.8, ls="--")
        ax.annotate(f"goal: within +{100 * limit:g} %", (0.0, 100 * limit), xycoords=("axes fraction", "data"),
                    xytext=(4, 2), textcoords="offset points", ha="left", fontsize=7, color="0.5")
    ax.axvline(1, color="0.6", lw=0.8)
    for t in TECHNIQUES:
        x = speed.row(t).speedup
        changes = [100 * c for c in skill.values(lambda r: r.change(t, lead))]
        y = statistics.fmean(changes)
        ax.errorbar([x], [y], yerr=[[y - min(changes)], [max(changes) - y]], fmt="o", capsize=4, ms=6)
        ax.annotate(SHORT[t], (x, y), xytext=(6, -11 if t == "int8-dynamic" else 4), textcoords="offset points",
                    fontsize=8)
    ax.set_xlabel(f"speed-up over fp32, one step of the {speed.profile} architecture "
                  f"({speed.grid[0]}x{speed.grid[1]}, {speed.threads} threads)")
    ax.set_ylabel(f"RMSE change vs teacher at +{lead} h (%)")
    n = len(skill.runs)
    ax.set_title(f"Compression trade-off (t2m, held-out {skill.held_out[0][:10]} .. {skill.held_out[1][:10]}; "
                 f"{n} seed{'s' if n > 1 else ''}, min..max)", fontsize=9)
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}x"))
    ax.margins(x=0.15, y=0.15)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true",
                        help="tiny profile in part 1, one seed and short runs in part 2 (under 2 minutes): checks "
                        "the script, measures nothing")
    parser.add_argument("--repeat", type=int, help=f"timed pairs per technique in part 1 (default {REPEAT})")
    parser.add_argument("--figure", type=Path,
                        help=f"where the trade-off plot goes (default {FIGURE.relative_to(ROOT)}; with --smoke "
                        f"{SMOKE_FIGURE.relative_to(ROOT)})")
    args = parser.parse_args(argv)
    settings = SMOKE if args.smoke else Settings()
    if args.repeat is not None:
        if args.repeat < 1:
            parser.error("--repeat must be at least 1")
        settings = dataclasses.replace(settings, repeat=args.repeat)
    figure = args.figure or (SMOKE_FIGURE if args.smoke else FIGURE)

    from run import OtherWork, command, machine  # run.py imports this module: here, not at the top

    info = machine()
    print(f"Machine: {info['CPU cores available (`nproc`)']} CPU cores ({info['CPU model (/proc/cpuinfo)']}), "
          f"GPU: {info['GPU']}, torch {info['torch']}, memory {info['Memory (/proc/meminfo)']}", flush=True)
    print(f"Command: `{command()}`\n", flush=True)
    print("## Part 1: speed and memory\n", flush=True)
    other = OtherWork()
    speed = run_speed(settings)
    speed_other = other.report()
    print("\n" + speed_table(speed) + "\n\n" + speed_summary(speed), flush=True)
    print(f"\nDuring part 1, {speed_other}.\n\n## Part 2: skill on the held-out days\n", flush=True)
    other = OtherWork()
    skill = run_skill(settings)
    skill_other = other.report()
    print("\n" + skill_table(skill) + "\n\n" + skill_summary(skill), flush=True)
    print(f"\nDuring part 2, {skill_other}.\n\n## Goals\n\n" + goals_table(speed, skill), flush=True)
    path = plot(speed, skill, figure)
    try:
        path = path.relative_to(ROOT)
    except ValueError:
        pass
    print(f"\nTrade-off plot: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
