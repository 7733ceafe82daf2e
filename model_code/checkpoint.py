"""Save and load model weights without unpickling arbitrary objects.

Our own checkpoints are safetensors files whose metadata names the variant, profile and
constructor arguments, so a checkpoint describes the model it belongs to, and how its
training filled the inputs its data lacked (`filled_inputs`), so a forecast from it can
feed it the same way; a wave model's coastal and shallow-water inputs are constructor
arguments like any other (`CheckpointInfo.model_inputs`). Published Aurora
checkpoints (`.ckpt`) load through `torch.load(weights_only=True)`, which refuses anything
but tensors and plain containers. Both work from a path or an `s3://` URI.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from model_code.compression import RECORD_KEY, after_load, before_load, record_of
from model_code.errors import DataError
from model_code.storage import local_copy, write_atomic
from model_code.variants import (MODEL_INPUTS, VARIANTS, VariantSpec, build_model, get_variant, model_kwargs,
                                 with_history, with_timestep)

if TYPE_CHECKING:  # imported where used: the registry reads `FORMAT` and metadata without torch
    import torch
    from aurora import Aurora

    from model_code.data.emissions import MappedInventory
    from model_code.data.lags import Lags

FORMAT = "auroraops-checkpoint/1"


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint says about itself."""

    uri: str
    variant: str
    profile: str
    metadata: dict[str, str]

    @property
    def filled_inputs(self) -> dict[str, str]:
        """`{dataset name: fill mode}` of the inputs its training data lacked (`ingest.FILL_MODES`):
        what `auroraops forecast`, the server and the pyfunc model fill them with by default."""
        return json.loads(self.metadata.get("filled_inputs", "{}"))

    @property
    def model_inputs(self) -> tuple[str, ...]:
        """The inputs its wave model derives from the data beyond the variant's (`coastal`,
        `shallow_water`; `variants.MODEL_INPUTS`), recorded with its constructor arguments:
        a forecast checks the data can give them before building the model."""
        overrides = json.loads(self.metadata.get("model_overrides", "{}"))
        return tuple(name for name, argument in MODEL_INPUTS.items() if overrides.get(argument))

    @property
    def lags(self) -> Lags | None:
        """The lagged inputs its model takes (`data.lags`), recorded with its constructor arguments:
        a forecast reads them from the data at their own times."""
        from model_code.data.lags import Lags

        argument = json.loads(self.metadata.get("model_overrides", "{}")).get("lags")
        return None if argument is None else Lags.of(argument)

    @property
    def emissions(self) -> tuple[MappedInventory, ...]:
        """The emission inventories its training mapped onto the model's inputs (`data.emissions`),
        with their paths and the numbers that mapped them: a forecast reads them again from those
        paths and maps them the same way."""
        from model_code.data.emissions import mapped_of

        return mapped_of(self.metadata.get("emissions"))

    @property
    def compression(self) -> dict[str, Any] | None:
        """The record of a compressed model (`model_code.compression`), None for others."""
        return record_of(self.metadata)

    @property
    def spec(self) -> VariantSpec:
        """The variant as this checkpoint's model was built: its time step and history."""
        spec = get_variant(self.variant)
        if "timestep_hours" in self.metadata:
            spec = with_timestep(spec, timedelta(hours=float(self.metadata["timestep_hours"])))
        return with_history(spec, json.loads(self.metadata.get("model_overrides", "{}")).get("max_history_size"))

    @property
    def training_data(self) -> dict[str, Any]:
        """The `data` section of the config it was trained with ({} for other checkpoints)."""
        return dict(json.loads(self.metadata.get("training_config", "{}")).get("data") or {})

    @property
    def training_levels(self) -> tuple[float, ...] | None:
        """The pressure levels (hPa) its training config chose, None when it took them all."""
        levels = self.training_data.get("levels")
        return tuple(float(lv) for lv in levels) if levels else None


def save_checkpoint(
    model: Aurora,
    spec: VariantSpec,
    profile: str,
    uri: str,
    *,
    extra: dict[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    filled_inputs: Mapping[str, str] | None = None,
    compression: Mapping[str, Any] | None = None,
) -> str:
    """Write `model`'s weights and self-description to `uri` (`.safetensors`), atomically.

    `overrides` are the constructor arguments `build_model` changed from the profile's;
    they and the model's time step are recorded, so `load_checkpoint` rebuilds the same model.
    `filled_inputs` (`{dataset name: fill mode}`) says how training filled absent inputs.
    `compression` is the record of a compressed model (`model_code.compression`); its weights
    are saved as the record says (float weights of an int8 model, re-quantised on load).
    """
    from safetensors.torch import save_file

    if not str(uri).endswith(".safetensors"):
        raise DataError(f"checkpoint '{uri}' must end in .safetensors")
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    overrides = dict(overrides or {})
    metadata = {
        "format": FORMAT,
        "variant": spec.name,
        "profile": profile,
        "model_class": spec.class_name,
        "model_kwargs": json.dumps({**model_kwargs(spec, profile), **overrides}, sort_keys=True, default=list),
        "model_overrides": json.dumps(overrides, sort_keys=True, default=list),
        "timestep_hours": f"{spec.timestep / timedelta(hours=1):g}",
        **({"lora_rank": str(rank)} if (rank := _lora_rank(model)) is not None else {}),
        "microsoft_aurora": version("microsoft-aurora"),
        **({"filled_inputs": json.dumps(dict(filled_inputs), sort_keys=True)} if filled_inputs else {}),
        **({RECORD_KEY: json.dumps(dict(compression), sort_keys=True)} if compression else {}),
        **(extra or {}),
    }
    return write_atomic(uri, lambda path: save_file(state, str(path), metadata=metadata))


def _lora_rank(model: Aurora) -> int | None:
    """Rank of the model's LoRA adapters (Aurora builds rank 8; fine-tuning may change it)."""
    from aurora.model.lora import LoRA

    ranks = {m.r for m in model.modules() if isinstance(m, LoRA)}
    return ranks.pop() if len(ranks) == 1 else None


def _read_safetensors(path: Path, uri: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        return load_file(str(path)), metadata
    except (SafetensorError, OSError, ValueError) as e:
        raise DataError(f"not a readable safetensors checkpoint ({e})", source=uri) from None


def read_checkpoint_info(uri: str) -> CheckpointInfo:
    """What one of this project's checkpoints says about itself, without building the model."""
    from safetensors import SafetensorError, safe_open

    with local_copy(uri) as path:
        try:
            with safe_open(str(path), framework="pt") as f:
                metadata = f.metadata() or {}
        except (SafetensorError, OSError, ValueError) as e:
            raise DataError(f"not a readable safetensors checkpoint ({e})", source=str(uri)) from None
    if metadata.get("format") != FORMAT:
        raise DataError(f"checkpoint metadata has format {metadata.get('format')!r}; expected {FORMAT!r}",
                        source=str(uri))
    return CheckpointInfo(str(uri), metadata["variant"], metadata["profile"], metadata)


def load_checkpoint(
    uri: str, *, variant: str | None = None, profile: str | None = None, device: str = "cpu"
) -> tuple[Aurora, CheckpointInfo]:
    """Build the model a checkpoint belongs to and load its weights (strictly).

    For our `.safetensors` checkpoints the variant and profile come from the file (and must
    match `variant`/`profile` if given). For published Aurora `.ckpt` files, `variant` is
    required and `profile` defaults to `full`.
    """
    with local_copy(uri) as path:
        if str(uri).endswith(".safetensors"):
            state, metadata = _read_safetensors(path, str(uri))
            if metadata.get("format") != FORMAT:
                raise DataError(
                    f"checkpoint metadata has format {metadata.get('format')!r}; expected {FORMAT!r}",
                    source=str(uri),
                )
            for name, given in (("variant", variant), ("profile", profile)):
                if given is not None and given != metadata[name]:
                    raise DataError(
                        f"checkpoint holds {name} '{metadata[name]}', not '{given}'", source=str(uri)
                    )
            spec = CheckpointInfo(str(uri), metadata["variant"], metadata["profile"], metadata).spec
            overrides = json.loads(metadata.get("model_overrides", "{}"))
            model = build_model(spec, metadata["profile"], seed=None, overrides=overrides)
            if "lora_rank" in metadata and _lora_rank(model) != int(metadata["lora_rank"]):
                from model_code.training.optim import set_lora_rank  # adapters are rebuilt after construction

                set_lora_rank(model, int(metadata["lora_rank"]))
            record = record_of(metadata)
            model = before_load(model, record)
            _load_state(model, state, str(uri))
            model = after_load(model, record)
            info = CheckpointInfo(str(uri), spec.name, metadata["profile"], metadata)
        else:
            if variant is None:
                raise DataError("a published Aurora checkpoint needs the variant it belongs to", source=str(uri))
            spec = get_variant(variant)
            _check_published_name(uri, spec)
            profile = profile or "full"
            model = build_model(spec, profile, seed=None)
            try:
                model.load_checkpoint_local(str(path), strict=True)
            except Exception as e:  # unpickling errors, key mismatches, shape mismatches
                raise DataError(
                    f"cannot load as a {spec.name}/{profile} Aurora checkpoint "
                    f"(weights-only loading; {type(e).__name__}: {str(e).splitlines()[0][:300]})",
                    source=str(uri),
                ) from None
            info = CheckpointInfo(str(uri), spec.name, profile, {"format": "aurora-ckpt"})
    return model.to(device).eval(), info


def _check_published_name(uri: str, spec: VariantSpec) -> None:
    """Refuse, before building anything, a published file named for another variant (an Aurora
    1.5 checkpoint loaded as the 0.25° medium-range model, or the reverse)."""
    name = str(uri).rstrip("/").rsplit("/", 1)[-1]
    owner = next((v for v in VARIANTS.values() if v.checkpoint_name == name), None)
    if owner is not None and owner.name != spec.name:
        raise DataError(f"'{name}' is the published checkpoint of the {owner.name} variant "
                        f"({owner.class_name}), not of {spec.name} ({spec.class_name}); "
                        f"load it with --variant {owner.name}", source=str(uri))


def load_weights(model: Aurora, uri: str) -> None:
    """Load the weights of `uri` into an already built `model`, strictly.

    For starting a fine-tuning run or resuming one, where the model is built from a config:
    this project's `.safetensors` (LoRA adapters are given the checkpoint's rank first) or a
    published Aurora `.ckpt` (weights-only). Path or s3:// URI.
    """
    with local_copy(uri) as path:
        if str(uri).endswith(".safetensors"):
            state, metadata = _read_safetensors(path, str(uri))
            if "lora_rank" in metadata and _lora_rank(model) != int(metadata["lora_rank"]):
                from model_code.training.optim import set_lora_rank

                set_lora_rank(model, int(metadata["lora_rank"]))
            record = record_of(metadata)  # a compressed model's: its shapes first (pruned widths), in place
            refused = f"a {(record or {}).get('method')} checkpoint cannot be loaded into a built model in place"
            if before_load(model, record) is not model:
                raise DataError(refused, source=str(uri))
            _load_state(model, state, str(uri))
            if after_load(model, record) is not model:
                raise DataError(refused, source=str(uri))
            model.compression_record = record  # what checkpoints saved from this model carry (`Trainer._save`)
            return
        try:
            model.load_checkpoint_local(str(path), strict=True)
        except Exception as e:  # unpickling errors, key mismatches, shape mismatches
            raise DataError(f"cannot load as weights of this model ({type(e).__name__}: "
                            f"{str(e).splitlines()[0][:300]})", source=str(uri)) from None


def _load_state(model: Aurora, state: dict[str, torch.Tensor], uri: str) -> None:
    result = model.load_state_dict(state, strict=False)
    problems = [f"missing weight {k}" for k in result.missing_keys[:5]]
    problems += [f"unexpected weight {k}" for k in result.unexpected_keys[:5]]
    if problems:
        raise DataError(
            f"weights do not match the model ({len(result.missing_keys)} missing, "
            f"{len(result.unexpected_keys)} unexpected)",
            source=uri,
            problems=problems,
        )
