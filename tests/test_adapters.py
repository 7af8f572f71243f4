"""GOT-10k-style tracker interface on PIL images and the VOT short-term loop, against Tracker."""
from collections import namedtuple

import numpy as np
import pytest
import torch
from PIL import Image

from actrack_fast import GOT10kTracker, Tracker, build_model, get_config, run_vot_short_term
from actrack_fast.adapters import region_to_box
from actrack_fast.data import render_sequence, write_frame_folder

pytestmark = pytest.mark.usefixtures("one_thread")

Rectangle = namedtuple("Rectangle", "x y width height")
Point = namedtuple("Point", "x y")
Polygon = namedtuple("Polygon", "points")



@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(get_config("tiny", search_size=64, template_size=32)).eval()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("seq")
    sequence = render_sequence(6, (128, 96), clutter=False, target_size=24)
    write_frame_folder(folder, sequence)
    return sorted(str(p) for p in folder.glob("*.png")), sequence.boxes


def reference_boxes(model, paths, box):
    tracker = Tracker(model)
    frames = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    tracker.initialize(frames[0], box)
    return [tracker.track(frame) for frame in frames[1:]]


def test_got10k_interface_on_pil_images(model, files):
    paths, truth = files
    expected = reference_boxes(model, paths, truth[0])
    adapter = GOT10kTracker(model, name="mine")
    assert adapter.name == "mine" and adapter.is_deterministic
    adapter.init(Image.open(paths[0]).convert("L"), truth[0])  # any PIL mode becomes RGB
    adapter = GOT10kTracker(Tracker(model))
    adapter.init(Image.open(paths[0]), truth[0])
    for path, result in zip(paths[1:], expected):
        box = adapter.update(Image.open(path))
        assert isinstance(box, np.ndarray) and box.shape == (4,)
        assert box.tolist() == list(result.box)


def test_got10k_track_loop(model, files):
    paths, truth = files
    boxes, times = GOT10kTracker(model).track(paths, truth[0])
    assert boxes.shape == (6, 4) and times.shape == (6,) and (times > 0).all()
    np.testing.assert_array_equal(boxes[0], truth[0])
    np.testing.assert_array_equal(boxes[1:], [r.box for r in reference_boxes(model, paths, truth[0])])


class FakeVOTHandle:
    """What the VOT toolkit's vot.py handle offers: region(), frame(), report(region, confidence)."""

    def __init__(self, region, paths):
        self._region, self._paths, self.reports = region, list(paths), []

    def region(self):
        return self._region

    def frame(self):
        return self._paths.pop(0) if self._paths else None

    def report(self, region, confidence):
        self.reports.append((region, confidence))


def test_vot_short_term_loop(model, files):
    paths, truth = files
    handle = FakeVOTHandle(Rectangle(*truth[0]), paths)
    assert run_vot_short_term(handle, Tracker(model)) == 5
    expected = reference_boxes(model, paths, truth[0])
    assert [type(region) for region, _ in handle.reports] == [Rectangle] * 5
    assert [tuple(region) for region, _ in handle.reports] == [r.box for r in expected]
    assert [confidence for _, confidence in handle.reports] == [r.confidence for r in expected]


def test_vot_polygon_regions(model, files):
    paths, truth = files
    x, y, w, h = truth[0]
    polygon = Polygon([Point(x, y), Point(x + w, y), Point(x + w, y + h), Point(x, y + h)])
    assert region_to_box(polygon) == tuple(truth[0])
    assert region_to_box([x, y, x + w, y, x + w, y + h, x, y + h]) == tuple(truth[0])
    with pytest.raises(ValueError, match="make_region"):
        run_vot_short_term(FakeVOTHandle(polygon, paths), Tracker(model))
    handle = FakeVOTHandle(polygon, paths)
    assert run_vot_short_term(handle, Tracker(model), make_region=Rectangle) == 5
    with pytest.raises(ValueError, match="rectangle"):
        region_to_box([1, 2, 3])
