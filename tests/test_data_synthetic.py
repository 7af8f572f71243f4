"""The synthetic sequence generator: deterministic, exact boxes, occlusion labels, every layout written."""
import numpy as np
import pytest

from actrack_fast.data import render_sequence, write_synthetic_got10k
from actrack_fast.data.synthetic import SyntheticSequence


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
    with pytest.raises(ValueError, match="num_sequences"):
        write_synthetic_got10k("unused", num_sequences=0)
    assert isinstance(render_sequence(2, 32), SyntheticSequence)
