"""Shared fixtures: the shipped real samples, tiny models, and a real S3 server on loopback."""

from __future__ import annotations

# Before any test module loads eccodes: its wheel bundles libsqlite3 3.26, and a process that
# loads that first gives Python's sqlite3 (and MLflow's sqlite store, which needs >= 3.31) the old library.
import sqlite3  # noqa: F401
import logging
import os
import uuid
from pathlib import Path

import pytest

# One torch (OpenMP) thread in every test process and the servers, pipeline tasks and jobs they
# start, before anything imports torch: the tests' models are tiny, `make test` runs a worker
# per core, and OpenMP threads competing for busy cores made the whole suite 2.5x slower
# (25 min against 9 on 2 cores).
os.environ.setdefault("OMP_NUM_THREADS", "1")

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples"
GFS = SAMPLES / "gfs_2p5deg_global_f120.grib2"
IFS_8_STEPS = SAMPLES / "ifs_pl_10deg_2024060300_8steps.grib"
OPENDATA_0P4 = SAMPLES / "ecmwf_opendata_0p4deg_2024010100.grib2"
GFS_WAVE = SAMPLES / "gfswave_ww3_swh_0p16deg.grib2"
SWELL_PERIOD = SAMPLES / "ecmwf_mean_swell_period_1deg.grib"
ERA5_USA = SAMPLES / "era5_surface_usa_1995-07-14T12.nc"
ERA5_HOURLY = SAMPLES / "era5_d2m_u10_v10_usa_2018-01-02_hourly.nc"
BRITISH_ISLES = SAMPLES / "era5_t2m_british_isles_2019-03_hourly.nc"
"""ERA5 hourly 2 m temperature, March 2019, 50-58°N 10°W-0.25°W: the longest real series."""
GEMS_TCCO2 = SAMPLES / "gems_tcco2_1p125deg_6hourly.nc"
"""Real GEMS total-column CO2, 31 six-hourly global times: the air-pollution ablations' stand-in series."""
SOIL_TYPE = SAMPLES / "era5_soil_type_6x6.grib"
EUROPE = sorted(SAMPLES.glob("ifs_an_europe_10deg_*.grib"))
FORMATS = SAMPLES / "formats"
BROKEN = SAMPLES / "broken"



def tiny_march(overrides: dict | None = None) -> dict:
    """The demo's treatment of the real March series at its smallest, as a plain config: the tiny
    medium-range model at 6 h steps, two input times, absent variables at Aurora's means, the data's
    own normalisation, heads from zero, one validation day and 2 steps; `overrides` are dotted keys."""
    from model_code.training.schema import set_dotted

    cfg = {
        "variant": "medium-range",
        "profile": "tiny",
        "timestep_hours": 6,
        "head_init": "zero",
        "data": {"paths": [str(BRITISH_ISLES)], "val_period": ["2019-03-20T00:00", "2019-03-21T00:00"],
                 "crop": True, "fill_missing": "mean", "fill_missing_dynamic": "mean", "levels": [500, 850],
                 "history": 2, "batch_size": 2, "normalisation": "training"},
        "optim": {"lr": 1e-3},
        "train": {"max_steps": 2, "val_every": 2, "val_at_start": False, "device": "cpu", "progress": False},
        "checkpoint": {"keep_top_k": 0},
    }
    for key, value in (overrides or {}).items():
        set_dotted(cfg, key, value)
    return cfg


def fit_keeping_model(cfg):
    """Train `cfg` to the end: its result, its trained model (eval mode) and its training samples."""
    from model_code.training.trainer import Trainer

    trainer = Trainer(cfg)
    try:
        result = trainer.fit()
        return result, trainer.model.eval(), trainer.data.train
    finally:
        trainer.close()

@pytest.fixture(scope="session")
def s3_endpoint():
    """A moto S3 server on 127.0.0.1 (a real HTTP server), with boto3 pointed at it."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield endpoint
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    server.stop()


@pytest.fixture
def bucket(s3_endpoint) -> str:
    """A fresh, empty bucket on the test S3 server."""
    import boto3

    name = f"test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def hourly_box(tmp_path_factory) -> Path:
    """The real hourly ERA5 series (10 m wind, 25 times) on its north-west 33x64 box (of
    121x86), which the tiny model fits: what training, tuning, evaluation and pipeline tests use."""
    import xarray as xr

    path = tmp_path_factory.mktemp("era5") / "era5_hourly_box.nc"
    with xr.open_dataset(ERA5_HOURLY) as ds:
        ds.isel(latitude=slice(0, 33), longitude=slice(0, 64)).load().to_netcdf(path)
    return path


def require(*tools: str) -> None:
    """Fail (never skip) when a prerequisite of `make test` named in the README is missing."""
    import shutil

    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} not on PATH: `make test` needs it (README, 'Set up and run')")


@pytest.fixture(scope="session")
def kubectl() -> None:
    """The kubectl client, for `kubectl kustomize` (offline)."""
    require("kubectl")
