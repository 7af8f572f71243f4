"""Deterministic synthetic tracking sequences with exact ground truth, written in the standard layouts.

A sequence is a textured target (a crop of a natural image, or a procedural texture, cut to a random
shape) moving along a smooth random path with scale and aspect change over a panning natural-image
background, with distractors (one of them a recoloured copy of the target) passing behind or in front of
it and a pole-like occluder that can hide it completely. Boxes are the integer extent of the pasted
sprite clipped to the image, so the ground truth is exact; the visible fraction of the sprite gives the
occlusion labels (GOT-10k ``absence``/``cover``, LaSOT ``full_occlusion``/``out_of_view``).
``clutter=False`` renders the clean form the demo and the tracker tests use: the same target and path
over a still background, always wholly in view (no distractors, occluder, pan, brightness drift or noise);
:func:`write_frame_folder` writes it as a plain frame folder with ``groundtruth.txt``.

Natural images come from scikit-image's bundled data when it is installed, procedural multi-octave noise
otherwise (``natural=False`` forces that). Output depends only on the seed (and on which source is used):
sequence ``i`` of a dataset is drawn from ``SeedSequence([seed, i])``, independent of how many are written.
"""
from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import cv2
import numpy as np

PathLike = Union[str, os.PathLike]
Size = Union[int, tuple[int, int]]

NATURAL_IMAGES = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "retina")
GRAY_TEXTURES = ("brick", "grass", "gravel")
JPEG_QUALITY = 90
SPRITE_SIDE = 128
MAX_SCALE = 2.0  # a sprite's size varies by a factor 1/MAX_SCALE..MAX_SCALE along its path
MAX_LOG_ASPECT = 0.6  # and its aspect (w/h) is exp(-MAX_LOG_ASPECT..MAX_LOG_ASPECT)


@dataclass
class SyntheticSequence:
    """One rendered sequence.

    frames: list of (H, W, 3) uint8 RGB images.
    boxes: (N, 4) float64 target boxes (x, y, w, h) in pixels, clipped to the image.
    visible_ratio: (N,) visible fraction of the target (0 = fully occluded).
    cut_by_image: (N,) bool, the target extends past the image border.
    """

    frames: list[np.ndarray]
    boxes: np.ndarray
    visible_ratio: np.ndarray
    cut_by_image: np.ndarray

    @property
    def absent(self) -> np.ndarray:
        return self.visible_ratio <= 0

    @property
    def cover(self) -> np.ndarray:
        """GOT-10k cover label 0..8: eighths of the target that are visible, rounded up."""
        return np.ceil(np.clip(self.visible_ratio, 0, 1) * 8).astype(np.int64)


@functools.lru_cache(maxsize=1)
def _natural_images() -> Optional[tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]]:
    """(colour images, grey textures) from scikit-image, or None when it is not installed."""
    try:
        import skimage.data
    except ImportError:
        return None
    colour = tuple(np.ascontiguousarray(getattr(skimage.data, name)()[..., :3]) for name in NATURAL_IMAGES)
    grey = tuple(getattr(skimage.data, name)() for name in GRAY_TEXTURES)
    return colour, grey


def _procedural_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Multi-octave coloured value noise, (H, W, 3) uint8: a stand-in for natural texture."""
    image = np.zeros((height, width, 3), np.float32)
    for cells, weight in ((3, 1.0), (7, 0.5), (17, 0.25), (41, 0.125)):
        low = rng.random((cells, cells, 3), dtype=np.float32)
        image += weight * cv2.resize(low, (width, height), interpolation=cv2.INTER_CUBIC)
    image -= image.min()
    return (255 * image / max(float(image.max()), 1e-6)).astype(np.uint8)


def _random_crop(rng: np.random.Generator, image: np.ndarray, height: int, width: int) -> np.ndarray:
    """A random region of ``image`` with the aspect of (height, width), resized to that size."""
    H, W = image.shape[:2]
    scale = rng.uniform(0.4, 1.0) * min(H / height, W / width)
    ch, cw = max(2, int(height * scale)), max(2, int(width * scale))
    y, x = rng.integers(0, H - ch + 1), rng.integers(0, W - cw + 1)
    return cv2.resize(image[y : y + ch, x : x + cw], (width, height), interpolation=cv2.INTER_AREA)


def _texture(rng: np.random.Generator, height: int, width: int, natural: bool) -> np.ndarray:
    """(H, W, 3) uint8 texture: a natural-image crop, a tinted grey texture, or procedural noise."""
    images = _natural_images() if natural else None
    if images is None:
        return _procedural_image(rng, height, width)
    colour, grey = images
    if rng.random() < 0.75:
        return _random_crop(rng, colour[rng.integers(len(colour))], height, width)
    patch = _random_crop(rng, grey[rng.integers(len(grey))], height, width).astype(np.float32) / 255
    tint = rng.uniform(0.3, 1.0, 3).astype(np.float32)
    return (255 * patch[..., None] * tint).astype(np.uint8)


def _shape_mask(rng: np.random.Generator, side: int) -> np.ndarray:
    """(side, side) bool target shape: rectangle, ellipse or random convex polygon."""
    mask = np.zeros((side, side), np.uint8)
    kind = rng.integers(3)
    if kind == 0:
        mask[:] = 1
    elif kind == 1:
        cv2.ellipse(mask, (side // 2, side // 2), (side // 2 - 1, side // 2 - 1), 0, 0, 360, 1, -1)
    else:
        angles = np.sort(rng.uniform(0, 2 * np.pi, rng.integers(5, 9)))
        radius = rng.uniform(0.75, 1.0, angles.shape) * (side / 2 - 1)
        points = np.stack([side / 2 + radius * np.cos(angles), side / 2 + radius * np.sin(angles)], 1)
        cv2.fillConvexPoly(mask, points.astype(np.int32), 1)
    return mask.astype(bool)


def _hue_shifted(image: np.ndarray, shift: int) -> np.ndarray:
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
    hsv[..., 0] = (hsv[..., 0].astype(np.int32) + shift) % 180
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def _trajectory(rng: np.random.Generator, n: int, width: int, height: int, base: float) -> np.ndarray:
    """(n, 4) float (cx, cy, w, h): a smooth random walk that bounces inside the image, scale in
    [1/MAX_SCALE, MAX_SCALE]."""
    low, high = np.array([0.1 * width, 0.1 * height]), np.array([0.9 * width, 0.9 * height])
    centre = rng.uniform([0.25 * width, 0.25 * height], [0.75 * width, 0.75 * height])
    speed = rng.uniform(0.005, 0.03) * min(width, height)
    velocity = rng.normal(0, 1, 2)
    velocity *= speed / max(np.linalg.norm(velocity), 1e-6)
    aspect = np.exp(rng.uniform(-MAX_LOG_ASPECT, MAX_LOG_ASPECT))
    log_scale, out = 0.0, np.zeros((n, 4))
    for t in range(n):
        out[t] = centre[0], centre[1], base * np.sqrt(aspect) * np.exp(log_scale), base / np.sqrt(aspect) * np.exp(log_scale)
        velocity = velocity + rng.normal(0, 0.2 * speed, 2)
        velocity *= min(1.0, 2 * speed / max(np.linalg.norm(velocity), 1e-6))
        centre = centre + velocity
        bounced = (centre < low) | (centre > high)
        velocity[bounced] *= -1
        centre = np.clip(centre, low, high)
        log_scale = float(np.clip(0.97 * log_scale + rng.normal(0, 0.04), -np.log(MAX_SCALE), np.log(MAX_SCALE)))
    return out


def _inside(path: np.ndarray, width: int, height: int) -> np.ndarray:
    """``path`` (n, 4) (cx, cy, w, h) with each centre moved just enough that the sprite, sized as
    :meth:`_Layer.placement` rounds it and no larger than the image, lies wholly in the image."""
    half = np.maximum(4, np.round(path[:, 2:])) / 2
    return np.concatenate([np.clip(path[:, :2], half, np.array([width, height]) - half), path[:, 2:]], axis=1)


class _Layer:
    """A sprite (texture + shape mask) following a trajectory of (cx, cy, w, h)."""

    def __init__(self, texture: np.ndarray, mask: np.ndarray, path: np.ndarray) -> None:
        self.texture, self.mask, self.path = texture, mask, path

    def placement(self, t: int) -> tuple[int, int, int, int]:
        """Integer (x, y, w, h) of the sprite in frame ``t`` (may extend past the image)."""
        cx, cy, w, h = self.path[t]
        w, h = max(4, int(round(w))), max(4, int(round(h)))
        return int(round(cx - w / 2)), int(round(cy - h / 2)), w, h

    def full_mask(self, t: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray, int]:
        """(H, W) bool mask and (H, W, 3) pixels of the sprite in frame ``t``, and its total pixel count."""
        x, y, w, h = self.placement(t)
        texture = cv2.resize(self.texture, (w, h), interpolation=cv2.INTER_LINEAR)
        mask = cv2.resize(self.mask.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
        canvas_mask = np.zeros((height, width), bool)
        canvas = np.zeros((height, width, 3), np.uint8)
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, width), min(y + h, height)
        if x1 > x0 and y1 > y0:
            canvas_mask[y0:y1, x0:x1] = mask[y0 - y : y1 - y, x0 - x : x1 - x]
            canvas[y0:y1, x0:x1] = texture[y0 - y : y1 - y, x0 - x : x1 - x]
        return canvas_mask, canvas, int(mask.sum())


def _occluder_path(rng: np.random.Generator, target: np.ndarray, n: int, width: int) -> np.ndarray:
    """A vertical pole that crosses the target's centre at a random frame: (n, 4) (cx, cy, w, h)."""
    meet = int(rng.integers(n // 4, max(n // 4 + 1, 3 * n // 4)))
    cx, cy, w, h = target[meet]
    speed = rng.choice([-1, 1]) * rng.uniform(0.02, 0.05) * width
    pole_w = rng.uniform(0.5, 1.3) * w + 2  # a pole wider than the target hides it completely
    t = np.arange(n)
    return np.stack([cx + speed * (t - meet), np.full(n, cy), np.full(n, pole_w), np.full(n, 4.0 * h + 8)], 1)


def render_sequence(num_frames: int, size: Size = (320, 240), seed: Union[int, Sequence[int]] = 0,
                    natural: Optional[bool] = None, clutter: bool = True,
                    target_size: Optional[int] = None) -> SyntheticSequence:
    """Render one synthetic sequence.

    Args:
        num_frames: number of frames (>= 2).
        size: image width and height, or one int for a square image.
        seed: int or sequence of ints for ``numpy.random.SeedSequence``.
        natural: use scikit-image's natural images (default: when scikit-image is installed).
        clutter: distractors, an occluder, camera pan, brightness drift and noise; False gives a clean
            sequence whose target is always wholly in view (``visible_ratio`` 1 in every frame).
        target_size: the target's side in pixels at scale 1, at most the image's smaller side / 2.7 so the
            target always fits (its size then varies by a factor 0.5..2 and its aspect by up to 1.8;
            default: a random 10-25% of the smaller side). The random draws do not depend on it.
    """
    width, height = _check_size(size)
    if num_frames < 2:
        raise ValueError(f"num_frames must be >= 2, got {num_frames}")
    largest = int(min(width, height) / (MAX_SCALE * np.exp(MAX_LOG_ASPECT / 2)))
    if target_size is not None and not 4 <= target_size <= largest:
        raise ValueError(f"target_size must be 4 to {largest} pixels for a {width}x{height} image, got {target_size}")
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    natural = _natural_images() is not None if natural is None else natural
    if natural and _natural_images() is None:
        raise ValueError("natural=True needs scikit-image (pip install scikit-image)")

    # Background larger than the frame so the camera can pan across it.
    pan = rng.uniform(-0.15, 0.15, 2) * np.array([width, height]) / max(num_frames - 1, 1)
    margin_x, margin_y = int(abs(pan[0]) * num_frames) + 1, int(abs(pan[1]) * num_frames) + 1
    background = _texture(rng, height + margin_y, width + margin_x, natural)
    start = np.array([0 if pan[0] >= 0 else margin_x - 1, 0 if pan[1] >= 0 else margin_y - 1], float)
    if not clutter:
        pan = np.zeros(2)  # a still camera; drawn all the same, so a seed gives the same scene in both forms

    base = rng.uniform(0.1, 0.25) * min(width, height)
    base = base if target_size is None else float(target_size)
    target_texture = _texture(rng, SPRITE_SIDE, SPRITE_SIDE, natural)
    target = _Layer(target_texture, _shape_mask(rng, SPRITE_SIDE), _trajectory(rng, num_frames, width, height, base))
    behind, front = [], []
    if clutter:
        for i in range(int(rng.integers(1, 4))):
            texture = _hue_shifted(target_texture, int(rng.integers(20, 160))) if i == 0 else \
                _texture(rng, SPRITE_SIDE, SPRITE_SIDE, natural)
            layer = _Layer(texture, _shape_mask(rng, SPRITE_SIDE),
                           _trajectory(rng, num_frames, width, height, base * rng.uniform(0.7, 1.3)))
            (front if rng.random() < 0.3 else behind).append(layer)
        if rng.random() < 0.6:
            pole = _texture(rng, SPRITE_SIDE, SPRITE_SIDE, natural)
            front.append(_Layer(pole, np.ones((SPRITE_SIDE, SPRITE_SIDE), bool),
                                _occluder_path(rng, target.path, num_frames, width)))
        brightness = 1 + 0.15 * np.sin(np.linspace(0, rng.uniform(1, 6), num_frames) + rng.uniform(0, 6))
    else:
        target.path = _inside(target.path, width, height)

    frames, boxes = [], np.zeros((num_frames, 4))
    visible, cut = np.zeros(num_frames), np.zeros(num_frames, bool)
    for t in range(num_frames):
        ox, oy = (start + pan * t).astype(int)
        frame = background[oy : oy + height, ox : ox + width].copy()
        for layer in behind:
            mask, pixels, _ = layer.full_mask(t, height, width)
            frame[mask] = pixels[mask]
        target_mask, pixels, total = target.full_mask(t, height, width)
        frame[target_mask] = pixels[target_mask]
        seen = target_mask.copy()
        for layer in front:
            mask, pixels, _ = layer.full_mask(t, height, width)
            frame[mask] = pixels[mask]
            seen &= ~mask
        if clutter:
            frame = np.clip(frame.astype(np.float32) * brightness[t] + rng.normal(0, 3, frame.shape), 0, 255)
        frames.append(frame.astype(np.uint8))
        x, y, w, h = target.placement(t)
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, width), min(y + h, height)
        boxes[t] = x0, y0, x1 - x0, y1 - y0
        cut[t] = (x0, y0, x1, y1) != (x, y, x + w, y + h)
        visible[t] = seen.sum() / total
    return SyntheticSequence(frames, boxes, visible, cut)


def _check_size(size: Size) -> tuple[int, int]:
    width, height = (size, size) if isinstance(size, int) else tuple(size)
    if width < 32 or height < 32:
        raise ValueError(f"size must be at least 32 x 32 pixels, got {size}")
    return int(width), int(height)


def _write_frames(directory: Path, frames: list[np.ndarray], names: Sequence[str]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for frame, name in zip(frames, names):
        options = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY] if name.endswith(".jpg") else []
        cv2.imwrite(str(directory / name), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), options)


def _box_lines(boxes: np.ndarray, fmt: str = "{:.4f}") -> str:
    return "".join(",".join(fmt.format(v) for v in box) + "\n" for box in boxes)


def write_frame_folder(folder: PathLike, sequence: SyntheticSequence, suffix: str = ".png") -> Path:
    """Write ``sequence`` as a frame folder trackers read: ``00000001.png ...`` (lossless by default) and
    ``groundtruth.txt`` (one ``x,y,w,h`` line per frame); return the folder."""
    folder = Path(folder)
    _write_frames(folder, sequence.frames, [f"{t + 1:08d}{suffix}" for t in range(len(sequence.frames))])
    (folder / "groundtruth.txt").write_text(_box_lines(sequence.boxes))
    return folder


def write_synthetic_got10k(root: PathLike, num_sequences: int = 3, num_frames: int = 40, size: Size = (320, 240),
                           seed: int = 0, split: str = "train", natural: Optional[bool] = None) -> list[Path]:
    """Write a GOT-10k-layout dataset and return the sequence directories.

    Layout: ``root/<split>/list.txt`` and ``root/<split>/GOT-10k_<Split>_<000001>/`` holding
    ``00000001.jpg ...``, ``groundtruth.txt`` (``x,y,w,h`` per frame), ``absence.label``, ``cover.label``
    (0..8), ``cut_by_image.label`` and ``meta_info.ini``. Every frame is annotated (the validation-split
    form), so the same data serves training and evaluation.
    """
    if num_sequences < 1:
        raise ValueError(f"num_sequences must be >= 1, got {num_sequences}")
    split_dir = Path(root) / split
    names = [f"GOT-10k_{split.capitalize()}_{i + 1:06d}" for i in range(num_sequences)]
    directories = []
    for index, name in enumerate(names):
        sequence = render_sequence(num_frames, size, (seed, index), natural)
        directory = write_frame_folder(split_dir / name, sequence, ".jpg")
        (directory / "absence.label").write_text("".join(f"{int(a)}\n" for a in sequence.absent))
        (directory / "cover.label").write_text("".join(f"{c}\n" for c in sequence.cover))
        (directory / "cut_by_image.label").write_text("".join(f"{int(c)}\n" for c in sequence.cut_by_image))
        (directory / "meta_info.ini").write_text(
            f"[METAINFO]\nurl: synthetic\nbegin: 00:00:00\nend: 00:00:00\nanno_fps: 10Hz\n"
            f"object_class: synthetic\nmotion_class: random walk\nmajor_class: synthetic\nroot_class: object\n"
            f"motion_adverb: smoothly\nresolution: ({sequence.frames[0].shape[1]}, {sequence.frames[0].shape[0]})\n")
        directories.append(directory)
    (split_dir / "list.txt").write_text("".join(f"{n}\n" for n in names))
    return directories


def write_synthetic_lasot(root: PathLike, classes: Sequence[str] = ("cat", "car"), sequences_per_class: int = 2,
                          num_frames: int = 40, size: Size = (320, 240), seed: int = 0,
                          natural: Optional[bool] = None) -> list[Path]:
    """Write a LaSOT-layout dataset (``root/<class>/<class>-<n>/img/00000001.jpg``, ``groundtruth.txt``,
    ``full_occlusion.txt``, ``out_of_view.txt``, ``nlp.txt``) and return the sequence directories."""
    directories = []
    for c, name in enumerate(classes):
        for n in range(1, sequences_per_class + 1):
            sequence = render_sequence(num_frames, size, (seed, c, n), natural)
            directory = Path(root) / name / f"{name}-{n}"
            _write_frames(directory / "img", sequence.frames, [f"{t + 1:08d}.jpg" for t in range(num_frames)])
            (directory / "groundtruth.txt").write_text(_box_lines(sequence.boxes, "{:.0f}"))
            out_of_view = sequence.absent & sequence.cut_by_image
            full_occlusion = sequence.absent & ~out_of_view
            (directory / "full_occlusion.txt").write_text(",".join(str(int(v)) for v in full_occlusion) + "\n")
            (directory / "out_of_view.txt").write_text(",".join(str(int(v)) for v in out_of_view) + "\n")
            (directory / "nlp.txt").write_text(f"the synthetic {name}\n")
            directories.append(directory)
    return directories


def write_synthetic_trackingnet(root: PathLike, num_chunks: int = 1, sequences_per_chunk: int = 2,
                                num_frames: int = 40, size: Size = (320, 240), seed: int = 0,
                                natural: Optional[bool] = None) -> list[Path]:
    """Write a TrackingNet-layout dataset (``root/TRAIN_<k>/frames/<seq>/<n>.jpg`` from 0,
    ``root/TRAIN_<k>/anno/<seq>.txt``) and return the frame directories."""
    directories = []
    for k in range(num_chunks):
        chunk = Path(root) / f"TRAIN_{k}"
        (chunk / "anno").mkdir(parents=True, exist_ok=True)
        for i in range(sequences_per_chunk):
            sequence = render_sequence(num_frames, size, (seed, k, i), natural)
            name = f"synthetic_{k}_{i:04d}"
            _write_frames(chunk / "frames" / name, sequence.frames, [f"{t}.jpg" for t in range(num_frames)])
            (chunk / "anno" / f"{name}.txt").write_text(_box_lines(sequence.boxes))
            directories.append(chunk / "frames" / name)
    return directories


def write_synthetic_coco(root: PathLike, num_images: int = 4, size: Size = (320, 240), seed: int = 0,
                         split: str = "train2017", natural: Optional[bool] = None) -> Path:
    """Write a COCO-style detection set: ``root/images/<split>/<id>.jpg`` and
    ``root/annotations/instances_<split>.json`` (boxes ``[x, y, w, h]``); return the json path.

    Each image is the first frame of a synthetic sequence; its target and any visible distractors are
    not separately annotated, so every image holds one annotated object (plus one ``iscrowd`` entry on
    the first image, which readers must skip).
    """
    images, annotations = [], []
    image_dir = Path(root) / "images" / split
    for i in range(num_images):
        sequence = render_sequence(2, size, (seed, i), natural)
        file_name = f"{i + 1:012d}.jpg"
        _write_frames(image_dir, sequence.frames[:1], [file_name])
        height, width = sequence.frames[0].shape[:2]
        images.append({"id": i + 1, "file_name": file_name, "width": width, "height": height})
        x, y, w, h = (float(v) for v in sequence.boxes[0])
        annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": 1 + i % 2,
                            "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})
        if i == 0:
            annotations.append({"id": len(annotations) + 1, "image_id": 1, "category_id": 1,
                                "bbox": [0.0, 0.0, w, h], "area": w * h, "iscrowd": 1})
    path = Path(root) / "annotations" / f"instances_{split}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    categories = [{"id": 1, "name": "thing"}, {"id": 2, "name": "other thing"}]
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path
