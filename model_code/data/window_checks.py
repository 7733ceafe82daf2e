"""The start-up checks of the window dataset: can these fields make samples of this variant?

A `WindowDataset` runs them once, when it is built, before any sample is read or any model
built: the variables the variant needs are present (or may be filled), they share one grid
that fits the patch size, and the time axis holds at least one complete sample. Each fails
fast with a `DataError` naming the file, the variable and the value expected, since the same
mismatch found later, deep in a training run, costs the run and says far less. The checks of
the values themselves (NaN, bounds, units, time axis) are `validate.py`'s.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from model_code.data.ingest import Field, FillMode
from model_code.data.sample_layout import _common_times, _complete_inits, _hours, _show
from model_code.errors import DataError
from model_code.variables import Variable
from model_code.variants import VariantSpec

__all__ = [
    "check_fields", "check_grid", "check_variables", "dynamic_fields", "dynamic_variables",
    "no_sample_error", "static_variables",
]


def dynamic_variables(spec: VariantSpec) -> list[Variable]:
    """Inputs and outputs of `spec` that change with time, each once."""
    seen = {}
    for v in (*spec.inputs(), *spec.outputs()):
        if v.kind != "static":
            seen.setdefault((v.kind, v.name), v)
    return list(seen.values())


def static_variables(spec: VariantSpec) -> list[Variable]:
    return [v for v in spec.inputs() if v.kind == "static"]


def dynamic_fields(fields: Mapping[str, Field], spec: VariantSpec) -> dict[str, Field]:
    """The time-dependent fields present (the others are filled or refused in `check_variables`)."""
    return {v.dataset_name: fields[v.dataset_name] for v in dynamic_variables(spec)
            if v.dataset_name in fields}


def check_fields(
    fields: Mapping[str, Field],
    spec: VariantSpec,
    *,
    history: int,
    lead_steps: Sequence[int],
    offsets: np.ndarray,
    fill_missing: FillMode | None,
    fill_missing_dynamic: FillMode | None,
    crop: bool,
) -> None:
    """Every dataset passes here once, before any sample is cut or any model built.

    The data checks themselves run in `WindowDataset.from_files` (`model_code.data.validate`);
    here are the structural checks the loader relies on: the variables are present (statics
    may be filled), on one grid that fits the patch size, and the time axis has at least one
    complete sample. `offsets` are the steps from initialisation to every time a sample uses.
    """
    check_variables(fields, spec, fill_missing=fill_missing, fill_missing_dynamic=fill_missing_dynamic)
    check_grid(fields, spec, crop=crop)
    dynamic = dynamic_fields(fields, spec)
    if not len(_complete_inits(_common_times(dynamic.values()), offsets)):
        raise no_sample_error(dynamic, spec, history=history, lead_steps=lead_steps, offsets=offsets)


def check_variables(
    fields: Mapping[str, Field],
    spec: VariantSpec,
    *,
    fill_missing: FillMode | None,
    fill_missing_dynamic: FillMode | None,
) -> None:
    problems = []
    missing = [v for v in dynamic_variables(spec) if v.dataset_name not in fields and not v.computed]
    if fill_missing_dynamic is not None and missing:
        real_outputs = [v for v in spec.outputs() if v.dataset_name in fields]
        if not real_outputs:
            raise DataError(
                f"none of the variables the {spec.name} variant predicts is in the inputs; "
                "with every target filled there is nothing to learn",
                problems=[f"{v.kind} variable '{v.dataset_name}' ({v.long_name})" for v in spec.outputs()],
            )
        missing = []
    for v in missing:
        role = "input and target" if v in spec.inputs() and v in spec.outputs() else (
            "input" if v in spec.inputs() else "target")
        problems.append(f"{v.kind} variable '{v.dataset_name}' ({v.long_name}, {v.units}), "
                        f"needed as {role}")
    for v in static_variables(spec):
        if v.dataset_name not in fields and fill_missing is None:
            problems.append(f"static variable '{v.dataset_name}' ({v.long_name}, {v.units}): add a "
                            "file holding it, or pass fill_missing='synthetic' or 'zeros'")
    if problems:
        raise DataError(
            f"{len(problems)} variable(s) the {spec.name} variant needs for training are not in "
            "the inputs; time-dependent variables are never filled as targets, since a model "
            "trained on invented targets learns nothing (pass fill_missing_dynamic='zeros' or "
            "'synthetic' to fill them in the inputs only, their targets NaN)",
            problems=problems,
        )


def check_grid(fields: Mapping[str, Field], spec: VariantSpec, *, crop: bool) -> None:
    used = [fields[v.dataset_name] for v in (*dynamic_variables(spec), *static_variables(spec))
            if v.dataset_name in fields]
    lat0, lon0 = used[0].data.latitude.values, used[0].data.longitude.values
    if any(f.data.latitude.shape != lat0.shape or f.data.longitude.shape != lon0.shape
           or not np.allclose(f.data.latitude.values, lat0) or not np.allclose(f.data.longitude.values, lon0)
           for f in used[1:]):
        raise DataError(
            "the variables are on different grids; regrid them to one grid (regrid_to=...)",
            problems=[f"{f.key} from {f.source}: {f.data.sizes['latitude']}x{f.data.sizes['longitude']}"
                      for f in used],
        )
    p = spec.patch_size
    h, w = len(lat0), len(lon0)
    if crop:
        h, w = h - max(h % p - 1, 0), w - w % p
    if w % p or h % p > 1 or h < p or w < p:
        raise DataError(
            f"grid {h}x{w} does not fit patch size {p} of the {spec.name} variant: the width "
            f"must be a multiple of {p} and the height at most one row over a multiple; pass "
            "crop=True or regrid_to=..."
        )


def no_sample_error(
    dynamic: Mapping[str, Field],
    spec: VariantSpec,
    *,
    history: int,
    lead_steps: Sequence[int],
    offsets: np.ndarray,
) -> DataError:
    """The error for time axes with no complete sample: what a sample needs, what the files have."""
    common = _common_times(dynamic.values())
    step = np.timedelta64(int(spec.timestep.total_seconds()), "s")
    leads = ", ".join(_hours(k, step) for k in lead_steps)
    span = (offsets[-1] - offsets[0]) / np.timedelta64(1, "h")
    shared = f"{len(common)} time(s) in common"
    if len(common):
        shared += f", {_show(common[0])} to {_show(common[-1])}"
    if len(common) > 1:
        spacing = np.unique(np.diff(common)).astype("timedelta64[h]")
        shared += f", spaced {', '.join(str(s) for s in spacing[:3])}"
    return DataError(
        f"no initialisation time has the {history} input time(s) {spec.timestep_hours} h "
        f"apart and the targets at {leads} that a sample needs ({span:g} h from first input to last "
        f"target); the time-dependent variables have {shared}",
        problems=[f"{f.key} ({f.source}): {f.data.sizes['time']} time(s) from {_show(f.data.time.values[0])} "
                  f"to {_show(f.data.time.values[-1])}" for f in dynamic.values()],
    )
