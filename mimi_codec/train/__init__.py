"""Training and fine-tuning of Mimi codecs (install with the `train` extra).

    from mimi_codec.train import TrainConfig, Trainer
    trainer = Trainer(TrainConfig.load("small.json"), ["data/"], "runs/small")
    trainer.run()            # checkpoints, metrics.jsonl and model.safetensors in runs/small
"""

from .config import DataConfig, LossConfig, OptimConfig, QuantizerTrainConfig, TrainConfig
from .data import SegmentDataset, find_audio
from .loop import Trainer, build_model
from .model import MimiTrainer

__all__ = [
    "DataConfig",
    "LossConfig",
    "MimiTrainer",
    "OptimConfig",
    "QuantizerTrainConfig",
    "SegmentDataset",
    "TrainConfig",
    "Trainer",
    "build_model",
    "find_audio",
]
