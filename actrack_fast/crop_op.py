"""The compiled crop op ``torch.ops.actrack_fast.crop_resize`` (csrc/), the ``"cuda"`` backend of op ``"crop"``.

One kernel launch crops and resizes every box, bit-identical to the reference
:func:`actrack_fast.preprocessing.crop_pixels` (~120 small kernels per crop, whose launch latency dominates a
CUDA-graph step). As for ``"xcorr"``, ``"cuda"`` names the C++/CUDA extension ``actrack_fast._C`` on both devices:
its CUDA kernel for GPU tensors and its C++ (OpenMP) kernel, with the same arithmetic, for CPU tensors.

This module registers the op's fake implementation (output shape for ``torch.compile`` and meta tensors). The
op has no autograd formula: its output is uint8.
"""
from __future__ import annotations

import torch

from . import backend, xcorr_op
from .xcorr_op import _C  # the one extension module (None without it)

backend.register("crop", "cuda", xcorr_op.is_available, xcorr_op.how_to_get())


def crop_resize(pixels: torch.Tensor, start: torch.Tensor, height: torch.Tensor, width: torch.Tensor,
                boxes: torch.Tensor, factor: float, size: int) -> torch.Tensor:
    """The compiled op: square crops around N boxes resized to ``size`` (uint8), as
    :func:`actrack_fast.preprocessing.crop_pixels`.

    Args:
        pixels: (P, 3) uint8 pixel table of the images, one after the other.
        start, height, width: (N,) int64, the image of each box in ``pixels`` (an ``ImageLayout``).
        boxes: (N, 4) float64 (x, y, w, h).
    Returns:
        (N, size, size, 3) uint8. Inputs are made contiguous; other dtypes, shapes or devices raise
        ``RuntimeError``.
    """
    return torch.ops.actrack_fast.crop_resize(pixels.contiguous(), start.contiguous(), height.contiguous(),
                                              width.contiguous(), boxes.contiguous(), float(factor), int(size))


def _fake_crop_resize(pixels: torch.Tensor, start: torch.Tensor, height: torch.Tensor, width: torch.Tensor,
                      boxes: torch.Tensor, factor: float, size: int) -> torch.Tensor:
    return pixels.new_empty((boxes.shape[0], size, size, 3))


if _C is not None:
    torch.library.register_fake("actrack_fast::crop_resize", _fake_crop_resize)
