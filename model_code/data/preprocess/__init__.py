"""Preprocessing for training: climatology, normalisation statistics, angles, statics.

Everything learnt from data here (climatologies, normalisation statistics) is computed from
the times inside an explicit training period only, so validation and test dates cannot leak
into what the model is trained with. Directions never enter a mean as degrees: they go
through their sine and cosine, as `AuroraWave` models them. Regridding onto a variant's
grid lives in `model_code.data.grid`.
"""

from model_code.data.grid import regrid_to_variant
from model_code.data.preprocess.angles import ANGLE_VARS, angles_to_sincos, mean_direction, sincos_to_angles
from model_code.data.preprocess.climatology import GROUPINGS, climatology, deseasonalise, reseasonalise
from model_code.data.preprocess.normalisation import (
    LocationScale,
    NormalisationStats,
    aurora_atmos_stats,
    aurora_surf_stats,
    normalisation_stats,
)
from model_code.data.preprocess.statics import prepare_statics

__all__ = [
    "ANGLE_VARS",
    "GROUPINGS",
    "LocationScale",
    "NormalisationStats",
    "angles_to_sincos",
    "aurora_atmos_stats",
    "aurora_surf_stats",
    "climatology",
    "deseasonalise",
    "mean_direction",
    "normalisation_stats",
    "prepare_statics",
    "regrid_to_variant",
    "reseasonalise",
    "sincos_to_angles",
]
