"""Result files in the layouts the benchmarks expect, and the submission archives.

Inside a tracker's result folder ``out``:

* ``txt`` (OTB, LaSOT, plain folders): ``out/<seq>.txt`` with one ``x,y,w,h`` line per frame and
  ``out/times/<seq>_time.txt`` with one time in seconds per frame (the GOT-10k toolkit's OTB layout).
* ``got10k``: ``out/<seq>/<seq>_001.txt`` (comma-separated, run 1) and ``out/<seq>/<seq>_time.txt``;
  :func:`write_got10k_zip` archives them with paths relative to ``out`` (the toolkit zips from inside the
  tracker folder), which is what the evaluation server unpacks.
* ``trackingnet``: ``out/<seq>.txt`` as ``txt``; :func:`write_trackingnet_zip` puts the ``<seq>.txt``
  files at the root of the archive, as the TrackingNet server requires.

A sequence's box file is written last and atomically, so its presence means the sequence is finished.
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Iterable, Optional, Union

import numpy as np

from ..data.datasets import read_boxes

PathLike = Union[str, os.PathLike]
RESULT_FORMATS = ("txt", "got10k", "trackingnet")
BOX_FORMAT = "%.3f"  # as the GOT-10k toolkit records boxes
TIME_FORMAT = "%.8f"


def _check_format(result_format: str) -> None:
    if result_format not in RESULT_FORMATS:
        raise ValueError(f"result_format must be one of {RESULT_FORMATS}, got {result_format!r}")


def box_file(out: PathLike, name: str, result_format: str = "txt") -> Path:
    """Where the boxes of sequence ``name`` go."""
    _check_format(result_format)
    out = Path(out)
    return out / name / f"{name}_001.txt" if result_format == "got10k" else out / f"{name}.txt"


def time_file(out: PathLike, name: str, result_format: str = "txt") -> Path:
    """Where the per-frame times of sequence ``name`` go."""
    _check_format(result_format)
    out = Path(out)
    return out / name / f"{name}_time.txt" if result_format == "got10k" else out / "times" / f"{name}_time.txt"


def _write_atomically(path: Path, array: np.ndarray, fmt: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    np.savetxt(partial, array, fmt=fmt, delimiter=",")
    os.replace(partial, path)


def write_sequence(out: PathLike, name: str, boxes: np.ndarray, times: np.ndarray,
                   result_format: str = "txt") -> Path:
    """Write one sequence's boxes ``(F, 4)`` x,y,w,h and per-frame times ``(F,)`` in seconds."""
    boxes = np.asarray(boxes, dtype=np.float64)
    times = np.asarray(times, dtype=np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be (F, 4), got {boxes.shape}")
    if times.shape != (len(boxes),):
        raise ValueError(f"times must be ({len(boxes)},), one per frame, got {times.shape}")
    _write_atomically(time_file(out, name, result_format), times[:, None], TIME_FORMAT)
    path = box_file(out, name, result_format)
    _write_atomically(path, boxes, BOX_FORMAT)
    return path


def is_finished(out: PathLike, name: str, result_format: str = "txt") -> bool:
    return box_file(out, name, result_format).is_file()


def find_box_file(result_dir: PathLike, name: str) -> Optional[Path]:
    """A sequence's box file in either layout (so folders of other trackers can be compared)."""
    for result_format in ("got10k", "txt"):
        path = box_file(result_dir, name, result_format)
        if path.is_file():
            return path
    return None


def read_sequence(result_dir: PathLike, name: str) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """Boxes ``(F, 4)`` float64 and times ``(F,)`` (None when absent) of one sequence; comma, tab or space
    separated files are read, so pytracking's tab-separated results load too."""
    path = find_box_file(result_dir, name)
    if path is None:
        raise FileNotFoundError(f"no result for sequence {name!r} in {result_dir} "
                                f"(looked for {name}.txt and {name}/{name}_001.txt)")
    times = None
    for result_format in ("got10k", "txt"):
        candidate = time_file(result_dir, name, result_format)
        if candidate.is_file():
            times = np.loadtxt(candidate, delimiter=",", ndmin=2)[:, 0]
            break
    return read_boxes(path).astype(np.float64), times


def _zip(entries: Iterable[tuple[Path, str]], zip_path: PathLike) -> Path:
    zip_path = Path(zip_path)
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as archive:
        for source, arcname in entries:
            if not source.is_file():
                raise FileNotFoundError(f"cannot archive {source}: the sequence has no result yet")
            archive.write(source, arcname)
    return zip_path


def write_got10k_zip(out: PathLike, names: Iterable[str], zip_path: PathLike) -> Path:
    """GOT-10k submission: ``<seq>/<seq>_001.txt`` and ``<seq>/<seq>_time.txt`` per sequence."""
    entries = []
    for name in names:
        for path in (box_file(out, name, "got10k"), time_file(out, name, "got10k")):
            entries.append((path, f"{name}/{path.name}"))
    return _zip(entries, zip_path)


def write_trackingnet_zip(out: PathLike, names: Iterable[str], zip_path: PathLike) -> Path:
    """TrackingNet submission: comma-separated ``<seq>.txt`` at the archive's root."""
    return _zip(((box_file(out, name), f"{name}.txt") for name in names), zip_path)
