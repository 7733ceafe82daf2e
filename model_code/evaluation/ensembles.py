"""Ensembles without an ensemble model: perturbed initial conditions and several checkpoints.

Both kinds return forecasts with a `member` dimension, so the probabilistic scores (fair
CRPS, spread-skill) apply to any deterministic variant:

- **Perturbed initial conditions.** Gaussian noise is added to the dynamic inputs of the
  first roll-out step only (later steps start from the model's own predictions). Each
  field's noise has standard deviation `scale` times that field's spatial standard
  deviation, per pressure level, so a 5 % perturbation of `z` and of `q` are comparable
  although their units differ by eight orders of magnitude. Perturbed values are clipped
  to the physical bounds of the variable catalogue (`model_code.variables`), directions in
  degrees wrap around the circle, and NaN (land in wave fields) stays NaN. Static fields are
  never perturbed, and fields that are constant (e.g. filled with zeros) stay constant.
- **Checkpoint ensembles.** Several checkpoints of one variant forecast from the same
  initial conditions; their spread measures the uncertainty the training left in the weights.

The noise goes in through a forward pre-hook on the model (`perturbed_inputs`), so every
forecast path of the project (`forecast`, hindcasts over many inits) runs unchanged.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
import xarray as xr
from aurora import Aurora, Batch

from model_code.errors import DataError
from model_code.forecast import forecast
from model_code.variables import Variable, variable
from model_code.variants import VariantSpec

__all__ = [
    "ENSEMBLE_ATTR",
    "checkpoint_ensemble",
    "member_seed",
    "perturb_batch",
    "perturbed_ensemble",
    "perturbed_inputs",
    "stack_members",
]

ENSEMBLE_ATTR = "ensemble"
"""Dataset attribute naming how the members were made."""


def member_seed(seed: int, member: int) -> int:
    """An independent 63-bit seed for one member, reproducible from (seed, member)."""
    return int(np.random.SeedSequence([seed, member]).generate_state(1, dtype=np.uint64)[0] >> 1)


def _nan_std(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """Standard deviation over `dims` ignoring NaN (keepdim), 0 where nothing is finite."""
    finite = torch.isfinite(x)
    n = finite.sum(dims, keepdim=True).clamp_min(1)
    x0 = torch.where(finite, x, torch.zeros((), dtype=x.dtype))
    mean = x0.sum(dims, keepdim=True) / n
    var = torch.where(finite, (x0 - mean) ** 2, torch.zeros((), dtype=x.dtype)).sum(dims, keepdim=True) / n
    return var.sqrt()


def _catalogue(kind: str, name: str) -> Variable | None:
    try:
        return variable(kind, name)
    except KeyError:
        return None


def _perturb(x: torch.Tensor, var: Variable | None, sigma: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    noise = torch.randn(x.shape, generator=gen, dtype=torch.float32).to(x.dtype) * sigma
    y = x + noise
    if var is None:
        return y
    if var.units == "degree":
        return torch.remainder(y, 360.0)
    low, high = var.bounds
    return y.clamp(min=low, max=high)


def perturb_batch(
    batch: Batch,
    *,
    scale: float,
    generator: torch.Generator,
    sigmas: Mapping[str, float] | None = None,
) -> Batch:
    """`batch` with Gaussian noise on every surface and atmospheric field (a new Batch).

    Noise standard deviation: `sigmas[name]` (absolute, in the variable's units; Aurora
    names) where given, else `scale` x the field's standard deviation over batch, time and
    space, per pressure level. Surface fields are (b, t, h, w), atmospheric (b, t, c, h, w).
    """
    if scale < 0:
        raise DataError(f"perturbation scale must be >= 0; got {scale}")
    sigmas = dict(sigmas or {})

    def sigma(name: str, x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
        if name in sigmas:
            return torch.tensor(float(sigmas[name]), dtype=x.dtype)
        return scale * _nan_std(x.detach(), dims)

    surf = {k: _perturb(v, _catalogue("surface", k), sigma(k, v, (0, 1, 2, 3)), generator)
            for k, v in batch.surf_vars.items()}
    atmos = {k: _perturb(v, _catalogue("atmos", k), sigma(k, v, (0, 1, 3, 4)), generator)
             for k, v in batch.atmos_vars.items()}
    return dataclasses.replace(batch, surf_vars=surf, atmos_vars=atmos)


@contextlib.contextmanager
def perturbed_inputs(
    model: torch.nn.Module, *, scale: float = 0.05, seed: int = 0, sigmas: Mapping[str, float] | None = None
) -> Iterator[torch.nn.Module]:
    """Within the block, `model` perturbs the initial conditions of every roll-out it runs.

    The batch of roll-out step 0 is replaced by `perturb_batch(...)`; one generator seeded
    with `seed` draws the noise of successive roll-outs (e.g. the inits of a hindcast), so
    the same calls in the same order give the same members. `aurora.rollout` calls
    `model.forward` directly, which bypasses module hooks, so the instance's `forward` is
    wrapped for the duration of the block and restored after it.
    """
    if scale < 0:
        raise DataError(f"perturbation scale must be >= 0; got {scale}")
    if "forward" in vars(model):
        raise DataError("this model already perturbs its inputs: nested perturbed_inputs blocks are not supported")
    gen = torch.Generator().manual_seed(seed)
    original = model.forward

    def forward(batch: Batch, *args, **kwargs):
        if batch.metadata.rollout_step == 0:
            batch = perturb_batch(batch, scale=scale, generator=gen, sigmas=sigmas)
        return original(batch, *args, **kwargs)

    model.forward = forward
    try:
        yield model
    finally:
        del model.forward


def stack_members(members: Sequence[xr.Dataset], *, kind: str) -> xr.Dataset:
    """Concatenate forecasts of one init and grid along a new `member` dim (0..n-1)."""
    if not members:
        raise DataError("an ensemble needs at least one member")
    first = members[0]
    for i, m in enumerate(members[1:], 1):
        if set(m.data_vars) != set(first.data_vars):
            raise DataError(f"member {i} has variables {sorted(m.data_vars)}; member 0 has {sorted(first.data_vars)}")
        for dim in ("time", "latitude", "longitude", "level"):
            if dim in first.coords and not np.array_equal(m[dim].values, first[dim].values):
                raise DataError(f"member {i} differs from member 0 in coordinate '{dim}'")
    ds = xr.concat(members, dim="member", coords="minimal", compat="override", combine_attrs="override")
    ds = ds.assign_coords(member=("member", np.arange(len(members))))
    ds.attrs[ENSEMBLE_ATTR] = kind
    ds.attrs["ensemble_size"] = len(members)
    return ds


def perturbed_ensemble(
    model: Aurora,
    spec: VariantSpec,
    window: xr.Dataset,
    steps: int,
    *,
    members: int,
    scale: float = 0.05,
    seed: int = 0,
    sigmas: Mapping[str, float] | None = None,
    run: Callable[[Aurora], xr.Dataset] | None = None,
) -> xr.Dataset:
    """`members` forecasts of `window`, each from differently perturbed initial conditions.

    `run(model)` makes one member (default: `forecast(model, spec, window, steps)`); pass
    e.g. a hindcast over several inits to get an ensemble of each. Member m uses the seed
    `member_seed(seed, m)`. Returns the members stacked along `member`.
    """
    if members < 1:
        raise DataError(f"an ensemble needs at least one member; got members={members}")
    run = run or (lambda m: forecast(m, spec, window, steps))
    out = []
    for m in range(members):
        with perturbed_inputs(model, scale=scale, seed=member_seed(seed, m), sigmas=sigmas):
            out.append(run(model))
    ds = stack_members(out, kind="perturbed initial conditions")
    ds.attrs.update(perturbation_scale=scale, perturbation_seed=seed)
    return ds


def checkpoint_ensemble(
    models: Sequence[Aurora | str],
    spec: VariantSpec,
    window: xr.Dataset | None = None,
    steps: int | None = None,
    *,
    run: Callable[[Aurora], xr.Dataset] | None = None,
) -> xr.Dataset:
    """One forecast per model (or checkpoint path/URI) from the same initial conditions.

    Checkpoints are loaded one at a time and must belong to `spec`'s variant. `run(model)`
    replaces the default `forecast(model, spec, window, steps)`.
    """
    from model_code.checkpoint import load_checkpoint

    if not models:
        raise DataError("a checkpoint ensemble needs at least one checkpoint")
    if run is None:
        if window is None or steps is None:
            raise DataError("checkpoint_ensemble needs a window and steps, or run")
        run = lambda m: forecast(m, spec, window, steps)  # noqa: E731
    out, names = [], []
    for m in models:
        if isinstance(m, str):
            names.append(m)
            m = load_checkpoint(m, variant=spec.name)[0]
        else:
            names.append(type(m).__name__)
        out.append(run(m))
    ds = stack_members(out, kind="checkpoints")
    ds.attrs["ensemble_members"] = ", ".join(names)
    return ds
