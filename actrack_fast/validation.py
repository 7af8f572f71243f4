"""Checks at the public API: wrong input raises a ``ValueError``/``TypeError`` naming the argument."""
from __future__ import annotations

import torch

from .config import ModelConfig


def check_tensor(name: str, value: object, shape: tuple, *, floating: bool = True, finite: bool = True) -> None:
    """``value`` must be a tensor of ``shape`` (``None`` entries match any size)."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    expected = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
    if value.dim() != len(shape) or any(s is not None and s != v for s, v in zip(shape, value.shape)):
        raise ValueError(f"{name} must have shape {expected}, got {tuple(value.shape)}")
    if floating and not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {value.dtype}")
    if value.numel() == 0:
        raise ValueError(f"{name} is empty: shape {tuple(value.shape)}")
    if finite and floating and not bool(torch.isfinite(value).all()):
        raise ValueError(f"{name} contains NaN or infinite values")


def check_crops(config: ModelConfig, search: torch.Tensor, templates: torch.Tensor, finite: bool = True) -> None:
    """search (B, 3, Ss, Ss) and templates (B, T, 3, St, St) with T = ``config.num_templates``."""
    Ss, St, T = config.search_size, config.template_size, config.num_templates
    check_tensor("search", search, (None, 3, Ss, Ss), finite=finite)
    if isinstance(templates, torch.Tensor) and templates.dim() == 5 and templates.shape[1] != T:
        raise ValueError(f"templates must hold num_templates={T} crops for config {config.name!r}, "
                         f"got {templates.shape[1]} (shape {tuple(templates.shape)})")
    check_tensor("templates", templates, (search.shape[0], T, 3, St, St), finite=finite)
    if templates.dtype != search.dtype or templates.device != search.device:
        raise TypeError(f"templates ({templates.dtype}, {templates.device}) must match search "
                        f"({search.dtype}, {search.device})")
