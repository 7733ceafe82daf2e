"""Declarative specs of the Aurora variants, and the one function that builds a model.

A spec holds what the rest of the system needs to know about a variant without building
it: the Aurora class, the variables it reads and predicts, pressure levels, native grid,
patch size, time step, history, LoRA settings and two architecture profiles:

- ``full``: the published architecture (class defaults, ~1.3 B parameters, GPU only);
- ``tiny``: the same variant and data contract with a ~1 M parameter backbone, which runs
  on two CPU cores in tens of milliseconds per step on a ~32x64 grid (tests, demo, CI).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import timedelta
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Mapping

from model_code.errors import DataError
from model_code.variables import Variable, variable

if TYPE_CHECKING:
    from aurora import Aurora

LEVELS = (50, 100, 150, 200, 250, 300, 400, 500, 600, 700, 850, 925, 1000)
"""Pressure levels (hPa) every Aurora variant was trained on."""

PROFILES = ("full", "tiny")

TINY = MappingProxyType(
    dict(
        embed_dim=32,
        num_heads=4,
        encoder_depths=(1, 1, 1),
        encoder_num_heads=(2, 4, 8),
        decoder_depths=(1, 1, 1),
        decoder_num_heads=(8, 4, 2),
        window_size=(1, 4, 8),
        latent_levels=2,
    )
)
"""Architecture overrides of the tiny profile, shared by all variants.

Windows span one latent level: with two latent levels, a window of two (shifted by one)
fails inside Aurora's Swin blocks on many regional grids (64x64, 120x84, 100x100, ...);
one level works on every grid that fits the patch size."""

_MET_SURFACE = ("2t", "10u", "10v", "msl")
_MET_ATMOS = ("z", "u", "v", "t", "q")
_V1P5_SURFACE = (
    ("2t", "10u", "10v", "msl", "2d", "tcwv", "tcc", "100u", "100v", "sp", "lcc", "mcc")
    + ("hcc", "skt", "stl1", "swvl1", "ci", "scaled_sd", "insolation")
)
"""Aurora 1.5's surface-level inputs (insolation is computed from the valid time, never read)."""
_V1P5_OUTPUT_ONLY = ("i10fg", "blh", "uvb_1h", "ssrd_1h", "ttr_1h", "scaled_tp_1h", "scaled_sf_1h")
"""What Aurora 1.5 predicts and never reads: gusts, boundary layer and the last hour's fluxes
(its outputs list them before the insolation, as its constructor does)."""
_V1P5_STATIC = (
    ("lsm", "z", "anor", "isor", "cvh", "cl", "dl", "cvl", "slor")
    + tuple(f"slt_{k}" for k in range(8))
    + ("sdfor", "sdor")
    + tuple(f"tvh_{k}" for k in (0, 18, 19, 3, 4, 5, 6))
    + tuple(f"tvl_{k}" for k in (0, 1, 10, 11, 13, 16, 17, 2, 7, 9))
)
"""Aurora 1.5's 41 statics, in the order of its constructor."""
_V1P5_TINY = MappingProxyType({**TINY, "autocast": False})
"""The tiny profile of Aurora 1.5 runs in float32: its fp16 autocast is for the full model on a GPU."""

_WAVES = (
    ("swh", "mwd", "mwp", "pp1d", "shww", "mdww", "mpww", "shts", "mdts", "mpts")
    + ("swh1", "mwd1", "mwp1", "swh2", "mwd2", "mwp2")
)


@dataclass(frozen=True)
class Grid:
    """A regular latitude-longitude grid: resolution in degrees, shape (lat, lon)."""

    resolution: float
    shape: tuple[int, int]


@dataclass(frozen=True)
class VariantSpec:
    """Everything about one Aurora variant that can be known without building it."""

    name: str
    """Command-line name, e.g. `medium-range`."""
    title: str
    class_name: str
    """Name of the Aurora class in `aurora`, e.g. `AuroraHighRes` (`model_class` is the class)."""
    checkpoint_name: str
    """File name of the published weights on the `microsoft/aurora` hub."""
    surf_vars: tuple[str, ...]
    """Surface-level variables read from input data (Aurora names)."""
    static_vars: tuple[str, ...]
    atmos_vars: tuple[str, ...]
    output_surf_vars: tuple[str, ...]
    """Surface-level variables the model predicts."""
    grid: Grid
    """Native grid of the published checkpoint."""
    patch_size: int
    timestep: timedelta
    max_history: int
    use_lora: bool
    lora_mode: str
    min_history: int = 1
    """Air pollution predicts differences to the step 24 h back, so it needs two steps."""
    levels: tuple[int, ...] = LEVELS
    tiny_grid: tuple[int, int] = (32, 64)
    """Grid close to 32x64 that fits the patch size, for tiny-profile tests and benchmarks."""
    sub_step_hours: tuple[int, ...] = ()
    """Lead times (hours) within one step the model forecasts directly from the same input
    (Aurora 1.5's variable lead time, ending with the step); empty: whole steps only."""
    stochastic: bool = False
    """Forecasts differ by the model's own noise: `members` > 1 makes an ensemble."""
    notes: str = ""
    profiles: Mapping[str, Mapping[str, Any]] = field(
        default_factory=lambda: MappingProxyType({"full": MappingProxyType({}), "tiny": TINY})
    )

    @property
    def model_class(self) -> type[Aurora]:
        """The Aurora class, imported on first use: reading a spec (a command's parser, a
        validator) should not cost the seconds torch and aurora take to import."""
        if self.class_name == "AuroraAirPollution":  # the published class mixes the samples of a batch
            from model_code.air_pollution import AuroraAirPollution

            return AuroraAirPollution
        import aurora

        return getattr(aurora, self.class_name)

    @property
    def timestep_hours(self) -> int:
        return int(self.timestep.total_seconds() // 3600)

    @property
    def output_atmos_vars(self) -> tuple[str, ...]:
        return self.atmos_vars

    @property
    def slug(self) -> str:
        """The name where only lower-case letters, digits and '-' may stand (Kubernetes objects,
        KFP pipelines, registered models): `medium-range-v1.5` -> `medium-range-v1p5`."""
        return self.name.replace(".", "p")

    @property
    def model_name(self) -> str:
        """What the variant's model is called in the registry, the predictor and the cluster:
        `aurora-medium-range`, `aurora-medium-range-v1p5`."""
        return f"aurora-{self.slug}"

    @property
    def output_only_surf_vars(self) -> tuple[str, ...]:
        return tuple(n for n in self.output_surf_vars if n not in self.surf_vars)

    def lead_hours(self, steps: int) -> tuple[int, ...]:
        """Every lead time (hours) a forecast of `steps` steps can give: each step's end, and
        with sub-steps every hour the model forecasts within a step."""
        step = self.timestep_hours
        within = self.sub_step_hours or (step,)
        return tuple(k * step + h for k in range(steps) for h in within)

    def inputs(self) -> tuple[Variable, ...]:
        """Catalogue entries of every input variable: surface, static, atmospheric."""
        return (
            tuple(variable("surface", n) for n in self.surf_vars)
            + tuple(variable("static", n) for n in self.static_vars)
            + tuple(variable("atmos", n) for n in self.atmos_vars)
        )

    def outputs(self) -> tuple[Variable, ...]:
        """Catalogue entries of every predicted variable: surface, then atmospheric."""
        return tuple(variable("surface", n) for n in self.output_surf_vars) + tuple(
            variable("atmos", n) for n in self.output_atmos_vars
        )


VARIANTS: Mapping[str, VariantSpec] = MappingProxyType(
    {
        spec.name: spec
        for spec in (
            VariantSpec(
                name="medium-range",
                title="Aurora 0.25° medium-range (fine-tuned on IFS HRES T0)",
                class_name="Aurora",
                checkpoint_name="aurora-0.25-finetuned.ckpt",
                surf_vars=_MET_SURFACE,
                static_vars=("lsm", "z", "slt"),
                atmos_vars=_MET_ATMOS,
                output_surf_vars=_MET_SURFACE,
                grid=Grid(0.25, (721, 1440)),
                patch_size=4,
                timestep=timedelta(hours=6),
                max_history=2,
                use_lora=True,
                lora_mode="single",
                notes="Expects IFS HRES T0 analyses; other analyses work with some loss of skill.",
            ),
            VariantSpec(
                name="high-res",
                title="Aurora 0.1° high resolution (fine-tuned on IFS HRES analysis)",
                class_name="AuroraHighRes",
                checkpoint_name="aurora-0.1-finetuned.ckpt",
                surf_vars=_MET_SURFACE,
                static_vars=("lsm", "z", "slt"),
                atmos_vars=_MET_ATMOS,
                output_surf_vars=_MET_SURFACE,
                grid=Grid(0.1, (1801, 3600)),
                patch_size=10,
                timestep=timedelta(hours=6),
                max_history=2,
                use_lora=True,
                lora_mode="single",
                tiny_grid=(31, 60),
                notes="Expects IFS HRES analyses and the static fields used in training.",
            ),
            VariantSpec(
                name="air-pollution",
                title="Aurora 0.4° air pollution (fine-tuned on CAMS)",
                class_name="AuroraAirPollution",
                checkpoint_name="aurora-0.4-air-pollution.ckpt",
                surf_vars=_MET_SURFACE
                + ("pm1", "pm2p5", "pm10", "tcco", "tc_no", "tcno2", "gtco3", "tcso2"),
                static_vars=("lsm", "z", "slt")
                + tuple(
                    f"static_{s}{suffix}"
                    for s in ("ammonia", "co", "nox", "so2")
                    for suffix in ("", "_log")
                ),
                atmos_vars=_MET_ATMOS + ("co", "no", "no2", "go3", "so2"),
                output_surf_vars=_MET_SURFACE
                + ("pm1", "pm2p5", "pm10", "tcco", "tc_no", "tcno2", "gtco3", "tcso2"),
                grid=Grid(0.4, (451, 900)),
                patch_size=3,
                timestep=timedelta(hours=12),
                max_history=2,
                min_history=2,
                use_lora=True,
                lora_mode="single",
                tiny_grid=(31, 63),
                notes=(
                    "Pollutants are log-transformed inside the model, kept non-negative, and "
                    "predicted as differences to the previous step."
                ),
            ),
            VariantSpec(
                name="wave",
                title="Aurora 0.25° ocean waves (fine-tuned on HRES-WAM)",
                class_name="AuroraWave",
                checkpoint_name="aurora-0.25-wave.ckpt",
                surf_vars=_MET_SURFACE + _WAVES + ("wind", "dwi"),
                static_vars=("lsm", "z", "slt", "wmb", "lat_mask"),
                atmos_vars=_MET_ATMOS,
                output_surf_vars=_MET_SURFACE + _WAVES + ("wind", "10u_wave", "10v_wave"),
                grid=Grid(0.25, (721, 1440)),
                patch_size=4,
                timestep=timedelta(hours=6),
                max_history=2,
                use_lora=True,
                lora_mode="from_second",
                notes=(
                    "Wave outputs are NaN where the predicted density channel is below 0.5 or "
                    "the wave model's bathymetry is 0 (land), by design."
                ),
            ),
            VariantSpec(
                name="medium-range-v1.5",
                title="Aurora 1.5 0.25° medium-range (fine-tuned on IFS analysis, hourly lead times)",
                class_name="AuroraV1p5",
                checkpoint_name="aurora-0.25-v1.5.ckpt",
                surf_vars=_V1P5_SURFACE,
                static_vars=_V1P5_STATIC,
                atmos_vars=_MET_ATMOS,
                output_surf_vars=_V1P5_SURFACE[:-1] + _V1P5_OUTPUT_ONLY + ("insolation",),
                grid=Grid(0.25, (721, 1440)),
                patch_size=4,
                timestep=timedelta(hours=6),
                max_history=2,
                use_lora=False,
                lora_mode="single",
                sub_step_hours=(1, 2, 3, 4, 5, 6),
                profiles=MappingProxyType({"full": MappingProxyType({}), "tiny": _V1P5_TINY}),
                notes=(
                    "Expects IFS analyses; forecasts every hour within each 6 h step. Cloud cover, "
                    "sea ice, soil water, snow and most statics are not in ECMWF's open data."
                ),
            ),
            VariantSpec(
                name="ensemble-v1.5",
                title="Aurora 1.5 0.25° ensemble (stochastic members)",
                class_name="AuroraV1p5Ensemble",
                checkpoint_name="aurora-0.25-v1.5-ensemble.ckpt",
                surf_vars=_V1P5_SURFACE,
                static_vars=_V1P5_STATIC,
                atmos_vars=_MET_ATMOS,
                output_surf_vars=_V1P5_SURFACE[:-1] + _V1P5_OUTPUT_ONLY + ("insolation",),
                grid=Grid(0.25, (721, 1440)),
                patch_size=4,
                timestep=timedelta(hours=6),
                max_history=2,
                use_lora=False,
                lora_mode="single",
                sub_step_hours=(1, 2, 3, 4, 5, 6),
                stochastic=True,
                profiles=MappingProxyType({"full": MappingProxyType({}), "tiny": _V1P5_TINY}),
                notes=(
                    "Each member draws the model's own noise (seeded per member); verified with "
                    "fair CRPS, spread-skill and rank histograms."
                ),
            ),
        )
    }
)


def get_variant(name: str) -> VariantSpec:
    """The spec of variant `name`, with an error that lists the valid names."""
    try:
        return VARIANTS[name]
    except KeyError:
        raise DataError(
            f"unknown variant '{name}'; expected one of: {', '.join(VARIANTS)}"
        ) from None


MODEL_INPUTS: Mapping[str, str] = MappingProxyType(
    {"coastal": "coastal_inputs", "shallow_water": "shallow_water_input"})
"""The wave model's optional inputs, derived from its own data (`model_code/data/coastal.py`):
name (the training config's `model_inputs` key) -> the constructor argument that turns it on.
A model built with any of these arguments is a `CoastalAuroraWave`; checkpoints record them
with the other constructor arguments, so a loaded model takes the same inputs."""


def model_kwargs(spec: VariantSpec, profile: str) -> dict[str, Any]:
    """Constructor arguments of `spec.model_class` for `profile`."""
    if profile not in spec.profiles:
        raise DataError(f"unknown profile '{profile}'; expected one of: {', '.join(spec.profiles)}")
    return {"use_lora": spec.use_lora, "lora_mode": spec.lora_mode, **spec.profiles[profile]}


def with_timestep(spec: VariantSpec, timestep: timedelta | None) -> VariantSpec:
    """`spec` stepping by `timestep` instead of its own, e.g. 1 h to train on hourly data.

    Windows, targets, the input contract and the model's own step (`build_model` passes
    `spec.timestep` to the constructor) all follow the spec, so one object carries the step.
    """
    if timestep is None or timestep == spec.timestep:
        return spec
    if timestep <= timedelta(0) or timestep % timedelta(hours=1):
        raise DataError(f"timestep must be a positive whole number of hours; got {timestep}")
    return replace(spec, timestep=timestep)


def with_history(spec: VariantSpec, max_history: int | None) -> VariantSpec:
    """`spec` taking up to `max_history` input times (a model built with that
    `max_history_size`; medium-range weights are published with 2)."""
    if max_history is None or max_history == spec.max_history:
        return spec
    if not isinstance(max_history, int) or max_history < spec.min_history:
        raise DataError(f"a {spec.name} model takes at least {spec.min_history} input time(s); "
                        f"got max_history_size={max_history!r}")
    return replace(spec, max_history=max_history)


def as_built(spec: VariantSpec, model: Aurora) -> VariantSpec:
    """`spec` as `model` was built: its time step and the history it takes."""
    return with_history(with_timestep(spec, getattr(model, "timestep", None)),
                        getattr(model, "max_history_size", None))


def build_model(
    spec: VariantSpec | str,
    profile: str = "tiny",
    *,
    seed: int | None = 0,
    overrides: Mapping[str, Any] | None = None,
) -> Aurora:
    """Build the model of a variant and profile, in eval mode, with seeded initial weights.

    `overrides` replace constructor arguments of the profile (e.g. `embed_dim`); lists
    become tuples, as the constructor expects; the arguments of `MODEL_INPUTS` build the wave
    model that takes its coastal and shallow-water inputs, `lags` the model that takes lagged
    inputs (`model_code/data/lags.py`), `emission_statics` the model that takes new static inputs
    from emission inventories (`model_code/data/emissions.py`) and `deseasonalise` the model that
    learns anomalies from a climatology (`model_code/data/deseasonalised.py`). The full profile
    allocates ~5 GB in float32; build it under `torch.device("meta")` to inspect it without memory.
    """
    spec = get_variant(spec) if isinstance(spec, str) else spec
    extra = {k: tuple(v) if isinstance(v, list) else v for k, v in (overrides or {}).items()}
    kwargs = {**model_kwargs(spec, profile), **extra, "timestep": spec.timestep}
    model_class = _with_inputs(spec) if any(arg in kwargs for arg in MODEL_INPUTS.values()) else spec.model_class
    if "emission_statics" in kwargs:
        from model_code.data.emissions import emission_class

        model_class = emission_class(model_class)
    if "lags" in kwargs:
        from model_code.data.lags import lagged_class

        model_class = lagged_class(model_class)
    if "deseasonalise" in kwargs:
        from model_code.data.deseasonalised import deseasonalised_class

        model_class = deseasonalised_class(model_class)
    import torch

    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        model = model_class(**kwargs).eval()
        if spec.stochastic and profile == "tiny":
            _let_noise_through(model)
        return model


def _with_inputs(spec: VariantSpec) -> type[Aurora]:
    """The class of a wave model that takes the inputs of `MODEL_INPUTS`; no other variant has them."""
    if spec.class_name != "AuroraWave":
        raise DataError(f"{', '.join(MODEL_INPUTS.values())}: only the wave variant takes coastal and "
                        f"shallow-water inputs (derived from its bathymetry wmb); got variant {spec.name}")
    from model_code.data.coastal import CoastalAuroraWave

    return CoastalAuroraWave


def _let_noise_through(model: Aurora) -> None:
    """Small random modulation weights where Aurora starts them at zero (adaptive layer norms).

    Aurora injects its ensemble noise through the context of these norms; at zero, a model that
    was never trained gives identical members. A tiny model that starts here shows an ensemble
    with spread before any training, so its members, scores and serving can be exercised; the
    full profile keeps Aurora's initialisation (it loads the published weights).
    """
    import torch
    from aurora.model.film import AdaptiveLayerNorm

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, AdaptiveLayerNorm):
                torch.nn.init.normal_(module.ln_modulation[-1].weight, std=0.02)
