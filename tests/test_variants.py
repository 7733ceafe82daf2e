"""Variant specs agree with the Aurora classes they describe; both profiles build."""

from __future__ import annotations

import contextlib
import inspect

import pytest
import torch

from model_code.variants import PROFILES, VARIANTS, build_model, get_variant
from model_code.errors import DataError


def class_default(cls, name):
    for klass in cls.__mro__:
        params = inspect.signature(klass.__init__).parameters
        if name in params and params[name].default is not inspect.Parameter.empty:
            return params[name].default
    raise KeyError(name)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_spec_matches_the_aurora_class(name):
    spec = VARIANTS[name]
    model = build_model(spec, "tiny")
    assert type(model) is spec.model_class
    assert model.static_vars == spec.static_vars
    assert model.atmos_vars == spec.atmos_vars
    assert model.patch_size == spec.patch_size
    assert model.timestep == spec.timestep
    assert model.max_history_size == spec.max_history
    assert model.use_lora == spec.use_lora
    # The class's surface variables are what it predicts; the wave model reads wind direction
    # (dwi) and predicts the wind's u/v components in its place; Aurora 1.5 predicts some it
    # never reads (gusts, the last hour's fluxes).
    assert class_default(spec.model_class, "surf_vars") == spec.output_surf_vars
    only = set(getattr(model, "output_only_surf_vars", ()))
    assert set(spec.output_only_surf_vars) == only | ({"10u_wave", "10v_wave"} if name == "wave" else set())
    inputs = set(spec.output_surf_vars) - {"10u_wave", "10v_wave"} - only | ({"dwi"} if name == "wave" else set())
    assert set(spec.surf_vars) == inputs


@contextlib.contextmanager
def weights_on_meta_device():
    """Build modules whose parameters live on the meta device: shapes without 5 GB of memory.

    (`with torch.device("meta")` fails: Aurora's constructor calls `.item()` on a tensor.)
    """
    register = torch.nn.Module.register_parameter

    def to_meta(self, name, param):
        if param is not None:
            param = torch.nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register(self, name, param)

    torch.nn.Module.register_parameter = to_meta
    try:
        yield
    finally:
        torch.nn.Module.register_parameter = register


@pytest.mark.parametrize("name, billions", [
    ("medium-range", 1.259), ("high-res", 1.202), ("air-pollution", 1.273), ("wave", 1.261),
    ("medium-range-v1.5", 1.258), ("ensemble-v1.5", 1.260),
])
def test_full_profile_is_the_published_architecture(name, billions):
    with weights_on_meta_device():
        model = build_model(name, "full")
    params = sum(p.numel() for p in model.parameters())
    assert params / 1e9 == pytest.approx(billions, abs=0.001)
    assert next(model.parameters()).device.type == "meta"


@pytest.mark.parametrize("name", list(VARIANTS))
def test_tiny_profile_is_small(name):
    model = build_model(name, "tiny")
    assert sum(p.numel() for p in model.parameters()) < 2e6


def test_initial_weights_are_seeded():
    a, b, c = build_model("medium-range", seed=3), build_model("medium-range", seed=3), build_model("medium-range", seed=4)
    pa, pb, pc = (next(m.backbone.parameters()) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)


def test_building_does_not_disturb_the_global_random_state():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_model("wave")
    assert torch.equal(torch.rand(3), expected)


def test_unknown_names_list_the_choices():
    with pytest.raises(DataError, match="expected one of: medium-range, high-res, air-pollution, wave"):
        get_variant("global")
    with pytest.raises(DataError, match="unknown profile 'huge'"):
        build_model("wave", "huge")
    assert PROFILES == ("full", "tiny")


@pytest.mark.parametrize("shape", [(32, 64), (64, 64), (120, 84), (100, 100)])
def test_tiny_model_runs_on_regional_grids_that_fit_the_patch(shape):
    import numpy as np

    from model_code.data.batch import window_to_batch
    from model_code.data.synthetic import synthetic_window

    spec = get_variant("medium-range")
    h, w = shape
    lat, lon = np.linspace(50.0, 50.0 - 0.25 * (h - 1), h), np.linspace(250.0, 250.0 + 0.25 * (w - 1), w)
    times = np.datetime64("2024-01-01T00", "ns") + np.arange(2) * np.timedelta64(6, "h")
    batch = window_to_batch(synthetic_window(spec, lat, lon, times, levels=(500, 850)), spec)
    with torch.no_grad():
        pred = build_model(spec, "tiny")(batch)
    assert pred.surf_vars["2t"].shape[-2:] == shape and torch.isfinite(pred.surf_vars["2t"]).all()
