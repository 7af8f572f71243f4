"""Training the additive net (or more) on tracking datasets, single process or torchrun DDP."""
from .config import DataConfig, DatasetSpec, OptimConfig, TrainConfig, dump_train_config, load_train_config
from .trainer import Trainer, build_optimizer, sequence_loss, set_trainable, train

__all__ = [
    "DataConfig", "DatasetSpec", "OptimConfig", "TrainConfig", "Trainer", "build_optimizer", "dump_train_config",
    "load_train_config", "sequence_loss", "set_trainable", "train",
]
