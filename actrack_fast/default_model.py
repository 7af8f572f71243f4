"""The embedded default model: what the CLI and the adapters use when no weights are given.

For now it is the ``tiny`` configuration initialised from a fixed seed, built in memory (nothing is
downloaded or read from disk). Its weights are untrained, so it exercises the whole pipeline but its
boxes are not meaningful; trained weights replace it in a later release.
"""
from __future__ import annotations

from typing import Union

import torch

from .model import ACTrack, build_model

DEFAULT_CONFIG = "tiny"
DEFAULT_SEED = 0
DESCRIPTION = (f"embedded default model ({DEFAULT_CONFIG} config, seed {DEFAULT_SEED}): untrained placeholder "
               "weights, so the boxes are not meaningful until a trained model ships")


def default_model(device: Union[str, torch.device] = "cpu") -> ACTrack:
    """The default model in eval mode on ``device``; the same weights on every call (global RNG untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(DEFAULT_SEED)
        model = build_model(DEFAULT_CONFIG)
    return model.eval().to(device)
