"""Checkpoint I/O: official SeqTrack checkpoints, ACTrack safetensors files, MAE/timm ViT weights.

Every loader is strict: missing keys, unexpected keys and shape mismatches are reported by name in a
:class:`CheckpointError` (a ``ValueError``), never silently skipped.
"""
from __future__ import annotations

import math
import os
import pickle
from typing import Mapping, Optional, Union

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from timm.layers import resample_abs_pos_embed

from .config import ModelConfig
from .model import ACTrack, FROZEN_PREFIXES

PathLike = Union[str, os.PathLike]
FORMAT_NAME = "actrack_fast"
FORMAT_VERSION = "1"
# MAE/timm ViT entries that have no counterpart in the tracking encoder.
VIT_IGNORED_PREFIXES = ("cls_token", "head", "fc_norm", "mask_token", "decoder", "dist_token", "reg_token")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read or does not fit the model; the message names the keys."""


def match_state_dict(expected: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise :class:`CheckpointError` listing missing keys, unexpected keys and shape mismatches."""
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    mismatched = sorted(
        f"{k}: checkpoint {tuple(given[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(expected) & set(given)
        if tuple(given[k].shape) != tuple(expected[k].shape)
    )
    problems = []
    if missing:
        problems.append(f"missing keys {missing}")
    if unexpected:
        problems.append(f"unexpected keys {unexpected}")
    if mismatched:
        problems.append(f"shape mismatches {mismatched}")
    if problems:
        raise CheckpointError(f"{source} does not fit the model: " + "; ".join(problems))


def frozen_state_dict(model: ACTrack) -> dict[str, torch.Tensor]:
    """The SeqTrack part of the model's state dict (everything outside ``additive``)."""
    return {k: v for k, v in model.state_dict().items() if k.startswith(FROZEN_PREFIXES)}


def _torch_load(path: PathLike, trusted: bool) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=not trusted)
    except pickle.UnpicklingError as error:
        if trusted:
            raise CheckpointError(f"cannot unpickle {path}: {error}") from error
        raise CheckpointError(
            f"{path} holds Python objects besides tensors (official SeqTrack files store training "
            "settings); if you trust the file, load it with trusted=True"
        ) from error
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise CheckpointError(f"cannot read checkpoint {path}: {error}") from error


def load_seqtrack_checkpoint(model: ACTrack, checkpoint: Union[PathLike, Mapping], trusted: bool = False) -> ACTrack:
    """Load an official SeqTrack checkpoint (``{'net': state_dict, ...}``) into the frozen part.

    Args:
        checkpoint: a path to the ``torch.save`` file or the loaded dictionary.
        trusted: allow arbitrary pickled objects beside the tensors (``torch.load(weights_only=False)``).
    The additive net is left as it is (zero injections for a fresh model: exactly SeqTrack).
    """
    source = str(checkpoint) if isinstance(checkpoint, (str, os.PathLike)) else "SeqTrack state dict"
    data = _torch_load(checkpoint, trusted) if isinstance(checkpoint, (str, os.PathLike)) else checkpoint
    if not isinstance(data, Mapping) or "net" not in data:
        keys = sorted(data)[:10] if isinstance(data, Mapping) else type(data).__name__
        raise CheckpointError(f"{source} is not a SeqTrack checkpoint: expected a dict with key 'net', got {keys}")
    state = {k.removeprefix("module."): v for k, v in data["net"].items()}
    match_state_dict(frozen_state_dict(model), state, source)
    model.load_state_dict(state, strict=False)
    return model


def save_checkpoint(model: ACTrack, path: PathLike, metadata: Optional[Mapping[str, str]] = None) -> None:
    """Save the whole model as safetensors, with its config in the file's metadata."""
    meta = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "config": model.config.to_json(), **(metadata or {})}
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, os.fspath(path), metadata=meta)


def read_checkpoint(path: PathLike) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Config and tensors of an ACTrack safetensors file."""
    try:
        with safe_open(os.fspath(path), framework="pt") as handle:
            meta = handle.metadata() or {}
        tensors = load_file(os.fspath(path))
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"cannot read ACTrack checkpoint {path}: {error}") from error
    if meta.get("format") != FORMAT_NAME or "config" not in meta:
        raise CheckpointError(f"{path} is not an {FORMAT_NAME} checkpoint (metadata {sorted(meta)})")
    try:
        config = ModelConfig.from_json(meta["config"])
    except (ValueError, TypeError) as error:
        raise CheckpointError(f"{path} has an invalid config: {error}") from error
    return config, tensors


def load_checkpoint(path: PathLike, map_location: Union[str, torch.device] = "cpu") -> ACTrack:
    """Build the model from an ACTrack safetensors file (config from its metadata), strictly."""
    config, tensors = read_checkpoint(path)
    model = ACTrack(config)
    match_state_dict(model.state_dict(), tensors, str(path))
    model.load_state_dict(tensors)
    return model.to(map_location)


def load_into(model: ACTrack, path: PathLike) -> ACTrack:
    """Load an ACTrack safetensors file into an existing model whose config must match."""
    config, tensors = read_checkpoint(path)
    if config != model.config:
        diff = {k: (v, model.config.to_dict()[k]) for k, v in config.to_dict().items() if model.config.to_dict()[k] != v}
        raise CheckpointError(f"{path} was saved with another config; differences (file, model): {diff}")
    match_state_dict(model.state_dict(), tensors, str(path))
    model.load_state_dict(tensors)
    return model


def vit_encoder_state_dict(vit_state: Mapping[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    """Map a MAE/timm ViT state dict to ``encoder.body.*`` keys with position embeddings resized.

    The class-token row (when present) is dropped; the patch grid is resampled (bicubic) to the search
    grid and to the template grid, which are concatenated into SeqTrack's single position table.
    """
    if isinstance(vit_state.get("model"), Mapping):  # MAE's training checkpoints wrap the weights
        vit_state = vit_state["model"]
    state = {k.removeprefix("module."): v for k, v in vit_state.items()}
    if "pos_embed" not in state:
        raise CheckpointError(f"ViT state dict has no 'pos_embed' (keys start with {sorted(state)[:5]})")
    pos = state["pos_embed"]
    grid_tokens = pos.shape[1]
    side = math.isqrt(grid_tokens)
    prefix_tokens = grid_tokens - side * side  # class and register tokens come first
    if prefix_tokens > 8:
        raise CheckpointError(f"pos_embed with {grid_tokens} rows is not a square patch grid")
    patch_pos = pos[:, prefix_tokens:]
    grids = [config.search_size // config.patch_size, config.template_size // config.patch_size]
    resized = [resample_abs_pos_embed(patch_pos, [g, g], [side, side], num_prefix_tokens=0) for g in grids]
    out = {"encoder.body.pos_embed": torch.cat(resized, dim=1)}
    for key, value in state.items():
        if key == "pos_embed" or key.startswith(VIT_IGNORED_PREFIXES):
            continue
        out[f"encoder.body.{key}"] = value
    return out


def init_encoder_from_vit(model: ACTrack, vit_state: Mapping[str, torch.Tensor]) -> ACTrack:
    """Initialise the encoder from MAE/timm ViT weights (strict on the encoder's keys)."""
    mapped = vit_encoder_state_dict(vit_state, model.config)
    expected = {k: v for k, v in model.state_dict().items() if k.startswith("encoder.")}
    match_state_dict(expected, mapped, "ViT state dict")
    model.load_state_dict(mapped, strict=False)
    return model
