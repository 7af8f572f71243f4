"""Short synthetic tracking sequences with exact ground truth, for the demo and the tests.

A textured patch (the cat of scikit-image's ``chelsea`` image) moves along a smooth closed path over a
natural background (scikit-image's ``coffee``), slightly changing size. scikit-image ships these images,
so nothing downloads; without scikit-image both are generated procedurally.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Optional, Union

import cv2
import numpy as np

from .video import write_boxes


def _natural_images() -> tuple[np.ndarray, np.ndarray] | None:
    try:
        from skimage import data
    except ImportError:
        return None
    return data.coffee(), data.chelsea()[40:260, 110:330]


def _procedural_images(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    background = cv2.resize(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8), (320, 240),
                            interpolation=cv2.INTER_CUBIC)
    checker = (np.indices((8, 8)).sum(axis=0) % 2).astype(np.uint8)
    patch = np.stack([checker * 200 + 30, 255 - checker * 180, rng.integers(0, 256, (8, 8), dtype=np.uint8)], -1)
    return background, cv2.resize(patch, (64, 64), interpolation=cv2.INTER_NEAREST)


def make_sequence(num_frames: int = 48, height: int = 240, width: int = 320, patch_size: Optional[int] = None,
                  seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """Frames (num_frames x (height, width, 3) uint8 RGB) and the ground-truth boxes (num_frames, 4)
    (x, y, w, h) of the moving patch (side ``patch_size``, default a quarter of the image's smaller side)."""
    patch_size = patch_size or min(height, width) // 4
    if num_frames < 1 or height < 2 * patch_size or width < 2 * patch_size or patch_size < 4:
        raise ValueError(f"need num_frames >= 1 and an image at least twice the patch size; got {num_frames} "
                         f"frames of {width}x{height} with patch {patch_size}")
    background, patch = _natural_images() or _procedural_images(seed)
    background = cv2.resize(background, (width, height), interpolation=cv2.INTER_AREA)
    phase = np.random.default_rng(seed).uniform(0, 2 * math.pi)
    frames, boxes = [], []
    for index in range(num_frames):
        t = 2 * math.pi * index / max(num_frames, 2)
        scale = 1.0 + 0.15 * math.sin(t + phase)
        w, h = round(patch_size * scale), round(patch_size * scale * 0.8)
        # A Lissajous path that stays inside the image.
        cx = width / 2 + (width / 2 - w) * 0.8 * math.sin(t + phase)
        cy = height / 2 + (height / 2 - h) * 0.8 * math.sin(2 * t)
        x, y = round(cx - w / 2), round(cy - h / 2)
        frame = background.copy()
        frame[y:y + h, x:x + w] = cv2.resize(patch, (w, h), interpolation=cv2.INTER_AREA)
        frames.append(frame)
        boxes.append((x, y, w, h))
    return frames, np.asarray(boxes, dtype=np.float64)


def write_sequence(folder: Union[str, os.PathLike], **options) -> np.ndarray:
    """Write :func:`make_sequence` as ``00000001.png ...`` plus ``groundtruth.txt`` (x,y,w,h per line)
    into ``folder``; returns the boxes."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    frames, boxes = make_sequence(**options)
    for index, frame in enumerate(frames, start=1):
        cv2.imwrite(str(folder / f"{index:08d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    write_boxes(folder / "groundtruth.txt", boxes)
    return boxes
