"""Train on a real series without its held-out days and score there, as the demo pipeline does.

The experiments that judge skill (the compression benchmark's teachers, the ablations) share
this protocol, so their figures compare. A `Protocol` names the series, its variant, the
held-out days and the variable scored:

- `MARCH_T2M`, the demo's: ERA5 hourly 2 m temperature over the British Isles; the pipeline's
  prepare step removes the held-out days 22-31 March before training (1-16 March trains,
  17-21 validates, the demo's config);
- `GEMS_TCCO2`: the real GEMS total-column CO2 series (31 six-hourly global times, January
  2006), a column-composition stand-in for the air-pollution variant's species, given to it
  in the slot of its total-column CO (`tcco`, see `gems_series`); 1-4 January trains, 5-6
  January validate (+12 h), 7-8 January are held out.

A checkpoint is scored by `score_checkpoint` on every initialisation of the held-out days
(thinned evenly to `max_inits`) against persistence and the climatology of the days before
them: latitude-weighted RMSE over the whole grid.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from model_code.training.schema import set_dotted
from pipelines.demo import CONFIG, DATA, SAMPLES, TEST_PERIOD, held_out_rmse

MARCH = SAMPLES / DATA
GEMS = SAMPLES / "gems_tcco2_1p125deg_6hourly.nc"
GEMS_RESOLUTION = 4.5
"""Degrees: the 1.125° series coarsened conservatively (40x80), a grid the tiny model trains on in
about a minute on 2 CPU cores."""
GEMS_BACKGROUND = 370.0
"""Below every value of the series (374-402, labelled kg m-2 in the file but of the magnitude of a
column-mean mixing ratio in ppm): the stand-in is the column's excess over it, which, like a pollutant,
varies by a factor of several across the globe (4-32) rather than by a few per cent (374-402)."""
GEMS_SCALE = 1e-5
"""The excess times this sits in the range of total-column CO (kg m-2); scores are given back in file
units (the same for the excess and the whole column)."""


@dataclass(frozen=True)
class Protocol:
    name: str
    variant: str
    variable: str
    """Dataset name of the variable scored."""
    units: str
    test_period: tuple[str, str]
    leads: tuple[int, ...]
    eval_steps: int
    config: Mapping[str, Any]
    source: Callable[[Path], Path]
    """Writes (or names) the whole series under a work directory."""
    score_scale: float = 1.0
    """Scores are divided by this: back to the units of the file shipped."""
    weights: str = "best"
    """The weights scored: `best` validated, or `last` (every arm after the same number of steps)."""

    def checkpoint(self, trained) -> str:
        """The checkpoint of a training result that this protocol scores."""
        return trained.best_checkpoint if self.weights == "best" else trained.last_checkpoint


def gems_series(out: Path) -> Path:
    """The GEMS tcco2 series as the air-pollution variant's `tcco`: coarsened conservatively to
    `GEMS_RESOLUTION`, its excess over `GEMS_BACKGROUND` times `GEMS_SCALE`; every other input of the
    variant is filled at its mean (no meteorology: the model sees the column alone)."""
    import numpy as np
    import xarray as xr

    from model_code.data.grid import regrid_to_grid
    from model_code.data.writers import write_dataset

    path = out / "gems_tcco_stand_in.nc"
    if path.is_file():
        return path
    with xr.open_dataset(GEMS) as ds:
        co2 = ds["tcco2"].astype("float64").load()
    res = GEMS_RESOLUTION
    coarse = regrid_to_grid(co2, np.arange(90 - res / 2, -90, -res), np.arange(res / 2, 360, res),
                            method="conservative", step=res)
    tcco = ((coarse - GEMS_BACKGROUND) * GEMS_SCALE).astype("float32")
    tcco.attrs = {"units": "kg m-2", "long_name": "Total column carbon monoxide (stand-in: GEMS total-column "
                  f"CO2 above {GEMS_BACKGROUND:g}, x {GEMS_SCALE:g}, {res:g} degrees)"}
    out.mkdir(parents=True, exist_ok=True)
    write_dataset(xr.Dataset({"tcco": tcco}), str(path))
    return path


MARCH_T2M = Protocol("march-t2m", "medium-range", "t2m", "K", (TEST_PERIOD[0], TEST_PERIOD[1]), (6, 12, 24),
                     4, CONFIG, lambda out: MARCH)

GEMS_CONFIG = {
    "profile": "tiny",
    "head_init": "zero",
    "model": {"drop_rate": 0.1},
    "data": {"val_period": ["2006-01-05T00:00", "2006-01-06T23:00"], "crop": True, "fill_missing": "mean",
             "fill_missing_dynamic": "mean", "levels": [500, 850], "batch_size": 4, "normalisation": "training"},
    "optim": {"lr": 3e-4, "weight_decay": 0.1},
    "schedule": {"warmup_steps": 10},
    "rollout": {"curriculum": [[0, 1], [40, 2]]},
    "early_stopping": {"lead_steps": [1]},
    "train": {"max_steps": 100, "val_every": 10, "device": "cpu"},
}
"""The demo's recipe at the air-pollution variant's 12 h step: two input times, heads starting at
zero, the data's own normalisation, absent inputs at Aurora's means, the best validated weights kept."""

GEMS_TCCO2 = Protocol("gems-tcco2", "air-pollution", "tcco", "file units", ("2006-01-07T00:00", "2006-01-08T18:00"),
                      (12, 24), 2, GEMS_CONFIG, gems_series, score_scale=GEMS_SCALE, weights="last")
"""Scored with the last weights: no step of any run beats persistence in validation, so the best
validated weights are the starting ones (a forecast of no change) in every arm, and would hide what
the options do to what is learned."""


@dataclass(frozen=True)
class Series:
    protocol: Protocol
    whole: str
    """The whole series: what the held-out days are scored on."""
    train: str
    """Without the held-out days, as the pipeline's prepare step writes it."""


def series(out: Path, protocol: Protocol = MARCH_T2M) -> Series:
    """The protocol's series under `out`, whole and without its held-out days."""
    from components.steps import TRAIN_DATA, prepare_series

    whole = protocol.source(out)
    prepare_series([str(whole)], out / "train", test_period=protocol.test_period)
    return Series(protocol, str(whole), str(out / "train" / TRAIN_DATA))


def config(data: Series, out: Path, seed: int, overrides: Mapping[str, Any] | None = None) -> dict:
    """The protocol's training config on the training series, seeded, writing under `out`, with dotted overrides."""
    cfg = copy.deepcopy(dict(data.protocol.config))
    cfg["variant"] = data.protocol.variant
    cfg["data"]["paths"] = [data.train]
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


def score(checkpoint: str, data: Series, max_inits: int, out: Path) -> tuple[dict[str, dict[float, float]], int]:
    """`{forecast: {lead: RMSE}}` of the protocol's variable over the whole grid on the held-out days
    (in the units of the file shipped), and the inits scored."""
    from model_code.evaluation.continuous import HindcastConfig, score_checkpoint

    p = data.protocol
    scores = score_checkpoint(HindcastConfig(
        checkpoint=checkpoint, data=(data.whole,), steps=p.eval_steps, variant=p.variant, max_inits=max_inits,
        init_period=p.test_period, fill_missing="mean", fill_missing_dynamic="mean", crop=True,
        levels=(500, 850))).scores
    scores.to_json(str(out))
    rmse = {f: {lead: value / p.score_scale for lead, value in by_lead.items()}
            for f, by_lead in held_out_rmse(out, p.variable).items()}
    return rmse, int((scores.subject.get("inits") or {}).get("count", 0))
