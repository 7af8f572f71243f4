"""The compiled crop ops ``torch.ops.actrack_fast.crop_resize``, ``crop_normalize`` and ``crop_normalize_into``
(csrc/), the ``"cuda"`` backend of op ``"crop"``.

One kernel launch crops and resizes every box, bit-identical to the reference
:func:`actrack_fast.preprocessing.crop_pixels` (~120 small kernels per crop, whose launch latency dominates a
CUDA-graph step); ``crop_normalize`` also normalises the crops as
:func:`actrack_fast.preprocessing.normalize_crops` and casts them, in the same launch (5 kernels fewer per crop);
``crop_normalize_into`` writes those only for the boxes a mask selects, in place into a given tensor (the
tracker's new templates, for the targets whose update is due).
As for ``"xcorr"``, ``"cuda"`` names the C++/CUDA extension ``actrack_fast._C`` on both devices: its CUDA kernels
for GPU tensors and its C++ (OpenMP) kernels, with the same arithmetic, for CPU tensors.

This module registers the ops' fake implementations (output shapes for ``torch.compile`` and meta tensors).
None has an autograd formula: their input is uint8 pixels.
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


def crop_normalize(pixels: torch.Tensor, start: torch.Tensor, height: torch.Tensor, width: torch.Tensor,
                   boxes: torch.Tensor, factor: float, size: int, dtype: torch.dtype) -> torch.Tensor:
    """The compiled op: :func:`crop_resize` followed by ImageNet normalisation, channels first, in ``dtype``.

    Same arguments as :func:`crop_resize`, plus ``dtype`` (float64, float32, float16 or bfloat16). Returns
    (N, 3, size, size), equal bit for bit to ``normalize_crops(crop_resize(...)).to(dtype)``.
    """
    return torch.ops.actrack_fast.crop_normalize(pixels.contiguous(), start.contiguous(), height.contiguous(),
                                                 width.contiguous(), boxes.contiguous(), float(factor), int(size),
                                                 dtype)


def crop_normalize_into(pixels: torch.Tensor, start: torch.Tensor, height: torch.Tensor, width: torch.Tensor,
                        boxes: torch.Tensor, factor: float, size: int, out: torch.Tensor, where: torch.Tensor) -> None:
    """The compiled op: ``out[n] = crop_normalize(...)[n]`` for every box n with ``where[n]``, in place; the other
    rows of ``out`` keep their values.

    Same arguments as :func:`crop_resize`, plus ``out`` (N, 3, size, size) float64, float32, float16 or bfloat16,
    whose crops are each contiguous but may lie any ``out.stride(0) >= 3 * size * size`` apart (a slot
    ``templates[:, i]`` of an (N, T, 3, size, size) tensor), and ``where`` (N,) bool, both on the pixels' device.
    ``out`` is written in place, never copied; the mask is read on the device (no host synchronisation).
    """
    torch.ops.actrack_fast.crop_normalize_into(pixels.contiguous(), start.contiguous(), height.contiguous(),
                                               width.contiguous(), boxes.contiguous(), float(factor), int(size), out,
                                               where.contiguous())


def _fake_crop_resize(pixels: torch.Tensor, start: torch.Tensor, height: torch.Tensor, width: torch.Tensor,
                      boxes: torch.Tensor, factor: float, size: int) -> torch.Tensor:
    return pixels.new_empty((boxes.shape[0], size, size, 3))


def _fake_crop_normalize(pixels: torch.Tensor, start: torch.Tensor, height: torch.Tensor, width: torch.Tensor,
                         boxes: torch.Tensor, factor: float, size: int, dtype: torch.dtype) -> torch.Tensor:
    return pixels.new_empty((boxes.shape[0], 3, size, size), dtype=dtype)


def _fake_crop_normalize_into(pixels: torch.Tensor, start: torch.Tensor, height: torch.Tensor, width: torch.Tensor,
                             boxes: torch.Tensor, factor: float, size: int, out: torch.Tensor,
                             where: torch.Tensor) -> None:
    return None  # it only writes ``out``, whose shape the caller already has


if _C is not None:
    torch.library.register_fake("actrack_fast::crop_resize", _fake_crop_resize)
    torch.library.register_fake("actrack_fast::crop_normalize", _fake_crop_normalize)
    torch.library.register_fake("actrack_fast::crop_normalize_into", _fake_crop_normalize_into)
