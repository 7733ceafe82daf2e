"""The MLflow pyfunc flavour of a registered Aurora model: xarray or files in, xarray out.

    model = mlflow.pyfunc.load_model("models:/aurora-medium-range@champion")
    forecast = model.predict("input.nc", params={"steps": 4, "history": 1, "fill_missing": "synthetic"})

`predict` takes an `xarray.Dataset`, a path or s3:// URI (NetCDF, Zarr or GRIB) or a list of
them, and returns the forecast as an `xarray.Dataset` (the layout of `model_code.forecast`).
MLflow 3.17 passes inputs and outputs through unchanged when a model has no input or output
schema, so the signature declares only the parameters (MLflow drops undeclared params).
`predict` carries no type hints, and `_skip_type_hint_validation` tells MLflow 3.17 not to
wrap it for hint-based validation, which accepts only `list[...]` inputs. A Dataset goes through a temporary NetCDF file and the same readers as a
file, so both kinds of input are ingested (names, units, fills) alike.

MLflow saves this file with the model ("models from code") instead of pickling an object,
as the checkpoints themselves avoid pickle; loading it needs this project installed.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import mlflow
from mlflow.models import ModelSignature, set_model
from mlflow.types import ParamSchema, ParamSpec

from model_code.errors import DataError

# torch, xarray and the readers are imported where the model loads and predicts: registering
# a model reads this module's constants and should not pay for them.

CHECKPOINT = "checkpoint"
"""Artifact key of the weights; stored as `artifacts/checkpoint.safetensors` in the model."""
METRICS = "metrics"

SIGNATURE = ModelSignature(params=ParamSchema([
    ParamSpec("steps", "long", 1),
    ParamSpec("history", "long", None),  # None: the variant's full history
    ParamSpec("init_time", "string", None),  # None: the latest time the inputs allow
    ParamSpec("fill_missing", "string", None),  # "mean", "synthetic" or "zeros"; None: as in training
    ParamSpec("crop", "boolean", False),  # crop the grid to a multiple of the patch size
]))


class AuroraForecaster(mlflow.pyfunc.PythonModel):
    """Loads the checkpoint once, then forecasts any input the project's readers accept."""

    _skip_type_hint_validation = True  # inputs are xarray or paths, not list[...] (see above)

    def load_context(self, context) -> None:
        from model_code.checkpoint import load_checkpoint

        self.model, self.info = load_checkpoint(context.artifacts[CHECKPOINT])
        self.spec = self.info.spec

    def predict(self, context, model_input, params=None):
        """`model_input`: xr.Dataset, path/URI or list of them; `params`: see `SIGNATURE`."""
        import xarray as xr

        from model_code.data.ingest import load_window
        from model_code.data.writers import write_dataset
        from model_code.forecast import forecast

        params = params or {}
        steps = int(params.get("steps") or 1)
        fills = params.get("fill_missing") or None
        options = dict(history=params.get("history"), init_time=params.get("init_time"),
                       fill_missing=fills or self.info.filled_inputs or None,
                       levels=None if fills else self.info.training_levels, crop=bool(params.get("crop")))
        if isinstance(model_input, xr.Dataset):
            with tempfile.TemporaryDirectory(prefix="auroraops-pyfunc-") as tmp:
                path = write_dataset(model_input, str(Path(tmp) / "input.nc"))
                window, prov = load_window([path], self.spec, **options)
        else:
            window, prov = load_window(_uris(model_input), self.spec, **options)
        attrs = {"aurora_profile": self.info.profile, "weights": f"checkpoint of {self.info.variant}",
                 **prov.attrs()}
        return forecast(self.model, self.spec, window, steps, attrs=attrs)


def _uris(model_input) -> list[str]:
    if isinstance(model_input, (str, os.PathLike)):
        return [str(model_input)]
    if isinstance(model_input, (list, tuple)) and model_input and all(
            isinstance(u, (str, os.PathLike)) for u in model_input):
        return [str(u) for u in model_input]
    raise DataError(
        f"cannot forecast from a {type(model_input).__name__}; give an xarray.Dataset, a path or "
        "s3:// URI of NetCDF/Zarr/GRIB, or a list of them")


set_model(AuroraForecaster())
