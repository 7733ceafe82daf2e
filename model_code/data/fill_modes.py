"""The ways an absent variable can be filled, in a module of their own so that command-line
parsers and configs name them without importing the readers (xarray, eccodes)."""

from __future__ import annotations

from typing import Literal, get_args

FillMode = Literal["mean", "synthetic", "zeros"]
FILL_MODES: tuple[str, ...] = get_args(FillMode)
"""How an absent variable is filled: `mean`, Aurora's normalisation location of the variable
(and level), which the model sees as 0, a field that carries no signal; `synthetic`,
physically plausible invented fields (`data.synthetic`); `zeros`, 0 in physical units (for
mean sea-level pressure that is 76 normalisation scales below its location)."""
