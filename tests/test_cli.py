"""`actrack-fast track` end to end on generated sequences, from frame folders and video files."""
import cv2
import numpy as np
import pytest
import torch

from actrack_fast import build_model, get_config, save_checkpoint
from actrack_fast.cli import main
from actrack_fast.data import render_sequence, write_frame_folder
from actrack_fast.video import FrameReader, format_box, read_boxes

pytestmark = pytest.mark.usefixtures("one_thread")



@pytest.fixture(scope="module")
def sequence(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sequence")
    sequence = render_sequence(8, (128, 96), clutter=False, target_size=24)
    return write_frame_folder(folder, sequence), sequence.boxes


def run(argv):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    return exit_info.value.code


def test_track_frame_folder_writes_boxes_and_annotated_video(sequence, tmp_path, capsys):
    folder, truth = sequence
    video, boxes_file = tmp_path / "annotated.mp4", tmp_path / "boxes.txt"
    main(["track", str(folder), "--box", format_box(truth[0]), "--output", str(video), "--results",
          str(boxes_file), "--device", "cpu", "--quiet"])
    out = capsys.readouterr().out
    assert "embedded default model" in out and "untrained" in out
    assert "tracked 8 frames" in out and "FPS" in out
    boxes = read_boxes(boxes_file)
    assert boxes.shape == (8, 4)
    np.testing.assert_allclose(boxes[0], truth[0])
    x, y, w, h = boxes.T
    assert (w >= 10).all() and (h >= 10).all() and (x >= 0).all() and (x + w <= 128 + 1e-3).all()
    frames = list(FrameReader(video))
    assert len(frames) == 8 and frames[0].shape == (96, 128, 3)
    # The first frame shows the initial box in green.
    x0, y0 = int(truth[0][0]), int(truth[0][1])
    assert frames[0][y0 + 5, x0 - 1:x0 + 2, 1].max() > 200


def test_track_video_file_with_a_saved_checkpoint(tmp_path, capsys):
    sequence = render_sequence(6, (128, 96), seed=2, clutter=False, target_size=24)
    frames, truth = sequence.frames, sequence.boxes
    source = tmp_path / "clip.avi"  # MJPG: lossy, but the reader only needs frames
    writer = cv2.VideoWriter(str(source), cv2.VideoWriter_fourcc(*"MJPG"), 25, (128, 96))
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    torch.manual_seed(1)
    weights = tmp_path / "model.safetensors"
    save_checkpoint(build_model(get_config("tiny", search_size=64, template_size=32)), weights)
    results = tmp_path / "boxes.txt"
    main(["track", str(source), "--box", " ".join(str(v) for v in truth[0]), "--weights", str(weights),
          "--results", str(results), "--device", "cpu", "--dtype", "bfloat16", "--preset", "got10k_test", "--quiet"])
    out = capsys.readouterr().out
    assert "ACTrack checkpoint" in out and "tracked 6 frames" in out and "bfloat16" in out
    assert read_boxes(results).shape == (6, 4)


def empty_video(folder):
    path = folder / "empty.avi"
    cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (64, 48)).release()  # a header, no frames
    return path


@pytest.mark.parametrize("make_source,message", [
    (lambda p: p / "missing.mp4", "no such video file or frame folder"),
    (lambda p: p, "holds no images"),
    (empty_video, "has no frames"),
    (lambda p: (p / "bad.mp4").write_text("not a video") and p / "bad.mp4", "cannot read"),
])
def test_track_reports_bad_sources(tmp_path, capsys, make_source, message):
    assert run(["track", str(make_source(tmp_path)), "--box", "1,1,5,5", "--device", "cpu", "--quiet"]) == 1
    assert message in capsys.readouterr().err


def test_track_reports_bad_boxes_and_options(sequence, tmp_path, capsys):
    folder, _ = sequence
    assert run(["track", str(folder), "--box", "1,2,3", "--device", "cpu"]) == 2
    assert "four numbers" in capsys.readouterr().err
    assert run(["track", str(folder), "--box", "500,10,5,5", "--device", "cpu", "--quiet"]) == 1
    assert "outside" in capsys.readouterr().err
    assert run(["track", str(folder), "--box", "1,1,0,5", "--device", "cpu", "--quiet"]) == 1
    assert "positive width" in capsys.readouterr().err
    assert run(["track", str(folder), "--box", "1,1,5,5", "--weights", str(tmp_path / "x.pth"), "--device", "cpu"]) == 1
    assert "no such checkpoint" in capsys.readouterr().err
    assert run(["track", str(folder), "--box", "1,1,5,5", "--output", str(tmp_path / "a.gif"), "--device", "cpu"]) == 1
    assert "output video" in capsys.readouterr().err
    assert run(["track", str(folder), "--box", "1,1,5,5", "--preset", "nope", "--device", "cpu"]) == 2


def test_generate_sequence_command(tmp_path, capsys):
    main(["generate-sequence", str(tmp_path / "seq"), "--frames", "5", "--height", "80", "--width", "120"])
    assert "wrote 5 frames" in capsys.readouterr().out
    frames = list(FrameReader(tmp_path / "seq"))
    truth = read_boxes(tmp_path / "seq" / "groundtruth.txt")
    assert len(frames) == 5 and frames[0].shape == (80, 120, 3) and truth.shape == (5, 4)
    assert len({tuple(b) for b in truth}) > 1  # the patch moves
