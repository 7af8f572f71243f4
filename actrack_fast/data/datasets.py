"""Readers for the standard tracking layouts, all exposing one small interface.

* :class:`Got10k`: ``<root>/<split>/<seq>/00000001.jpg``, ``groundtruth.txt``, ``absence.label``,
  ``cover.label`` (a target is visible when present and ``cover > 0``).
* :class:`Lasot`: ``<root>/<class>/<class>-<n>/img/00000001.jpg``, ``groundtruth.txt``,
  ``full_occlusion.txt``, ``out_of_view.txt``.
* :class:`TrackingNet`: ``<root>/TRAIN_<k>/frames/<seq>/<n>.jpg`` (from 0), ``<root>/TRAIN_<k>/anno/<seq>.txt``.
* :class:`CocoSequences`: a COCO detection json; every non-crowd annotation is a one-frame "sequence".

Boxes are float32 ``(x, y, w, h)`` in pixels; frames load as (H, W, 3) uint8 RGB.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import cv2
import numpy as np

PathLike = Union[str, os.PathLike]


@dataclass
class SequenceInfo:
    """Annotations of one sequence: ``boxes`` (N, 4) float32 xywh and ``visible`` (N,) bool."""

    name: str
    boxes: np.ndarray
    visible: np.ndarray

    @property
    def valid(self) -> np.ndarray:
        """(N,) bool: the box has a positive width and height."""
        return (self.boxes[:, 2] > 0) & (self.boxes[:, 3] > 0)


def read_image(path: PathLike) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB; a missing or unreadable file raises ``FileNotFoundError``."""
    image = cv2.imread(os.fspath(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"cannot read image {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_boxes(path: PathLike) -> np.ndarray:
    """(N, 4) float32 boxes from a text file with one ``x,y,w,h`` per line (comma, tab or space separated)."""
    rows = []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        values = [v for v in re.split(r"[,\s]+", line.strip()) if v]
        if len(values) != 4:
            raise ValueError(f"{path}:{number}: expected 4 numbers x,y,w,h, got {line!r}")
        rows.append([float(v) for v in values])
    if not rows:
        raise ValueError(f"{path} holds no boxes")
    return np.asarray(rows, dtype=np.float32)


def read_flags(path: PathLike, count: int) -> np.ndarray:
    """(count,) int64 per-frame labels, one per line or comma-separated on one line."""
    values = [int(float(v)) for v in re.split(r"[,\s]+", Path(path).read_text().strip()) if v]
    if len(values) != count:
        raise ValueError(f"{path} has {len(values)} labels for {count} annotated frames")
    return np.asarray(values, dtype=np.int64)


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"{what} directory {path} does not exist")
    return path


class SequenceDataset:
    """Common interface: ``len(dataset)`` sequences, their names, annotations and frames."""

    name = "dataset"
    is_video = True

    def __init__(self) -> None:
        self._info: dict[int, SequenceInfo] = {}

    def __len__(self) -> int:
        return len(self.sequence_names)

    @property
    def sequence_names(self) -> list[str]:
        raise NotImplementedError

    def _read_info(self, index: int) -> SequenceInfo:
        raise NotImplementedError

    def frame_path(self, index: int, frame: int) -> Path:
        """Path of frame ``frame`` (0-based) of sequence ``index``."""
        raise NotImplementedError

    def sequence_info(self, index: int) -> SequenceInfo:
        """Annotations of sequence ``index`` (read once, then cached)."""
        if not 0 <= index < len(self):
            raise IndexError(f"sequence index {index} out of range for {len(self)} sequences in {self.name}")
        if index not in self._info:
            self._info[index] = self._read_info(index)
        return self._info[index]

    def load_frame(self, index: int, frame: int) -> np.ndarray:
        """Frame ``frame`` (0-based) of sequence ``index`` as (H, W, 3) uint8 RGB."""
        return read_image(self.frame_path(index, frame))


class Got10k(SequenceDataset):
    """GOT-10k: ``root/<split>/<seq>/`` (or ``root`` itself when it holds the sequences).

    Args:
        sequences: names to use (default: ``list.txt`` of the split, else every sequence directory).
    """

    name = "got10k"

    def __init__(self, root: PathLike, split: str = "train", sequences: Optional[Sequence[str]] = None) -> None:
        super().__init__()
        root = _require_dir(Path(root), "GOT-10k root")
        self.root = root / split if (root / split).is_dir() else root
        if sequences is None:
            listing = self.root / "list.txt"
            sequences = listing.read_text().split() if listing.is_file() else sorted(
                p.name for p in self.root.iterdir() if (p / "groundtruth.txt").is_file())
        if not sequences:
            raise ValueError(f"no GOT-10k sequences (folders with groundtruth.txt) in {self.root}")
        self._names = list(sequences)

    @property
    def sequence_names(self) -> list[str]:
        return self._names

    def _read_info(self, index: int) -> SequenceInfo:
        directory = self.root / self._names[index]
        boxes = read_boxes(directory / "groundtruth.txt")
        visible = (boxes[:, 2] > 0) & (boxes[:, 3] > 0)
        if (directory / "absence.label").is_file():
            visible &= read_flags(directory / "absence.label", len(boxes)) == 0
        if (directory / "cover.label").is_file():
            visible &= read_flags(directory / "cover.label", len(boxes)) > 0
        return SequenceInfo(self._names[index], boxes, visible)

    def frame_path(self, index: int, frame: int) -> Path:
        return self.root / self._names[index] / f"{frame + 1:08d}.jpg"


class Lasot(SequenceDataset):
    """LaSOT: ``root/<class>/<class>-<n>/``.

    Args:
        classes: class folders to use (default: all).
        sequences: sequence names such as ``'airplane-1'`` (e.g. a train split list); default: all.
    """

    name = "lasot"

    def __init__(self, root: PathLike, classes: Optional[Sequence[str]] = None,
                 sequences: Optional[Sequence[str]] = None) -> None:
        super().__init__()
        self.root = _require_dir(Path(root), "LaSOT root")
        if sequences is None:
            class_dirs = [self.root / c for c in classes] if classes is not None else sorted(
                p for p in self.root.iterdir() if p.is_dir())
            sequences = [s.name for c in class_dirs for s in sorted(_require_dir(c, "LaSOT class").iterdir(),
                                                                     key=_natural_key)
                         if (s / "groundtruth.txt").is_file()]
        if not sequences:
            raise ValueError(f"no LaSOT sequences (<class>/<class>-<n>/groundtruth.txt) in {self.root}")
        self._names = list(sequences)

    @property
    def sequence_names(self) -> list[str]:
        return self._names

    def _directory(self, index: int) -> Path:
        name = self._names[index]
        return self.root / name.rsplit("-", 1)[0] / name

    def _read_info(self, index: int) -> SequenceInfo:
        directory = self._directory(index)
        boxes = read_boxes(directory / "groundtruth.txt")
        visible = (boxes[:, 2] > 0) & (boxes[:, 3] > 0)
        for flags in ("full_occlusion.txt", "out_of_view.txt"):
            if (directory / flags).is_file():
                visible &= read_flags(directory / flags, len(boxes)) == 0
        return SequenceInfo(self._names[index], boxes, visible)

    def frame_path(self, index: int, frame: int) -> Path:
        return self._directory(index) / "img" / f"{frame + 1:08d}.jpg"


class TrackingNet(SequenceDataset):
    """TrackingNet: ``root/TRAIN_<k>/frames/<seq>/<n>.jpg`` and ``root/TRAIN_<k>/anno/<seq>.txt``.

    Args:
        chunks: chunk folders to use, e.g. ``['TRAIN_0', 'TRAIN_1']`` (default: every ``TRAIN_<k>``).
    """

    name = "trackingnet"

    def __init__(self, root: PathLike, chunks: Optional[Sequence[str]] = None) -> None:
        super().__init__()
        self.root = _require_dir(Path(root), "TrackingNet root")
        if chunks is None:
            chunks = sorted((p.name for p in self.root.iterdir() if re.fullmatch(r"TRAIN_\d+", p.name)),
                            key=_natural_key)
        self._entries = [(chunk, anno.stem) for chunk in chunks
                         for anno in sorted(_require_dir(self.root / chunk / "anno", "TrackingNet anno").glob("*.txt"))]
        if not self._entries:
            raise ValueError(f"no TrackingNet sequences (TRAIN_<k>/anno/<seq>.txt) in {self.root}")

    @property
    def sequence_names(self) -> list[str]:
        return [name for _, name in self._entries]

    def _read_info(self, index: int) -> SequenceInfo:
        chunk, name = self._entries[index]
        boxes = read_boxes(self.root / chunk / "anno" / f"{name}.txt")
        return SequenceInfo(name, boxes, (boxes[:, 2] > 0) & (boxes[:, 3] > 0))

    def frame_path(self, index: int, frame: int) -> Path:
        chunk, name = self._entries[index]
        return self.root / chunk / "frames" / name / f"{frame}.jpg"


class CocoSequences(SequenceDataset):
    """A COCO detection set as one-frame sequences, one per non-crowd annotation.

    Looks for ``root/annotations/instances_<split>.json`` and the images in ``root/images/<split>/`` or
    ``root/<split>/``; ``annotation_file``/``image_dir`` override either.
    """

    name = "coco"
    is_video = False

    def __init__(self, root: PathLike, split: str = "train2017", annotation_file: Optional[PathLike] = None,
                 image_dir: Optional[PathLike] = None) -> None:
        super().__init__()
        root = Path(root)
        annotation_file = Path(annotation_file or root / "annotations" / f"instances_{split}.json")
        if not annotation_file.is_file():
            raise FileNotFoundError(f"COCO annotation file {annotation_file} does not exist")
        if image_dir is None:
            image_dir = root / "images" / split if (root / "images" / split).is_dir() else root / split
        self.image_dir = _require_dir(Path(image_dir), "COCO image")
        data = json.loads(annotation_file.read_text())
        files = {image["id"]: image["file_name"] for image in data["images"]}
        self._annotations = [(files[a["image_id"]], a["id"], a["bbox"]) for a in data["annotations"]
                             if not a.get("iscrowd", 0)]
        if not self._annotations:
            raise ValueError(f"{annotation_file} holds no non-crowd annotations")

    @property
    def sequence_names(self) -> list[str]:
        return [f"{Path(file).stem}_{ann_id}" for file, ann_id, _ in self._annotations]

    def _read_info(self, index: int) -> SequenceInfo:
        _, ann_id, bbox = self._annotations[index]
        boxes = np.asarray([bbox], dtype=np.float32)
        return SequenceInfo(f"{ann_id}", boxes, (boxes[:, 2] > 0) & (boxes[:, 3] > 0))

    def frame_path(self, index: int, frame: int) -> Path:
        if frame != 0:
            raise IndexError(f"a COCO 'sequence' has one frame, asked for frame {frame}")
        return self.image_dir / self._annotations[index][0]


def _natural_key(path: Union[Path, str]) -> list:
    """Sort key that orders ``cat-10`` after ``cat-9``."""
    name = path.name if isinstance(path, Path) else path
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


DATASET_TYPES = {"got10k": Got10k, "lasot": Lasot, "trackingnet": TrackingNet, "coco": CocoSequences}


def build_dataset(kind: str, root: PathLike, options: Optional[Mapping[str, Any]] = None) -> SequenceDataset:
    """A reader by layout name (``got10k``, ``lasot``, ``trackingnet``, ``coco``) with its keyword options."""
    if kind not in DATASET_TYPES:
        raise ValueError(f"unknown dataset type {kind!r}; expected one of {sorted(DATASET_TYPES)}")
    try:
        return DATASET_TYPES[kind](root, **dict(options or {}))
    except TypeError as error:
        raise ValueError(f"bad options {dict(options or {})} for dataset type {kind!r}: {error}") from error
