"""Tracker preprocessing (spec section 6): crops on the frame's device, box geometry on the host.

* :func:`crop_and_resize`: SeqTrack's square crop (side ``c = ceil(factor * sqrt(w*h))``, corner
  ``round(centre - c/2)``), zero border outside the image, resized to ``size x size`` with OpenCV's
  ``INTER_LINEAR`` fixed-point arithmetic reproduced exactly (bit-identical to ``cv2.copyMakeBorder`` +
  ``cv2.resize`` on uint8 images, tested), for N targets in one or several images.
* :func:`normalize_crops`: uint8 RGB -> ``/255``, ImageNet mean/std, channels first.
* Box geometry: :func:`crop_geometry`, :func:`map_boxes_back`, :func:`clip_boxes`, :func:`boxes_in_crop`
  on float64 numpy arrays of ``(x, y, w, h)`` boxes, with SeqTrack's float steps so rounding ties fall
  the same way.

Why the split: the tracker needs every box on the host anyway (it returns them), and the crop geometry
is a handful of numbers per target; computed on the device it would be ~100 kernel launches a frame.
The host turns it into tap tables (which pixels, which weights: N x size x 4 integers) sent in one copy;
the frame never leaves its device, where one gather and a few integer ops build the crops.

SeqTrack's own ``sample_target`` also blanks the image's last row/column whenever the crop reaches past
the right/bottom edge (its pad is ``x2 - W + 1``); the spec's crop (zero border outside the image only)
is what this module implements.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import numpy as np
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# OpenCV's fixed-point resize: weights are 11-bit (INTER_RESIZE_COEF_BITS); the horizontal pass keeps
# value * 2^11, the vertical pass drops 4 bits before multiplying and 16 after, then rounds 2 bits.
_COEF_SCALE = np.float32(1 << 11)

ImageLike = Union[np.ndarray, torch.Tensor]


@dataclass
class CropGeometry:
    """Where each of N crops lies in its image (numpy, host): ``side`` (N,) int64 crop side c in image
    pixels, ``x1``/``y1`` (N,) int64 top-left corner (may be negative), ``resize_factor`` (N,) float64
    = size / c."""

    side: np.ndarray
    x1: np.ndarray
    y1: np.ndarray
    resize_factor: np.ndarray


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


def as_boxes(boxes, name: str = "boxes") -> np.ndarray:
    """Array-like or tensor of (x, y, w, h) boxes -> (N, 4) float64 numpy array."""
    if isinstance(boxes, torch.Tensor):
        boxes = boxes.detach().to("cpu", torch.float64).numpy()
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{name} must have shape (N, 4) (x, y, w, h), got {boxes.shape}")
    return boxes


def check_box(box: Sequence[float], image_height: int, image_width: int, factor: float, name: str = "box") -> tuple:
    """Validate an (x, y, w, h) box against its image; returns it as a tuple of Python floats.

    Raises ``ValueError`` for a box that is not 4 finite numbers, has a non-positive size, lies fully
    outside the image or is too small to crop (``ceil(factor * sqrt(w*h)) < 1``).
    """
    values = np.asarray(box.detach().cpu() if isinstance(box, torch.Tensor) else box, dtype=np.float64).reshape(-1)
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


def crop_geometry(boxes: np.ndarray, factor: float, size: int) -> CropGeometry:
    """Crop placement of SeqTrack's ``sample_target`` for boxes (N, 4) float64 (x, y, w, h)."""
    x, y, w, h = boxes.T
    side = np.ceil(np.sqrt(w * h) * factor)
    # np.round, like Python's round, sends ties to even.
    x1 = np.round(x + 0.5 * w - side * 0.5)
    y1 = np.round(y + 0.5 * h - side * 0.5)
    return CropGeometry(side.astype(np.int64), x1.astype(np.int64), y1.astype(np.int64), size / side)


def _linear_taps(side: np.ndarray, size: int, clamp_weights: bool) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV INTER_LINEAR taps along one axis for N sources of ``side`` pixels resized to ``size``.

    Returns source indices (N, size, 2) int64 in [0, side) and weights (N, size, 2) int64 summing to 2^11.
    OpenCV maps output pixel d to ``(d + 0.5) * scale - 0.5`` (half-pixel centres) in float32, scale =
    1 / (size / side) in double, weights rounded to 11 bits. Past the border the columns
    (``clamp_weights``) snap to the edge pixel with weight 1, while the rows keep their fractional weights
    on the clamped index (both taps read the same edge row); reproducing both makes the result bit-exact.
    """
    scale = 1.0 / (size / side.astype(np.float64))
    position = ((np.arange(size) + 0.5) * scale[:, None] - 0.5).astype(np.float32)
    start = np.floor(position)
    fraction = position - start
    start = start.astype(np.int64)
    last = (side - 1)[:, None]
    if clamp_weights:
        fraction = np.where((start < 0) | (start >= last), np.float32(0), fraction)
    index = np.stack([np.minimum(np.maximum(start, 0), last), np.minimum(np.maximum(start + 1, 0), last)], -1)
    weight = np.stack([np.rint((np.float32(1) - fraction) * _COEF_SCALE), np.rint(fraction * _COEF_SCALE)], -1)
    return index, weight.astype(np.int64)


def crop_and_resize(images: Union[torch.Tensor, Sequence[torch.Tensor]], boxes, factor: float, size: int,
                    image_index: Optional[Sequence[int]] = None) -> tuple[torch.Tensor, CropGeometry]:
    """Square crops around N boxes, zero outside their image, resized to ``size`` (uint8), on the images'
    device.

    Args:
        images: one (H, W, 3) uint8 tensor, or a sequence of them (sizes may differ), on one device.
        boxes: (N, 4) (x, y, w, h) array-like; validated boxes (:func:`check_box`).
        image_index: the image of each box (default: all boxes in ``images[0]``).
    Returns:
        crops (N, size, size, 3) uint8, identical to ``cv2.resize(cv2.copyMakeBorder(...), INTER_LINEAR)``;
        and the :class:`CropGeometry`.
    """
    images = [images] if isinstance(images, torch.Tensor) else list(images)
    boxes = as_boxes(boxes)
    index = np.zeros(len(boxes), np.int64) if image_index is None else np.asarray(image_index, np.int64)
    geometry = crop_geometry(boxes, factor, size)
    # One flat pixel table for all images: pixel (r, c) of image i sits at start[i] + r * width[i] + c.
    shapes = np.asarray([image.shape[:2] for image in images], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(shapes[:, 0] * shapes[:, 1])[:-1]])
    height, width, start = shapes[index, 0, None, None], shapes[index, 1, None, None], starts[index, None, None]

    rows, row_weights = _linear_taps(geometry.side, size, clamp_weights=False)
    cols, col_weights = _linear_taps(geometry.side, size, clamp_weights=True)
    rows, cols = rows + geometry.y1[:, None, None], cols + geometry.x1[:, None, None]
    # A tap outside the image reads the zero border: give it weight 0 (and any valid address).
    row_weights = np.where((rows >= 0) & (rows < height), row_weights, 0)
    col_weights = np.where((cols >= 0) & (cols < width), col_weights, 0)
    row_offsets = start + np.minimum(np.maximum(rows, 0), height - 1) * width
    cols = np.minimum(np.maximum(cols, 0), width - 1)

    device = images[0].device
    taps = torch.from_numpy(np.stack([row_offsets, row_weights, cols, col_weights], axis=1))
    row_offsets, row_weights, cols, col_weights = taps.to(device, non_blocking=True).unbind(1)  # (N, size, 2)
    pixels = images[0].reshape(-1, 3) if len(images) == 1 else torch.cat([image.reshape(-1, 3) for image in images])
    flat = row_offsets[:, :, :, None, None] + cols[:, None, None, :, :]  # (N, size, 2, size, 2)
    values = pixels[flat].int() * col_weights.int()[:, None, None, :, :, None]
    horizontal = values.sum(dim=4, dtype=torch.int32)  # (N, size, 2, size, 3): value * 2^11
    row_weights = row_weights.int()[:, :, :, None, None]
    out = ((row_weights[:, :, 0] * (horizontal[:, :, 0] >> 4)) >> 16) + \
        ((row_weights[:, :, 1] * (horizontal[:, :, 1] >> 4)) >> 16)
    return ((out + 2) >> 2).to(torch.uint8), geometry


_NORMALIZE: dict = {}


def normalize_crops(crops: torch.Tensor) -> torch.Tensor:
    """(N, S, S, 3) uint8 RGB -> (N, 3, S, S) float32: ``(pixel / 255 - mean) / std``."""
    if crops.device not in _NORMALIZE:
        _NORMALIZE[crops.device] = (torch.tensor(IMAGENET_MEAN, device=crops.device).view(1, 3, 1, 1),
                                    torch.tensor(IMAGENET_STD, device=crops.device).view(1, 3, 1, 1))
    mean, std = _NORMALIZE[crops.device]
    return (crops.permute(0, 3, 1, 2).float() / 255.0 - mean) / std


def map_boxes_back(pred: np.ndarray, previous: np.ndarray, geometry: CropGeometry, size: int) -> np.ndarray:
    """Predicted (cx, cy, w, h) fractions of the search crop (N, 4) -> image boxes (N, 4) float64 xywh.

    SeqTrack's steps: ``pred * size / resize_factor`` in float32, then the crop origin is taken as the
    previous centre minus half the crop side ``0.5 * size / resize_factor`` (float64).
    """
    in_crop = (np.asarray(pred, np.float32) * np.float32(size)) / geometry.resize_factor.astype(np.float32)[:, None]
    cx, cy, w, h = in_crop.astype(np.float64).T
    half = 0.5 * size / geometry.resize_factor
    cx = cx + (previous[:, 0] + 0.5 * previous[:, 2] - half)
    cy = cy + (previous[:, 1] + 0.5 * previous[:, 3] - half)
    return np.stack([cx - 0.5 * w, cy - 0.5 * h, w, h], axis=-1)


def boxes_in_crop(boxes: np.ndarray, previous: np.ndarray, geometry: CropGeometry, size: int) -> np.ndarray:
    """Image boxes (N, 4) xywh -> (cx, cy, w, h) fractions of the search crop placed around ``previous``.

    The inverse of :func:`map_boxes_back` (same crop origin and side); the previous box itself maps to
    ``(0.5, 0.5, w / side, h / side)``. Used for the decoder's prompt tokens.
    """
    half = 0.5 * size / geometry.resize_factor
    # Offsets from the previous centre first, so the previous box lands exactly on 0.5 (a token tie).
    cx = (boxes[:, 0] + 0.5 * boxes[:, 2]) - (previous[:, 0] + 0.5 * previous[:, 2]) + half
    cy = (boxes[:, 1] + 0.5 * boxes[:, 3]) - (previous[:, 1] + 0.5 * previous[:, 3]) + half
    return np.stack([cx, cy, boxes[:, 2], boxes[:, 3]], axis=-1) / (2 * half)[:, None]


def clip_boxes(boxes: np.ndarray, heights: np.ndarray, widths: np.ndarray, margin: float) -> np.ndarray:
    """SeqTrack's ``clip_box``: keep each (x, y, w, h) box (N, 4) at least ``margin`` pixels inside its
    image of ``heights``/``widths`` (N,); a box that left the image becomes a margin-sized box at the edge."""
    x1, y1, w, h = np.asarray(boxes, np.float64).T
    x2, y2 = x1 + w, y1 + h
    x1 = np.minimum(np.maximum(0, x1), widths - margin)
    x2 = np.minimum(np.maximum(margin, x2), widths)
    y1 = np.minimum(np.maximum(0, y1), heights - margin)
    y2 = np.minimum(np.maximum(margin, y2), heights)
    return np.stack([x1, y1, np.maximum(margin, x2 - x1), np.maximum(margin, y2 - y1)], axis=-1)
