"""Lagged inputs: a surface variable H hours before each input time, as one more input of the model.

A pollutant's persistence and its daily cycle show in the field 24 or 48 h earlier, farther
back than the history window reaches at the air-pollution variant's 12 h step. Off by default
(the training config's `data.lags`). Each variable and lag is one more surface input at every
input time, `2t_lag24h` in a `Batch` and `t2m_lag24h` in a window, read from the same data and
normalised as its variable. They are inputs only: never targets, never scored. The model that
takes them (`lagged_class`) gives, in place of a prediction of each, the value the next input
time needs, taken from its own inputs, so a rollout moves the lags on exactly; where the inputs
do not hold that value (`rollout_problem`), only one step can be taken.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import warnings
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import torch
import xarray as xr

from model_code.errors import DataError
from model_code.variables import by_key, variable

if TYPE_CHECKING:
    from aurora import Aurora, Batch

    from model_code.data.ingest import Field

__all__ = ["Lags", "add_lags", "check_rollout", "lag_name", "lagged_class", "lagged_fields", "lags_of",
           "rollout_problem", "split_lags"]


def lag_name(name: str, hours: int) -> str:
    """`2t` lagged by 24 h is `2t_lag24h` (a dataset name, `t2m`, gives `t2m_lag24h`)."""
    return f"{name}_lag{hours}h"


@dataclasses.dataclass(frozen=True)
class Lags:
    """Which surface inputs are also given lagged, and by how much (YAML `data.lags`; off when empty).

    Every variable is lagged by every lag: `{hours: [24, 48], variables: [pm2p5, 2t]}` adds four inputs.
    """

    hours: tuple[int, ...] = ()
    """Lags in hours: positive whole multiples of the data's step, beyond the history window."""
    variables: tuple[str, ...] = ()
    """Surface inputs of the variant to lag (Aurora names, e.g. `pm2p5`, `2t`)."""

    @property
    def enabled(self) -> bool:
        return bool(self.hours or self.variables)

    @property
    def names(self) -> dict[str, tuple[str, int]]:
        """`{input name: (variable, hours)}`, e.g. `{"2t_lag24h": ("2t", 24)}`."""
        return {lag_name(v, h): (v, h) for v in self.variables for h in self.hours}

    @property
    def overrides(self) -> dict[str, dict[str, list]]:
        """The constructor argument that builds the model taking them (`lagged_class`); {} when off."""
        return {"lags": {"hours": list(self.hours), "variables": list(self.variables)}} if self.enabled else {}

    @classmethod
    def of(cls, argument: Mapping[str, Sequence]) -> Lags:
        """From the constructor argument `overrides` gives (as a checkpoint records it)."""
        return cls(tuple(int(h) for h in argument["hours"]), tuple(str(v) for v in argument["variables"]))


def _next_source(steps: int, lag_steps: Sequence[int], history: int) -> tuple[int, int] | None:
    """Where inputs of `history` times hold a variable `steps` - 1 steps before the newest time,
    the value a lag of `steps` steps takes at the next input time: `(lag, back)`, the input
    lagged by `lag` steps (0: the variable itself) at `back` times before the newest; None if none."""
    for lag in (0, *sorted(lag_steps)):
        if 0 <= steps - 1 - lag < history:
            return lag, steps - 1 - lag
    return None


def rollout_problem(lags: Lags, history: int, step_hours: int) -> str | None:
    """Why a rollout cannot go beyond one step with these lags and `history` input times
    `step_hours` apart, or None when it can go on for ever."""
    lag_steps = [h // step_hours for h in lags.hours]
    stuck = [h for h in sorted(lags.hours) if _next_source(h // step_hours, lag_steps, history) is None]
    if not stuck:
        return None
    needed = [h for h in range(history * step_hours, max(stuck), step_hours) if h not in lags.hours]
    return (f"the lag(s) of {', '.join(map(str, stuck))} h cannot be moved on from {history} input time(s) "
            f"{step_hours} h apart: the next input time needs the variable {step_hours} h less far back, which "
            f"no input holds; add lags of {', '.join(map(str, needed))} h to roll out further")


# ---- windows ------------------------------------------------------------------------------------


def lagged_fields(fields: Mapping[str, Field], lags: Lags) -> dict[str, Field]:
    """`{variable: field}` of the lagged variables; a variable the data lack is refused, since its
    lag would be invented (a filled input is filled at the input times only)."""
    keys = {name: variable("surface", name).dataset_name for name in lags.variables}
    absent = [f"{name} ({key})" for name, key in keys.items() if key not in fields]
    if absent:
        raise DataError(f"the data lack {', '.join(absent)}, lagged by data.lags; lag variables the files hold "
                        f"({', '.join(sorted(fields))})")
    return {name: fields[key] for name, key in keys.items()}


def add_lags(window: xr.Dataset, fields: Mapping[str, Field], lags: Lags) -> xr.Dataset:
    """`window` with its lagged inputs (time, latitude, longitude): at each input time t, the
    variable at t - H, read from `fields`, on the window's grid (the fields' own, or its first
    rows and columns where the window was cropped to the patch size)."""
    times = window.time.values.astype("datetime64[ns]")
    lat, lon = window.latitude.values, window.longitude.values
    lagged = {}
    for f in lagged_fields(fields, lags).values():
        v = f.var
        own_lat, own_lon = f.grid
        if not (np.array_equal(own_lat[:len(lat)], lat) and np.array_equal(own_lon[:len(lon)], lon)):
            raise DataError(f"{v.dataset_name} in {f.source} is not on the window's grid; regrid the files to one grid")
        for hours in lags.hours:
            key = lag_name(v.dataset_name, hours)
            try:
                da = f.values(time=times - np.timedelta64(hours, "h"))
            except KeyError as e:
                raise DataError(f"{key}: {e.args[0]} ({hours} h before an input time)") from None
            values = da.transpose("time", "latitude", "longitude").values[:, :len(lat), :len(lon)]
            lagged[key] = xr.Variable(("time", "latitude", "longitude"), values, {
                "units": v.units, "long_name": f"{v.long_name}, {hours} h earlier",
                "aurora_name": lag_name(v.name, hours), "lag_hours": hours})
    return window.assign(lagged)


def split_lags(window: xr.Dataset) -> tuple[xr.Dataset, dict[str, np.ndarray]]:
    """The window without its lagged inputs, and those as `{input name: (t, h, w) values}`.

    A lagged input is a window variable named `<dataset name>_lag<H>h` (`add_lags`); it must
    have the window's dims and finite values.
    """
    lagged, keys, problems = {}, [], []
    for key in window.data_vars:
        base, _, rest = str(key).rpartition("_lag")
        if not (base and rest.endswith("h") and rest[:-1].isdigit()):
            continue
        try:
            v = by_key(base)
        except KeyError:
            continue
        da = window[key]
        if da.dims != ("time", "latitude", "longitude"):
            problems.append(f"'{key}' has dims {da.dims}; a lagged input needs ('time', 'latitude', 'longitude')")
        elif not np.isfinite(da.values).all():
            problems.append(f"'{key}' has {int((~np.isfinite(da.values)).sum())} non-finite value(s); one NaN "
                            "input pixel turns Aurora's whole output field to NaN")
        lagged[lag_name(v.name, int(rest[:-1]))] = da.values
        keys.append(key)
    if problems:
        raise DataError(f"the window's lagged inputs cannot be used ({len(problems)} problem(s))", problems=problems)
    return window.drop_vars(keys), lagged


# ---- the model ----------------------------------------------------------------------------------


class LaggedInputs:
    """Mixed into a variant's Aurora class by `lagged_class`: the model takes the lagged inputs too.

    They join its surface variables (`surf_vars`) with their variable's normalisation
    (`surf_stats`), so it sees them on the same scale. Aurora's decoder gives an output for every
    surface input; for a lagged one, that output is replaced by the value the input takes at the
    next input time, from the inputs (NaN where they do not hold it), so `aurora.rollout` and
    `forecast.forecast_steps` move the lags on as they move the history. Published weights load
    with the new embeddings at zero: the model starts out forecasting as the published one.
    """

    def __init__(self, *, lags: Mapping[str, Sequence], surf_vars: Sequence[str] | None = None,
                 surf_stats: Mapping[str, tuple[float, float]] | None = None, **kw_args: Any) -> None:
        from aurora.normalisation import locations, scales

        lagged = Lags.of(lags)
        step = kw_args.get("timestep", _default(type(self), "timestep")).total_seconds() / 3600
        if not lagged.hours or any(h <= 0 or h % step for h in lagged.hours):
            raise DataError(f"lags must be positive whole multiples of the model's {step:g} h step; got {lagged.hours}")
        own = tuple(surf_vars if surf_vars is not None else _default(type(self), "surf_vars"))
        stats = dict(surf_stats or {})
        for name, (var, _) in lagged.names.items():
            stats[name] = stats[var] if var in stats else (locations[var], scales[var])
        with warnings.catch_warnings():
            if not surf_stats:  # Aurora warns of given statistics; the lags' are their variables' own
                warnings.filterwarnings("ignore", "The normalisation statics", UserWarning)
            super().__init__(surf_vars=own + tuple(lagged.names), surf_stats=stats, **kw_args)
        self.lags = lagged

    def batch_transform_hook(self, batch: Batch) -> Batch:
        missing = [name for name in self.lags.names if name not in batch.surf_vars]
        if missing:
            raise DataError(f"the model takes lagged inputs the batch lacks: {', '.join(missing)} "
                            "(a window gets them from `lags.add_lags`)")
        return super().batch_transform_hook(batch)

    def _post_decoder_hook(self, batch: Batch, pred: Batch) -> Batch:
        """Each lagged input's value at the next input time in place of the decoder's output (both
        normalised here, with the same statistics)."""
        pred = super()._post_decoder_hook(batch, pred)
        history = next(iter(batch.surf_vars.values())).shape[1]
        step = int(self.timestep.total_seconds() // 3600)
        lag_steps = [h // step for h in self.lags.hours]
        moved = {}
        for name, (var, hours) in self.lags.names.items():
            like = pred.surf_vars[name]  # (b, 1, h, w)
            source = _next_source(hours // step, lag_steps, history)
            if source is None:
                moved[name] = torch.full_like(like, float("nan"))
                continue
            lag, back = source
            held = batch.surf_vars[var if lag == 0 else lag_name(var, lag * step)]  # (b, t, h, w)
            moved[name] = held[:, history - 1 - back][:, None].to(like.dtype)
        return dataclasses.replace(pred, surf_vars={**pred.surf_vars, **moved})

    def _adapt_checkpoint(self, d: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Published weights know no lagged input: its embedding starts at zero, adding nothing to
        the encoding; its decoder head keeps its initial weights (its output is replaced)."""
        d = super()._adapt_checkpoint(d)
        like = d["encoder.surf_token_embeds.weights.2t"]
        for name in self.lags.names:
            d.setdefault(f"encoder.surf_token_embeds.weights.{name}", torch.zeros_like(like))
            for key, value in self.decoder.surf_heads[name].state_dict().items():
                d.setdefault(f"decoder.surf_heads.{name}.{key}", value)
        return d


def _default(cls: type, name: str) -> Any:
    """The default of constructor argument `name` from the nearest class of `cls` that declares one."""
    return next(p.default for klass in cls.__mro__
                if "__init__" in vars(klass) and not issubclass(klass, LaggedInputs)
                if (p := inspect.signature(klass.__init__).parameters.get(name)) is not None
                and p.default is not p.empty)


@functools.cache
def lagged_class(cls: type[Aurora]) -> type[Aurora]:
    """`cls` taking lagged inputs too: the class `variants.build_model` builds given `lags`."""
    return type(f"Lagged{cls.__name__}", (LaggedInputs, cls), {"__module__": __name__})


def lags_of(model: Aurora) -> Lags | None:
    """The lagged inputs `model` takes; None for a model without."""
    return model.lags if isinstance(model, LaggedInputs) else None


def check_rollout(model: Aurora, steps: int, history: int) -> None:
    """Refuse a rollout of `steps` from `history` input times that the model's lags cannot be moved on through."""
    lags = lags_of(model)
    if lags is None or steps <= 1:
        return
    problem = rollout_problem(lags, history, int(model.timestep.total_seconds() // 3600))
    if problem is not None:
        raise DataError(f"a rollout of {steps} steps: {problem}")
