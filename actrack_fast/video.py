"""Video input and output for the tracker: frames from video files or frame folders, annotated video,
and box files in the common benchmark format (one ``x,y,w,h`` line per frame)."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterator, Optional, Sequence, Union

import cv2
import numpy as np

PathLike = Union[str, os.PathLike]
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_CODECS = {".mp4": "mp4v", ".avi": "MJPG", ".mkv": "mp4v"}
BOX_COLOUR = (0, 255, 0)


def _natural_key(path: Path) -> list:
    """Sort frame files as humans number them: img2 before img10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


class FrameReader:
    """Frames of a video file (anything OpenCV/FFmpeg decodes) or of a folder of images, in order, as
    (H, W, 3) uint8 RGB arrays. Opening checks that the source exists and yields at least one frame.

    Attributes: ``fps`` (the video's frame rate, ``None`` for a folder), ``count`` (number of frames,
    ``None`` when the container does not say).
    """

    def __init__(self, source: PathLike) -> None:
        self.source = Path(source)
        if not self.source.exists():
            raise FileNotFoundError(f"no such video file or frame folder: {source}")
        self.fps: Optional[float] = None
        if self.source.is_dir():
            self._files = sorted((p for p in self.source.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS),
                                 key=_natural_key)
            if not self._files:
                raise ValueError(f"frame folder {source} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
            self.count: Optional[int] = len(self._files)
            return
        self._files = None
        capture = self._open_video()
        try:
            ok, _ = capture.read()
            if not ok:
                raise ValueError(f"video {source} has no frames")
            fps = capture.get(cv2.CAP_PROP_FPS)
            count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        finally:
            capture.release()
        self.fps = fps if fps > 0 else None
        self.count = count if count > 0 else None

    def _open_video(self) -> cv2.VideoCapture:
        capture = cv2.VideoCapture(str(self.source))
        if not capture.isOpened():
            capture.release()
            raise ValueError(f"cannot read {self.source}: not a video OpenCV/FFmpeg can decode, nor a frame folder")
        return capture

    def __iter__(self) -> Iterator[np.ndarray]:
        if self._files is not None:
            for path in self._files:
                frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
                if frame is None:
                    raise ValueError(f"cannot read image file {path}")
                yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            return
        capture = self._open_video()
        try:
            while True:
                ok, frame = capture.read()
                if not ok:
                    return
                yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        finally:
            capture.release()


def draw_box(frame: np.ndarray, box: Sequence[float], label: str = "") -> np.ndarray:
    """A copy of the RGB ``frame`` with the (x, y, w, h) ``box`` and an optional label drawn on it."""
    out = np.ascontiguousarray(frame).copy()
    x, y, w, h = (float(v) for v in box)
    cv2.rectangle(out, (round(x), round(y)), (round(x + w), round(y + h)), BOX_COLOUR, 2)
    if label:
        cv2.putText(out, label, (5, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, BOX_COLOUR, 1, cv2.LINE_AA)
    return out


class AnnotatedVideoWriter:
    """Write RGB frames with boxes drawn on them to ``path`` (``.mp4``, ``.avi`` or ``.mkv``).

    The video opens on the first frame (its size fixes the video's). Use as a context manager.
    """

    def __init__(self, path: PathLike, fps: float = 30.0) -> None:
        self.path = Path(path)
        if self.path.suffix.lower() not in VIDEO_CODECS:
            raise ValueError(f"output video must end in one of {sorted(VIDEO_CODECS)}, got {path}")
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.fps = fps
        self._writer: Optional[cv2.VideoWriter] = None
        self.frames = 0

    def write(self, frame: np.ndarray, box: Sequence[float], label: str = "") -> None:
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fourcc = cv2.VideoWriter_fourcc(*VIDEO_CODECS[self.path.suffix.lower()])
            self._writer = cv2.VideoWriter(str(self.path), fourcc, self.fps, (frame.shape[1], frame.shape[0]))
            if not self._writer.isOpened():
                raise OSError(f"cannot write video {self.path} (OpenCV has no encoder for it here)")
        self._writer.write(cv2.cvtColor(draw_box(frame, box, label), cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None

    def __enter__(self) -> "AnnotatedVideoWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def format_box(box: Sequence[float]) -> str:
    """``x,y,w,h`` with 4 decimals, the line format of GOT-10k/LaSOT result files."""
    return ",".join(f"{float(v):.4f}" for v in box)


def write_boxes(path: PathLike, boxes: Sequence[Sequence[float]]) -> None:
    """One ``x,y,w,h`` line per box."""
    Path(path).write_text("".join(format_box(box) + "\n" for box in boxes))


def parse_box(text: str) -> tuple[float, float, float, float]:
    """``'x,y,w,h'`` (commas, tabs or spaces) -> four floats; ``ValueError`` otherwise."""
    parts = [p for p in re.split(r"[,\s]+", text.strip()) if p]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise ValueError(f"a box is four numbers x,y,w,h; got {text!r}") from None
    if len(values) != 4:
        raise ValueError(f"a box is four numbers x,y,w,h; got {len(values)} in {text!r}")
    return values


def read_boxes(path: PathLike) -> np.ndarray:
    """Boxes (F, 4) from a file of ``x,y,w,h`` lines (commas, tabs or spaces)."""
    lines = [line for line in Path(path).read_text().splitlines() if line.strip()]
    return np.asarray([parse_box(line) for line in lines], dtype=np.float64).reshape(-1, 4)
