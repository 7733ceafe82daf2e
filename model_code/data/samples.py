"""What one training sample is: an input `aurora.Batch` and the truth at several lead times.

A training step rolls the model out and compares each prediction with the target at its
lead time, so targets are Batches of the predicted variables, cropped the way Aurora crops
its input, and a prediction is paired with its target only when valid times and grids agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Callable, Sequence

import numpy as np
import torch
import xarray as xr
from aurora import Batch, Metadata

from model_code.variables import Variable
from model_code.variants import VariantSpec

__all__ = ["Sample", "pair_predictions"]


@dataclass
class Sample:
    """An input batch and the truth at each lead time, as a training step compares them.

    `inputs` is what `aurora.rollout` starts from: surf (b, t, h, w), atmos (b, t, c, h, w),
    static (h, w), `metadata.time` the initialisation time of each element. `targets[j]`
    holds the predicted variables only (`spec.outputs()`) at `lead_steps[j]` model steps
    after initialisation: surf (b, 1, h', w), atmos (b, 1, c, h', w), `metadata.time` the
    valid times. Targets are already cropped the way Aurora crops its input (`Batch.crop`:
    the last latitude row goes when h % patch_size == 1), so h' and the latitudes are those
    of the predictions and no loss has to know about the crop. Roll out `max(lead_steps)`
    steps and compare prediction k - 1 with the target at lead k (`pair_predictions`).
    """

    inputs: Batch
    targets: tuple[Batch, ...]
    lead_steps: tuple[int, ...]

    @property
    def batch_size(self) -> int:
        return len(self.inputs.metadata.time)

    def to(self, device: str | torch.device) -> Sample:
        return Sample(self.inputs.to(device), tuple(t.to(device) for t in self.targets), self.lead_steps)

    def pin_memory(self) -> Sample:
        """Called by `DataLoader(pin_memory=True)` for faster copies to the GPU."""
        pin = lambda x: x.pin_memory()  # noqa: E731
        return Sample(_map_tensors(self.inputs, pin), tuple(_map_tensors(t, pin) for t in self.targets),
                      self.lead_steps)


def _map_tensors(batch: Batch, fn: Callable[[torch.Tensor], torch.Tensor]) -> Batch:
    m = batch.metadata
    return Batch(
        surf_vars={k: fn(v) for k, v in batch.surf_vars.items()},
        static_vars={k: fn(v) for k, v in batch.static_vars.items()},
        atmos_vars={k: fn(v) for k, v in batch.atmos_vars.items()},
        metadata=Metadata(lat=fn(m.lat), lon=fn(m.lon), time=m.time, atmos_levels=m.atmos_levels,
                          rollout_step=m.rollout_step),
    )


def pair_predictions(predictions: Sequence[Batch], sample: Sample) -> list[tuple[Batch, Batch]]:
    """(prediction, target) for every lead step of `sample`, from its rollout's predictions.

    `predictions[k - 1]` is the prediction k steps ahead (`aurora.rollout` yields one per
    step). Raises ValueError when the rollout is too short or a prediction's valid times or
    grid differ from its target's: comparing them would train on the wrong truth.
    """
    if len(predictions) < max(sample.lead_steps):
        raise ValueError(f"{len(predictions)} prediction(s) for lead steps {sample.lead_steps}; "
                         f"roll out {max(sample.lead_steps)} steps")
    pairs = []
    for k, target in zip(sample.lead_steps, sample.targets):
        pred = predictions[k - 1]
        if tuple(pred.metadata.time) != tuple(target.metadata.time):
            raise ValueError(f"prediction {k} is valid at {pred.metadata.time}, its target at "
                             f"{target.metadata.time}")
        if pred.spatial_shape != target.spatial_shape:
            raise ValueError(f"prediction {k} is on a {tuple(pred.spatial_shape)} grid, its target on "
                             f"{tuple(target.spatial_shape)}")
        pairs.append((pred, target))
    return pairs


def _target_batch(ds: xr.Dataset, spec: VariantSpec, levels: tuple) -> Batch:
    """The truth at one valid time as a Batch of the predicted variables, cropped like Aurora's input."""

    def tensor(key: str) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(ds[key].values, dtype=np.float32))[None]

    valid = ds.time.values[0].astype("datetime64[us]").astype(datetime)
    batch = Batch(
        surf_vars={n: tensor(v.dataset_name) for n, v in _outputs(spec, "surface")},  # (1, 1, h, w)
        static_vars={},
        atmos_vars={n: tensor(v.dataset_name) for n, v in _outputs(spec, "atmos")},  # (1, 1, c, h, w)
        metadata=Metadata(
            lat=torch.from_numpy(ds.latitude.values.astype(np.float32)),
            lon=torch.from_numpy(ds.longitude.values.astype(np.float32)),
            time=(valid,),
            atmos_levels=levels,
        ),
    )
    return batch.crop(spec.patch_size)


def _outputs(spec: VariantSpec, kind: str) -> list[tuple[str, Variable]]:
    return [(v.name, v) for v in spec.outputs() if v.kind == kind]
