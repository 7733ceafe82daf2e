"""Train on the real March 2019 series and score on its held-out days, as the demo pipeline does.

The experiments that judge skill (the compression benchmark's teachers, the ablations) share
this one protocol, so their figures compare: the series is the demo's (ERA5 hourly 2 m
temperature over the British Isles), the pipeline's augment step removes the held-out days
22-31 March before training (1-16 March trains, 17-21 validates, the demo's config), and a
checkpoint is scored by `score_checkpoint` on every hourly initialisation of the held-out
days (thinned evenly to `max_inits`) against persistence and the hour-of-day climatology of
the days before them: latitude-weighted RMSE of 2 m temperature over the whole grid.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Mapping

from model_code.training.schema import set_dotted
from pipelines.demo import CONFIG, DATA, SAMPLES, TEST_PERIOD, held_out_rmse

MARCH = SAMPLES / DATA
VARIANT = "medium-range"
LEADS = (6, 12, 24)
EVAL_STEPS = 4
"""Model steps of 6 h scored: +24 h at most."""


def training_series(out: Path) -> str:
    """The March series without the held-out days, as the pipeline's augment step writes it."""
    from components.steps import TRAIN_DATA, augment_data

    augment_data([str(MARCH)], out, test_period=TEST_PERIOD)
    return str(out / TRAIN_DATA)


def demo_config(series: str, out: Path, seed: int, overrides: Mapping[str, Any] | None = None) -> dict:
    """The demo's training config on `series`, seeded, writing under `out`, with dotted overrides."""
    cfg = copy.deepcopy(CONFIG)
    cfg["variant"] = VARIANT
    cfg["data"]["paths"] = [series]
    cfg["train"].update(seed=seed, progress=False)
    cfg["checkpoint"] = {"out_dir": str(out), "keep_top_k": 0}
    for key, value in (overrides or {}).items():
        set_dotted(cfg, key, value)
    return cfg


def train(cfg: dict):
    """Train from a plain config; the result must hold a validated checkpoint."""
    from model_code.training.config import config_from_dict
    from model_code.training.trainer import train as run

    result = run(config_from_dict(cfg))
    if result.best_checkpoint is None:
        raise RuntimeError(f"the run under {cfg['checkpoint']['out_dir']} wrote no validated checkpoint "
                           f"({result.stop_reason})")
    return result


def score(checkpoint: str, max_inits: int, out: Path) -> tuple[dict[str, dict[float, float]], int]:
    """`{forecast: {lead: RMSE}}` of t2m over the whole grid on the held-out days, and the inits scored."""
    from model_code.evaluation.continuous import HindcastConfig, score_checkpoint

    scores = score_checkpoint(HindcastConfig(
        checkpoint=checkpoint, data=(str(MARCH),), steps=EVAL_STEPS, variant=VARIANT, max_inits=max_inits,
        init_period=tuple(TEST_PERIOD), fill_missing="mean", fill_missing_dynamic="mean", crop=True,
        levels=(500, 850))).scores
    scores.to_json(str(out))
    return held_out_rmse(out), int((scores.subject.get("inits") or {}).get("count", 0))
