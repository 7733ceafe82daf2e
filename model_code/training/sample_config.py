"""How the training samples are varied and drawn, and what the model derives from them.

The config sections behind `data.augment` (per-sample augmentation), `data.extreme_sampling`
(drawing extreme windows more often) and `model_inputs` (the wave model's coastal and
shallow-water inputs), with the checks of those and of `data.lags`, `data.deseasonalise` and
`data.emissions` that need only the config; `training.data.open_data` checks the rest against the files' coordinates,
before any value is read. All are off by default.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from model_code.data.augment import FROM_DIRECTIONS, WIND_PAIRS
from model_code.data.emissions import ACCEPTED_UNITS, flux_units
from model_code.data.lags import rollout_problem
from model_code.data.preprocess.climatology import GROUPINGS
from model_code.training.loss_config import kept_non_negative
from model_code.training.schema import check
from model_code.variables import VARIABLES
from model_code.variants import MODEL_INPUTS

if TYPE_CHECKING:
    from model_code.training.config import TrainConfig

__all__ = ["AugmentConfig", "ExtremeSamplingConfig", "ModelInputsConfig", "patch_size", "validate_augment",
           "validate_deseasonalise", "validate_emissions", "validate_extreme_sampling", "validate_lags",
           "validate_model_inputs"]


@dataclass(frozen=True)
class AugmentConfig:
    """Per-sample augmentation of the training samples (YAML `data.augment`; all off by default).

    Validation samples are never augmented. Draws follow from (train.seed, epoch, init times),
    so a resumed run sees the same samples. The roll, the crop and the rotation change inputs
    and targets together and draw once per batch (a batch shares one grid and one set of
    statics); the noise changes the inputs only and draws per sample.
    """

    noise_scale: float = 0.0
    """Gaussian noise on the inputs, never the targets: standard deviation this fraction of
    each field's own, clipped to the variable's physical bounds; 0: none."""
    noise_variables: tuple[str, ...] | None = None
    """Time-dependent inputs (Aurora names) that get the noise; default all but directions."""
    wind_rotation_deg: float = 0.0
    """Rotate every wind vector and wave direction by one angle from [-x, x] degrees; 0: none."""
    longitude_roll_deg: float = 0.0
    """Move the planet, statics included, east or west by up to x degrees (180: anywhere);
    global grids only; 0: none."""
    random_crop: tuple[int, int] | None = None
    """[height, width] of a sub-grid placed at random; it must fit the patch size."""


@dataclass(frozen=True)
class ExtremeSamplingConfig:
    """Draw training samples holding extreme values more often (YAML `data.extreme_sampling`;
    off without a variable). An epoch is then as many draws, with replacement, as samples."""

    variable: str | None = None
    """A surface variable the variant predicts and the data hold (Aurora name, e.g. `2t`)."""
    quantile: float | None = None
    """A sample is extreme when its peak lies above this quantile of all training samples' peaks."""
    threshold: float | None = None
    """... or above this value, in the variable's units (give one of quantile and threshold)."""
    factor: float = 4.0
    """An extreme sample is drawn this many times as often as another."""
    below: bool = False
    """Look for low extremes (cold spells, deep lows): the lowest value is the peak."""

    @property
    def enabled(self) -> bool:
        return self.variable is not None


@dataclass(frozen=True)
class ModelInputsConfig:
    """Inputs the wave model derives from its own data (YAML section `model_inputs`, definitions
    in model_code/data/coastal.py); all off: the published architecture."""

    coastal: bool = False
    """The coastline (0/1) and the great-circle distance to it (km) as two more statics, from `wmb`."""
    shallow_water: bool = False
    """tanh(k d) of the depth `wmb` and the wind sea's peak wavenumber k from the wind speed, one
    more input at every input time: where the depth limits the waves the wind raises."""

    @property
    def asked(self) -> tuple[str, ...]:
        return tuple(name for name in MODEL_INPUTS if getattr(self, name))

    @property
    def overrides(self) -> dict[str, bool]:
        """The constructor arguments that build the model taking them (`variants.MODEL_INPUTS`)."""
        return {MODEL_INPUTS[name]: True for name in self.asked}


def patch_size(cfg: TrainConfig) -> int:
    """The patch size of the model the run builds: `model.patch_size`, else the variant's."""
    return cfg.model.get("patch_size", cfg.spec.patch_size)


def validate_augment(cfg: TrainConfig) -> None:
    """`data.augment`; whether the grid allows a longitude roll or a crop is checked once the
    files' coordinates are known (`training.data.open_data`)."""
    a, spec = cfg.data.augment, cfg.spec
    check(math.isfinite(a.noise_scale) and a.noise_scale >= 0, "data.augment.noise_scale",
          f"must be a fraction of each field's standard deviation >= 0 (0: no noise); got {a.noise_scale}")
    if a.noise_variables is not None:
        dynamic = {v.name: v for v in spec.inputs() if v.kind != "static"}
        usable = [n for n, v in dynamic.items() if v.dataset_name not in FROM_DIRECTIONS]
        check(len(a.noise_variables) > 0, "data.augment.noise_variables",
              "name at least one variable, or leave the key out for all of them")
        for name in a.noise_variables:
            check(name in dynamic and dynamic[name].dataset_name not in FROM_DIRECTIONS,
                  "data.augment.noise_variables",
                  f"'{name}' is not a time-dependent input of the {spec.name} variant that takes noise "
                  f"(directions and statics do not); use some of {', '.join(usable)}")
    for key, value in (("wind_rotation_deg", a.wind_rotation_deg), ("longitude_roll_deg", a.longitude_roll_deg)):
        check(0 <= value <= 180, f"data.augment.{key}", f"must lie in [0, 180] degrees (0: off); got {value}")
    if a.random_crop is not None:  # the model crops to its patch size, the targets to the variant's
        h, w = a.random_crop
        sizes = sorted({patch_size(cfg), spec.patch_size})
        rows = {h - 1 if h % p == 1 else h for p in sizes}
        check(all(h >= p and w >= p and w % p == 0 and h % p <= 1 for p in sizes) and len(rows) == 1,
              "data.augment.random_crop",
              f"[height, width] must fit the patch size {' and '.join(map(str, sizes))}: width a multiple, "
              f"height a multiple or one row over (the same for each); got {list(a.random_crop)}")


def validate_extreme_sampling(cfg: TrainConfig) -> None:
    """`data.extreme_sampling`; whether the data hold the variable is checked once the files
    are open (`training.data.open_data`)."""
    es, spec = cfg.data.extreme_sampling, cfg.spec
    if not es.enabled:
        check(es.quantile is None and es.threshold is None, "data.extreme_sampling.variable",
              "name the variable whose extremes are drawn more often")
        return
    check(es.variable in spec.output_surf_vars, "data.extreme_sampling.variable",
          f"the {spec.name} variant predicts no surface variable '{es.variable}'; it predicts "
          f"{', '.join(spec.output_surf_vars)}")
    check((es.quantile is None) != (es.threshold is None), "data.extreme_sampling.threshold",
          f"give one of quantile and threshold; got quantile {es.quantile}, threshold {es.threshold}")
    check(es.quantile is None or 0 <= es.quantile < 1, "data.extreme_sampling.quantile",
          f"must lie in [0, 1) (0.9: the top tenth of samples is extreme); got {es.quantile}")
    check(es.threshold is None or math.isfinite(es.threshold), "data.extreme_sampling.threshold",
          f"must be a finite number in the variable's units; got {es.threshold}")
    check(math.isfinite(es.factor) and es.factor >= 1, "data.extreme_sampling.factor",
          f"must be a finite number >= 1 (how many times as often an extreme sample is drawn); got {es.factor}")


def validate_lags(cfg: TrainConfig) -> None:
    """`data.lags`; whether the data hold the lagged variables and times is checked from the
    files' coordinates (`training.data.open_data`)."""
    lags, spec = cfg.data.lags, cfg.spec
    if not lags.enabled:
        return
    step, history = spec.timestep_hours, cfg.data.history or spec.max_history
    check(len(lags.hours) > 0 and len(set(lags.hours)) == len(lags.hours), "data.lags.hours",
          f"give each lag once, in hours, e.g. [24, 48]; got {list(lags.hours)}")
    for hours in lags.hours:
        check(hours >= 1 and hours % step == 0, "data.lags.hours",
              f"lags must be positive whole multiples of the data's {step} h step; got {hours}")
        check(hours >= history * step, "data.lags.hours",
              f"{hours} h back is already an input time: the {history} input time(s) reach back "
              f"{(history - 1) * step} h, so lags start at {history * step} h")
    usable = {v.name: v for v in spec.inputs() if v.kind == "surface" and not v.computed and not v.nan_by_design}
    check(len(lags.variables) > 0 and len(set(lags.variables)) == len(lags.variables), "data.lags.variables",
          f"name each surface input to lag once (Aurora names, e.g. [pm2p5, 2t]); got {list(lags.variables)}")
    for name in lags.variables:
        check(name in usable, "data.lags.variables",
              f"'{name}' is not a surface input of the {spec.name} variant that can be lagged (computed fields and "
              f"those NaN by design cannot); use some of {', '.join(usable)}")
    winds = {key for pair in WIND_PAIRS for key in pair}
    check(not cfg.data.augment.wind_rotation_deg or not any(usable[n].dataset_name in winds for n in lags.variables),
          "data.lags.variables", "data.augment.wind_rotation_deg turns the winds but not their lags; lag no wind "
          "component, or rotate none")
    check(not cfg.distil.enabled, "data.lags",
          "the teacher (distil.teacher) takes no lagged inputs; distil without lags")
    longest = max(cfg.rollout.longest, *cfg.early_stopping.lead_steps)
    problem = rollout_problem(lags, history, step)
    check(problem is None or longest == 1, "data.lags.hours",
          f"rollouts of {longest} steps (rollout.curriculum, early_stopping.lead_steps): {problem}")


def validate_deseasonalise(cfg: TrainConfig) -> None:
    """`data.deseasonalise`; whether the data hold the variables, and the training period every
    calendar group that validation reads, is checked from the files' coordinates
    (`training.data.open_data`)."""
    d, spec = cfg.data, cfg.spec
    des = d.deseasonalise
    if not des.enabled:
        return
    by = des.groupings
    check(len(by) > 0 and len(set(by)) == len(by) and all(b in GROUPINGS for b in by), "data.deseasonalise.by",
          f"must be one of {', '.join(GROUPINGS)} (hour: of day, UTC), or a list of distinct ones; got {des.by!r}")
    # Anomalies must be able to go below zero and need no special handling: not clamped, not directions.
    positive = set(kept_non_negative(spec, cfg.model))
    inputs = {v.name: v for v in spec.inputs() if v.kind == "surface"}
    usable = [n for n in spec.output_surf_vars if n in inputs and not inputs[n].computed
              and not inputs[n].nan_by_design and inputs[n].dataset_name not in FROM_DIRECTIONS and n not in positive]
    check(len(set(des.variables)) == len(des.variables), "data.deseasonalise.variables",
          f"name each variable once; got {list(des.variables)}")
    for name in des.variables:
        check(name in usable, "data.deseasonalise.variables",
              f"'{name}' is not a surface variable the {spec.name} variant both takes and predicts that can be "
              f"de-seasonalised (computed fields, directions, those NaN by design or kept non-negative cannot); "
              f"use some of {', '.join(usable)}")
    check(d.normalisation == "training", "data.normalisation",
          "data.deseasonalise needs training: the anomalies are normalised by their own statistics over the "
          f"training period, where Aurora's describe the whole fields; got {d.normalisation!r}")
    check(not d.augment.longitude_roll_deg, "data.deseasonalise",
          "data.augment.longitude_roll_deg moves the weather but not the climatology subtracted from it; "
          "de-seasonalise without the roll")
    winds = {key for pair in WIND_PAIRS for key in pair}
    check(not d.augment.wind_rotation_deg or not any(inputs[n].dataset_name in winds for n in des.variables),
          "data.deseasonalise.variables", "data.augment.wind_rotation_deg turns the winds but not their "
          "climatology; de-seasonalise no wind component, or rotate none")


def validate_model_inputs(cfg: TrainConfig) -> None:
    """`model_inputs`; whether the data hold a real `wmb` is checked once the files are open."""
    spec = cfg.spec
    for name in cfg.model_inputs.asked:
        check(spec.class_name == "AuroraWave", f"model_inputs.{name}",
              f"only the wave variant takes it (derived from its bathymetry wmb and wind); got variant {spec.name}")


def validate_emissions(cfg: TrainConfig) -> None:
    """`data.emissions`; the files themselves (variable, units, grid, values) are read and checked
    when the data are opened (`training.data.open_data`), before any model is built."""
    spec, inventories = cfg.spec, cfg.data.emissions
    if not inventories:
        return
    check(spec.class_name == "AuroraAirPollution", "data.emissions",
          f"only the air-pollution variant takes emission inventories; got variant {spec.name}")
    taken = {v.name for v in VARIABLES} | {v.dataset_name for v in VARIABLES}
    seen: set[str] = set()
    for i, inv in enumerate(inventories):
        at = f"data.emissions[{i}]"
        check(inv.path.strip() != "", f"{at}.path", "give the inventory's NetCDF or GRIB file (path or s3://)")
        check(inv.variable.strip() != "", f"{at}.variable", f"give the flux variable's name in {inv.path}")
        check((inv.species is None) != (inv.name is None), f"{at}.species",
              "give one of species (ammonia, co, nox, so2: the variant's emission statics) and name (a new "
              f"static input); got species {inv.species!r}, name {inv.name!r}")
        if inv.name is not None:
            check(re.fullmatch(r"[a-z][a-z0-9_]*", inv.name) is not None and inv.name not in taken, f"{at}.name",
                  "a new static input needs a new name of lower-case letters, digits and '_' (no variable the "
                  f"catalogue knows); got {inv.name!r}")
            check(not cfg.distil.enabled, f"{at}.name",
                  "the teacher (distil.teacher) takes no new static input; distil with species inventories only")
        target = f"species {inv.species}" if inv.species is not None else f"name {inv.name}"
        check(target not in seen, f"{at}.{target.split()[0]}", f"{target} is given by two inventories")
        seen.add(target)
        check(inv.units is None or flux_units(inv.units) is not None, f"{at}.units",
              f"{inv.units!r} is not an emission flux; accepted: {ACCEPTED_UNITS}")
        check(inv.molar_mass is None or (math.isfinite(inv.molar_mass) and inv.molar_mass > 0), f"{at}.molar_mass",
              f"must be a molar mass in g mol-1 > 0; got {inv.molar_mass}")
        amount = flux_units(inv.units)[0] if inv.units is not None else None
        check(amount not in ("mol", "molec", "molecules") or inv.molar_mass is not None or inv.species is not None,
              f"{at}.molar_mass", f"units {inv.units!r} count {amount}: a new static input needs its molar mass "
              "(g mol-1) to convert them to kg")
