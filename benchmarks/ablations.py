"""Ablations on real data: each modelling option against its reference, 3 seeds, on held-out days.

    .venv/bin/python benchmarks/ablations.py                                   # every ablation; prints the tables
    .venv/bin/python benchmarks/ablations.py --only history --write docs/ablations.md   # rewrite one section
    .venv/bin/python benchmarks/ablations.py --smoke                           # one seed, short runs: checks the script

Every arm trains the tiny medium-range model with the demo's config on the real March 2019
series without its held-out days and is scored on the held-out 22-31 March (`held_out.py`:
the demo pipeline's protocol, latitude-weighted RMSE of 2 m temperature at +6, +12, +24 h,
against persistence and the climatology of the days before). An arm differs from its
ablation's reference arm only by the dotted config overrides it names, and both run with
the same seeds, so each seed gives a paired difference; an option "helps" at a lead only
when its mean paired change is an improvement and every seed improves.

`--smoke` runs one seed with 6 optimiser steps and 4 initialisations: it checks the script,
and its figures measure nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import held_out  # noqa: E402
from held_out import LEADS, TEST_PERIOD  # noqa: E402

DOC = ROOT / "docs" / "ablations.md"
SEEDS = (0, 1, 2)
MAX_INITS = 48


@dataclass(frozen=True)
class Arm:
    label: str
    overrides: Mapping[str, Any] = field(default_factory=dict)
    """Dotted config keys changed from the demo's config."""


@dataclass(frozen=True)
class Ablation:
    name: str
    title: str
    about: str
    """What is compared and why, one paragraph of the doc."""
    arms: tuple[Arm, ...]
    """The first is the reference every other arm is compared with."""


def _history(n: int) -> dict[str, int]:
    return {"model.max_history_size": n, "data.history": n}


ABLATIONS = (
    Ablation(
        "history", "Input history: 2, 3, 4 and 5 input times",
        "How many input times of 6 h the model sees: 2 is what Aurora's medium-range weights are published "
        "with; the demo uses 5 (30 h, so the field 24 h before each target is among the inputs). "
        "`model.max_history_size` and `data.history` set together.",
        (Arm("2 times", _history(2)), Arm("3 times", _history(3)), Arm("4 times", _history(4)),
         Arm("5 times (the demo)", _history(5)))),
    Ablation(
        "augmentation", "Per-sample augmentation",
        "Bounded noise on every input window, drawn afresh per sample and epoch (`data.augment.noise_scale`, "
        "a fraction of each variable's spread), against none. The series holds 2 m temperature only, so "
        "noise is the augmentation that changes anything: wind rotation has no winds to turn, and the "
        "regional grid cannot be rolled in longitude.",
        (Arm("off"), Arm("noise 0.05", {"data.augment.noise_scale": 0.05}),
         Arm("noise 0.2", {"data.augment.noise_scale": 0.2}))),
    Ablation(
        "extreme", "Extreme-event sampling",
        "Training windows whose 2 m temperature reaches the training period's upper tail drawn more often "
        "(`data.extreme_sampling`), against uniform sampling.",
        (Arm("uniform"), Arm("extremes x3", {"data.extreme_sampling": {"variable": "2t", "quantile": 0.9,
                                                                         "factor": 3.0}}))),
)


@dataclass
class Run:
    arm: str
    seed: int
    steps: int
    best_step: int | None
    seconds: float
    rmse: dict[int, float]
    baselines: dict[str, dict[int, float]]
    inits: int


@dataclass
class Result:
    ablation: Ablation
    runs: list[Run]
    seeds: tuple[int, ...]
    wall_s: float

    def rmse(self, arm: str, lead: int) -> list[float]:
        return [r.rmse[lead] for r in self.runs if r.arm == arm]

    def paired_change(self, arm: str, lead: int) -> list[float]:
        """Relative RMSE change against the reference arm, seed by seed (negative: better)."""
        ref = {r.seed: r.rmse[lead] for r in self.runs if r.arm == self.ablation.arms[0].label}
        return [r.rmse[lead] / ref[r.seed] - 1 for r in self.runs if r.arm == arm]


def run_ablation(ablation: Ablation, seeds: tuple[int, ...], *, steps: int | None, max_inits: int,
                 log=print) -> Result:
    start = time.perf_counter()
    runs = []
    with tempfile.TemporaryDirectory(prefix=f"ablation-{ablation.name}-") as tmp, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The normalisation statics for the following")
        series = held_out.training_series(Path(tmp) / "series")
        for arm in ablation.arms:
            for seed in seeds:
                out = Path(tmp) / f"{len(runs)}"
                overrides = dict(arm.overrides)
                if steps is not None:
                    overrides.update({"train.max_steps": steps, "train.val_every": steps, "schedule.warmup_steps": 0})
                clock = time.perf_counter()
                trained = held_out.train(held_out.demo_config(series, out / "train", seed, overrides))
                scores, inits = held_out.score(trained.best_checkpoint, max_inits, out / "scores.json")
                run = Run(arm.label, seed, trained.steps, trained.best_step, time.perf_counter() - clock,
                          {lead: scores["model"][lead] for lead in LEADS},
                          {f: {lead: scores[f][lead] for lead in LEADS} for f in ("persistence", "climatology")
                           if f in scores}, inits)
                runs.append(run)
                log(f"  {ablation.name} / {arm.label} / seed {seed}: {run.seconds:.0f} s, best at step "
                    f"{run.best_step}; RMSE " + ", ".join(f"+{lead} h {run.rmse[lead]:.3f}" for lead in LEADS))
    return Result(ablation, runs, seeds, time.perf_counter() - start)


def _mean_range(values: list[float], fmt: str = "{:.3f}", scale: float = 1.0) -> str:
    mean = statistics.fmean(values) * scale
    if len(values) == 1:
        return fmt.format(mean)
    return f"{fmt.format(mean)} ({fmt.format(min(values) * scale)} to {fmt.format(max(values) * scale)})"


def verdict(changes: list[float]) -> str:
    """`helps` only when the mean paired change improves and every seed improves; `hurts` the
    mirror image; otherwise `no clear effect` (the seeds disagree)."""
    if statistics.fmean(changes) < 0 and all(c < 0 for c in changes):
        return "helps"
    if statistics.fmean(changes) > 0 and all(c > 0 for c in changes):
        return "hurts"
    return "no clear effect"


def table(result: Result) -> str:
    a = result.ablation
    reference = a.arms[0].label
    head = ("| arm | " + " | ".join(f"RMSE +{lead} h (K)" for lead in LEADS) + " | "
            + " | ".join(f"change +{lead} h" for lead in LEADS) + " | best step | seconds per run |")
    lines = [head, "|---|" + "--:|" * (2 * len(LEADS) + 2)]
    for arm in a.arms:
        runs = [r for r in result.runs if r.arm == arm.label]
        cells = [_mean_range(result.rmse(arm.label, lead)) for lead in LEADS]
        if arm.label == reference:
            cells += ["reference"] * len(LEADS)
        else:
            cells += [f"{_mean_range(result.paired_change(arm.label, lead), '{:+.1f}', 100)} %: "
                      f"{verdict(result.paired_change(arm.label, lead))}" for lead in LEADS]
        cells += [", ".join(str(r.best_step) for r in runs), f"{statistics.median(r.seconds for r in runs):.0f}"]
        lines.append(f"| {arm.label} | " + " | ".join(cells) + " |")
    first = result.runs[0]
    for name, values in first.baselines.items():
        lines.append(f"| {name} | " + " | ".join(f"{values[lead]:.3f}" for lead in LEADS) + " |"
                     + " |" * (len(LEADS) + 2))
    seeds = ", ".join(map(str, result.seeds))
    lines += ["", f"Mean over seeds {seeds}, with the smallest and largest in brackets; a change is the paired "
              f"relative change of each seed's RMSE against the same seed's {reference!r} run (negative: "
              f"better). {first.inits} initialisations of the held-out days per score; the baselines are the "
              f"same for every arm. {len(result.runs)} runs in {result.wall_s / 60:.0f} min."]
    return "\n".join(lines)


def section(result: Result, stamp: str) -> str:
    a = result.ablation
    return "\n".join([f"<!-- ablation: {a.name} -->", f"## {a.title}", "", stamp, "", a.about, "", table(result),
                      "<!-- /ablation -->"])


HEAD = f"""\
# Ablations

Each modelling option against its reference on real data, 3 seeds each: the tiny
medium-range model with the demo's config, trained on the ERA5 hourly 2 m temperature of
the British Isles, 1-21 March 2019, and scored on the held-out {TEST_PERIOD[0][:10]} ..
{TEST_PERIOD[1][:10]} (`benchmarks/held_out.py`; the demo pipeline's protocol). A section is
written whole by `benchmarks/ablations.py --write`, with the date, machine and command of
the run that measured it. RMSE is latitude-weighted, over the whole grid, in K.

An option "helps" at a lead only when its mean paired change is an improvement and every
seed improves; a mean change with seeds on both sides is reported as "no clear effect",
whatever its sign. One region, one month and a tiny model: these figures say what the
options do here, not what they do for a global model.
"""


def write(path: Path, sections: dict[str, str]) -> None:
    """Rewrite `path` with the given sections, keeping the sections of ablations not rerun."""
    from model_code.storage import write_atomic

    kept: dict[str, str] = {}
    if path.is_file():
        text = path.read_text()
        for chunk in text.split("<!-- ablation: ")[1:]:
            name = chunk.split(" -->", 1)[0]
            kept[name] = "<!-- ablation: " + chunk.split("<!-- /ablation -->", 1)[0] + "<!-- /ablation -->"
    kept.update(sections)
    order = [a.name for a in ABLATIONS]
    body = "\n\n".join(kept[n] for n in order if n in kept)
    write_atomic(path, lambda tmp: Path(tmp).write_text(HEAD + "\n" + body + "\n"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    names = [a.name for a in ABLATIONS]
    parser.add_argument("--only", help=f"comma-separated ablations among {', '.join(names)} (default: all)")
    parser.add_argument("--smoke", action="store_true", help="one seed, 6 steps, 4 inits: checks the script")
    parser.add_argument("--write", type=Path, help=f"rewrite these sections of the doc (e.g. {DOC.relative_to(ROOT)})")
    args = parser.parse_args(argv)
    chosen = names if not args.only else args.only.split(",")
    unknown = sorted(set(chosen) - set(names))
    if unknown:
        parser.error(f"unknown ablations {unknown}; expected some of {names}")
    if args.smoke and args.write:
        parser.error("--smoke measures nothing: do not --write its figures")

    import torch

    from run import OtherWork, command, machine  # run.py's helpers: the same stamp as docs/benchmarks.md

    torch.set_num_threads(2)
    info = machine()
    seeds, steps, max_inits = ((0,), 6, 4) if args.smoke else (SEEDS, None, MAX_INITS)
    sections = {}
    for ablation in (a for a in ABLATIONS if a.name in chosen):
        other = OtherWork()
        result = run_ablation(ablation, seeds, steps=steps, max_inits=max_inits)
        stamp = (f"Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by `{command()}` on "
                 f"{info['CPU cores available (`nproc`)']} CPU cores ({info['CPU model (/proc/cpuinfo)']}, "
                 f"GPU: {info['GPU']}); {other.report()}.")
        sections[ablation.name] = section(result, stamp)
        print("\n" + sections[ablation.name] + "\n", flush=True)
    if args.write:
        write(args.write, sections)
        print(f"wrote {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
