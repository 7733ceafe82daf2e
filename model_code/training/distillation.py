"""Knowledge distillation in the training loop: a teacher's forecast blended into the targets.

With a `distil.teacher` the trainer checks the teacher before any work (`check_teacher`:
readable, this project's checkpoint, the run's variant, step and history, not quantised, no
smaller than the student), loads it once after the student (`Distiller`: eval mode, no
gradients, the run's device and precision), and in every training step rolls it out on the
same input batch for as many steps as the student (the curriculum's), then trains on

    alpha * truth + (1 - alpha) * teacher   where the truth is finite,
    teacher                                 where the truth is NaN (variables filled in the inputs),
    truth                                   where only the teacher is NaN (no wave on land),

directions (degrees) along the shorter arc between the two. Validation is untouched: it
judges the truth alone, so early stopping and the "best" checkpoint measure real skill. Every
checkpoint of the run carries the compression record `Distiller.record`.
"""

from __future__ import annotations

import copy
import json
import math
import warnings
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from aurora import Aurora, Batch, rollout

from model_code.checkpoint import FORMAT, CheckpointInfo, load_checkpoint, read_checkpoint_info
from model_code.compression import is_compressed_for_inference, record_of
from model_code.data.samples import Sample
from model_code.errors import ConfigError, DataError
from model_code.storage import content_hash, local_copy
from model_code.compression.distil import NOT_INHERITED, SIZE_KEYS, student_overrides
from model_code.training.config import TrainConfig, config_from_dict
from model_code.variables import variable
from model_code.variants import get_variant, model_kwargs

__all__ = ["Distiller", "TeacherCheck", "blend_batch", "check_teacher"]


@dataclass(frozen=True)
class TeacherCheck:
    """A teacher that passed `check_teacher`, with the two parameter counts it was judged by."""

    uri: str
    info: CheckpointInfo
    parameters: int
    """Elements of the weights the teacher's checkpoint stores (its parameters: Aurora has no buffers)."""
    student_parameters: int
    """Parameters of the model the config builds, counted on the meta device."""


def _refuse(message: str) -> ConfigError:
    return ConfigError(message, field="distil.teacher")


def _read_header(uri: str) -> tuple[dict[str, str], int]:
    """(metadata, number of stored weights) of a safetensors file, from its header alone."""
    from safetensors import SafetensorError, safe_open

    try:
        with local_copy(uri) as path, safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            count = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
    except DataError as e:
        raise _refuse(f"cannot read the teacher {uri}: {e}") from None
    except (SafetensorError, OSError, ValueError) as e:
        raise _refuse(f"the teacher {uri} is not a readable safetensors checkpoint ({e})") from None
    return metadata, count


def check_teacher(cfg: TrainConfig) -> TeacherCheck | None:
    """Refuse, before any data is read or model built, a teacher the run cannot learn from;
    None when the config distils nothing. Reads the checkpoint's header only."""
    from model_code.compression.distil import parameter_count

    if not cfg.distil.enabled:
        return None
    uri = cfg.distil.teacher
    metadata, stored = _read_header(uri)
    if metadata.get("format") != FORMAT:
        raise _refuse(f"the teacher {uri} has format {metadata.get('format')!r}, not this project's {FORMAT!r}")
    info = CheckpointInfo(uri, metadata["variant"], metadata["profile"], metadata)
    try:
        record = record_of(metadata)
    except DataError as e:
        raise _refuse(f"the teacher {uri}: {e}") from None
    if is_compressed_for_inference(record):
        raise _refuse(f"the teacher {uri} is quantised ({record['method']}): int8 models run inference only; "
                      "distil from the float checkpoint it was quantised from")
    if info.variant != cfg.variant:
        raise _refuse(f"the teacher {uri} is a {info.variant} model; this run trains {cfg.variant}")
    spec, teacher_spec = cfg.spec, info.spec
    if teacher_spec.timestep != spec.timestep:
        raise _refuse(f"the teacher {uri} steps {teacher_spec.timestep_hours} h, this run "
                      f"{spec.timestep_hours} h (timestep_hours): its forecasts would be valid at other times")
    history = cfg.data.history or spec.max_history
    if teacher_spec.max_history < history:
        raise _refuse(f"the teacher {uri} takes at most {teacher_spec.max_history} input time(s); "
                      f"this run's samples hold {history} (data.history)")
    with warnings.catch_warnings():  # Aurora warns about given `surf_stats` on every build
        warnings.simplefilter("ignore")
        student = parameter_count(spec, cfg.profile, cfg.model, lora_rank=cfg.optim.lora_rank)
    if student > stored:
        raise ConfigError(f"the student ({student:,} parameters) is larger than its teacher {uri} "
                          f"({stored:,}): distil into a smaller architecture (compression.distil.student_overrides)",
                          field="model")
    return TeacherCheck(uri, info, stored, student)


def _autocast_like(model: Aurora, precision: str) -> None:
    """The student's precision for the teacher too (Aurora's own autocast of the backbone)."""
    if precision == "fp32":
        return
    model.autocast = model.autocast_backbone = True
    model.autocast_dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    if precision == "fp16":
        for m in model.modules():
            if hasattr(m, "use_fp16_safe_attention"):
                m.use_fp16_safe_attention = True


def _blend(truth: torch.Tensor, teacher: torch.Tensor, alpha: float, angle: bool) -> torch.Tensor:
    teacher = teacher.to(dtype=truth.dtype, device=truth.device)
    t_ok, p_ok = torch.isfinite(truth), torch.isfinite(teacher)
    if angle:  # along the shorter arc: 350° and 10° blend to 0°, not 180°
        delta = torch.remainder(teacher - truth + 180.0, 360.0) - 180.0
        mixed = torch.remainder(truth + (1 - alpha) * delta, 360.0)
    else:
        mixed = alpha * truth + (1 - alpha) * teacher
    return torch.where(t_ok & p_ok, mixed, torch.where(t_ok, truth, teacher))


def blend_batch(truth: Batch, teacher: Batch, alpha: float) -> Batch:
    """`truth` with every variable blended with the teacher's forecast of the same valid time:
    alpha * truth + (1 - alpha) * teacher where both are finite, the teacher where the truth is
    NaN, the truth where the teacher is NaN. Directions (degrees) blend along the shorter arc."""
    if tuple(teacher.metadata.time) != tuple(truth.metadata.time):
        raise DataError(f"the teacher's forecast is valid at {teacher.metadata.time}, the target at "
                        f"{truth.metadata.time}")
    if teacher.spatial_shape != truth.spatial_shape:
        raise DataError(f"the teacher's forecast is on a {tuple(teacher.spatial_shape)} grid, the target on "
                        f"{tuple(truth.spatial_shape)}")

    def blended(kind: str, name: str, x: torch.Tensor, predicted: dict[str, torch.Tensor]) -> torch.Tensor:
        if name not in predicted:
            raise DataError(f"the teacher does not predict '{name}'")
        return _blend(x, predicted[name], alpha, variable(kind, name).units == "degree")

    return Batch(
        surf_vars={k: blended("surface", k, v, teacher.surf_vars) for k, v in truth.surf_vars.items()},
        static_vars=truth.static_vars,
        atmos_vars={k: blended("atmos", k, v, teacher.atmos_vars) for k, v in truth.atmos_vars.items()},
        metadata=truth.metadata,
    )


class Distiller:
    """The loaded teacher: blends its forecasts into training targets, describes the student."""

    def __init__(self, teacher: TeacherCheck, alpha: float, device: torch.device | str,
                 precision: str = "fp32") -> None:
        self.uri, self.alpha = teacher.uri, float(alpha)
        with local_copy(teacher.uri) as path:  # one download from s3: the hash and the weights
            self.sha256 = content_hash(str(path))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Aurora's note on the teacher's own `surf_stats`
                model, _ = load_checkpoint(str(path), device=str(device))
        model.requires_grad_(False)
        _autocast_like(model, precision)
        self.model = model.eval()
        self.parameters = sum(p.numel() for p in model.parameters())

    @classmethod
    def for_run(cls, teacher: TeacherCheck | None, cfg: TrainConfig, device: torch.device) -> Distiller | None:
        return None if teacher is None else cls(teacher, cfg.distil.alpha, device, cfg.train.precision)

    @torch.no_grad()
    def blend(self, sample: Sample, steps: int) -> Sample:
        """`sample` with its targets up to lead `steps` (those the student's rollout of `steps`
        steps is scored on) blended with the teacher's rollout of as many steps from the same inputs."""
        leads = [k for k in sample.lead_steps if k <= steps]
        if not leads:
            return sample
        predictions = list(rollout(self.model, sample.inputs, steps=max(leads)))
        targets = tuple(blend_batch(t, predictions[k - 1], self.alpha) if k <= steps else t
                        for k, t in zip(sample.lead_steps, sample.targets))
        return Sample(sample.inputs, targets, sample.lead_steps)

    def record(self, student: Aurora) -> dict[str, Any]:
        """The compression record every checkpoint of the student carries."""
        return {"method": "distil", "teacher": self.uri, "teacher_sha256": self.sha256, "alpha": self.alpha,
                "teacher_parameters": self.parameters,
                "student_parameters": sum(p.numel() for p in student.parameters())}


def distil_config(base_cfg_dict: Mapping[str, Any], teacher_uri: str, alpha: float, *,
                  depth_factor: float = 0.5, embed_factor: float = 0.5,
                  model: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The training config (plain data, as `config_from_dict` and `train` take it) of a student
    of `teacher_uri` trained with truth weight `alpha`, from `base_cfg_dict`'s sections (data,
    optimiser, schedule, ...; typically the config the teacher was trained with).

    From the teacher's checkpoint: the variant, profile, time step and the constructor arguments
    that are not sizes (history, drop rate, ...) unless the base config sets them; the student's
    sizes come from `student_overrides` (or `model`, which replaces them and anything else).
    Starting weights are dropped: the student's architecture is not the base config's.
    Checked with `config_from_dict` before it is returned, so a bad value is refused here.
    """
    cfg = copy.deepcopy(dict(base_cfg_dict))
    try:
        info = read_checkpoint_info(teacher_uri)
    except DataError as e:
        raise ConfigError(f"cannot read the teacher: {e}", field="distil.teacher") from None
    variant = cfg.setdefault("variant", info.variant)
    if variant != info.variant:
        raise ConfigError(f"the teacher {teacher_uri} is a {info.variant} model, not {variant}", field="variant")
    spec = get_variant(info.variant)
    cfg["profile"] = info.profile
    if "timestep_hours" in info.metadata:
        cfg.setdefault("timestep_hours", int(float(info.metadata["timestep_hours"])))
    teacher_kwargs = json.loads(info.metadata.get("model_kwargs", "{}")) or model_kwargs(spec, info.profile)
    inherited = {k: v for k, v in json.loads(info.metadata.get("model_overrides", "{}")).items()
                 if k not in NOT_INHERITED and k not in SIZE_KEYS}
    sizes = student_overrides(spec, teacher_kwargs, depth_factor=depth_factor, embed_factor=embed_factor)
    cfg["model"] = {**inherited, **dict(cfg.get("model") or {}), **sizes, **dict(model or {})}
    cfg.pop("weights", None)
    cfg["distil"] = {**dict(cfg.get("distil") or {}), "teacher": str(teacher_uri), "alpha": alpha}
    config_from_dict(cfg)
    return cfg
