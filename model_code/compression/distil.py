"""Knowledge distillation: a smaller student trained towards a blend of the truth and a teacher.

A student is an ordinary smaller model: its architecture is in its checkpoint's
`model_overrides` like any other, so loading one needs no step of its own (`before_load` and
`after_load` are no-ops); its `compression` record only says where it came from:
`{"method": "distil", "teacher", "teacher_sha256", "alpha", "teacher_parameters",
"student_parameters"}`. The training itself is the trainer's (`distil` section of the
training config, `model_code.training.distillation`, which also writes the config of a
distillation run: `distil_config`); this module chooses the student's architecture
(`student_overrides`) and counts parameters without allocating them.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import threading
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from model_code.errors import ConfigError
from model_code.variants import VariantSpec, model_kwargs

if TYPE_CHECKING:
    from aurora import Aurora

__all__ = [
    "SIZE_KEYS",
    "after_load",
    "architecture",
    "before_load",
    "parameter_count",
    "student_overrides",
    "weights_on_meta_device",
]

SIZE_KEYS = ("embed_dim", "encoder_depths", "decoder_depths")
"""The constructor arguments `student_overrides` shrinks; every other one stays the teacher's."""

_HEAD_KEYS = ("num_heads", "encoder_num_heads", "decoder_num_heads")
NOT_INHERITED = ("surf_stats",)
"""Teacher constructor arguments a student does not take over: `surf_stats` are its training
data's own (the student's run computes them from its data with `data.normalisation: training`)."""


def before_load(model: Aurora, record: Mapping[str, Any]) -> Aurora:
    """Nothing to do: the student's architecture is in the checkpoint's `model_overrides`."""
    return model


def after_load(model: Aurora, record: Mapping[str, Any]) -> Aurora:
    """Nothing to do: a student's weights are ordinary float weights."""
    return model


# ---- architectures --------------------------------------------------------------------------

def _constructor_defaults(cls: type) -> dict[str, Any]:
    """Default of every named constructor argument of `cls`, the subclass's first
    (`AuroraHighRes` sets its own depths and hands the rest on to `Aurora`)."""
    defaults: dict[str, Any] = {}
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        params = inspect.signature(klass.__init__).parameters.values()
        for p in params:
            if p.default is not p.empty and p.name not in defaults:
                defaults[p.name] = p.default
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return defaults


def architecture(spec: VariantSpec, profile: str | Mapping[str, Any]) -> dict[str, Any]:
    """The size arguments (`SIZE_KEYS` and the head counts) a model is built with.

    `profile`: a profile name (`tiny`, `full`), or a model's constructor arguments as a
    checkpoint records them (`json.loads(metadata["model_kwargs"])`: the profile's and the
    overrides); what it leaves out is the class's default.
    """
    given = model_kwargs(spec, profile) if isinstance(profile, str) else dict(profile)
    merged = {**_constructor_defaults(spec.model_class), **given}
    out = {}
    for key in (*SIZE_KEYS, *_HEAD_KEYS):
        value = merged[key]
        out[key] = tuple(value) if isinstance(value, (list, tuple)) else value
    return out


def student_overrides(spec: VariantSpec, teacher_profile: str | Mapping[str, Any], *,
                      depth_factor: float = 0.5, embed_factor: float = 0.5) -> dict[str, Any]:
    """`cfg.model` overrides of a student smaller than its teacher: fewer blocks, smaller embedding.

    `teacher_profile`: the teacher's profile name or constructor arguments (`architecture`).
    Each backbone stage keeps `depth_factor` of its Swin blocks (rounded, at least one); the
    embedding keeps `embed_factor` of its width, rounded down to a multiple of every head count
    (and of 8), so each attention layer keeps its number of heads with narrower heads. The
    tiny profile's stages already hold one block each, so its students differ in width only.
    Lists, so the overrides go into a YAML config as they are.
    """
    for name, value in (("depth_factor", depth_factor), ("embed_factor", embed_factor)):
        if not (isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value <= 1):
            raise ConfigError(f"must lie in (0, 1]; got {value!r}", field=name)
    arch = architecture(spec, teacher_profile)
    depths = {key: [max(1, math.floor(d * depth_factor + 0.5)) for d in arch[key]]  # half up: 5 -> 3
              for key in ("encoder_depths", "decoder_depths")}
    step = math.lcm(8, arch["num_heads"], *arch["encoder_num_heads"], *arch["decoder_num_heads"])
    embed = int(arch["embed_dim"] * embed_factor) // step * step
    if embed < step:
        raise ConfigError(f"an embedding of {arch['embed_dim']} x {embed_factor} is narrower than the "
                          f"{step} its attention heads need", field="embed_factor")
    return {"embed_dim": embed, **depths}


_META_LOCK = threading.Lock()


@contextlib.contextmanager
def weights_on_meta_device() -> Iterator[None]:
    """Build modules whose parameters live on the meta device: shapes without memory (the full
    profile takes 5 GB on a CPU). `with torch.device("meta")` fails: Aurora's constructor calls
    `.item()` on a tensor. Patches `torch.nn.Module.register_parameter` for the duration, under a
    lock, so use it for building only."""
    import torch

    with _META_LOCK:
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


def parameter_count(spec: VariantSpec, profile: str, overrides: Mapping[str, Any] | None = None,
                    *, lora_rank: int | None = None) -> int:
    """Parameters of the model `build_model(spec, profile, overrides=...)` builds (with LoRA
    adapters of `lora_rank`), counted on the meta device: no weights are allocated."""
    from model_code.variants import build_model

    with weights_on_meta_device():
        model = build_model(spec, profile, seed=None, overrides=overrides)
        if lora_rank is not None:
            from model_code.training.optim import set_lora_rank

            set_lora_rank(model, lora_rank)
    return sum(p.numel() for p in model.parameters())
