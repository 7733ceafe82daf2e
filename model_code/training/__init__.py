"""Training Aurora variants from one typed config: `load_config`, then `train`.

    from model_code.training import load_config, train
    cfg = load_config("config.yaml", overrides={"optim.lr": 3e-4})
    result = train(cfg, callbacks=[...])

The config reference is docs/training.md; `python -m model_code.training --config FILE`
is the same run under torchrun.
"""

from model_code.training.callbacks import Callback, JsonLinesLog, ProgressBar
from model_code.training.config import TrainConfig, load_config, save_config, with_overrides
from model_code.training.trainer import TrainResult, Trainer, TrainingDiverged, TrainingStopped, train

__all__ = [
    "Callback",
    "JsonLinesLog",
    "ProgressBar",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainingDiverged",
    "TrainingStopped",
    "load_config",
    "save_config",
    "train",
    "with_overrides",
]
