"""Local tuning: an Optuna study over the search space, pruning on intermediate validation scores.

Each trial trains the base config with the trial's values as overrides; a callback reports
every validation's score (`tuning_score`: the unweighted mean of the per-variable losses,
which the searched loss weights cannot move) to Optuna, which stops trials scoring worse than
the median of the earlier trials at the same step. A trial's value is its best score. The
study is seeded (TPE sampler), so the same config, data and seed suggest the same values.
Katib runs the same search on a cluster (`adapters.katib`).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import optuna

from model_code.errors import DataError
from model_code.storage import write_atomic
from model_code.training import Callback, TrainConfig, TrainingDiverged, save_config, train, with_overrides
from model_code.training.losses import NonFiniteLoss
from model_code.training.search_space import OBJECTIVE, Param, config_space, suggest, to_overrides, tuning_score


class PruneOnValidation(Callback):
    """Reports each validation's score to the trial, keeps the best, and stops the run when
    Optuna says prune (by raising `optuna.TrialPruned`, which `train` lets through)."""

    def __init__(self, trial: optuna.Trial) -> None:
        self.trial = trial
        self.best = math.inf

    def on_validation_end(self, trainer, step: int, metrics: dict[str, float]) -> None:
        value = metrics[OBJECTIVE] if OBJECTIVE in metrics else tuning_score(metrics, trainer.spec)
        if not math.isfinite(value):
            raise optuna.TrialPruned(f"{OBJECTIVE} is {value} at step {step}")
        self.best = min(self.best, value)
        self.trial.report(value, step)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"{OBJECTIVE} {value:.4g} at step {step} is worse than the median")


@dataclass(frozen=True)
class TuneResult:
    """The best trial and a record of every trial."""

    best_params: dict[str, Any]
    """Values by search-parameter name, e.g. {"lr": 0.00031, "lora": "full"}; a window size as
    its text, "[2,6,12]"."""
    best_overrides: dict[str, Any]
    """The same as config overrides, e.g. {"optim.lr": 0.00031, "optim.lora": "full"}."""
    best_value: float
    best_trial: int
    trials: list[dict[str, Any]]
    out_dir: str

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, default=str)


def tune(
    base: TrainConfig,
    n_trials: int,
    *,
    out_dir: str | Path,
    seed: int = 0,
    space: Sequence[Param] | None = None,
    timeout_s: float | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
) -> TuneResult:
    """Run `n_trials` trainings of `base` with values from `space` (default: `config_space(base)`);
    write the results to `out_dir`.

    `out_dir` receives one checkpoint directory per trial (`trial-000`, ...), `trials.json`,
    `best.json` and `best_config.yaml` (the base config with the best values, ready for
    `auroraops train --config`). A trial whose loss turns NaN/inf fails without ending the study.
    """
    if n_trials < 1:
        raise DataError(f"the number of trials must be >= 1, got {n_trials}")
    out = Path(out_dir)
    space = tuple(space if space is not None else config_space(base))
    study = optuna.create_study(
        direction="minimize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        # Compare from the first validation after training starts, not the starting weights.
        pruner=pruner or optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
        study_name=f"aurora-{base.variant}",
    )

    def objective(trial: optuna.Trial) -> float:
        overrides = to_overrides(suggest(trial, space), space)
        overrides["checkpoint.out_dir"] = str(out / f"trial-{trial.number:03d}")
        reporter = PruneOnValidation(trial)
        train(with_overrides(base, overrides), callbacks=[reporter])
        return reporter.best

    study.optimize(objective, n_trials=n_trials, timeout=timeout_s,
                   catch=(TrainingDiverged, NonFiniteLoss), gc_after_trial=True)
    trials = [_record(t) for t in study.trials]
    write_atomic(out / "trials.json", lambda p: Path(p).write_text(json.dumps(trials, indent=2) + "\n"))
    if not any(t["state"] == "COMPLETE" for t in trials):
        raise DataError("no trial finished: " + "; ".join(f"trial {t['number']} {t['state']}" for t in trials)
                        + f" (details: {out / 'trials.json'})")
    best = study.best_trial
    result = TuneResult(best_params=dict(best.params), best_overrides=to_overrides(best.params, space),
                        best_value=best.value, best_trial=best.number, trials=trials, out_dir=str(out))
    write_atomic(out / "best.json", lambda p: Path(p).write_text(result.to_json() + "\n"))
    save_config(with_overrides(base, result.best_overrides), out / "best_config.yaml")
    return result


def _record(t: optuna.trial.FrozenTrial) -> dict[str, Any]:
    steps = sorted(t.intermediate_values)
    return {
        "number": t.number,
        "state": t.state.name,
        "value": t.value,
        "params": dict(t.params),
        "validations": {str(s): t.intermediate_values[s] for s in steps},
        "seconds": t.duration.total_seconds() if t.duration else None,
    }
