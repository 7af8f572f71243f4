"""End to end: the tiny model evaluated on generated GOT-10k/TrackingNet/LaSOT layouts; result files, archives
entry by entry, plots, table, resuming; readers of the evaluation layouts."""
import json
import shutil
import zipfile

import cv2
import numpy as np
import pytest
import torch

from actrack_fast import build_model, metrics, save_checkpoint
from actrack_fast.data import write_synthetic_got10k, write_synthetic_lasot, write_synthetic_trackingnet
from actrack_fast.evaluation import evaluate, load_dataset, read_sequence, score_results, track_dataset
from actrack_fast.evaluation.results import box_file, time_file, write_sequence

pytestmark = pytest.mark.usefixtures("one_thread")

FRAMES = 8
SIZE = (96, 72)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def tiny_model():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build_model("tiny", template_size=64, search_size=64).eval()



@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def got10k_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("got10k")
    write_synthetic_got10k(root, num_sequences=3, num_frames=FRAMES, size=SIZE, split="val", seed=3)
    return root


@pytest.fixture(scope="module")
def evaluated(got10k_root, model, tmp_path_factory):
    out = tmp_path_factory.mktemp("results") / "actrack"
    outcome = evaluate("got10k", got10k_root, out, model, split="val", batch=2, progress=False)
    return out, outcome


def test_end_to_end_result_files(got10k_root, evaluated):
    out, outcome = evaluated
    dataset = load_dataset("got10k", got10k_root, "val")
    names = [s.name for s in dataset.sequences]
    assert len(names) == 3 and outcome.tracked == names and outcome.skipped == []
    for sequence in dataset.sequences:
        lines = box_file(out, sequence.name, "got10k").read_text().splitlines()
        assert len(lines) == FRAMES and all(len(line.split(",")) == 4 for line in lines)
        boxes, times = read_sequence(out, sequence.name)
        np.testing.assert_allclose(boxes[0], sequence.gt[0], atol=5e-4)  # the initial box, as given
        assert np.isfinite(boxes).all() and (boxes[1:, 2:] > 0).all()
        assert times.shape == (FRAMES,) and (times > 0).all()


def test_got10k_submission_zip_entries(got10k_root, evaluated):
    out, outcome = evaluated
    names = [s.name for s in load_dataset("got10k", got10k_root, "val").sequences]
    with zipfile.ZipFile(outcome.submission) as archive:
        entries = sorted(archive.namelist())
        expected = sorted([f"{n}/{n}_001.txt" for n in names] + [f"{n}/{n}_time.txt" for n in names])
        assert entries == expected  # zipped from inside the tracker folder: no parent folder, no report
        for name in names:
            assert archive.read(f"{name}/{name}_001.txt") == box_file(out, name, "got10k").read_bytes()
            assert archive.read(f"{name}/{name}_time.txt") == time_file(out, name, "got10k").read_bytes()
            assert b"," in archive.read(f"{name}/{name}_001.txt").splitlines()[0]


def test_report_plots_and_table(got10k_root, evaluated):
    out, outcome = evaluated
    (summary,) = outcome.summaries
    assert summary.name == "actrack" and summary.sequences == 3 and summary.fps > 0
    for key in ("auc", "precision", "norm_precision", "ao", "sr50", "sr75"):
        assert 0.0 <= getattr(summary, key) <= 1.0
    for key in ("success", "precision", "norm_precision"):
        data = outcome.report[key].read_bytes()
        assert data.startswith(PNG_MAGIC)
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        assert image.shape[0] > 200 and image.std() > 0  # a drawn figure, not a blank canvas
    table = outcome.report["table"].read_text()
    row = next(line for line in table.splitlines() if line.startswith("| actrack"))
    assert row.split("|")[1].strip() == "actrack" and f"{100 * summary.auc:.1f}" in row
    assert json.loads(outcome.report["json"].read_text())[0]["auc"] == pytest.approx(summary.auc)


def test_scores_match_the_metrics_on_the_written_files(got10k_root, evaluated):
    out, outcome = evaluated
    dataset = load_dataset("got10k", got10k_root, "val")
    pooled = []
    for sequence in dataset.sequences:
        boxes, _ = read_sequence(out, sequence.name)
        visible = sequence.visible.copy()
        visible[0] = False
        pooled.append(metrics.iou(boxes[visible], sequence.gt[visible], image_size=sequence.image_size))
    # GOT-10k AO: frames 1.. with a visible target, pooled over the sequences.
    assert outcome.summaries[0].ao == pytest.approx(np.concatenate(pooled).mean())


def test_rerun_skips_finished_and_resumes(got10k_root, evaluated, model, tmp_path):
    out, _ = evaluated
    copy = tmp_path / "actrack"
    shutil.copytree(out, copy)
    names = [s.name for s in load_dataset("got10k", got10k_root, "val").sequences]
    before = {n: box_file(copy, n, "got10k").stat().st_mtime_ns for n in names}
    again = evaluate("got10k", got10k_root, copy, model, split="val", progress=False)
    assert again.tracked == [] and again.skipped == names
    assert {n: box_file(copy, n, "got10k").stat().st_mtime_ns for n in names} == before
    # An interrupted run: one sequence unfinished (its box file missing) is tracked again, and only it.
    box_file(copy, names[1], "got10k").unlink()
    resumed = evaluate("got10k", got10k_root, copy, model, split="val", progress=False)
    assert resumed.tracked == [names[1]]
    np.testing.assert_allclose(read_sequence(copy, names[1])[0], read_sequence(out, names[1])[0], atol=1e-3)


def test_batched_sequences_match_one_at_a_time(got10k_root, evaluated, model, tmp_path):
    out, _ = evaluated  # tracked with batch=2
    dataset = load_dataset("got10k", got10k_root, "val")
    track_dataset(model, dataset, tmp_path, batch=1, progress=False)
    for sequence in dataset.sequences:
        np.testing.assert_allclose(read_sequence(tmp_path, sequence.name)[0], read_sequence(out, sequence.name)[0],
                                   atol=1e-3)


def test_compare_folders_in_other_layouts(got10k_root, evaluated, model, tmp_path):
    out, outcome = evaluated
    dataset = load_dataset("got10k", got10k_root, "val")
    other = tmp_path / "pytracking_style"
    other.mkdir()
    for sequence in dataset.sequences:  # tab-separated <seq>.txt, no times, as pytracking writes them
        boxes, _ = read_sequence(out, sequence.name)
        np.savetxt(other / f"{sequence.name}.txt", boxes, fmt="%.3f", delimiter="\t")
    summary = score_results(dataset, other)
    assert summary.name == "pytracking_style" and summary.fps is None
    assert summary.auc == pytest.approx(outcome.summaries[0].auc)
    copy = tmp_path / "actrack"
    shutil.copytree(out, copy)
    compared = evaluate("got10k", got10k_root, copy, model, split="val", compare=[other], name="ours",
                        convention="pytracking", progress=False)
    assert [s.name for s in compared.summaries] == ["ours", "pytracking_style"]
    assert all(s.convention == "pytracking" for s in compared.summaries)
    assert "| pytracking_style |" in compared.report["table"].read_text()
    with pytest.raises(FileNotFoundError, match="no result"):
        score_results(dataset, tmp_path / "empty")


def test_trackingnet_test_split_writes_a_root_level_zip(model, tmp_path):
    root = tmp_path / "trackingnet"
    write_synthetic_trackingnet(root, sequences_per_chunk=2, num_frames=4, size=SIZE, seed=5)
    (root / "TRAIN_0").rename(root / "TEST")
    for anno in (root / "TEST" / "anno").glob("*.txt"):  # the test split gives the first box only
        anno.write_text(anno.read_text().splitlines()[0] + "\n")
    out = tmp_path / "out"
    outcome = evaluate("trackingnet", root, out, model, progress=False)
    names = sorted(p.stem for p in (root / "TEST" / "anno").glob("*.txt"))
    assert outcome.summaries == [] and outcome.report == {}
    with zipfile.ZipFile(outcome.submission) as archive:
        assert sorted(archive.namelist()) == [f"{n}.txt" for n in names]
        for name in names:
            rows = archive.read(f"{name}.txt").decode().splitlines()
            assert len(rows) == 4 and all(len(r.split(",")) == 4 for r in rows)


def test_cli_eval(got10k_root, model, tmp_path, capsys):
    from actrack_fast.cli import main

    weights = tmp_path / "tiny64.safetensors"
    save_checkpoint(model, weights)
    out = tmp_path / "cli_out"
    args = ["eval", "--dataset", "got10k", "--root", str(got10k_root), "--split", "val", "--weights", str(weights),
            "--out", str(out), "--batch", "3", "--device", "cpu", "--name", "tiny64"]
    main(args)
    printed = capsys.readouterr().out
    assert "tracked 3 sequence(s), skipped 0" in printed and "| tiny64 |" in printed
    assert (out / "report" / "success.png").is_file() and (out / "cli_out_got10k.zip").is_file()
    main(args)
    assert "tracked 0 sequence(s), skipped 3" in capsys.readouterr().out


def test_bad_arguments(got10k_root, model, tmp_path):
    dataset = load_dataset("got10k", got10k_root, "val")
    with pytest.raises(ValueError, match="batch"):
        track_dataset(model, dataset, tmp_path, batch=0)
    with pytest.raises(ValueError, match="dataset must be one of"):
        load_dataset("vot", got10k_root)
    with pytest.raises(ValueError, match="times"):
        write_sequence(tmp_path, "s", np.ones((3, 4)), np.ones(2))
    with pytest.raises(FileNotFoundError):
        load_dataset("otb", tmp_path / "missing")


# --- readers of the evaluation layouts --------------------------------------------------------------
def _write_frames(directory, count, size=(40, 30)):
    directory.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        cv2.imwrite(str(directory / f"{i + 1:04d}.jpg"), rng.integers(0, 255, (size[1], size[0], 3), np.uint8))


def test_lasot_reader_absence_and_split(tmp_path):
    write_synthetic_lasot(tmp_path, classes=("cat",), sequences_per_class=2, num_frames=3, size=(64, 48), seed=1)
    (tmp_path / "cat" / "cat-2" / "full_occlusion.txt").write_text("0,1,0\n")
    dataset = load_dataset("lasot", tmp_path, "all")
    assert [s.name for s in dataset.sequences] == ["cat-1", "cat-2"] and dataset.absent == "fail"
    assert not dataset.sequences[1].visible[1] and dataset.sequences[1].gt.shape == (3, 4)
    (tmp_path / "testing_set.txt").write_text("cat-2\n")
    assert [s.name for s in load_dataset("lasot", tmp_path).sequences] == ["cat-2"]


def test_otb_reader_tab_separated_and_several_targets(tmp_path):
    _write_frames(tmp_path / "Walker" / "img", 3)
    (tmp_path / "Walker" / "groundtruth_rect.txt").write_text("1\t2\t10\t12\n2\t2\t10\t12\n3\t2\t10\t12\n")
    _write_frames(tmp_path / "Jogging" / "img", 2)
    (tmp_path / "Jogging" / "groundtruth_rect.1.txt").write_text("1,2,10,12\n1,2,10,12\n")
    (tmp_path / "Jogging" / "groundtruth_rect.2.txt").write_text("5 6 7 8\n5 6 7 8\n")
    (tmp_path / "Jogging" / "groundtruth_rect.3.txt").write_text("\n")  # OTB ships empty ones
    dataset = load_dataset("otb", tmp_path)
    assert [s.name for s in dataset.sequences] == ["Jogging.1", "Jogging.2", "Walker"]
    np.testing.assert_array_equal(dataset.sequences[1].gt[0], [5, 6, 7, 8])
    assert len(dataset.sequences[2].frames) == 3 and dataset.sequences[2].has_ground_truth


def test_folder_reader_first_box_only(tmp_path):
    _write_frames(tmp_path / "clip", 4)
    (tmp_path / "clip" / "groundtruth.txt").write_text("3,4,10,10\n")
    (sequence,) = load_dataset("folder", tmp_path).sequences
    assert sequence.init_frame == 0 and not sequence.has_ground_truth
    assert np.isnan(sequence.gt[1:]).all() and len(sequence.frames) == 4
    (tmp_path / "clip" / "groundtruth.txt").write_text("1,1,1,1\n" * 5)
    with pytest.raises(ValueError, match="5 ground-truth boxes for 4 frames"):
        load_dataset("folder", tmp_path / "clip")
