"""Evaluation-side readers: every frame of a sequence, its (possibly partial) ground truth and absence labels.

Training readers (:mod:`actrack_fast.data.datasets`) yield annotated frames only; evaluation also needs the
test splits whose ground truth is the first box alone (GOT-10k test, TrackingNet TEST), OTB and plain
folders, so the sequences here list frames from disk and pad the ground truth with NaN rows.

Layouts:

* ``otb``: ``root/<Seq>/img/0001.jpg``, ``root/<Seq>/groundtruth_rect[.k].txt`` (several targets become
  ``<Seq>.1``, ``<Seq>.2``, as the GOT-10k toolkit names them).
* ``lasot``: ``root/<class>/<class>-<n>/img/00000001.jpg``, ``groundtruth.txt``, ``full_occlusion.txt``,
  ``out_of_view.txt``; split ``test`` reads ``root/testing_set.txt`` when present, ``all`` takes every one.
* ``got10k``: ``root/<split>/list.txt``, ``root/<split>/<seq>/00000001.jpg``, ``groundtruth.txt``,
  ``cover.label`` (visible when ``cover > 0``, the toolkit's rule) or ``absence.label``,
  ``meta_info.ini`` (``resolution``, used to clip boxes for AO).
* ``trackingnet``: ``root/<split>/frames/<seq>/<n>.jpg`` from 0, ``root/<split>/anno/<seq>.txt``.
* ``folder``: ``root/<seq>/`` (or ``root`` itself) holding images directly or in ``img/`` and a
  ``groundtruth.txt`` (or ``groundtruth_rect.txt``) whose first line is the initial box.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np

from ..data.datasets import read_boxes, read_flags

PathLike = Union[str, os.PathLike]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
# OTB sequences whose img/ folder holds more frames than the ground truth covers: (first, last), 1-based.
# From the GOT-10k toolkit's got10k/datasets/otb.py.
OTB_FRAME_RANGES = {"david": (300, 770), "football1": (1, 74), "freeman3": (1, 460), "freeman4": (1, 283),
                    "diving": (1, 215)}


@dataclass(frozen=True)
class EvalSequence:
    """One evaluation sequence.

    frames: every frame's image path, in order. gt: (F, 4) float64 x,y,w,h, NaN rows where not annotated.
    visible: (F,) bool absence labels, or None. image_size: (W, H) when the dataset states it.
    """

    name: str
    frames: tuple[Path, ...]
    gt: np.ndarray
    visible: Optional[np.ndarray] = None
    image_size: Optional[tuple[int, int]] = None

    @property
    def init_frame(self) -> int:
        """Index of the first annotated frame, where tracking starts."""
        valid = np.isfinite(self.gt).all(axis=1) & (self.gt[:, 2] > 0) & (self.gt[:, 3] > 0)
        if not valid.any():
            raise ValueError(f"sequence {self.name!r} has no annotated frame to initialise on")
        return int(np.argmax(valid))

    @property
    def has_ground_truth(self) -> bool:
        """Whether frames after the first annotated one are annotated (test splits give only the first)."""
        return bool(np.isfinite(self.gt[self.init_frame + 1:]).all(axis=1).any())


@dataclass(frozen=True)
class EvalDataset:
    """Sequences plus how their results are written and scored.

    result_format: ``'txt'`` (``<seq>.txt``), ``'got10k'`` (``<seq>/<seq>_001.txt``) or ``'trackingnet'``.
    absent: how absent frames score (:func:`actrack_fast.metrics.evaluate_sequence`).
    preset: the tracker's template-update preset (:mod:`actrack_fast.presets`).
    """

    name: str
    sequences: tuple[EvalSequence, ...]
    result_format: str = "txt"
    absent: str = "exclude"
    preset: str = "default"


def _natural_key(name: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _images(directory: Path) -> tuple[Path, ...]:
    if not directory.is_dir():
        raise FileNotFoundError(f"frame directory {directory} does not exist")
    frames = sorted((p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES),
                    key=lambda p: _natural_key(p.name))
    if not frames:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {directory}")
    return tuple(frames)


def _padded(name: str, boxes: np.ndarray, frames: int) -> np.ndarray:
    if len(boxes) > frames:
        raise ValueError(f"sequence {name!r}: {len(boxes)} ground-truth boxes for {frames} frames")
    gt = np.full((frames, 4), np.nan)
    gt[: len(boxes)] = boxes
    return gt


def _sequence(name: str, frames: tuple[Path, ...], boxes: np.ndarray, visible: Optional[np.ndarray] = None,
              image_size: Optional[tuple[int, int]] = None) -> EvalSequence:
    gt = _padded(name, np.asarray(boxes, dtype=np.float64), len(frames))
    if visible is not None:
        visible = np.concatenate([visible, np.zeros(len(frames) - len(visible), bool)])
    return EvalSequence(name, frames, gt, visible, image_size)


def _subdirs(root: Path) -> list[Path]:
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root {root} does not exist")
    return sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: _natural_key(p.name))


def _nonempty(paths: list[Path]) -> list[Path]:
    return [p for p in paths if p.read_text().strip()]  # OTB ships empty groundtruth_rect.1.txt files


# --- readers ----------------------------------------------------------------------------------------
def load_otb(root: PathLike, split: Optional[str] = None) -> EvalDataset:
    sequences = []
    for directory in _subdirs(Path(root)):
        annotations = _nonempty(sorted(directory.glob("groundtruth_rect*.txt")))
        frames = _images(directory / "img") if annotations else ()
        first, last = OTB_FRAME_RANGES.get(directory.name.lower(), (1, len(frames)))
        for k, path in enumerate(annotations, start=1):
            name = directory.name if len(annotations) == 1 else f"{directory.name}.{k}"
            sequences.append(_sequence(name, frames[first - 1: last], read_boxes(path)))
    return _dataset("otb", root, sequences, preset="otb")


def load_lasot(root: PathLike, split: Optional[str] = "test") -> EvalDataset:
    root = Path(root)
    listing = root / "testing_set.txt"
    directories = [s for c in _subdirs(root) for s in _subdirs(c) if (s / "groundtruth.txt").is_file()]
    if split == "test" and listing.is_file():
        wanted = set(listing.read_text().split())
        directories = [d for d in directories if d.name in wanted]
    elif split not in (None, "all", "test"):
        raise ValueError(f"split must be 'test' or 'all' for LaSOT, got {split!r}")
    sequences = []
    for directory in directories:
        boxes = read_boxes(directory / "groundtruth.txt")
        visible = np.ones(len(boxes), bool)
        for flags in ("full_occlusion.txt", "out_of_view.txt"):
            if (directory / flags).is_file():
                visible &= read_flags(directory / flags, len(boxes)) == 0
        sequences.append(_sequence(directory.name, _images(directory / "img"), boxes, visible))
    # LaSOT scores absent frames as failures (pytracking: the whole length is the denominator).
    return _dataset("lasot", root, sequences, absent="fail", preset="lasot")


def _resolution(meta: Path) -> Optional[tuple[int, int]]:
    match = re.search(r"resolution:\s*\((\d+),\s*(\d+)\)", meta.read_text()) if meta.is_file() else None
    return (int(match.group(1)), int(match.group(2))) if match else None


def load_got10k(root: PathLike, split: Optional[str] = "val") -> EvalDataset:
    split_dir = Path(root) / (split or "val")
    listing = split_dir / "list.txt"
    names = listing.read_text().split() if listing.is_file() else [
        d.name for d in _subdirs(split_dir) if (d / "groundtruth.txt").is_file()]
    sequences = []
    for name in names:
        directory = split_dir / name
        frames = _images(directory)
        boxes = read_boxes(directory / "groundtruth.txt")
        visible = None
        if (directory / "cover.label").is_file():
            visible = read_flags(directory / "cover.label", len(boxes)) > 0
        elif (directory / "absence.label").is_file():
            visible = read_flags(directory / "absence.label", len(boxes)) == 0
        sequences.append(_sequence(name, frames, boxes, visible, _resolution(directory / "meta_info.ini")))
    preset = "got10k_test" if split == "test" else "default"
    return _dataset("got10k", root, sequences, result_format="got10k", preset=preset)


def load_trackingnet(root: PathLike, split: Optional[str] = "TEST") -> EvalDataset:
    chunk = Path(root) / (split or "TEST")
    annotations = sorted((chunk / "anno").glob("*.txt"), key=lambda p: _natural_key(p.name))
    sequences = [_sequence(a.stem, _images(chunk / "frames" / a.stem), read_boxes(a)) for a in annotations]
    return _dataset("trackingnet", root, sequences, result_format="trackingnet", preset="trackingnet")


def load_folder(root: PathLike, split: Optional[str] = None) -> EvalDataset:
    root = Path(root)
    directories = [root] if _annotation(root) else [d for d in _subdirs(root) if _annotation(d)]
    sequences = []
    for directory in directories:
        image_dir = directory / "img" if (directory / "img").is_dir() else directory
        sequences.append(_sequence(directory.name, _images(image_dir), read_boxes(_annotation(directory))))
    return _dataset("folder", root, sequences)


def _annotation(directory: Path) -> Optional[Path]:
    for name in ("groundtruth.txt", "groundtruth_rect.txt"):
        if (directory / name).is_file():
            return directory / name
    return None


def _dataset(name: str, root: PathLike, sequences: list, **options) -> EvalDataset:
    if not sequences:
        raise ValueError(f"no {name} sequences found under {root} (see actrack_fast.evaluation.datasets "
                         f"for the expected layout)")
    return EvalDataset(name, tuple(sequences), **options)


LOADERS: dict[str, Callable[..., EvalDataset]] = {
    "otb": load_otb, "lasot": load_lasot, "got10k": load_got10k, "trackingnet": load_trackingnet,
    "folder": load_folder,
}


def load_dataset(kind: str, root: PathLike, split: Optional[str] = None) -> EvalDataset:
    """An evaluation dataset by layout name (``otb``, ``lasot``, ``got10k``, ``trackingnet``, ``folder``).

    ``split``: LaSOT ``test``/``all``, GOT-10k ``val``/``test``/..., TrackingNet ``TEST``/``TRAIN_k``;
    None takes the layout's evaluation default.
    """
    if kind not in LOADERS:
        raise ValueError(f"dataset must be one of {sorted(LOADERS)}, got {kind!r}")
    return LOADERS[kind](root) if split is None else LOADERS[kind](root, split)
