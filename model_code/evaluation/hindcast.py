"""Hindcasts: forecasts from several initialisation times of real data, with the truth they verify against.

The windows come from the training loader (`data.windows.WindowDataset`), so a hindcast
cuts its inputs exactly as training and `auroraops forecast` do: the same grid crop, the
same levels, the same fills, the same data step (`timestep_hours`, e.g. 1 h on hourly
ERA5), the lagged inputs the model takes (`data.lags`). Variables filled in the inputs
(`fill_missing_dynamic`) have no truth and are left out of it, so they are reported as
exclusions instead of being scored against invented values.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Iterable, Sequence

import numpy as np
import xarray as xr
from aurora import Aurora

from model_code.data.ingest import FillMode
from model_code.data.lags import lags_of
from model_code.data.windows import WindowDataset
from model_code.errors import DataError
from model_code.evaluation.forecasts import on_forecast_points, stack_forecasts
from model_code.forecast import forecast
from model_code.variants import VariantSpec, get_variant, with_history, with_timestep


def _step(model: Aurora, timestep_hours: float | None) -> timedelta:
    """The data step: `timestep_hours` if given, which must be the model's own step."""
    own = getattr(model, "timestep", None)
    if timestep_hours is None:
        if own is None:
            raise DataError("the model has no timestep; pass timestep_hours")
        return own
    step = timedelta(hours=timestep_hours)
    if own is not None and own != step:
        raise DataError(f"timestep_hours={timestep_hours:g} but the model steps by {own / timedelta(hours=1):g} h; "
                        "a hindcast must step as the model was built (see variants.with_timestep)")
    return step


def hindcast(
    model: Aurora,
    spec: VariantSpec | str,
    paths: Sequence[str],
    *,
    steps: int,
    inits: Iterable | None = None,
    init_period: tuple | None = None,
    max_inits: int | None = None,
    fill_missing: FillMode | None = None,
    fill_missing_dynamic: FillMode | None = None,
    crop: bool = False,
    timestep_hours: float | None = None,
    history: int | None = None,
    levels: Sequence[float] | None = None,
    regrid_to: float | None = None,
    seed: int = 0,
    members: int = 1,
) -> tuple[xr.Dataset, xr.Dataset]:
    """`steps`-step forecasts of `model` from init times of `paths`, and the truth.

    - `inits`: initialisation times; by default every time with its full input history
      and all `steps` targets in the data (inside `init_period`, [start, end], when given),
      thinned evenly to `max_inits` when given.
    - `timestep_hours`: the data step (default the model's); it must equal the step the
      model was built with.
    - `fill_missing` / `fill_missing_dynamic` / `crop` / `levels` / `regrid_to`: as for
      the training loader.
    - `members`: ensemble members of a stochastic variant (member m seeded `seed + m`, the
      same at every initialisation), on a ``member`` dimension.

    Returns (forecasts in the (init_time, lead_time, ...) layout, truth with a ``time``
    axis holding every init and valid time, on the forecasts' grid).
    """
    if steps < 1:
        raise DataError(f"steps must be at least 1; got {steps}")
    spec = with_history(with_timestep(get_variant(spec) if isinstance(spec, str) else spec, _step(model, timestep_hours)),
                        getattr(model, "max_history_size", None))
    data = WindowDataset.from_files(
        paths, spec, regrid_to=regrid_to, validate=False, history=history, lead_steps=range(1, steps + 1),
        init_times=inits, levels=levels, fill_missing=fill_missing, fill_missing_dynamic=fill_missing_dynamic,
        crop=crop, seed=seed, lags=lags_of(model))
    if not len(data):
        raise DataError(f"no initialisation time of {list(map(str, paths))} has {data.history} input time(s) "
                        f"and {steps} target(s) {spec.timestep_hours} h apart")
    if inits is None and init_period is not None:
        start, end = (np.datetime64(t, "ns") for t in init_period)
        chosen = data.init_times[(data.init_times >= start) & (data.init_times <= end)]
        if not len(chosen):
            raise DataError(f"no initialisation time of {list(map(str, paths))} in {init_period[0]} .. "
                            f"{init_period[1]} has {data.history} input time(s) and {steps} target(s) "
                            f"{spec.timestep_hours} h apart in the data")
        data = data.subset(chosen)
    if inits is None and max_inits is not None and len(data) > max_inits:
        pick = np.unique(np.linspace(0, len(data) - 1, max_inits).round().astype(int))
        data = data.subset(data.init_times[pick])

    filled = {v.dataset_name for v in data.filled_dynamic}
    outputs = [v.dataset_name for v in spec.outputs() if v.dataset_name not in filled]
    forecasts, truths = [], []
    for i in range(len(data)):
        window = data.window(i)
        forecasts.append(forecast(model, spec, window, steps, attrs={"hindcast": "true"}, members=members,
                                  seed=seed))
        at_init = window[[v for v in outputs if v in window]].isel(time=[-1])
        truths += [at_init, data.targets(i)[outputs]]
    truth = xr.concat(truths, dim="time", data_vars="all", coords="minimal", compat="override", join="override")
    _, first = np.unique(truth["time"].values, return_index=True)
    truth = truth.isel(time=np.sort(first)).sortby("time")
    stacked = stack_forecasts(forecasts)
    # Aurora drops the last latitude row of a grid one row over a patch multiple: verify on its grid.
    truth = on_forecast_points(truth, stacked)[0].load()
    for v in outputs:
        truth[v].attrs = dict(forecasts[0][v].attrs)
    truth.attrs.update(source=", ".join(map(str, paths)), filled_not_scored=", ".join(sorted(filled)))
    return stacked, truth
