"""The baseline of a forecast job: a plain script that reads a medium-range input window with
xarray, runs one step of the model and writes the step with xarray, nothing else.

    python benchmarks/plain_job.py CHECKPOINT INPUT.nc OUTPUT.nc [DEVICE]

Prints one JSON line: the seconds from the first read to the written file (imports, the
checkpoint load and a warm-up forward on a 32x64 corner are not counted, as a serving job
finds the model loaded and warmed up), the peak
resident memory above what the process held before reading, and the part of it the
forward pass itself takes (its activations, above the memory before it).
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime

import numpy as np
import torch
import xarray as xr
from aurora import Batch, Metadata

from model_code.checkpoint import load_checkpoint
from timing import status_kib

SURFACE = {"2t": "t2m", "10u": "u10", "10v": "v10", "msl": "msl"}
STATIC = {"lsm": "lsm", "z": "z_surface", "slt": "slt"}
ATMOS = {"z": "z", "u": "u", "v": "v", "t": "t", "q": "q"}


def _batch(ds: xr.Dataset) -> Batch:
    return Batch(
        surf_vars={k: torch.from_numpy(ds[v].values)[None] for k, v in SURFACE.items()},
        static_vars={k: torch.from_numpy(ds[v].values) for k, v in STATIC.items()},
        atmos_vars={k: torch.from_numpy(ds[v].values)[None] for k, v in ATMOS.items()},
        metadata=Metadata(lat=torch.from_numpy(ds.latitude.values), lon=torch.from_numpy(ds.longitude.values),
                          time=(ds.time.values[-1].astype("datetime64[us]").astype(datetime),),
                          atmos_levels=tuple(int(lv) for lv in ds.level.values)),
    )


def main(checkpoint: str, source: str, out: str, device: str = "cpu") -> dict:
    model, _ = load_checkpoint(checkpoint)
    model = model.to(device).eval()
    with xr.open_dataset(source) as ds, torch.inference_mode():  # warm up, as a server has
        model(_batch(ds.isel(latitude=slice(0, 32), longitude=slice(0, 64)).load()).to(device))
    before_kb = status_kib("VmRSS")
    start = time.perf_counter()
    ds = xr.open_dataset(source).load()
    batch = _batch(ds)
    before_forward_kb = status_kib("VmRSS")
    peak_so_far_kb = status_kib("VmHWM")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # restart the peak count: what the forward itself needs
    with torch.inference_mode():
        pred = model(batch.to(device)).to("cpu")
    forward_kb = status_kib("VmHWM") - before_forward_kb
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    fields = {v: (("latitude", "longitude"), pred.surf_vars[k][0, 0].numpy()) for k, v in SURFACE.items()}
    fields |= {v: (("level", "latitude", "longitude"), pred.atmos_vars[k][0, 0].numpy()) for k, v in ATMOS.items()}
    step = xr.Dataset(fields, coords={"level": ds.level.values, "latitude": pred.metadata.lat.numpy(),
                                      "longitude": pred.metadata.lon.numpy()})
    step.to_netcdf(out, engine="netcdf4",
                   encoding={k: {"zlib": True, "complevel": 1, "shuffle": True} for k in step.data_vars})
    seconds = time.perf_counter() - start
    peak_kb = max(peak_so_far_kb, before_forward_kb + forward_kb, status_kib("VmHWM"))
    return {"seconds": seconds, "peak_above_start_mb": (peak_kb - before_kb) / 1024,
            "forward_mb": forward_kb / 1024,
            "input_mb": sum(v.nbytes for v in ds.data_vars.values()) / 1e6,
            "output_mb": sum(np.asarray(v).nbytes for _, v in fields.values()) / 1e6}


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:5])))
