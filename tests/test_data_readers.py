"""Dataset readers on small generated trees in each standard layout."""
import json

import numpy as np
import pytest

from actrack_fast.data import (
    render_sequence, write_synthetic_coco, write_synthetic_got10k, write_synthetic_lasot, write_synthetic_trackingnet,
)
from actrack_fast.data.datasets import CocoSequences, Got10k, Lasot, TrackingNet, build_dataset, read_boxes

SIZE = (64, 48)


def test_got10k_reader(tmp_path):
    dirs = write_synthetic_got10k(tmp_path, num_sequences=2, num_frames=6, size=SIZE, seed=1, natural=False)
    dataset = Got10k(tmp_path, split="train")
    assert len(dataset) == 2 and dataset.sequence_names == [d.name for d in dirs]
    info = dataset.sequence_info(1)
    expected = render_sequence(6, SIZE, (1, 1), natural=False)
    np.testing.assert_allclose(info.boxes, expected.boxes, atol=1e-4)
    np.testing.assert_array_equal(info.visible, ~expected.absent & (expected.cover > 0))
    frame = dataset.load_frame(1, 5)
    assert frame.shape == (48, 64, 3) and frame.dtype == np.uint8
    # JPEG round trip of the rendered frame (RGB order preserved).
    assert np.abs(frame.astype(int) - expected.frames[5].astype(int)).mean() < 8


def test_got10k_reader_without_list_file_and_with_labels_marking_absence(tmp_path):
    dirs = write_synthetic_got10k(tmp_path, num_sequences=1, num_frames=4, size=SIZE, seed=2, natural=False)
    (tmp_path / "train" / "list.txt").unlink()
    (dirs[0] / "absence.label").write_text("0\n1\n0\n0\n")
    (dirs[0] / "cover.label").write_text("8\n8\n0\n8\n")
    dataset = Got10k(tmp_path / "train")  # the split directory itself works too
    assert dataset.sequence_names == [dirs[0].name]
    assert dataset.sequence_info(0).visible.tolist() == [True, False, False, True]


def test_lasot_reader(tmp_path):
    write_synthetic_lasot(tmp_path, classes=("cat", "bike"), sequences_per_class=2, num_frames=5, size=SIZE,
                          seed=3, natural=False)
    (tmp_path / "cat" / "cat-1" / "full_occlusion.txt").write_text("0,0,1,0,0\n")
    (tmp_path / "cat" / "cat-1" / "out_of_view.txt").write_text("0,0,0,0,1\n")
    dataset = Lasot(tmp_path)
    assert dataset.sequence_names == ["bike-1", "bike-2", "cat-1", "cat-2"]
    info = dataset.sequence_info(2)
    assert info.visible.tolist() == [True, True, False, True, False]
    np.testing.assert_allclose(info.boxes, render_sequence(5, SIZE, (3, 0, 1), natural=False).boxes)
    assert dataset.load_frame(2, 4).shape == (48, 64, 3)
    assert Lasot(tmp_path, classes=["cat"]).sequence_names == ["cat-1", "cat-2"]
    assert Lasot(tmp_path, sequences=["cat-2"]).sequence_info(0).name == "cat-2"


def test_trackingnet_reader(tmp_path):
    write_synthetic_trackingnet(tmp_path, num_chunks=2, sequences_per_chunk=1, num_frames=4, size=SIZE, seed=4,
                                natural=False)
    dataset = TrackingNet(tmp_path)
    assert dataset.sequence_names == ["synthetic_0_0000", "synthetic_1_0000"]
    assert dataset.frame_path(1, 0).name == "0.jpg"  # TrackingNet counts frames from 0
    assert dataset.load_frame(1, 3).shape == (48, 64, 3)
    np.testing.assert_allclose(dataset.sequence_info(1).boxes, render_sequence(4, SIZE, (4, 1, 0), natural=False).boxes,
                               atol=1e-4)
    assert TrackingNet(tmp_path, chunks=["TRAIN_1"]).sequence_names == ["synthetic_1_0000"]


def test_coco_reader_skips_crowd_annotations(tmp_path):
    path = write_synthetic_coco(tmp_path, num_images=3, size=SIZE, seed=5, natural=False)
    data = json.loads(path.read_text())
    dataset = CocoSequences(tmp_path, split="train2017")
    assert not dataset.is_video
    assert len(data["annotations"]) == 4 and len(dataset) == 3
    info = dataset.sequence_info(2)
    assert info.boxes.shape == (1, 4) and info.visible.tolist() == [True]
    np.testing.assert_allclose(info.boxes[0], data["annotations"][3]["bbox"])
    assert dataset.load_frame(2, 0).shape == (48, 64, 3)
    with pytest.raises(IndexError, match="one frame"):
        dataset.frame_path(0, 1)


def test_build_dataset_and_errors(tmp_path):
    write_synthetic_got10k(tmp_path, num_sequences=1, num_frames=3, size=SIZE, seed=6, natural=False)
    assert isinstance(build_dataset("got10k", tmp_path, {"split": "train"}), Got10k)
    with pytest.raises(ValueError, match="unknown dataset type"):
        build_dataset("otb", tmp_path)
    with pytest.raises(ValueError, match="bad options"):
        build_dataset("got10k", tmp_path, {"colour": "red"})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Got10k(tmp_path / "missing")
    with pytest.raises(ValueError, match="no GOT-10k sequences"):
        Got10k(tmp_path / "train" / "GOT-10k_Train_000001")
    bad = tmp_path / "bad.txt"
    bad.write_text("1,2,3\n")
    with pytest.raises(ValueError, match="expected 4 numbers"):
        read_boxes(bad)
    tabs = tmp_path / "tabs.txt"
    tabs.write_text("1\t2\t3\t4\n5 6 7 8\n")
    np.testing.assert_array_equal(read_boxes(tabs), [[1, 2, 3, 4], [5, 6, 7, 8]])
    with pytest.raises(IndexError, match="out of range"):
        build_dataset("got10k", tmp_path).sequence_info(5)
