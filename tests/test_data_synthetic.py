"""The synthetic sequence generator: deterministic, exact boxes, occlusion labels, every layout written."""
import numpy as np
import pytest

from actrack_fast.data import render_sequence, write_frame_folder, write_synthetic_got10k
from actrack_fast.data.synthetic import SyntheticSequence
from actrack_fast.video import FrameReader, read_boxes


def test_same_seed_same_sequence_other_seed_other_sequence():
    a = render_sequence(6, (64, 48), seed=(3, 1))
    b = render_sequence(6, (64, 48), seed=(3, 1))
    c = render_sequence(6, (64, 48), seed=(3, 2))
    assert all(np.array_equal(x, y) for x, y in zip(a.frames, b.frames))
    np.testing.assert_array_equal(a.boxes, b.boxes)
    assert not np.array_equal(a.boxes, c.boxes)


@pytest.mark.parametrize("natural", [True, False])
def test_boxes_lie_inside_the_image_and_labels_are_consistent(natural):
    width, height = 96, 64
    seq = render_sequence(30, (width, height), seed=5, natural=natural)
    assert len(seq.frames) == 30 and seq.frames[0].shape == (height, width, 3) and seq.frames[0].dtype == np.uint8
    x, y, w, h = seq.boxes.T
    assert (w > 0).all() and (h > 0).all() and (x >= 0).all() and (y >= 0).all()
    assert (x + w <= width).all() and (y + h <= height).all()
    assert ((seq.visible_ratio >= 0) & (seq.visible_ratio <= 1)).all()
    np.testing.assert_array_equal(seq.cover == 0, seq.absent)
    assert seq.frames[0].std() > 10  # textured, not flat


def test_occlusion_happens_in_some_sequences():
    ratios = np.concatenate([render_sequence(40, (96, 72), seed=(0, i), natural=False).visible_ratio for i in range(8)])
    assert (ratios < 1).any() and (ratios == 0).any()


def outside(box, height, width):
    """(H, W) bool: the pixels outside box (x, y, w, h)."""
    mask = np.ones((height, width), bool)
    x, y, w, h = box.astype(int)
    mask[y : y + h, x : x + w] = False
    return mask


@pytest.mark.parametrize("natural", [True, False])
def test_clean_sequence_keeps_the_target_in_view_over_a_still_background(natural):
    width, height, side = 96, 64, 20
    seq = render_sequence(12, (width, height), seed=5, natural=natural, clutter=False, target_size=side)
    x, y, w, h = seq.boxes.T
    assert (x >= 0).all() and (y >= 0).all() and (x + w <= width).all() and (y + h <= height).all()
    np.testing.assert_array_equal(seq.visible_ratio, 1)
    assert not seq.cut_by_image.any()
    # sqrt(w * h) is target_size times the scale (0.5..2), up to the rounding to whole pixels.
    assert (np.sqrt(w * h) >= side / 2 - 1).all() and (np.sqrt(w * h) <= 2 * side + 1).all()
    assert len({tuple(box) for box in seq.boxes}) > 1  # the target moves
    # No pan, brightness drift or noise: away from the target, every frame shows the first one's pixels.
    for frame, box in zip(seq.frames[1:], seq.boxes[1:]):
        still = outside(seq.boxes[0], height, width) & outside(box, height, width)
        np.testing.assert_array_equal(frame[still], seq.frames[0][still])


def test_frame_folder_round_trips_frames_and_boxes(tmp_path):
    seq = render_sequence(4, (64, 48), seed=2, clutter=False, target_size=12)
    folder = write_frame_folder(tmp_path / "seq", seq)
    assert sorted(p.name for p in folder.iterdir()) == [f"{t:08d}.png" for t in range(1, 5)] + ["groundtruth.txt"]
    frames = list(FrameReader(folder))
    assert len(frames) == 4 and all(np.array_equal(a, b) for a, b in zip(frames, seq.frames))  # lossless
    np.testing.assert_array_equal(read_boxes(folder / "groundtruth.txt"), seq.boxes)


def test_got10k_writer_layout_and_index_independence(tmp_path):
    dirs = write_synthetic_got10k(tmp_path / "a", num_sequences=2, num_frames=5, size=(64, 48), seed=7)
    single = write_synthetic_got10k(tmp_path / "b", num_sequences=1, num_frames=5, size=(64, 48), seed=7)
    assert [d.name for d in dirs] == ["GOT-10k_Train_000001", "GOT-10k_Train_000002"]
    assert (tmp_path / "a" / "train" / "list.txt").read_text().split() == [d.name for d in dirs]
    for name in ("groundtruth.txt", "absence.label", "cover.label", "cut_by_image.label", "meta_info.ini",
                 "00000001.jpg", "00000005.jpg"):
        assert (dirs[0] / name).is_file(), name
    assert not (dirs[0] / "00000006.jpg").exists()
    assert (dirs[0] / "groundtruth.txt").read_text() == (single[0] / "groundtruth.txt").read_text()


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="num_frames"):
        render_sequence(1, 64)
    with pytest.raises(ValueError, match="size"):
        render_sequence(4, (16, 64))
    with pytest.raises(ValueError, match="target_size must be 4 to 17 pixels"):
        render_sequence(4, (64, 48), target_size=18)
    with pytest.raises(ValueError, match="target_size"):
        render_sequence(4, (64, 48), target_size=3)
    with pytest.raises(ValueError, match="num_sequences"):
        write_synthetic_got10k("unused", num_sequences=0)
    assert isinstance(render_sequence(2, 32), SyntheticSequence)
