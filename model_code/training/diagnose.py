"""Why a run stopped part-way: errors that name the step, the variable and the last good checkpoint.

A NaN loss rarely starts in the loss: one NaN input pixel turns Aurora's whole output
NaN, and a corrupt value far outside a variable's physical range overflows inside the
model, and a corrupt truth overflows a squared error. So before blaming the predicted
variable, the batch is searched for the value that did it.
"""

from __future__ import annotations

import torch

from model_code.data.samples import Sample
from model_code.errors import DataError
from model_code.variables import variable

__all__ = ["TrainingDiverged", "TrainingStopped", "contract_variable", "suspects"]


class TrainingStopped(DataError):
    """A run stopped before its end because of its data; nothing was written after `checkpoint`.

    `step`: the optimiser step that failed (or whose weights were being validated);
    `variable`: the variable at fault, when known; `checkpoint`: the last good `last/` weights.
    """

    def __init__(self, message: str, *, step: int, variable: str | None, checkpoint: str | None,
                 check: str = "training_data"):
        self.step, self.variable, self.checkpoint = step, variable, checkpoint
        super().__init__(message, check=check)


class TrainingDiverged(TrainingStopped):
    """The loss or the gradients became NaN or infinite."""

    def __init__(self, message: str, *, step: int, variable: str | None, checkpoint: str | None):
        super().__init__(message, step=step, variable=variable, checkpoint=checkpoint, check="non_finite_loss")


def suspects(sample: Sample, filled: set[str] = frozenset()) -> list[tuple[str, str]]:
    """(variable, why) for every input holding NaN/inf, then every input or target holding
    values beyond its physical bounds (a corrupt truth overflows a squared error).

    `filled`: Aurora names of variables filled on purpose (zeros are out of range for some).
    Targets may hold NaN (masked by the loss), so only their finite values are judged.
    """
    found, strange = [], []
    times = ", ".join(f"{t:%Y-%m-%dT%H:%M}" for t in sample.inputs.metadata.time)
    parts = [("input", sample.inputs)] + [(f"target at lead {k}", t) for k, t in zip(sample.lead_steps, sample.targets)]
    for role, batch in parts:
        for group, kind in (("surf_vars", "surface"), ("atmos_vars", "atmos"), ("static_vars", "static")):
            for name, x in getattr(batch, group).items():
                if name in filled:
                    continue
                where = f"{role} '{name}' of the sample(s) initialised at {times}"
                finite = torch.isfinite(x)
                if role == "input" and not finite.all():
                    found.append((name, f"{where} holds {int((~finite).sum())} NaN/inf value(s)"))
                    continue
                outside = int((finite & _outside(x, kind, name)).sum())
                if outside:
                    largest = float(torch.where(finite, x.abs(), torch.zeros_like(x)).max())
                    strange.append((name, f"{where} holds {outside} value(s) outside the physical range "
                                          f"{variable(kind, name).bounds} (largest magnitude {largest:.3g})"))
    return found + strange


def _outside(x: torch.Tensor, kind: str, name: str) -> torch.Tensor:
    try:
        low, high = variable(kind, name).bounds
    except KeyError:
        return torch.zeros_like(x, dtype=torch.bool)
    out = torch.zeros_like(x, dtype=torch.bool)
    if low is not None:
        out |= x < low
    if high is not None:
        out |= x > high
    return out


def contract_variable(error: DataError) -> str | None:
    """The variable a data-contract error is about: its problems start with the quoted name."""
    for problem in error.problems:
        if problem.startswith("'") and "'" in problem[1:]:
            return problem[1:problem.index("'", 1)]
    return None
