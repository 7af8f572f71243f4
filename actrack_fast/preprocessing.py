"""Tracker preprocessing as tensor ops on the model's device (spec section 6).

* :func:`crop_and_resize`: SeqTrack's square crop (side ``c = ceil(factor * sqrt(w*h))``, corner
  ``round(centre - c/2)``), zero border outside the image, resized to ``size x size`` with OpenCV's
  ``INTER_LINEAR`` arithmetic reproduced exactly (bit-identical to ``cv2.copyMakeBorder`` +
  ``cv2.resize`` on uint8 images, tested), for N targets in one or several images with one gather.
* :func:`normalize_crops`: uint8 RGB -> ``/255``, ImageNet mean/std, channels first.
* Box geometry: :func:`crop_geometry`, :func:`map_boxes_back`, :func:`clip_boxes`, :func:`boxes_in_crop`.
  Boxes are float64 ``(x, y, w, h)`` in pixels; the float steps follow SeqTrack's tracker so that
  rounding ties fall the same way.

SeqTrack's own ``sample_target`` also blanks the image's last row/column whenever the crop reaches past
the right/bottom edge (its pad is ``x2 - W + 1``); the spec's crop (zero border outside the image only)
is what this module implements.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence, Union

import numpy as np
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# OpenCV's fixed-point resize: weights are 11-bit (INTER_RESIZE_COEF_BITS); the horizontal pass keeps
# value * 2^11, the vertical pass drops 4 bits before multiplying and 16 after, then rounds 2 bits.
_COEF_SCALE = 1 << 11

ImageLike = Union[np.ndarray, torch.Tensor]


@dataclass
class CropGeometry:
    """Where each of N crops lies in its image: ``side`` (N,) int64 crop side c in image pixels,
    ``x1``/``y1`` (N,) int64 top-left corner (may be negative), ``resize_factor`` (N,) float64 = size / c."""

    side: torch.Tensor
    x1: torch.Tensor
    y1: torch.Tensor
    resize_factor: torch.Tensor


def as_image(image: ImageLike, device: Union[str, torch.device], name: str = "image") -> torch.Tensor:
    """Validate an RGB frame and return it as an (H, W, 3) uint8 tensor on ``device``.

    Accepts an (H, W, 3) uint8 numpy array or torch tensor (a tensor already on ``device`` is not copied).
    """
    if isinstance(image, np.ndarray):
        _check_image_layout(name, image.shape, str(image.dtype), image.dtype == np.uint8)
        if not image.flags.writeable:  # e.g. np.asarray(PIL image); torch tensors must be writable
            image = image.copy()
        return torch.from_numpy(np.ascontiguousarray(image)).to(device)
    if isinstance(image, torch.Tensor):
        _check_image_layout(name, tuple(image.shape), str(image.dtype), image.dtype == torch.uint8)
        return image.to(device)
    raise TypeError(f"{name} must be an (H, W, 3) uint8 numpy array or torch tensor, got {type(image).__name__}")


def _check_image_layout(name: str, shape: tuple, dtype: str, is_uint8: bool) -> None:
    if len(shape) != 3 or shape[2] != 3:
        raise ValueError(f"{name} must have shape (H, W, 3) (RGB, channels last), got {tuple(shape)}")
    if shape[0] == 0 or shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {tuple(shape)}")
    if not is_uint8:
        raise TypeError(f"{name} must hold uint8 pixels 0..255, got dtype {dtype}")


def check_box(box: Sequence[float], image_height: int, image_width: int, factor: float, name: str = "box") -> tuple:
    """Validate an (x, y, w, h) box against its image; returns it as a tuple of Python floats.

    Raises ``ValueError`` for a box that is not 4 finite numbers, has a non-positive size, lies fully
    outside the image or is too small to crop (``ceil(factor * sqrt(w*h)) < 1``).
    """
    values = np.asarray(box, dtype=np.float64).reshape(-1) if not isinstance(box, torch.Tensor) else \
        box.detach().to("cpu", torch.float64).reshape(-1).numpy()
    if values.shape != (4,):
        raise ValueError(f"{name} must be 4 numbers (x, y, w, h), got {values.size}")
    if not np.isfinite(values).all():
        raise ValueError(f"{name} must be finite, got {values.tolist()}")
    x, y, w, h = (float(v) for v in values)
    if w <= 0 or h <= 0:
        raise ValueError(f"{name} must have a positive width and height, got w={w}, h={h}")
    if x >= image_width or y >= image_height or x + w <= 0 or y + h <= 0:
        raise ValueError(f"{name} {[x, y, w, h]} lies fully outside the {image_width}x{image_height} image")
    if math.ceil(math.sqrt(w * h) * factor) < 1:
        raise ValueError(f"{name} {[x, y, w, h]} is too small to crop (crop side < 1 pixel)")
    return x, y, w, h


def crop_geometry(boxes: torch.Tensor, factor: float, size: int) -> CropGeometry:
    """Crop placement of SeqTrack's ``sample_target`` for boxes (N, 4) float64 (x, y, w, h)."""
    x, y, w, h = boxes.unbind(-1)
    side = torch.ceil(torch.sqrt(w * h) * factor)
    # torch.round, like Python's round, sends ties to even.
    x1 = torch.round(x + 0.5 * w - side * 0.5)
    y1 = torch.round(y + 0.5 * h - side * 0.5)
    return CropGeometry(side.long(), x1.long(), y1.long(), _scalar_over(size, side))


def _scalar_over(numerator: float, denominator: torch.Tensor) -> torch.Tensor:
    """``numerator / denominator`` correctly rounded like Python's division (``scalar / tensor`` in torch
    multiplies by the reciprocal, one rounding more)."""
    return torch.full_like(denominator, numerator) / denominator


def _linear_taps(side: torch.Tensor, size: int, clamp_weights: bool):
    """OpenCV INTER_LINEAR taps along one axis for N sources of ``side`` pixels resized to ``size``.

    Returns index0, index1 (N, size) int64 and weight0, weight1 (N, size) int32 summing to 2^11.
    OpenCV maps output pixel d to ``(d + 0.5) * scale - 0.5`` (half-pixel centres) in float32, scale =
    1 / (size / side) in double. Past the border the columns (``clamp_weights``) snap to the edge pixel
    with weight 1, while the rows keep their fractional weights on the clamped index (both taps read the
    same edge row); reproducing both is what makes the result bit-exact.
    """
    scale = _scalar_over(1.0, _scalar_over(size, side.double()))
    position = ((torch.arange(size, device=side.device, dtype=torch.float64) + 0.5) * scale[:, None] - 0.5).float()
    start = position.floor()
    fraction = position - start
    start = start.long()
    last = (side - 1)[:, None]
    if clamp_weights:
        fraction = fraction.masked_fill((start < 0) | (start >= last), 0.0)
    index0 = torch.minimum(start.clamp(min=0), last)
    index1 = torch.minimum((start + 1).clamp(min=0), last)
    weight0 = ((1.0 - fraction) * _COEF_SCALE).round().int()
    weight1 = (fraction * _COEF_SCALE).round().int()
    return index0, index1, weight0, weight1


def crop_and_resize(images: Union[torch.Tensor, Sequence[torch.Tensor]], boxes: torch.Tensor, factor: float,
                    size: int, image_index: torch.Tensor | None = None) -> tuple[torch.Tensor, CropGeometry]:
    """Square crops around N boxes, zero-padded outside their image, resized to ``size`` (uint8).

    Args:
        images: one (H, W, 3) uint8 tensor, or a sequence of them (sizes may differ), on one device.
        boxes: (N, 4) float64 (x, y, w, h) on the same device; validated boxes (:func:`check_box`).
        image_index: (N,) int64 image of each box (default: all boxes in ``images[0]``).
    Returns:
        crops (N, size, size, 3) uint8, identical to ``cv2.resize(cv2.copyMakeBorder(...), INTER_LINEAR)``;
        and the :class:`CropGeometry`.
    """
    images = [images] if isinstance(images, torch.Tensor) else list(images)
    device = boxes.device
    count = boxes.shape[0]
    if image_index is None:
        image_index = torch.zeros(count, dtype=torch.long, device=device)
    geometry = crop_geometry(boxes, factor, size)
    row0, row1, row_w0, row_w1 = _linear_taps(geometry.side, size, clamp_weights=False)
    col0, col1, col_w0, col_w1 = _linear_taps(geometry.side, size, clamp_weights=True)

    # One flat pixel table for all images: a target's pixel (r, c) sits at offset + r * W + c.
    heights = torch.tensor([im.shape[0] for im in images], device=device)
    widths = torch.tensor([im.shape[1] for im in images], device=device)
    starts = torch.cumsum(heights * widths, 0) - heights * widths
    pixels = images[0].reshape(-1, 3) if len(images) == 1 else torch.cat([im.reshape(-1, 3) for im in images])
    height, width, start = heights[image_index, None], widths[image_index, None], starts[image_index, None]

    def image_coords(index, corner, limit):
        coord = index + corner[:, None]
        return coord.clamp(min=0).minimum(limit - 1), (coord >= 0) & (coord < limit)

    def gather(rows, cols):
        (r, r_ok), (c, c_ok) = image_coords(rows, geometry.y1, height), image_coords(cols, geometry.x1, width)
        flat = start[:, :, None] + r[:, :, None] * width[:, :, None] + c[:, None, :]
        inside = (r_ok[:, :, None] & c_ok[:, None, :])[..., None]
        return pixels[flat].int() * inside

    def horizontal(rows):
        return gather(rows, col0) * col_w0[:, None, :, None] + gather(rows, col1) * col_w1[:, None, :, None]

    top, bottom = horizontal(row0), horizontal(row1)
    out = ((row_w0[:, :, None, None] * (top >> 4)) >> 16) + ((row_w1[:, :, None, None] * (bottom >> 4)) >> 16)
    return ((out + 2) >> 2).to(torch.uint8), geometry


def normalize_crops(crops: torch.Tensor) -> torch.Tensor:
    """(N, S, S, 3) uint8 RGB -> (N, 3, S, S) float32: ``(pixel / 255 - mean) / std``."""
    mean = torch.tensor(IMAGENET_MEAN, device=crops.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=crops.device).view(1, 3, 1, 1)
    return (crops.permute(0, 3, 1, 2).float() / 255.0 - mean) / std


def map_boxes_back(pred: torch.Tensor, previous: torch.Tensor, geometry: CropGeometry, size: int) -> torch.Tensor:
    """Predicted (cx, cy, w, h) fractions of the search crop (N, 4) -> image boxes (N, 4) float64 xywh.

    SeqTrack's steps: ``pred * size / resize_factor`` in float32, then the crop origin is taken as the
    previous centre minus half the crop side ``0.5 * size / resize_factor`` (float64).
    """
    in_crop = ((pred.float() * size) / geometry.resize_factor.float()[:, None]).double()
    cx, cy, w, h = in_crop.unbind(-1)
    half = _scalar_over(0.5 * size, geometry.resize_factor)
    centre_x = previous[:, 0] + 0.5 * previous[:, 2]
    centre_y = previous[:, 1] + 0.5 * previous[:, 3]
    cx = cx + (centre_x - half)
    cy = cy + (centre_y - half)
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, w, h], dim=-1)


def boxes_in_crop(boxes: torch.Tensor, previous: torch.Tensor, geometry: CropGeometry, size: int) -> torch.Tensor:
    """Image boxes (N, 4) xywh -> (cx, cy, w, h) fractions of the search crop placed around ``previous``.

    The inverse of :func:`map_boxes_back` (same crop origin and side); the previous box itself maps to
    ``(0.5, 0.5, w / side, h / side)``. Used for the decoder's prompt tokens.
    """
    half = _scalar_over(0.5 * size, geometry.resize_factor)
    # Offsets from the previous centre first, so the previous box lands exactly on 0.5 (a token tie).
    cx = (boxes[:, 0] + 0.5 * boxes[:, 2]) - (previous[:, 0] + 0.5 * previous[:, 2]) + half
    cy = (boxes[:, 1] + 0.5 * boxes[:, 3]) - (previous[:, 1] + 0.5 * previous[:, 3]) + half
    return torch.stack([cx, cy, boxes[:, 2], boxes[:, 3]], dim=-1) / (2 * half)[:, None]


def clip_boxes(boxes: torch.Tensor, heights: torch.Tensor, widths: torch.Tensor, margin: float) -> torch.Tensor:
    """SeqTrack's ``clip_box``: keep each (x, y, w, h) box (N, 4) float64 at least ``margin`` pixels inside
    its image of ``heights``/``widths`` (N,) float64; a box that left the image becomes a margin-sized box
    at the edge."""
    x1, y1, w, h = boxes.unbind(-1)
    x2, y2 = x1 + w, y1 + h
    x1 = torch.minimum(x1.clamp(min=0), widths - margin)
    x2 = torch.minimum(x2.clamp(min=margin), widths)
    y1 = torch.minimum(y1.clamp(min=0), heights - margin)
    y2 = torch.minimum(y2.clamp(min=margin), heights)
    return torch.stack([x1, y1, (x2 - x1).clamp(min=margin), (y2 - y1).clamp(min=margin)], dim=-1)
