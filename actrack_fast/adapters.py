"""Adapters to the usual evaluation toolkits; none of them is a dependency.

* :class:`GOT10kTracker`: the GOT-10k toolkit's tracker interface (``name``, ``is_deterministic``,
  ``init(image, box)``, ``update(image) -> box`` on PIL images, and ``track(img_files, box)``), so
  ``ExperimentGOT10k(...).run(GOT10kTracker(model))`` works as for a subclass of ``got10k.trackers.Tracker``.
* :func:`run_vot_short_term`: the VOT toolkit's short-term loop on a handle from its ``vot.py``
  (``handle = vot.VOT("rectangle")``).
"""
from __future__ import annotations

import time
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import torch

from .tracker import Tracker


def to_rgb_array(image: Any) -> np.ndarray:
    """A PIL image (any mode) or an (H, W, 3) uint8 array -> (H, W, 3) uint8 RGB array."""
    if hasattr(image, "convert") and hasattr(image, "size"):  # a PIL image
        return np.asarray(image.convert("RGB"))
    return image


def load_rgb(path: str) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


class GOT10kTracker:
    """GOT-10k toolkit interface around a :class:`Tracker`.

    Args:
        tracker: a :class:`Tracker`, or an ACTrack model to build one from (with ``tracker_options``).
        name: the name the toolkit files results under.
    """

    is_deterministic = True

    def __init__(self, tracker: Union[Tracker, torch.nn.Module], name: str = "ACTrack-fast", **tracker_options: Any):
        self.tracker = tracker if isinstance(tracker, Tracker) else Tracker(tracker, **tracker_options)
        self.name = name

    def init(self, image: Any, box: Sequence[float]) -> None:
        """Start on ``image`` (PIL or RGB array) with ``box`` (x, y, w, h)."""
        self.tracker.initialize(to_rgb_array(image), box)

    def update(self, image: Any) -> np.ndarray:
        """The (x, y, w, h) box in the next ``image`` as a float array (4,)."""
        return np.asarray(self.tracker.track(to_rgb_array(image)).box)

    def track(self, img_files: Sequence[str], box: Sequence[float], visualize: bool = False):
        """The toolkit's loop: boxes (F, 4) (the first is ``box``) and per-frame times (F,) in seconds.
        ``visualize`` is accepted for interface compatibility and ignored."""
        boxes = np.zeros((len(img_files), 4))
        times = np.zeros(len(img_files))
        for index, path in enumerate(img_files):
            image = load_rgb(path)
            start = time.perf_counter()
            if index == 0:
                self.init(image, box)
                boxes[0] = box
            else:
                boxes[index] = self.update(image)
            times[index] = time.perf_counter() - start
        return boxes, times


def region_to_box(region: Any) -> tuple[float, float, float, float]:
    """A VOT region -> (x, y, w, h): a rectangle (``x, y, width, height``), a polygon (``points`` with
    ``x, y``; its bounding box), or 4 / 2k numbers."""
    if all(hasattr(region, name) for name in ("x", "y", "width", "height")):
        return float(region.x), float(region.y), float(region.width), float(region.height)
    if hasattr(region, "points"):
        coords = np.asarray([(p.x, p.y) for p in region.points], dtype=np.float64)
    else:
        values = np.asarray(region, dtype=np.float64).reshape(-1)
        if values.size == 4:
            return tuple(float(v) for v in values)
        if values.size < 6 or values.size % 2:
            raise ValueError(f"region must be a rectangle (4 numbers) or a polygon (x, y pairs), got {values.size}")
        coords = values.reshape(-1, 2)
    (x0, y0), (x1, y1) = coords.min(axis=0), coords.max(axis=0)
    return float(x0), float(y0), float(x1 - x0), float(y1 - y0)


def run_vot_short_term(handle: Any, tracker: Tracker, make_region: Optional[Callable[..., Any]] = None,
                       load_image: Callable[[str], np.ndarray] = load_rgb) -> int:
    """Serve one VOT short-term run: initialise on the handle's region, then report a box and a
    confidence per frame until the handle has no more frames. Returns the number of frames reported.

    Args:
        handle: the toolkit's ``vot.VOT("rectangle")`` (``region()``, ``frame()``, ``report(region, conf)``).
        make_region: builds the reported region from x, y, w, h (default: the type of the initial region,
            i.e. ``vot.Rectangle`` for a rectangle handle; required when the initial region is a polygon).
    """
    region = handle.region()
    if make_region is None:
        if not all(hasattr(region, name) for name in ("x", "y", "width", "height")):
            raise ValueError("the initial region is not a rectangle: pass make_region (e.g. vot.Rectangle)")
        make_region = type(region)
    image_file = handle.frame()
    if not image_file:
        return 0
    first = image_file[0] if isinstance(image_file, (list, tuple)) else image_file
    tracker.initialize(load_image(first), region_to_box(region))
    reported = 0
    while True:
        image_file = handle.frame()
        if not image_file:
            return reported
        path = image_file[0] if isinstance(image_file, (list, tuple)) else image_file
        result = tracker.track(load_image(path))
        handle.report(make_region(*result.box), result.confidence)
        reported += 1
