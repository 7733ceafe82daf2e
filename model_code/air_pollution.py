"""Aurora's air-pollution model, kept correct for batches of more than one sample.

Its published class predicts a species as a change to an earlier input time and adds that time's
field as `prev[name][:, i]`, of shape (B, H, W), to a prediction of shape (B, 1, H, W): for B > 1
the sum broadcasts to (B, B, H, W), every sample's forecast mixed with every other's. Training with
`data.batch_size` above 1 and the server's micro-batches both hit it. This class gives the hook the
earlier time with its axis kept, so each sample gets its own; for one sample the result is the same.
"""

from __future__ import annotations

import dataclasses

from aurora import AuroraAirPollution as _Published
from aurora import Batch

__all__ = ["AuroraAirPollution"]


class AuroraAirPollution(_Published):
    def _post_decoder_hook(self, batch: Batch, pred: Batch) -> Batch:
        per_sample = dataclasses.replace(
            batch,
            surf_vars={k: v.unsqueeze(2) for k, v in batch.surf_vars.items()},
            atmos_vars={k: v.unsqueeze(2) for k, v in batch.atmos_vars.items()},
        )
        return super()._post_decoder_hook(per_sample, pred)
