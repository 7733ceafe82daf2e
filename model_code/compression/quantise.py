"""Post-training int8 quantisation of the Linear layers, and bf16 weights, for inference.

Three methods, each a function from a float model to `(model, record)`:

- `quantise_dynamic`: `torch.ao.quantization.quantize_dynamic` of the `nn.Linear` layers (qint8
  weights, per output channel; activations quantised per call from their own range).
  Record `{"method": "int8-dynamic", "layers": n}`.
- `quantise_static`: int8 Linear layers whose input and output scales were calibrated once,
  by running the float model on real batches with observers on every Linear's input and
  output. Each Linear becomes `Int8StaticLinear`: quantise the input with the calibrated
  scale/zero point, `torch.ao.nn.quantized.Linear` (qint8 weights per output channel),
  dequantise the output. Record `{"method": "int8-static", "variant", "calibration":
  {"batches", "source", "steps", "observer"}, "scales": {layer: [in_scale, in_zp, out_scale,
  out_zp]}}`.
- `to_bf16`: the backbone's Linear and LoRA weights in bf16 (98.7 % of the full model's
  parameters) under Aurora's own backbone autocast. Record `{"method": "bf16"}`.

The int8 methods quantise the layers that are exactly `nn.Linear` (314 in the full model, 62 in
the tiny one): the decoder's output heads (`LinearPatchReconstruction`, a subclass; 0.01 % of
the weights) stay float32, since their outputs are the forecast itself.

int8 runs on CPUs only (PyTorch's x86/fbgemm kernels; `_use_engine` selects the engine).
A model holding int8 layers must not be moved to a GPU.

Saving and loading. safetensors stores tensors, not packed int8 parameters, so the checkpoint of
an int8 model holds its FLOAT weights, under the float model's names, with its record; loading
rebuilds the float model, loads them strictly and `after_load` quantises again. Quantising is a
pure function of the float weights (and, for int8-static, of the recorded scales: no calibration
data is needed to load), so the loaded model forecasts exactly as the model that was saved.
For this the int8 layers that `quantise_dynamic` / `quantise_static` return keep the float
weights they were made from, and their `state_dict()` holds those (`weight`, `bias`) and
nothing else: save a compressed model as any other,

    qmodel, record = quantise_static(model, batches, spec)
    save_checkpoint(qmodel, spec, profile, uri, compression=record)

while a model loaded from such a checkpoint drops them (it holds int8 weights only: a quarter
of the float bytes, half counting the packed copy fbgemm keeps): its `state_dict()` refuses,
copy its checkpoint instead. A bf16
checkpoint holds the bf16 weights themselves; `before_load` casts the fresh model the same
way, so they load strictly and bit for bit. Training an int8 checkpoint is refused
(`model_code.compression.is_compressed_for_inference`, checked by the trainer).

Choices, measured on the tiny medium-range model and a real ERA5 window; errors are the largest
difference from the float model's two-step forecast in units of each variable's normalisation
scale (tests/test_compression_quantise.py), one step for the full architecture:

- Weights per output channel (dynamic and static): the rows of Aurora's layers differ in range;
  one scale per row costs nothing at run time (dynamic int8 error 0.049 against 0.064 per tensor).
- Activations quint8 per tensor, affine (their ranges are one-sided after GELU and shifted
  after the adaptive layer norms). Inputs use 7 bits (`reduce_range`, as PyTorch's x86 and
  fbgemm defaults): fbgemm's AVX2 kernels can saturate int16 sums with 8-bit inputs on CPUs
  without VNNI, and the serving CPU is not known when a checkpoint is written (on the full
  architecture, random weights, the 7th bit costs: static one-step error 0.30 against 0.22).
  Outputs are dequantised at once, so they keep all 8 bits.
- Static observers: `HistogramObserver`, not MinMax. The histogram picks the range minimising
  the L2 quantisation error, so a few extreme activations (Aurora's residual stream and
  layer-norm modulation have heavy tails) do not spend the 256 levels on values that almost
  never occur; MinMax keeps every outlier (static int8 error 0.060 with histograms, 0.081 with
  MinMax; on the full architecture 0.30 and 0.42).
- bf16: casting the whole model (`model.to(torch.bfloat16)`) does not work: Aurora's forward
  casts the batch to the first parameter's dtype, latitudes and longitudes included, and bf16
  has a spacing of 2 degrees above 256 degrees east (longitudes stop increasing, or reach 360),
  and of 2 K near 280 K. So the encoder (the first parameter), the decoder,
  normalisation, layer norms and patch embeddings stay float32 and only the backbone computes
  in bf16: its weights are stored in bf16 and `autocast_backbone` runs it in bf16 (CPU autocast
  casts the inputs of Linear layers and matmuls, not those of layer norms, whose weights
  therefore stay float32). Outputs are float32: the decoder runs in float32 and Aurora unnormalises in float32.
  Numerically this is the model under Aurora's bf16 backbone autocast (autocast rounds the same
  weights to bf16 on every call).
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import torch
from torch import nn
from torch.ao.nn.quantized import Linear as QuantisedLinear
from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantisedLinear

from model_code.errors import DataError

if TYPE_CHECKING:
    from aurora import Aurora, Batch

    from model_code.variants import VariantSpec

__all__ = [
    "Int8DynamicLinear",
    "Int8StaticLinear",
    "after_load",
    "before_load",
    "quantise_dynamic",
    "quantise_static",
    "to_bf16",
    "weight_bytes",
]

ENGINES = ("x86", "fbgemm")
"""PyTorch quantised engines the int8 layers run on (both fbgemm kernels on x86 CPUs)."""

OBSERVER = "histogram"
"""Observer of the static calibration: `histogram` (HistogramObserver) or `minmax`."""


@contextlib.contextmanager
def _quiet():
    """Without PyTorch's notices that eager-mode quantisation is deprecated (for torchao)."""
    with warnings.catch_warnings():
        for message in ("torch.ao.quantization is deprecated", ".*quantized tensor creation functions",
                        "Please use quant_min and quant_max"):
            warnings.filterwarnings("ignore", message=message)
        yield


def _use_engine() -> str:
    """Select an x86/fbgemm quantised engine (PyTorch's default on x86) for the int8 layers."""
    if torch.backends.quantized.engine not in ENGINES:
        supported = torch.backends.quantized.supported_engines
        engine = next((e for e in ENGINES if e in supported), None)
        if engine is None:
            raise DataError(f"int8 layers need PyTorch's x86 or fbgemm quantised engine; this build has "
                            f"{', '.join(supported) or 'none'}")
        torch.backends.quantized.engine = engine
    return torch.backends.quantized.engine


def _weight_observer() -> nn.Module:
    from torch.ao.quantization.observer import PerChannelMinMaxObserver

    return PerChannelMinMaxObserver(ch_axis=0, dtype=torch.qint8, qscheme=torch.per_channel_symmetric)


def _quantised_weight(weight: torch.Tensor) -> torch.Tensor:
    """`weight` (out, in) as qint8, one symmetric scale per output channel: a pure function of it."""
    from torch.ao.nn.quantized.modules.utils import _quantize_weight

    observer = _weight_observer()
    weight = weight.detach().float()
    observer(weight)
    return _quantize_weight(weight, observer)


def _float_state(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    """State-dict post hook of the int8 layers: the float `weight` and `bias` they were made
    from, under nn.Linear's names, instead of their packed parameters (see the module docstring)."""
    for key in [k for k in state_dict if k.startswith(prefix)]:
        del state_dict[key]
    if module.float_weights is None:
        raise DataError(f"int8 layer '{prefix.rstrip('.')}' holds no float weights (a model loaded from an int8 "
                        "checkpoint keeps only its int8 weights): copy the checkpoint it was loaded from instead "
                        "of saving it again")
    weight, bias = module.float_weights
    state_dict[prefix + "weight"] = weight
    if bias is not None:
        state_dict[prefix + "bias"] = bias


def _refuse_loading(prefix: str) -> None:
    raise DataError(f"int8 layer '{prefix.rstrip('.')}' cannot load weights: load the checkpoint with "
                    "`load_checkpoint`, which loads the float weights and quantises them again")


def _float_weights_of(linear: nn.Linear) -> tuple[torch.Tensor, torch.Tensor | None]:
    return linear.weight.detach(), None if linear.bias is None else linear.bias.detach()


class Int8DynamicLinear(DynamicQuantisedLinear):
    """PyTorch's dynamically quantised Linear (qint8 weights per output channel, activations
    quantised per call), which keeps the float weights it was made from for `state_dict()`
    (`float_weights`; None once dropped) and accepts inputs of any float dtype."""

    float_weights: tuple[torch.Tensor, torch.Tensor | None] | None = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register_state_dict_post_hook(_float_state)

    @classmethod
    def from_float(cls, mod: nn.Module, use_precomputed_fake_quant: bool = False) -> Int8DynamicLinear:
        """The int8 layer of `mod` (what `quantize_dynamic` calls for every Linear)."""
        layer = super().from_float(mod, use_precomputed_fake_quant=use_precomputed_fake_quant)
        layer.float_weights = _float_weights_of(mod)
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).to(x.dtype)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        _refuse_loading(prefix)


class Int8StaticLinear(nn.Module):
    """A Linear layer in int8 with calibrated activation scales: quantise the input (quint8,
    `in_scale`, `in_zero_point`), `torch.ao.nn.quantized.Linear` (qint8 weights per output
    channel, int8 output at `out_scale`, `out_zero_point`), dequantise. Keeps the float weights
    it was made from for `state_dict()` (`float_weights`) unless made with `keep_float=False`."""

    def __init__(self, linear: nn.Linear, qparams: Sequence[float], *, keep_float: bool = True):
        super().__init__()
        in_scale, in_zero_point, out_scale, out_zero_point = qparams
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.in_scale, self.in_zero_point = float(in_scale), int(in_zero_point)
        layer = QuantisedLinear(linear.in_features, linear.out_features, bias_=linear.bias is not None,
                                dtype=torch.qint8)
        bias = None if linear.bias is None else linear.bias.detach().float()
        layer.set_weight_bias(_quantised_weight(linear.weight), bias)
        layer.scale, layer.zero_point = float(out_scale), int(out_zero_point)
        self.quantised = layer
        self.float_weights = _float_weights_of(linear) if keep_float else None
        self.register_state_dict_post_hook(_float_state)

    @property
    def qparams(self) -> list[float | int]:
        """`[in_scale, in_zero_point, out_scale, out_zero_point]`, as the record holds them."""
        return [self.in_scale, self.in_zero_point, float(self.quantised.scale), int(self.quantised.zero_point)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = torch.quantize_per_tensor(x.float(), self.in_scale, self.in_zero_point, torch.quint8)
        return self.quantised(q).dequantize().to(x.dtype)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"in_scale={self.in_scale:.4g}, in_zero_point={self.in_zero_point}")

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        _refuse_loading(prefix)


# ---- dynamic --------------------------------------------------------------------------------


def quantise_dynamic(model: Aurora, *, inplace: bool = False, keep_float: bool = True) -> tuple[Aurora, dict]:
    """Dynamic int8 of the `nn.Linear` layers of `model` (`torch.ao.quantization.quantize_dynamic`,
    which swaps modules of exactly that type: the output heads, a subclass, stay float32).

    `inplace=False` quantises a copy (PyTorch's semantics; the full model then takes twice its
    float memory for a while), `inplace=True` replaces the layers of `model` itself.
    `keep_float=False` drops the float weights (a leaner model that cannot be saved)."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    _use_engine()
    with _quiet():
        model = quantize_dynamic(model, {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8,
                                 mapping={nn.Linear: Int8DynamicLinear}, inplace=inplace)
    layers = [m for m in model.modules() if isinstance(m, Int8DynamicLinear)]
    for m in model.modules():  # quantize_dynamic leaves its qconfig on every module
        if hasattr(m, "qconfig"):
            del m.qconfig
    if not keep_float:
        for layer in layers:
            layer.float_weights = None
    return model, {"method": "int8-dynamic", "layers": len(layers)}


# ---- static ---------------------------------------------------------------------------------


def check_calibration(model: Aurora, batches: Sequence[Batch], spec: VariantSpec) -> None:
    """Refuse calibration batches that are not inputs of `model` (`spec`'s variables, levels and
    history), and a `spec` that is not `model`'s, before any work."""
    from aurora import Batch

    if type(model).__name__ != spec.class_name:
        raise DataError(f"the model is an {type(model).__name__}, not the {spec.class_name} of the {spec.name} variant")
    if not batches:
        raise DataError("calibrating int8-static needs at least one batch of real inputs")
    wanted = {"surface": set(spec.surf_vars), "static": set(spec.static_vars), "atmospheric": set(spec.atmos_vars)}
    for i, batch in enumerate(batches):
        if not isinstance(batch, Batch):
            raise DataError(f"calibration batch {i} is a {type(batch).__name__}, not an aurora.Batch")
        given = {"surface": set(batch.surf_vars), "static": set(batch.static_vars),
                 "atmospheric": set(batch.atmos_vars)}
        problems = []
        for kind in wanted:
            if missing := sorted(wanted[kind] - given[kind]):
                problems.append(f"{kind} variable(s) {', '.join(missing)} missing")
            if extra := sorted(given[kind] - wanted[kind]):
                problems.append(f"{kind} variable(s) {', '.join(extra)} not read by {spec.name}")
        if extra := sorted(set(batch.metadata.atmos_levels) - set(spec.levels)):
            problems.append(f"pressure level(s) {', '.join(f'{lv:g}' for lv in extra)} hPa not among the "
                            f"model's ({', '.join(map(str, spec.levels))})")
        history = next(iter(batch.surf_vars.values())).shape[1] if batch.surf_vars else 0
        if not spec.min_history <= history <= spec.max_history:
            problems.append(f"{history} input time(s); the model takes {spec.min_history} to {spec.max_history}")
        if problems:
            raise DataError(f"calibration batch {i} is not an input of the {spec.name} model", problems=problems)


def _activation_observer(reduce_range: bool) -> nn.Module:
    from torch.ao.quantization.observer import HistogramObserver, MinMaxObserver

    kind = {"histogram": HistogramObserver, "minmax": MinMaxObserver}[OBSERVER]
    return kind(dtype=torch.quint8, qscheme=torch.per_tensor_affine, reduce_range=reduce_range)


def calibrate(model: Aurora, batches: Sequence[Batch], steps: int = 1) -> dict[str, list[float | int]]:
    """`{layer name: [in_scale, in_zero_point, out_scale, out_zero_point]}` of every `nn.Linear`
    of `model` a forecast of `steps` steps from each batch calls (a layer it never calls is left out)."""
    from aurora import rollout  # not model_code.forecast: checkpoints load through this module

    layers = {name: m for name, m in model.named_modules() if type(m) is nn.Linear}
    observers = {name: (_activation_observer(True), _activation_observer(False)) for name in layers}

    def observe(name):
        def hook(module, args, output):
            observers[name][0](args[0].detach().float())
            observers[name][1](output.detach().float())
        return hook

    handles = [m.register_forward_hook(observe(name)) for name, m in layers.items()]
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # a stochastic model's noise: the calibration is a function of its inputs
            with torch.inference_mode():
                for batch in batches:
                    for _ in rollout(model, batch, steps):
                        pass
    finally:
        for handle in handles:
            handle.remove()
    scales = {}
    for name, (seen_in, seen_out) in observers.items():
        if not torch.isfinite(seen_in.min_val).item():  # never called
            continue
        qparams = []
        for observer in (seen_in, seen_out):
            scale, zero_point = observer.calculate_qparams()
            qparams += [float(scale), int(zero_point)]
        scales[name] = qparams
    return scales


def _describe(batches: Sequence[Batch]) -> str:
    times = sorted(t for b in batches for t in b.metadata.time)
    h, w = next(iter(batches[0].surf_vars.values())).shape[-2:]
    when = f"{times[0]:%Y-%m-%dT%H:%M}" + (f" to {times[-1]:%Y-%m-%dT%H:%M}" if times[-1] != times[0] else "")
    return f"{len(batches)} batch(es) with initial times {when} on a {h}x{w} grid"


def quantise_static(model: Aurora, calibration_batches: Sequence[Batch], spec: VariantSpec, *,
                    source: str | None = None, steps: int = 2, inplace: bool = False,
                    keep_float: bool = True) -> tuple[Aurora, dict]:
    """Static int8 of the Linear layers of `model`, calibrated on real `calibration_batches`.

    The float model forecasts `steps` steps from each batch with observers on every Linear's
    input and output; each Linear it calls becomes an `Int8StaticLinear` with those scales.
    Two steps by default: from the second on, the model reads its own predictions, whose
    activations the first step does not show (calibrated on one step, the tiny model's second
    step was 7x further from the float forecast: 0.41 against 0.060). `source` says where the batches came from
    (recorded; default: their times and grid). Batches that are not inputs of `spec`'s model
    are refused before any work (`check_calibration`). `inplace`, `keep_float`: as
    `quantise_dynamic`."""
    check_calibration(model, calibration_batches, spec)
    if not isinstance(steps, int) or steps < 1:
        raise DataError(f"calibration steps must be a whole number of at least 1; got {steps!r}")
    _use_engine()
    with _quiet():
        scales = calibrate(model, calibration_batches, steps)
    record = {
        "method": "int8-static",
        "variant": spec.name,
        "calibration": {"batches": len(calibration_batches), "source": source or _describe(calibration_batches),
                        "steps": steps, "observer": OBSERVER},
        "scales": scales,
    }
    model = model if inplace else copy.deepcopy(model)
    _replace_static(model, scales, keep_float=keep_float)
    return model, record


def _replace_static(model: Aurora, scales: Mapping[str, Sequence[float]], *, keep_float: bool) -> None:
    modules = dict(model.named_modules())
    for name, qparams in scales.items():  # all checked before any layer changes
        linear = modules.get(name)
        if type(linear) is not nn.Linear or len(qparams) != 4:
            raise DataError(f"the int8-static record names layer '{name}' with {qparams!r}; the model has "
                            f"{'no such layer' if linear is None else f'a {type(linear).__name__} there'}")
    with _quiet():
        for name, qparams in scales.items():  # popped: without kept float weights, each is freed at once
            parent, _, child = name.rpartition(".")
            layer = Int8StaticLinear(modules.pop(name), qparams, keep_float=keep_float)
            setattr(modules[parent] if parent else model, child, layer)


# ---- bf16 -----------------------------------------------------------------------------------


def to_bf16(model: Aurora, *, inplace: bool = False) -> tuple[Aurora, dict]:
    """The backbone's Linear and LoRA weights in bf16, run under Aurora's backbone autocast.

    Everything else (encoder, decoder, layer norms, normalisation) stays float32, and so do the
    batch and the outputs (see the module docstring for why not `model.to(torch.bfloat16)`)."""
    from aurora.model.lora import LoRA

    model = model if inplace else copy.deepcopy(model)
    for m in model.backbone.modules():
        if isinstance(m, (nn.Linear, LoRA)):
            m.to(torch.bfloat16)
    model.autocast_backbone = True
    model.autocast_dtype = torch.bfloat16
    return model, {"method": "bf16"}


# ---- loading --------------------------------------------------------------------------------


def before_load(model: Aurora, record: Mapping[str, Any]) -> Aurora:
    """bf16: the fresh model cast as `to_bf16` did, so the bf16 weights load strictly, bit for bit.
    int8: nothing (the checkpoint holds the float weights)."""
    if record["method"] == "bf16":
        return to_bf16(model, inplace=True)[0]
    return model


def after_load(model: Aurora, record: Mapping[str, Any]) -> Aurora:
    """int8: quantise the loaded float weights again, in place, as the saved model was (static:
    with the recorded scales). The float weights are dropped: the model holds int8 only."""
    method = record["method"]
    if method == "int8-dynamic":
        model, again = quantise_dynamic(model, inplace=True, keep_float=False)
        if again["layers"] != record["layers"]:
            raise DataError(f"the int8-dynamic record quantised {record['layers']} Linear layers; "
                            f"this model has {again['layers']}")
    elif method == "int8-static":
        _use_engine()
        _replace_static(model, record["scales"], keep_float=False)
    return model


def weight_bytes(model: nn.Module) -> int:
    """Bytes of the weights `model` holds: parameters, buffers, int8 weights with their scales
    and biases, and the float weights int8 layers keep for saving. (fbgemm keeps a second,
    packed copy of each int8 weight besides the one counted here.)"""

    def size(t: torch.Tensor | None) -> int:
        if t is None:
            return 0
        n = t.numel() * t.element_size()
        if t.is_quantized and t.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
            n += t.q_per_channel_scales().numel() * 8 + t.q_per_channel_zero_points().numel() * 8
        return n

    held = {id(t): t for t in (*model.parameters(), *model.buffers())}
    total = 0
    for m in model.modules():
        if isinstance(m, (Int8DynamicLinear, QuantisedLinear)):
            total += sum(size(t) for t in m._weight_bias())  # unpacked: new tensors on every call
        if isinstance(m, (Int8DynamicLinear, Int8StaticLinear)) and m.float_weights is not None:
            held.update({id(t): t for t in m.float_weights if t is not None})
    return total + sum(size(t) for t in held.values())
