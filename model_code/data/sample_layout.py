"""Which times and pressure levels a sample spans, settled before any value is read.

A sample reads `history` input times and targets at `lead_steps`; an initialisation time
can start one only when all of those times are shared by every time-dependent variable,
and a level is usable only when every atmospheric variable has it and the variant has its
normalisation statistics. The window dataset and the splits by time both reason about these.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np

from model_code.data.ingest import Field
from model_code.errors import DataError
from model_code.variants import VariantSpec

__all__ = ["common_times"]


def _as_time(t) -> np.datetime64:
    return np.datetime64(t, "ns")


def _show(t: np.datetime64) -> str:
    return str(t)[:16]


def _hours(k: int, step: np.timedelta64) -> str:
    return f"{k * step / np.timedelta64(1, 'h'):+g} h"


def common_times(fields: Mapping[str, Field], spec: VariantSpec) -> np.ndarray:
    """Valid times shared by every time-dependent variable of `spec` present in `fields`."""
    keys = {v.dataset_name for v in (*spec.inputs(), *spec.outputs()) if v.kind != "static"}
    return _common_times(f for k, f in fields.items() if k in keys)


def _checked_history(history: int | None, spec: VariantSpec) -> int:
    history = spec.max_history if history is None else history
    if isinstance(history, bool) or not isinstance(history, (int, np.integer)) or not (
            spec.min_history <= history <= spec.max_history):
        raise DataError(f"history of {history!r} step(s); the {spec.name} variant takes "
                        f"{spec.min_history} to {spec.max_history}")
    return int(history)


def _checked_lead_steps(lead_steps: Sequence[int]) -> tuple[int, ...]:
    steps = tuple(lead_steps) if not isinstance(lead_steps, (int, np.integer)) else (lead_steps,)
    bad = [k for k in steps if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1]
    if not steps or bad:
        raise DataError(f"lead_steps must be whole numbers of model steps >= 1, e.g. (1, 2, 4); got {lead_steps!r}")
    return tuple(sorted({int(k) for k in steps}))


def _common_times(fields: Iterable[Field]) -> np.ndarray:
    common = None
    for f in fields:
        times = f.data.time.values.astype("datetime64[ns]")
        common = times if common is None else np.intersect1d(common, times)
    return np.array([], "datetime64[ns]") if common is None else np.unique(common)


def _complete_inits(times: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Times t with t + offset among `times` for every offset: inits of complete samples."""
    if not len(times):
        return times
    needed = times[:, None] + offsets[None, :].astype("timedelta64[ns]")  # (T, len(offsets))
    return times[np.isin(needed, times).all(axis=1)]


def _choose_levels(atmos: list[Field], spec: VariantSpec, levels: Sequence[float] | None) -> np.ndarray:
    if not atmos:
        return np.array(levels if levels is not None else spec.levels, dtype="float64")
    shared = atmos[0].data.level.values
    for f in atmos[1:]:
        shared = np.intersect1d(shared, f.data.level.values)
    if levels is None:
        chosen = [lv for lv in spec.levels if lv in shared]
        if not chosen:
            raise DataError(
                "no pressure level shared by all atmospheric variables has normalisation statistics "
                f"(known: {', '.join(map(str, spec.levels))} hPa)",
                problems=[f"{f.key} ({f.source}): {', '.join(f'{lv:g}' for lv in f.data.level.values)}"
                          for f in atmos],
            )
        return np.array(chosen, dtype="float64")
    unknown = [lv for lv in levels if lv not in spec.levels]
    absent = [lv for lv in levels if lv not in shared]
    if unknown or absent:
        raise DataError(
            "requested pressure levels cannot be used",
            problems=[f"{lv:g} hPa has no normalisation statistics" for lv in unknown]
            + [f"{lv:g} hPa is not in every atmospheric variable (shared: "
               f"{', '.join(f'{s:g}' for s in shared)})" for lv in absent],
        )
    return np.array(sorted(levels), dtype="float64")
