"""SeqTrack's training-sample processing: jittered crops, box tokens and teacher-forcing sequences.

One sample = T template frames and one search frame of a sequence with their boxes. Each template is
cropped around its box (factor 4, no jitter in SeqTrack's B256 recipe); the search crop is placed around
a *jittered* copy of the search box (centre jitter 3.5, scale jitter 0.5), which stands for the tracker's
previous estimate. The crop code is the tracker's own (:func:`actrack_fast.preprocessing.crop_and_resize`),
and the target box is expressed in the crop with :func:`actrack_fast.preprocessing.boxes_in_crop`, the exact
inverse of the tracker's mapping back to the image. (SeqTrack's training divides by ``size - 1`` where
its tracker multiplies by ``size``; a 0.4 % scale difference at 256 that this package does not copy.)

The target is clipped to the crop (as corners in [0, 1], as SeqTrack does), quantised into ``bins``
tokens, and laid out for teacher forcing: input ``[prompt x K, start, cx, cy, w, h]``, target
``[cx, cy, w, h, end]`` (spec section 3). With the temporal prompt (K = 4) the prompt is the jittered box
in its own crop, exactly what the tracker feeds: the previous box in a crop centred on it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch

from ..config import ModelConfig
from ..decoding import boxes_to_tokens
from ..preprocessing import boxes_in_crop, crop_and_resize, normalize_crops

# ITU-R BT.601 luma, as OpenCV's RGB2GRAY.
LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class JitterSettings:
    """SeqTrack's ``DATA.{SEARCH,TEMPLATE}.{CENTER,SCALE}_JITTER`` and its photometric augmentation."""

    search_center: float = 3.5
    search_scale: float = 0.5
    template_center: float = 0.0
    template_scale: float = 0.0
    brightness: float = 0.2
    flip_prob: float = 0.5
    gray_prob: float = 0.05

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if value < 0:
                raise ValueError(f"jitter setting {name} must be >= 0, got {value}")
        for name in ("flip_prob", "gray_prob"):
            if getattr(self, name) > 1:
                raise ValueError(f"jitter setting {name} is a probability, got {getattr(self, name)}")


def jitter_boxes(rng: np.random.Generator, boxes: np.ndarray, center: float, scale: float) -> np.ndarray:
    """SeqTrack's ``_get_jittered_box`` for (N, 4) xywh boxes.

    Size: ``wh * exp(N(0, 1) * scale)``; centre: ``+ sqrt(w' h') * center * U(-0.5, 0.5)`` per axis, so
    the offset is at most ``center / 2`` jittered box sides.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    size = boxes[:, 2:] * np.exp(rng.standard_normal(boxes[:, 2:].shape) * scale)
    max_offset = np.sqrt(size.prod(axis=1, keepdims=True)) * center
    centre = boxes[:, :2] + 0.5 * boxes[:, 2:] + max_offset * (rng.random(boxes[:, :2].shape) - 0.5)
    return np.concatenate([centre - 0.5 * size, size], axis=1)


def clip_to_crop(boxes: torch.Tensor) -> torch.Tensor:
    """(N, 4) (cx, cy, w, h) crop fractions with the corners clamped to [0, 1] (SeqTrack's truncation)."""
    corners = torch.cat([boxes[:, :2] - 0.5 * boxes[:, 2:], boxes[:, :2] + 0.5 * boxes[:, 2:]], dim=1).clamp(0, 1)
    return torch.cat([0.5 * (corners[:, :2] + corners[:, 2:]), corners[:, 2:] - corners[:, :2]], dim=1)


def teacher_forcing(boxes: torch.Tensor, config: ModelConfig, prompt_boxes: Optional[torch.Tensor] = None):
    """Decoder input and target tokens for (B, 4) (cx, cy, w, h) crop fractions.

    Returns ``inputs`` (B, K + 5) = ``[prompt tokens x K, start, cx, cy, w, h]`` and ``targets`` (B, 5) =
    ``[cx, cy, w, h, end]``; ``prompt_boxes`` (B, 4) is required exactly when ``config.prompt_tokens > 0``.
    """
    if (prompt_boxes is None) != (config.prompt_tokens == 0):
        raise ValueError(f"prompt_boxes must be given exactly when config.prompt_tokens > 0 "
                         f"(prompt_tokens={config.prompt_tokens})")
    tokens = boxes_to_tokens(boxes, config.bins)
    batch = tokens.shape[0]
    start = torch.full((batch, 1), config.start_token, dtype=torch.long)
    end = torch.full((batch, 1), config.end_token, dtype=torch.long)
    prefix = [boxes_to_tokens(prompt_boxes, config.bins), start] if prompt_boxes is not None else [start]
    return torch.cat([*prefix, tokens], dim=1), torch.cat([tokens, end], dim=1)


def _crops(frames: Sequence[np.ndarray], boxes: np.ndarray, factor: float, size: int):
    images = [torch.from_numpy(np.ascontiguousarray(f)) for f in frames]
    return crop_and_resize(images, boxes, factor, size, np.arange(len(images)))


def _photometric(crops: torch.Tensor, brightness: float, gray: bool) -> torch.Tensor:
    """uint8 (N, S, S, 3) -> float (N, S, S, 3) in 0..255 after optional greyscale and brightness scaling."""
    out = crops.float()
    if gray:
        out = (out * torch.tensor(LUMA)).sum(dim=-1, keepdim=True).expand_as(out)
    return (out * brightness).clamp(0, 255)


class SeqTrackProcessing:
    """Turn sampled frames and boxes into one training sample (see the module docstring).

    ``__call__(rng, template_frames, template_boxes, search_frame, search_box)`` returns a dict with
    ``templates`` (T, 3, St, St) and ``search`` (3, Ss, Ss) normalised float32 crops, ``sequence``
    (K + 5,) and ``target`` (5,) int64 tokens, ``search_box`` (4,) float32 target (cx, cy, w, h) crop
    fractions; or None when a jittered box is too small to crop (the sampler then draws again).
    """

    def __init__(self, config: ModelConfig, jitter: JitterSettings = JitterSettings(), augment: bool = True) -> None:
        self.config = config
        self.jitter = jitter
        self.augment = augment

    def __call__(self, rng: np.random.Generator, template_frames: Sequence[np.ndarray], template_boxes: np.ndarray,
                 search_frame: np.ndarray, search_box: np.ndarray) -> Optional[dict]:
        cfg, jit = self.config, self.jitter
        template_crop_boxes = jitter_boxes(rng, template_boxes, jit.template_center, jit.template_scale)
        search_crop_box = jitter_boxes(rng, search_box, jit.search_center, jit.search_scale)
        for boxes, factor in ((template_crop_boxes, cfg.template_factor), (search_crop_box, cfg.search_factor)):
            if not np.isfinite(boxes).all() or (np.ceil(np.sqrt(boxes[:, 2] * boxes[:, 3]) * factor) < 1).any():
                return None
        templates, _ = _crops(template_frames, template_crop_boxes, cfg.template_factor, cfg.template_size)
        search, geometry = _crops([search_frame], search_crop_box, cfg.search_factor, cfg.search_size)

        def in_crop(boxes: np.ndarray) -> torch.Tensor:
            return clip_to_crop(boxes_in_crop(boxes, search_crop_box, geometry, cfg.search_size))

        target = in_crop(np.asarray(search_box, dtype=np.float64).reshape(1, 4))
        prompt = in_crop(search_crop_box) if cfg.prompt_tokens else None

        flip = gray = False
        bright_template = bright_search = 1.0
        if self.augment:
            flip, gray = rng.random() < jit.flip_prob, rng.random() < jit.gray_prob
            bright_template, bright_search = rng.uniform(1 - jit.brightness, 1 + jit.brightness, 2)
        if flip:  # mirror every crop; a centre fraction cx becomes 1 - cx
            templates, search = templates.flip(2), search.flip(2)
            target[:, 0] = 1 - target[:, 0]
            if prompt is not None:
                prompt[:, 0] = 1 - prompt[:, 0]
        templates = normalize_crops(_photometric(templates, bright_template, gray))
        search = normalize_crops(_photometric(search, bright_search, gray))
        sequence, targets = teacher_forcing(target.float(), cfg, None if prompt is None else prompt.float())
        return {"templates": templates, "search": search[0], "sequence": sequence[0], "target": targets[0],
                "search_box": target[0].float()}
