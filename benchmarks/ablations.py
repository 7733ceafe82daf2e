"""Ablations on real data: each modelling option against its reference, 3 seeds, on held-out days.

    .venv/bin/python benchmarks/ablations.py                                   # every ablation; prints the tables
    .venv/bin/python benchmarks/ablations.py --only history --write docs/ablations.md   # rewrite one section
    .venv/bin/python benchmarks/ablations.py --smoke                           # one seed, short runs: checks the script

Every arm trains a tiny model on a real series without its held-out days and is scored on
them (`held_out.py`): the medium-range model with the demo's config on the March 2019 2 m
temperature, scored at +6, +12, +24 h on 22-31 March, or the air-pollution model on the GEMS
total-column CO2 series (a stand-in for its species), scored at +12 and +24 h on 7-8 January
2006; latitude-weighted RMSE against persistence and the climatology of the days before. An arm differs from its
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
from held_out import GEMS_TCCO2, MARCH_T2M, TEST_PERIOD, Protocol  # noqa: E402

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
    protocol: Protocol = MARCH_T2M
    """The real series trained on and the held-out days scored."""

    @property
    def leads(self) -> tuple[int, ...]:
        return self.protocol.leads


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
    Ablation(
        "deseasonalised", "De-seasonalised 2 m temperature",
        "The model learns 2 m temperature as anomalies from the training period's mean for each hour of the day "
        "(`data.deseasonalise`: subtracted from its inputs, added back to its forecasts, so it need not relearn "
        "the diurnal cycle), against the full field.",
        (Arm("off"), Arm("2t by hour of day", {"data.deseasonalise": {"variables": ["2t"], "by": "hour"}}))),
    Ablation(
        "composition", "Air pollution: lagged inputs, log-space loss, smoothness penalty",
        "The air-pollution model (12 h step, two input times) on the real GEMS total-column CO2 series, "
        "1.125° global and 6-hourly, 1-8 January 2006, coarsened conservatively to 4.5° (40x80). It stands in "
        "for the species, since no real series of them is shipped: the column's excess over 370 (the file's "
        "values are 374-402; the excess, 4-32, varies across the globe by a factor of several, as a pollutant "
        "does) is given in the slot of total-column CO (`tcco`); RMSE is in the file's units. No meteorology "
        "comes with it (every other input is filled at its mean), so the model sees the column alone. The "
        "reference is the variant's own loss (positivity and log-space MAE on its species, weight 1, no "
        "smoothness, no lags). Arms: the log-space term off (`loss.log_weight: 0`); the field 24 h before "
        "each input time as one more input (`data.lags`; a training window then needs a day more, so that arm "
        "trains on fewer windows); a squared-Laplacian smoothness penalty on the species "
        "(`loss.smoothness.weight: 0.1`). 1-4 January trains (19 times: 9 windows of two steps, 5 with the "
        "lag), 5-6 January validates at +12 h (a lag may reach before it, as a forecast's does before its "
        "initialisation), 7-8 January are held out. Every arm is scored with its weights after 100 steps, not "
        "its best validated ones: in trials no step beat persistence in validation, so early stopping keeps "
        "the starting weights (a forecast of no change, persistence exactly) in every arm and would hide what "
        "the options do to what is learned. No climatology baseline: the 6 days before the held-out ones hold "
        "too few values of each hour of the day.",
        (Arm("variant's loss"), Arm("log-space off", {"loss.log_weight": 0.0}),
         Arm("lag 24 h", {"data.lags": {"hours": [24], "variables": ["tcco"]}}),
         Arm("smoothness 0.1", {"loss.smoothness.weight": 0.1})),
        GEMS_TCCO2),
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
        data = held_out.series(Path(tmp) / "series", ablation.protocol)
        for arm in ablation.arms:
            for seed in seeds:
                out = Path(tmp) / f"{len(runs)}"
                overrides = dict(arm.overrides)
                if steps is not None:
                    overrides.update({"train.max_steps": steps, "train.val_every": steps, "schedule.warmup_steps": 0})
                clock = time.perf_counter()
                trained = held_out.train(held_out.config(data, out / "train", seed, overrides))
                scores, inits = held_out.score(ablation.protocol.checkpoint(trained), data, max_inits,
                                               out / "scores.json")
                run = Run(arm.label, seed, trained.steps, trained.best_step, time.perf_counter() - clock,
                          {lead: scores["model"][lead] for lead in ablation.leads},
                          {f: {lead: scores[f][lead] for lead in ablation.leads} for f in ("persistence", "climatology")
                           if f in scores}, inits)
                runs.append(run)
                log(f"  {ablation.name} / {arm.label} / seed {seed}: {run.seconds:.0f} s, best at step "
                    f"{run.best_step}; RMSE " + ", ".join(f"+{lead} h {run.rmse[lead]:.3f}" for lead in ablation.leads))
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
    leads = a.leads
    head = ("| arm | " + " | ".join(f"RMSE +{lead} h ({a.protocol.units})" for lead in leads) + " | "
            + " | ".join(f"change +{lead} h" for lead in leads) + " | best step | seconds per run |")
    lines = [head, "|---|" + "--:|" * (2 * len(leads) + 2)]
    for arm in a.arms:
        runs = [r for r in result.runs if r.arm == arm.label]
        cells = [_mean_range(result.rmse(arm.label, lead)) for lead in leads]
        if arm.label == reference:
            cells += ["reference"] * len(leads)
        else:
            cells += [f"{_mean_range(result.paired_change(arm.label, lead), '{:+.1f}', 100)} %: "
                      f"{verdict(result.paired_change(arm.label, lead))}" for lead in leads]
        cells += [", ".join(str(r.best_step) for r in runs), f"{statistics.median(r.seconds for r in runs):.0f}"]
        lines.append(f"| {arm.label} | " + " | ".join(cells) + " |")
    first = result.runs[0]
    for name, values in first.baselines.items():
        lines.append(f"| {name} | " + " | ".join(f"{values[lead]:.3f}" for lead in leads) + " |"
                     + " |" * (len(leads) + 2))
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

Each modelling option against its reference on real data, 3 seeds each, a tiny model trained
without the held-out days and scored on them (`benchmarks/held_out.py`):

- the medium-range options on the ERA5 hourly 2 m temperature of the British Isles: trained
  on 1-21 March 2019 with the demo's config, scored on the held-out {TEST_PERIOD[0][:10]} ..
  {TEST_PERIOD[1][:10]} (the demo pipeline's protocol); RMSE in K;
- the air-pollution options on the GEMS total-column CO2 series, January 2006 (a stand-in for
  the species, said so in its section).

A section is written whole by `benchmarks/ablations.py --write`, with the date, machine and
command of the run that measured it. RMSE is latitude-weighted, over the whole grid.

An option "helps" at a lead only when its mean paired change is an improvement and every
seed improves; a mean change with seeds on both sides is reported as "no clear effect",
whatever its sign. One region or one week, and a tiny model: these figures say what the
options do here, not what they do for a global model at full size.

Not measured here: the wave model's coastal, distance-to-coast and depth inputs
(`model_inputs.coastal`, `model_inputs.shallow_water`). The real wave files shipped
(WAVEWATCH III significant height, ECMWF mean swell period) hold one time each: no series to
train on and verify. They are checked functionally only, by `tests/test_waves_coastal_inputs.py`
(the inputs on the real GFS-Wave grid, a short training run whose checkpoint forecasts, published
weights loading with the new inputs at zero and forecasting as before).
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
