"""Tracker preprocessing (spec section 6) as tensor ops on any device, with static shapes.

* :func:`crop_and_resize`: SeqTrack's square crop (side ``c = ceil(factor * sqrt(w*h))``, corner
  ``round(centre - c/2)``), zero border outside the image, resized to ``size x size`` with OpenCV's
  ``INTER_LINEAR`` fixed-point arithmetic reproduced exactly (bit-identical to ``cv2.copyMakeBorder`` +
  ``cv2.resize`` on uint8 images, tested), for N targets in one or several images;
  :func:`crop_pixels` is the same on a flat pixel table (what a CUDA graph replays).
* :func:`normalize_crops`: uint8 RGB -> ``/255``, ImageNet mean/std, channels first (each of the 3 x 256
  possible values computed in float64 and rounded once, so every device gives the same floats);
  :func:`crop_normalized` is crop, normalisation and the cast to the model's dtype in one op, and
  :func:`crop_normalized_into` the same written in place for the targets a mask selects.
* Box geometry: :func:`crop_geometry`, :func:`map_boxes_back`, :func:`clip_boxes`, :func:`boxes_in_crop`
  on float64 ``(x, y, w, h)`` boxes, with SeqTrack's float steps so rounding ties fall the same way;
  :func:`track_boxes` is the tracker's step from the prediction to the next box (one op, or those three).

Why on the device: the whole tracking step, geometry included, then runs without a host round trip and can
be captured once as a CUDA graph (:mod:`actrack_fast.frame_step`). Every step is IEEE-exact (float64
``sqrt``/division, float32 products, ties to even), so the same boxes come out on the CPU and the GPU.

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

from . import backend as backends
from . import boxes_op, crop_op

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# OpenCV's fixed-point resize: weights are 11-bit (INTER_RESIZE_COEF_BITS); the horizontal pass keeps
# value * 2^11, the vertical pass drops 4 bits before multiplying and 16 after, then rounds 2 bits.
_COEF_SCALE = float(1 << 11)

ImageLike = Union[np.ndarray, torch.Tensor]
ArrayLike = Union[np.ndarray, torch.Tensor, Sequence]


@dataclass
class CropGeometry:
    """Where each of N crops lies in its image: ``side`` (N,) int64 crop side c in image pixels,
    ``x1``/``y1`` (N,) int64 top-left corner (may be negative), ``resize_factor`` (N,) float64 = size / c."""

    side: torch.Tensor
    x1: torch.Tensor
    y1: torch.Tensor
    resize_factor: torch.Tensor


@dataclass
class ImageLayout:
    """Where each of N targets' image lies in a flat (P, 3) uint8 pixel table: ``start`` (N,) int64 index of
    its first pixel, ``height`` and ``width`` (N,) int64."""

    start: torch.Tensor
    height: torch.Tensor
    width: torch.Tensor

    @classmethod
    def of(cls, shapes: Sequence[tuple], image_index: Sequence[int], device: Union[str, torch.device]) -> "ImageLayout":
        """Layout of images of ``shapes`` ((H, W, ...) each) stored one after the other, targets in
        ``image_index``."""
        sizes = torch.tensor([shape[:2] for shape in shapes], dtype=torch.int64).reshape(-1, 2)
        starts = torch.cumsum(sizes[:, 0] * sizes[:, 1], 0) - sizes[:, 0] * sizes[:, 1]
        index = torch.as_tensor(np.asarray(image_index, dtype=np.int64))
        return cls(*(t.to(device) for t in (starts[index], sizes[index, 0], sizes[index, 1])))


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


def as_boxes(boxes: ArrayLike, device: Union[str, torch.device, None] = None, name: str = "boxes") -> torch.Tensor:
    """Array-like or tensor of (x, y, w, h) boxes -> (N, 4) float64 tensor (on ``device``, default: a
    tensor's own device, else the CPU)."""
    boxes = _float64(boxes, device)
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{name} must have shape (N, 4) (x, y, w, h), got {tuple(boxes.shape)}")
    return boxes


def _float64(values: ArrayLike, device: Union[str, torch.device, None] = None) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        return values.detach().to(values.device if device is None else device, torch.float64)
    return torch.as_tensor(np.asarray(values, dtype=np.float64), device=device)


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


def crop_geometry(boxes: ArrayLike, factor: float, size: int) -> CropGeometry:
    """Crop placement of SeqTrack's ``sample_target`` for boxes (N, 4) float64 (x, y, w, h)."""
    x, y, w, h = as_boxes(boxes).unbind(-1)
    side = torch.ceil(torch.sqrt(w * h) * factor)
    # torch.round, like Python's round, sends ties to even.
    x1 = torch.round(x + 0.5 * w - side * 0.5)
    y1 = torch.round(y + 0.5 * h - side * 0.5)
    return CropGeometry(side.long(), x1.long(), y1.long(), _scalar_over(size, side))


def _scalar_over(numerator: float, denominator: torch.Tensor) -> torch.Tensor:
    """``numerator / denominator`` correctly rounded like Python's division (``scalar / tensor`` in torch
    multiplies by the reciprocal, one rounding more)."""
    return torch.full_like(denominator, numerator) / denominator


def _linear_taps(side: torch.Tensor, size: int, clamp_weights: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """OpenCV INTER_LINEAR taps along one axis for N sources of ``side`` pixels resized to ``size``.

    Returns source indices (N, size, 2) int64 in [0, side) and weights (N, size, 2) int64 summing to 2^11.
    OpenCV maps output pixel d to ``(d + 0.5) * scale - 0.5`` (half-pixel centres) in float32, scale =
    1 / (size / side) in double, weights rounded to 11 bits. Past the border the columns
    (``clamp_weights``) snap to the edge pixel with weight 1, while the rows keep their fractional weights
    on the clamped index (both taps read the same edge row); reproducing both makes the result bit-exact.
    """
    scale = _scalar_over(1.0, _scalar_over(size, side.double()))
    grid = torch.arange(size, device=side.device, dtype=torch.float64) + 0.5
    position = (grid * scale[:, None] - 0.5).float()
    start = position.floor()
    fraction = position - start
    start = start.long()
    last = (side - 1)[:, None]
    if clamp_weights:
        fraction = fraction.masked_fill((start < 0) | (start >= last), 0.0)
    index = torch.stack([start.clamp(min=0).minimum(last), (start + 1).clamp(min=0).minimum(last)], -1)
    weight = torch.stack([((1.0 - fraction) * _COEF_SCALE).round(), (fraction * _COEF_SCALE).round()], -1)
    return index, weight.long()


def crop_and_resize(images: Union[torch.Tensor, Sequence[torch.Tensor]], boxes: ArrayLike, factor: float, size: int,
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
    device = images[0].device
    boxes = as_boxes(boxes, device)
    index = [0] * len(boxes) if image_index is None else image_index
    layout = ImageLayout.of([image.shape for image in images], index, device)
    pixels = images[0].reshape(-1, 3) if len(images) == 1 else torch.cat([image.reshape(-1, 3) for image in images])
    return crop_pixels(pixels, layout, boxes, factor, size), crop_geometry(boxes, factor, size)


def crop_pixels(pixels: torch.Tensor, layout: ImageLayout, boxes: torch.Tensor, factor: float,
                size: int) -> torch.Tensor:
    """The crops (N, size, size, 3) uint8 of :func:`crop_and_resize` from a flat (P, 3) uint8 pixel table and its
    :class:`ImageLayout`, boxes (N, 4) float64 on the pixels' device: no host work, shapes fixed by N and
    ``size``. (Callers that need the :class:`CropGeometry` too ask :func:`crop_geometry`.)

    The ``crop`` backend (:mod:`actrack_fast.backend`) ``"cuda"`` runs the compiled op
    (:mod:`actrack_fast.crop_op`, one kernel launch, bit-identical); ``"reference"`` the torch ops below.
    """
    if backends.select("crop", pixels.device) == "cuda":
        return crop_op.crop_resize(pixels, layout.start, layout.height, layout.width, as_boxes(boxes), factor, size)
    return _crop_pixels_reference(pixels, layout, crop_geometry(boxes, factor, size), size)


def _crop_pixels_reference(pixels: torch.Tensor, layout: ImageLayout, geometry: CropGeometry,
                           size: int) -> torch.Tensor:
    height, width, start = layout.height[:, None, None], layout.width[:, None, None], layout.start[:, None, None]
    rows, row_weights = _linear_taps(geometry.side, size, clamp_weights=False)
    cols, col_weights = _linear_taps(geometry.side, size, clamp_weights=True)
    rows, cols = rows + geometry.y1[:, None, None], cols + geometry.x1[:, None, None]
    # A tap outside the image reads the zero border: give it weight 0 (and any valid address).
    row_weights = torch.where((rows >= 0) & (rows < height), row_weights, 0).int()
    col_weights = torch.where((cols >= 0) & (cols < width), col_weights, 0).int()
    row_offsets = start + rows.clamp(min=0).minimum(height - 1) * width
    cols = cols.clamp(min=0).minimum(width - 1)

    flat = row_offsets[:, :, :, None, None] + cols[:, None, None, :, :]  # (N, size, 2, size, 2)
    values = pixels[flat].int() * col_weights[:, None, None, :, :, None]
    horizontal = values.sum(dim=4, dtype=torch.int32)  # (N, size, 2, size, 3): value * 2^11
    row_weights = row_weights[:, :, :, None, None]
    out = ((row_weights[:, :, 0] * (horizontal[:, :, 0] >> 4)) >> 16) + \
        ((row_weights[:, :, 1] * (horizontal[:, :, 1] >> 4)) >> 16)
    return ((out + 2) >> 2).to(torch.uint8)


def crop_normalized(pixels: torch.Tensor, layout: ImageLayout, boxes: torch.Tensor, factor: float, size: int,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``normalize_crops(crop_pixels(pixels, layout, boxes, factor, size)).to(dtype)``: (N, 3, size, size).

    The ``crop`` backend ``"cuda"`` runs it as one compiled op (:func:`actrack_fast.crop_op.crop_normalize`,
    bit-identical), ``"reference"`` as those torch ops.
    """
    if backends.select("crop", pixels.device) == "cuda":
        return crop_op.crop_normalize(pixels, layout.start, layout.height, layout.width, as_boxes(boxes), factor, size,
                                      dtype)
    return normalize_crops(_crop_pixels_reference(pixels, layout, crop_geometry(boxes, factor, size), size)).to(dtype)


def crop_normalized_into(pixels: torch.Tensor, layout: ImageLayout, boxes: torch.Tensor, factor: float, size: int,
                         out: torch.Tensor, where: torch.Tensor) -> None:
    """``out[n] = crop_normalized(pixels, layout, boxes, factor, size, out.dtype)[n]`` for every n with ``where[n]``,
    in place; the other rows of ``out`` (N, 3, size, size) keep their values. ``where``: (N,) bool on the pixels'
    device.

    The ``crop`` backend ``"cuda"`` runs it as one compiled op (:func:`actrack_fast.crop_op.crop_normalize_into`,
    bit-identical, only the selected crops computed; ``out`` may be a slot ``templates[:, i]`` of a larger tensor),
    ``"reference"`` crops every box and selects with ``torch.where``.
    """
    if backends.select("crop", pixels.device) == "cuda":
        crop_op.crop_normalize_into(pixels, layout.start, layout.height, layout.width, as_boxes(boxes), factor, size,
                                    out, where)
        return
    crops = crop_normalized(pixels, layout, boxes, factor, size, out.dtype)  # the reference too: same backend
    torch.where(where[:, None, None, None], crops, out, out=out)


_NORMALIZATION_TABLES: dict = {}


def normalization_table() -> torch.Tensor:
    """(3, 256) float32: ``(v / 255 - mean[c]) / std[c]`` for every channel c and value v, computed in float64
    and rounded once (the compiled crop op computes the same)."""
    values = torch.arange(256, dtype=torch.float64) / 255.0
    mean, std = (torch.tensor(t, dtype=torch.float64)[:, None] for t in (IMAGENET_MEAN, IMAGENET_STD))
    return ((values - mean) / std).float()


def normalize_crops(crops: torch.Tensor) -> torch.Tensor:
    """(N, S, S, 3) uint8 RGB -> (N, 3, S, S) float32: ``(pixel / 255 - mean) / std`` (see
    :func:`normalization_table`)."""
    if crops.device not in _NORMALIZATION_TABLES:
        _NORMALIZATION_TABLES[crops.device] = normalization_table().to(crops.device)
    table = _NORMALIZATION_TABLES[crops.device]
    return torch.stack([table[c][crops[..., c].long()] for c in range(3)], dim=1)


def map_boxes_back(pred: ArrayLike, previous: ArrayLike, geometry: CropGeometry, size: int) -> torch.Tensor:
    """Predicted (cx, cy, w, h) fractions of the search crop (N, 4) -> image boxes (N, 4) float64 xywh.

    SeqTrack's steps: ``pred * size / resize_factor`` in float32, then the crop origin is taken as the
    previous centre minus half the crop side ``0.5 * size / resize_factor`` (float64).
    """
    previous = as_boxes(previous, geometry.side.device, "previous")
    pred = torch.as_tensor(pred, device=previous.device).float()
    cx, cy, w, h = ((pred * size) / geometry.resize_factor.float()[:, None]).double().unbind(-1)
    half = _scalar_over(0.5 * size, geometry.resize_factor)
    cx = cx + (previous[:, 0] + 0.5 * previous[:, 2] - half)
    cy = cy + (previous[:, 1] + 0.5 * previous[:, 3] - half)
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, w, h], dim=-1)


def boxes_in_crop(boxes: ArrayLike, previous: ArrayLike, geometry: CropGeometry, size: int) -> torch.Tensor:
    """Image boxes (N, 4) xywh -> (cx, cy, w, h) fractions (float64) of the search crop placed around
    ``previous``.

    The inverse of :func:`map_boxes_back` (same crop origin and side); the previous box itself maps to
    ``(0.5, 0.5, w / side, h / side)``. Used for the decoder's prompt tokens.
    """
    device = geometry.side.device
    boxes, previous = as_boxes(boxes, device), as_boxes(previous, device, "previous")
    half = _scalar_over(0.5 * size, geometry.resize_factor)
    # Offsets from the previous centre first, so the previous box lands exactly on 0.5 (a token tie).
    cx = (boxes[:, 0] + 0.5 * boxes[:, 2]) - (previous[:, 0] + 0.5 * previous[:, 2]) + half
    cy = (boxes[:, 1] + 0.5 * boxes[:, 3]) - (previous[:, 1] + 0.5 * previous[:, 3]) + half
    return torch.stack([cx, cy, boxes[:, 2], boxes[:, 3]], dim=-1) / (2 * half)[:, None]


def clip_boxes(boxes: ArrayLike, heights: ArrayLike, widths: ArrayLike, margin: float) -> torch.Tensor:
    """SeqTrack's ``clip_box``: keep each (x, y, w, h) box (N, 4) at least ``margin`` pixels inside its
    image of ``heights``/``widths`` (N,); a box that left the image becomes a margin-sized box at the edge."""
    boxes = as_boxes(boxes)
    heights, widths = _float64(heights, boxes.device), _float64(widths, boxes.device)
    x1, y1, w, h = boxes.unbind(-1)
    x2, y2 = x1 + w, y1 + h
    x1 = torch.minimum(x1.clamp(min=0), widths - margin)
    x2 = torch.minimum(x2.clamp(min=margin), widths)
    y1 = torch.minimum(y1.clamp(min=0), heights - margin)
    y2 = torch.minimum(y2.clamp(min=margin), heights)
    return torch.stack([x1, y1, (x2 - x1).clamp(min=margin), (y2 - y1).clamp(min=margin)], dim=-1)


def track_boxes(pred: ArrayLike, previous: torch.Tensor, layout: ImageLayout, factor: float, size: int,
                margin: float) -> torch.Tensor:
    """The next boxes of N targets: the predictions mapped back to the images and clipped, i.e.
    ``clip_boxes(map_boxes_back(pred, previous, crop_geometry(previous, factor, size), size), layout.height,
    layout.width, margin)``.

    Args:
        pred: (N, 4) predicted (cx, cy, w, h), fractions of the search crop (used in float32).
        previous: (N, 4) float64 (x, y, w, h), the boxes the search crops (``factor``, ``size``) were placed
            around.
        layout: the targets' images (only ``height`` and ``width`` (N,) int64 are read).
    Returns:
        (N, 4) float64 (x, y, w, h) on ``previous``'s device, at least ``margin`` pixels inside the images.

    The ``boxes`` backend (:mod:`actrack_fast.backend`) ``"cuda"`` runs the compiled op
    (:mod:`actrack_fast.boxes_op`, one kernel launch, bit-identical); ``"reference"`` the three functions above.
    """
    previous = as_boxes(previous, name="previous")
    if backends.select("boxes", previous.device) == "cuda":
        pred = torch.as_tensor(pred, device=previous.device).float()
        return boxes_op.track_boxes(pred, previous, layout.height, layout.width, factor, size, margin)
    return clip_boxes(map_boxes_back(pred, previous, crop_geometry(previous, factor, size), size), layout.height,
                      layout.width, margin)
