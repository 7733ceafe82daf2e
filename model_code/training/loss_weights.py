"""Where an error counts: the loss's weight per grid cell and per pressure level.

Cell weights delegate to `grid.cell_areas`, the one home of cell areas, rather than keep a
cos(latitude) of their own; level weights follow `LossConfig.level_weighting`. Variable and
lead weights are `Loss.variable_weight` and `Loss.lead_weight`, since a lead's weight needs
the run's timestep.
"""

from __future__ import annotations

from typing import Sequence

import torch

from model_code.data.grid import cell_areas
from model_code.training.loss_config import LossConfig

__all__ = ["latitude_weights", "level_weights"]


def latitude_weights(lat: torch.Tensor, lon: torch.Tensor) -> torch.Tensor:
    """(h, w) cell areas normalised to mean 1 over the grid (WeatherBench 2's weighting).

    Uses `grid.cell_areas`, exact on cropped and regional grids and at the poles, where a
    plain cos(latitude) gives a pole row zero weight.
    """
    areas = torch.from_numpy(cell_areas(lat.detach().cpu().double().numpy(), lon.detach().cpu().double().numpy()))
    return (areas / areas.mean()).to(torch.float32)


def level_weights(levels: Sequence[float], cfg: LossConfig) -> torch.Tensor:
    """(c,) weight per pressure level: uniform or ∝ pressure (mean 1), times `cfg.level_weights`."""
    p = torch.tensor([float(lv) for lv in levels], dtype=torch.float64)
    w = p / p.mean() if cfg.level_weighting == "pressure" else torch.ones_like(p)
    extra = torch.tensor([float(cfg.level_weights.get(int(lv), 1.0)) if float(lv).is_integer() else 1.0
                          for lv in levels], dtype=torch.float64)
    return (w * extra).to(torch.float32)
