"""Depthwise template-search cross-correlation, the additive net's siamese matching op.

Each sample correlates its own kernel with its own search map, channel by channel. ``padding='same'``
keeps the search grid (for even kernels the extra row/column of padding goes after, as in
``F.conv2d(padding='same')``); ``'valid'`` gives ``(H - h + 1, W - w + 1)``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import backend as backends
from . import xcorr_op

PADDINGS = ("same", "valid")


def same_padding(kh: int, kw: int) -> tuple[int, int, int, int]:
    """``F.pad`` amounts (left, right, top, bottom) that keep the grid; the odd one out goes after."""
    return ((kw - 1) // 2, kw // 2, (kh - 1) // 2, kh // 2)


def xcorr_depthwise_reference(search: torch.Tensor, kernel: torch.Tensor, padding: str = "same") -> torch.Tensor:
    """Reference: one grouped convolution with B*C groups. (B, C, H, W), (B, C, h, w) -> (B, C, H', W')."""
    if padding == "same":
        search = F.pad(search, same_padding(*kernel.shape[-2:]))
    B, C, H, W = search.shape
    out = F.conv2d(search.reshape(1, B * C, H, W), kernel.reshape(B * C, 1, *kernel.shape[-2:]), groups=B * C)
    return out.reshape(B, C, *out.shape[-2:])


def check_xcorr_inputs(search: torch.Tensor, kernel: torch.Tensor, padding: str) -> None:
    """Raise ``ValueError``/``TypeError`` naming the argument when the inputs cannot be correlated."""
    for name, t in (("search", search), ("kernel", kernel)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{name} must have shape (B, C, H, W), got {tuple(t.shape)}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got {t.dtype}")
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
    if search.shape[:2] != kernel.shape[:2]:
        raise ValueError(f"search and kernel must agree in (B, C): search {tuple(search.shape[:2])}, "
                         f"kernel {tuple(kernel.shape[:2])}")
    if search.dtype != kernel.dtype or search.device != kernel.device:
        raise TypeError(f"search and kernel must share dtype and device: {search.dtype}/{search.device} vs "
                        f"{kernel.dtype}/{kernel.device}")
    if padding == "valid" and (kernel.shape[2] > search.shape[2] or kernel.shape[3] > search.shape[3]):
        raise ValueError(f"kernel {tuple(kernel.shape[2:])} is larger than search {tuple(search.shape[2:])} "
                         "with padding='valid'")


def xcorr_depthwise(search: torch.Tensor, kernel: torch.Tensor, padding: str = "same",
                    backend: str | None = None) -> torch.Tensor:
    """Depthwise cross-correlation of per-sample kernels over per-sample search maps.

    Args:
        search: (B, C, H, W) search feature map.
        kernel: (B, C, h, w) one kernel per sample and channel.
        padding: ``'same'`` (output (B, C, H, W)) or ``'valid'``.
        backend: override of the backend choice (see :mod:`actrack_fast.backend`); ``"cuda"`` is the compiled
            extension (:mod:`actrack_fast.xcorr_op`), on CPU and CUDA tensors alike.
    """
    check_xcorr_inputs(search, kernel, padding)
    if backends.select("xcorr", search.device, backend) == "cuda":
        return xcorr_op.xcorr_depthwise(search.contiguous(), kernel.contiguous(), padding)
    return xcorr_depthwise_reference(search, kernel, padding)
