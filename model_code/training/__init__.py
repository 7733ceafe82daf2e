"""Training Aurora variants from one typed config: `load_config`, then `train`.

    from model_code.training import load_config, train
    cfg = load_config("config.yaml", overrides={"optim.lr": 3e-4})
    result = train(cfg, callbacks=[...])

The config reference is docs/training.md; `python -m model_code.training --config FILE`
is the same run under torchrun.
"""

import importlib

_HOMES = {
    "Callback": "callbacks",
    "JsonLinesLog": "callbacks",
    "ProgressBar": "callbacks",
    "TrainConfig": "config",
    "TrainResult": "trainer",
    "Trainer": "trainer",
    "TrainingDiverged": "trainer",
    "TrainingStopped": "trainer",
    "load_config": "config",
    "save_config": "config",
    "train": "trainer",
    "with_overrides": "config",
}
"""Public name -> the module it lives in, imported on first use: the command-line parser
(`entry`) lives in this package, and `auroraops train --help` should not import torch."""

__all__ = list(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
