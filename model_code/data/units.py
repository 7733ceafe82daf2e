"""Unit spellings and the few conversions that are unambiguous from a units attribute.

Files spell the same unit many ways (`m s**-1`, `m/s`, `m s-1`); a handful of producers use
other units for Aurora's quantities (°C, hPa, g/kg, µg/m³, geopotential height in metres).
Values are converted when the units attribute says so; an attribute that names something
else is an error, never a guess.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from model_code.errors import DataError
from model_code.variables import G0

_SPELLINGS: dict[str, tuple[str, ...]] = {
    "K": ("k", "kelvin", "degk", "deg k"),
    "m s-1": ("m s-1", "m s**-1", "m/s", "m s^-1", "meter second-1", "metre second-1"),
    "Pa": ("pa", "pascal", "pascals"),
    "m2 s-2": ("m2 s-2", "m**2 s**-2", "m^2/s^2", "m^2 s^-2", "m2/s2"),
    "kg kg-1": ("kg kg-1", "kg kg**-1", "kg/kg", "1"),
    "kg m-3": ("kg m-3", "kg m**-3", "kg/m3", "kg/m^3"),
    "kg m-2": ("kg m-2", "kg m**-2", "kg/m2", "kg/m^2"),
    "m": ("m", "metre", "meter", "metres", "meters"),
    "s": ("s", "second", "seconds", "sec"),
    "degree": ("degree", "degrees", "degree true", "degrees true", "deg", "degree_true"),
    "1": ("1", "", "(0 - 1)", "0-1", "proportion", "fraction", "~", "dimensionless",
          "(code table 4.213)", "code table 4.213", "numeric"),
    "m3 m-3": ("m3 m-3", "m**3 m**-3", "m3/m3", "m^3 m^-3", "proportion", "fraction"),
    "J m-2": ("j m-2", "j m**-2", "j/m2", "j m^-2"),
    "radians": ("radians", "radian", "rad"),
}

_CONVERSIONS: dict[str, dict[tuple[str, ...], Callable[[np.ndarray], np.ndarray]]] = {
    "K": {("degc", "°c", "c", "celsius", "deg c", "degrees_celsius"): lambda x: x + 273.15},
    "Pa": {("hpa", "mbar", "millibars", "millibar", "mb"): lambda x: x * 100.0},
    "kg kg-1": {("g kg-1", "g kg**-1", "g/kg"): lambda x: x / 1000.0},
    "m2 s-2": {("m", "gpm", "metre", "meter"): lambda x: x * G0},
    "kg m-2": {("m of water equivalent",): lambda x: x * 1000.0},
    "1": {("%", "percent"): lambda x: x / 100.0},
    "kg m-3": {("ug m-3", "µg m-3", "ug m**-3", "µg m**-3", "ug/m3", "µg/m3"): lambda x: x * 1e-9},
}


def to_canonical(values, units: str | None, expected: str, *, variable: str, source: str):
    """`values` in `expected` units, converting from `units` where that is unambiguous.

    Returns (values, note); the note is None when nothing was converted. A missing units
    attribute is taken to mean `expected`.
    """
    if units is None:
        return values, None
    spelled = units.strip().lower()
    if spelled in _SPELLINGS.get(expected, (expected.lower(),)) or spelled == expected.lower():
        return values, None
    for spellings, convert in _CONVERSIONS.get(expected, {}).items():
        if spelled in spellings:
            return convert(values), f"{variable} converted from '{units}' to '{expected}'"
    raise DataError(
        f"variable '{variable}' has units '{units}'; expected '{expected}'"
        + (f" or one of {sorted(s for k in _CONVERSIONS[expected] for s in k)}"
           if expected in _CONVERSIONS else ""),
        source=source,
    )


def convertible_units(expected: str) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """The other units the readers convert into `expected`, by their first spelling, with the
    conversion (e.g. {'degc': x + 273.15} for 'K'): the usual suspects of a unit mix-up."""
    return {spellings[0]: convert for spellings, convert in _CONVERSIONS.get(expected, {}).items()}
