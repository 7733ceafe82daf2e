"""Command-line arguments of a training run, shared by `python -m model_code.training` and `auroraops train`.

Layering: the config file, then `--variant`/`--data`/`--out`, then each `--set KEY=VALUE`
(values read as YAML: `3e-4`, `[1, 1, 1]`, `lora_only`, `true`).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from model_code.errors import ConfigError
from model_code.variants import VARIANTS

if TYPE_CHECKING:
    from model_code.training.config import TrainConfig
    from model_code.training.trainer import TrainResult

__all__ = ["add_arguments", "config_from_args", "describe", "parse_set", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="training config (YAML; docs/training.md); default: the defaults")
    p.add_argument("--variant", choices=list(VARIANTS), help="variant to train (replaces the file's)")
    p.add_argument("--data", nargs="+", metavar="PATH", help="training data files (replace the file's data.paths)")
    p.add_argument("--out", metavar="DIR", help="run directory (replaces checkpoint.out_dir)")
    p.add_argument("--resume", metavar="DIR", help="continue the run whose directory (or last/) this is")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key, e.g. --set optim.lr=3e-4 (repeatable)")


def parse_set(items: list[str]) -> dict[str, Any]:
    """`["optim.lr=3e-4", ...]` -> {"optim.lr": "3e-4", ...} with values read as YAML."""
    import yaml

    out = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set takes KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as e:
            raise ConfigError(f"cannot read the value {text!r} ({e})", field=key.strip()) from None
    return out


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    from model_code.training.config import load_config

    overrides: dict[str, Any] = {}
    if args.variant:
        overrides["variant"] = args.variant
    if args.data:
        overrides["data.paths"] = list(args.data)
    if args.out:
        overrides["checkpoint.out_dir"] = args.out
    overrides.update(parse_set(args.overrides))
    return load_config(args.config, overrides)


def run(args: argparse.Namespace) -> TrainResult:
    """Load the config and train, printing a validation line per validation and a summary."""
    from model_code.training.callbacks import MetricLines
    from model_code.training.trainer import train

    return train(config_from_args(args), callbacks=[MetricLines()], resume=args.resume)


def describe(result: TrainResult) -> str:
    """A short human summary of a finished run."""
    lines = [f"training finished ({result.stop_reason}) after {result.steps} step(s): {result.out_dir}"]
    if result.best_metric is not None:
        lines.append(f"  best val_loss {result.best_metric:.6g} at step {result.best_step}: {result.best_checkpoint}")
    lines.append(f"  last checkpoint: {result.last_checkpoint}")
    if result.averaged_checkpoint:
        lines.append(f"  top-k average: val_loss {result.averaged_metric:.6g}: {result.averaged_checkpoint}")
    return "\n".join(lines)
