"""Conversions between input windows / forecasts (xarray) and `aurora.Batch` (torch).

A window has dims (time, [level], latitude, longitude) and dataset names as keys; a
`Batch` has Aurora names and shapes surf (b, t, h, w), static (h, w), atmos (b, t, c, h, w)
with b = 1. Forecasts come back as one CF dataset whose `time` is the valid time, with
`forecast_reference_time` and `lead_time` coordinates.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime
from typing import Mapping, Sequence

import numpy as np
import torch
import xarray as xr
from aurora import Batch, Metadata

from model_code.data.contract import check_window
from model_code.data.emissions import split_new_statics
from model_code.data.lags import split_lags
from model_code.errors import DataError
from model_code.variables import variable
from model_code.variants import VariantSpec


def _level_tuple(levels: np.ndarray) -> tuple[int | float, ...]:
    return tuple(int(lv) if float(lv).is_integer() else float(lv) for lv in levels)


def window_to_batch(window: xr.Dataset, spec: VariantSpec, *, source: str | None = None) -> Batch:
    """The `aurora.Batch` for a window, after checking the variant's input contract; the window's
    lagged inputs (`lags.add_lags`), if any, join the surface variables, and its new static inputs
    (`emissions.with_new_statics`) the statics."""
    window, lagged = split_lags(window)
    window, statics = split_new_statics(window)
    check_window(window, spec, source=source)
    batch = fields_to_batch({v.dataset_name: window[v.dataset_name].values for v in spec.inputs()},
                            window.latitude.values, window.longitude.values, window.time.values[-1],
                            window.level.values, spec)
    if not lagged and not statics:
        return batch

    def tensor(values: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))

    surf = {**batch.surf_vars, **{k: tensor(v)[None] for k, v in lagged.items()}}
    return dataclasses.replace(batch, surf_vars=surf,
                               static_vars={**batch.static_vars, **{k: tensor(v) for k, v in statics.items()}})


def fields_to_batch(fields: Mapping[str, np.ndarray], lat: np.ndarray, lon: np.ndarray, init_time: np.datetime64,
                    levels: Sequence[float], spec: VariantSpec) -> Batch:
    """The `aurora.Batch` of fields that meet the contract (`window_to_batch` checks it on a
    window), by dataset name: surface (t, h, w), atmospheric (t, level, h, w), static (h, w),
    with the time of the last step and the levels in hPa. The tensors share the fields' memory
    where they are contiguous FP32."""

    def tensor(key: str, add_batch: bool) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(fields[key], dtype=np.float32))
        return t[None] if add_batch else t

    return Batch(
        surf_vars={n: tensor(variable("surface", n).dataset_name, True) for n in spec.surf_vars},
        static_vars={n: tensor(variable("static", n).dataset_name, False) for n in spec.static_vars},
        atmos_vars={n: tensor(variable("atmos", n).dataset_name, True) for n in spec.atmos_vars},
        metadata=Metadata(
            lat=torch.from_numpy(np.array(lat, dtype=np.float32)),
            lon=torch.from_numpy(np.array(lon, dtype=np.float32)),
            time=(np.datetime64(init_time, "us").astype(datetime),),
            atmos_levels=_level_tuple(levels),
        ),
    )


def predictions_to_dataset(
    predictions: Sequence[Batch], spec: VariantSpec, init_time: np.datetime64, attrs: dict | None = None
) -> xr.Dataset:
    """One CF dataset from the per-step predictions of a rollout (batch element 0)."""
    first = predictions[0]
    fields = {}
    for v in spec.outputs():
        source = "surf_vars" if v.kind == "surface" else "atmos_vars"
        fields[v.dataset_name] = np.stack(
            [getattr(p, source)[v.name][0, 0].detach().float().cpu().numpy() for p in predictions])
    return forecast_dataset(
        fields, spec, init_time, [np.datetime64(p.metadata.time[0], "ns") for p in predictions],
        first.metadata.lat.cpu().numpy(), first.metadata.lon.cpu().numpy(), first.metadata.atmos_levels, attrs)


def forecast_dataset(
    fields: Mapping[str, np.ndarray], spec: VariantSpec, init_time: np.datetime64, valid_times: Sequence,
    lat: np.ndarray, lon: np.ndarray, levels: Sequence[float], attrs: Mapping | None = None,
) -> xr.Dataset:
    """The CF dataset of a forecast, from its (time, [level], lat, lon) fields by dataset name:
    one layout for forecasts made here, by a job or received from the predictor, so readers
    (scoring, resuming a job) need not tell them apart."""
    valid = np.array([np.datetime64(t, "ns") for t in valid_times])
    init = np.datetime64(init_time, "ns")
    fields, clipped = clip_to_physical(fields, spec)

    data_vars = {}
    for v in spec.outputs():
        dims = ("time", "latitude", "longitude") if v.kind == "surface" else (
            "time", "level", "latitude", "longitude")
        attrs_v = {"units": v.units, "long_name": v.long_name, "aurora_name": v.name}
        if v.standard_name:
            attrs_v["standard_name"] = v.standard_name
        data_vars[v.dataset_name] = xr.DataArray(np.asarray(fields[v.dataset_name], dtype="float32"), dims=dims,
                                                 attrs=attrs_v)

    ds = xr.Dataset(
        data_vars,
        coords={
            "time": ("time", valid, {"standard_name": "time", "long_name": "valid time"}),
            "lead_time": ("time", valid - init, {"standard_name": "forecast_period", "long_name": "lead time"}),
            "forecast_reference_time": ((), init, {"standard_name": "forecast_reference_time"}),
            "level": ("level", np.array(levels, dtype="float64"),
                      {"units": "hPa", "standard_name": "air_pressure", "positive": "down", "axis": "Z"}),
            "latitude": ("latitude", np.array(lat, dtype="float64"),
                         {"units": "degrees_north", "standard_name": "latitude", "axis": "Y"}),
            "longitude": ("longitude", np.array(lon, dtype="float64"),
                          {"units": "degrees_east", "standard_name": "longitude", "axis": "X"}),
        },
    )
    ds.attrs.update(
        Conventions="CF-1.10",
        title=f"{spec.title}: forecast of {len(valid)} lead time(s) from {str(init)[:16]}",
        aurora_variant=spec.name,
        aurora_model_class=spec.class_name,
        **(attrs or {}),
    )
    if clipped:
        ds.attrs["clipped_values"] = json.dumps(clipped, sort_keys=True)
    return ds


def clip_to_physical(fields: Mapping[str, np.ndarray], spec: VariantSpec) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """The predicted fields clipped to the ranges models are known to leave (`Variable.clip`:
    negative humidity, cloud cover above 1, ...), and how many values each clip moved."""
    out, counts = dict(fields), {}
    for v in spec.outputs():
        if v.clip is None or v.dataset_name not in fields:
            continue
        values = np.asarray(fields[v.dataset_name], dtype="float32")
        lo, hi = (-np.inf if v.clip[0] is None else v.clip[0]), (np.inf if v.clip[1] is None else v.clip[1])
        outside = (values < lo) | (values > hi)
        counts[v.dataset_name] = int(outside.sum())
        if counts[v.dataset_name]:
            out[v.dataset_name] = np.clip(values, lo, hi)
    return out, counts


def dataset_to_prediction(ds: xr.Dataset, spec: VariantSpec, step: int = 0) -> Batch:
    """Step `step` of a forecast dataset (`forecast_dataset`'s layout) as the prediction
    `Batch` it was made from: what `forecast.forecast_steps(done=...)` continues a forecast from."""
    one = ds.isel(time=step)

    def tensor(key: str) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(one[key].values, dtype=np.float32))[None, None]

    missing = [v.dataset_name for v in spec.outputs() if v.dataset_name not in one]
    if missing:
        raise DataError(f"the forecast lacks predicted variable(s) {missing}; it cannot continue a forecast")
    return Batch(
        surf_vars={n: tensor(variable("surface", n).dataset_name) for n in spec.output_surf_vars},
        static_vars={},
        atmos_vars={n: tensor(variable("atmos", n).dataset_name) for n in spec.output_atmos_vars},
        metadata=Metadata(
            lat=torch.from_numpy(one.latitude.values.astype(np.float32)),
            lon=torch.from_numpy(one.longitude.values.astype(np.float32)),
            time=(one.time.values.astype("datetime64[us]").astype(datetime),),
            atmos_levels=_level_tuple(one.level.values),
        ),
    )
