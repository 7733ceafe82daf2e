"""Synthetic, physically plausible meteorological fields.

Two uses: filling variables that have no public real sample (pollutants, gridded wave
fields, soil type, emission statics) when a user asks for `--fill-missing synthetic`, and
scale tests and benchmarks at any grid size up to 0.1° global.

Every field is an analytic function of latitude, longitude, time, pressure level and a
seed: a large-scale climatological shape plus smooth random anomalies made of a few
low-wavenumber sinusoids. Values therefore do not depend on the grid they are sampled on
or on the order variables are generated in, and related variables stay consistent
(pm1 <= pm2p5 <= pm10, shww <= swh, geopotential from the temperature profile). Everything
built here is labelled with the attribute `synthetic = "true"` so it cannot be mistaken
for observations.

One module per variable family (`atmosphere`, `composition`, `waves`, `statics`), on the
shared random fields of `spectral` and the sampling context of `context`; `fields` samples
them and is the only module that knows every family.
"""

from __future__ import annotations

from model_code.data.synthetic.fields import (
    SYNTHETIC_ATTR,
    regular_grid,
    synthetic_dataarray,
    synthetic_field,
    synthetic_window,
)

__all__ = ["SYNTHETIC_ATTR", "regular_grid", "synthetic_dataarray", "synthetic_field", "synthetic_window"]
