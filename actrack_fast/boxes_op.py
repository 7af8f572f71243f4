"""The compiled box ops ``torch.ops.actrack_fast.track_boxes`` and ``advance_targets`` (csrc/), the ``"cuda"`` backend
of op ``"boxes"``.

One kernel launch maps the predicted boxes back to their images and clips them, bit-identical to the reference
``clip_boxes(map_boxes_back(pred, previous, crop_geometry(previous, factor, size), size), ...)`` of
:mod:`actrack_fast.preprocessing` (~45 tiny kernels, whose launch latency is what they cost in a CUDA-graph
step); ``advance_targets`` is the whole per-target end of a step (:func:`actrack_fast.frame_step.advance_targets`:
that box, the confidence, the frame count, the template-update decision) in one launch instead of ~15. As for
``"crop"``, ``"cuda"`` names the C++/CUDA extension ``actrack_fast._C`` on both devices: its CUDA
kernel for GPU tensors and its C++ kernel, with the same arithmetic, for CPU tensors.

This module registers the ops' fake implementations (output shapes for ``torch.compile`` and meta tensors). They
have no autograd formula: they are inference geometry (the tracker's next box), not a training path.
"""
from __future__ import annotations

import torch

from . import backend, xcorr_op
from .xcorr_op import _C  # the one extension module (None without it)

backend.register("boxes", "cuda", xcorr_op.is_available, xcorr_op.how_to_get())


def track_boxes(pred: torch.Tensor, previous: torch.Tensor, height: torch.Tensor, width: torch.Tensor,
                factor: float, size: int, margin: float) -> torch.Tensor:
    """The compiled op: the next boxes of N targets, as :func:`actrack_fast.preprocessing.track_boxes`.

    Args:
        pred: (N, 4) float32 predicted (cx, cy, w, h), fractions of the search crop.
        previous: (N, 4) float64 (x, y, w, h), the boxes the search crops were placed around.
        height, width: (N,) int64 image sizes.
    Returns:
        (N, 4) float64 (x, y, w, h), clipped ``margin`` pixels inside the images. Inputs are made contiguous;
        other dtypes, shapes or devices raise ``RuntimeError``.
    """
    return torch.ops.actrack_fast.track_boxes(pred.contiguous(), previous.contiguous(), height.contiguous(),
                                              width.contiguous(), float(factor), int(size), float(margin))


def advance_targets(pred: torch.Tensor, probs: torch.Tensor, boxes: torch.Tensor, frames: torch.Tensor,
                    confidences: torch.Tensor, height: torch.Tensor, width: torch.Tensor, factor: float, size: int,
                    margin: float, interval: int, threshold: float) -> torch.Tensor:
    """The compiled op: :func:`actrack_fast.frame_step.advance_targets` on the state tensors, in place.

    Args:
        pred: (N, 4) float32 predicted (cx, cy, w, h), fractions of the search crop; probs: (N, 4) float32.
        boxes: (N, 4) float64 (x, y, w, h), the previous boxes, overwritten by the next ones.
        frames: (N,) int64 and confidences: (N,) float64, overwritten (frames + 1, 10 x the sum of probs).
        height, width: (N,) int64 image sizes.
    Returns:
        (N,) bool: whether each target's template is due for an update. ``boxes``, ``frames`` and
        ``confidences`` must be contiguous (they are written in place); other dtypes, shapes or devices raise
        ``RuntimeError``.
    """
    return torch.ops.actrack_fast.advance_targets(pred.contiguous(), probs.contiguous(), boxes, frames, confidences,
                                                  height.contiguous(), width.contiguous(), float(factor), int(size),
                                                  float(margin), int(interval), float(threshold))


def _fake_track_boxes(pred: torch.Tensor, previous: torch.Tensor, height: torch.Tensor, width: torch.Tensor,
                      factor: float, size: int, margin: float) -> torch.Tensor:
    return previous.new_empty((previous.shape[0], 4))


def _fake_advance_targets(pred: torch.Tensor, probs: torch.Tensor, boxes: torch.Tensor, frames: torch.Tensor,
                          confidences: torch.Tensor, height: torch.Tensor, width: torch.Tensor, factor: float, size: int,
                          margin: float, interval: int, threshold: float) -> torch.Tensor:
    return pred.new_empty((pred.shape[0],), dtype=torch.bool)


if _C is not None:
    torch.library.register_fake("actrack_fast::track_boxes", _fake_track_boxes)
    torch.library.register_fake("actrack_fast::advance_targets", _fake_advance_targets)
