"""The training run configuration: nested dataclasses read from YAML, strict about unknown keys.

Defaults are SeqTrack's B256 recipe (``experiments/seqtrack/seqtrack_b256.yaml``): AdamW, lr 1e-4, weight
decay 1e-4, encoder lr multiplier 0.1, gradient clipping at norm 0.1, step schedule x0.1 at epoch 400 of
500, batch 16, 60000 samples per epoch, maximum sample interval 400, search jitter 3.5 / 0.5.
"""
from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import yaml

from ..backend import BACKENDS
from ..data.processing import JitterSettings

TRAINABLE_CHOICES = ("additive", "additive_decoder", "full")


@dataclass
class DatasetSpec:
    """One dataset: its layout (``got10k``, ``lasot``, ``trackingnet``, ``coco``), root, sampling weight
    and reader options (e.g. ``{split: train}`` or ``{sequences: [...]}``)."""

    type: str
    root: str
    weight: float = 1.0
    options: dict = field(default_factory=dict)


@dataclass
class DataConfig:
    datasets: list[DatasetSpec] = field(default_factory=list)
    samples_per_epoch: int = 60000
    max_interval: int = 400
    num_workers: int = 8
    augment: bool = True
    jitter: JitterSettings = field(default_factory=JitterSettings)


@dataclass
class OptimConfig:
    lr: float = 1e-4
    weight_decay: float = 1e-4
    encoder_lr_multiplier: float = 0.1
    grad_clip: float = 0.1
    lr_drop_epoch: int = 400
    lr_drop_factor: float = 0.1


@dataclass
class TrainConfig:
    """Everything one run needs.

    ``trainable``: ``additive`` (the paper's setting: only the additive net), ``additive_decoder`` (plus
    SeqTrack's decoder) or ``full`` (every parameter, the encoder at ``encoder_lr_multiplier`` x lr).
    ``weights``: a SeqTrack checkpoint (``.pth``/``.tar``) or an ACTrack ``.safetensors`` file to start from;
    ``vit_weights``: MAE/timm ViT weights for the encoder when no SeqTrack checkpoint is given.
    ``resume``: ``auto`` (the run's last checkpoint when one exists), a checkpoint path, or null.
    ``max_steps``: stop early after this many optimiser steps in total (null: run every epoch).
    ``checkpoint_every``: also checkpoint every N steps inside an epoch (0: at epoch ends only).
    ``dist_backend``: ``auto`` picks NCCL when every rank has its own GPU, Gloo otherwise.
    ``encoder_backend``: the encoder-block backend while training (``reference``: cuBLAS and flash
    attention under autocast, measured fastest for training; ``auto``/``triton``: the fused block, whose
    backward recomputes the block).
    ``frozen_bf16``: with bf16 autocast on CUDA, store the frozen encoder's Linear/Conv weights in bf16 (what
    autocast multiplies with anyway, so results are bit-identical): half their memory and no per-step casts.
    The exported model keeps the original fp32 weights.
    """

    model: str = "B256"
    model_overrides: dict = field(default_factory=dict)
    weights: Optional[str] = None
    trusted_weights: bool = False
    vit_weights: Optional[str] = None
    trainable: str = "additive"
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    batch_size: int = 16
    epochs: int = 500
    max_steps: Optional[int] = None
    amp: bool = True
    device: str = "auto"
    seed: int = 0
    output_dir: str = "runs/actrack"
    resume: Optional[str] = "auto"
    checkpoint_every: int = 0
    log_every: int = 50
    dist_backend: str = "auto"
    encoder_backend: str = "reference"
    frozen_bf16: bool = True

    def __post_init__(self) -> None:
        if self.trainable not in TRAINABLE_CHOICES:
            raise ValueError(f"trainable must be one of {TRAINABLE_CHOICES}, got {self.trainable!r}")
        for name in ("batch_size", "epochs", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1 or null, got {self.max_steps}")
        if self.encoder_backend not in ("auto", *BACKENDS):
            raise ValueError(f"encoder_backend must be auto or one of {BACKENDS}, got {self.encoder_backend!r}")
        if self.dist_backend not in ("auto", "nccl", "gloo"):
            raise ValueError(f"dist_backend must be auto, nccl or gloo, got {self.dist_backend!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "TrainConfig":
        """Build from nested mappings; an unknown key raises ``ValueError`` naming its full path."""
        return _build(cls, values, "")


def _build(cls: type, values: Any, path: str) -> Any:
    if not isinstance(values, Mapping):
        raise ValueError(f"config section {path or '<root>'} must be a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        where = f" in section {path!r}" if path else ""
        raise ValueError(f"unknown config key(s) {unknown}{where}; known keys are {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {name: _convert(hints[name], value, f"{path}.{name}" if path else name) for name, value in values.items()}
    return cls(**kwargs)


def _convert(hint: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        return None if value is None else _convert(inner[0], value, path)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, path)
    if origin is list:
        if not isinstance(value, list):
            raise ValueError(f"config key {path} must be a list, got {type(value).__name__}")
        (item,) = typing.get_args(hint)
        return [_convert(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    expected = origin or hint
    if expected is not Any and not isinstance(value, expected) or (expected in (int, float) and isinstance(value, bool)):
        raise ValueError(f"config key {path} must be {getattr(expected, '__name__', expected)}, got {value!r}")
    return value


def load_train_config(path: Union[str, os.PathLike], overrides: Optional[Mapping[str, Any]] = None) -> TrainConfig:
    """Read a YAML run configuration; ``overrides`` (top-level keys) replace values from the file."""
    text = Path(path).read_text()
    values = yaml.safe_load(text) or {}
    if not isinstance(values, Mapping):
        raise ValueError(f"{path} must hold a YAML mapping at the top level")
    return TrainConfig.from_dict({**values, **(overrides or {})})


def dump_train_config(config: TrainConfig, path: Union[str, os.PathLike]) -> None:
    """Write the resolved configuration as YAML (every key, defaults included)."""
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
