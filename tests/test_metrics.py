"""Metrics against hand-computed cases, both conventions, and IoU properties (hypothesis)."""
import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actrack_fast import metrics
from actrack_fast.metrics import (CONVENTIONS, center_error, clip_to_image, evaluate_sequence, iou,
                                  normalized_center_error, success_curve, summarize)

GT_BOX = [10.0, 10.0, 20.0, 20.0]
INCLUSIVE = dataclasses.replace(CONVENTIONS["got10k"], name="inclusive", strict=False)


def constant_sequence(frames, offset):
    gt = np.tile(GT_BOX, (frames, 1))
    return gt + np.asarray(offset + [0, 0], dtype=float), gt


# --- per-frame measures -----------------------------------------------------------------------------
def test_iou_hand_computed():
    # 10 px shift of a 20x20 box: intersection 10*20, union 400 + 400 - 200.
    assert iou([20, 10, 20, 20], GT_BOX)[0] == pytest.approx(200 / 600)
    # (5, 5) shift: intersection 15*15, union 800 - 225.
    assert iou([15, 15, 20, 20], GT_BOX)[0] == pytest.approx(225 / 575)
    # Box inside another: 10x10 in 20x20.
    assert iou([15, 15, 10, 10], GT_BOX)[0] == pytest.approx(100 / 400)
    # Touching edges and disjoint boxes do not overlap, in either geometry.
    for inclusive in (False, True):
        assert iou([30, 10, 20, 20], GT_BOX, pixel_inclusive=inclusive)[0] == 0.0
        assert iou([500, 500, 5, 5], GT_BOX, pixel_inclusive=inclusive)[0] == 0.0


def test_degenerate_boxes_have_zero_overlap_and_infinite_error():
    pred = np.array([[10, 10, 0, 20], [10, 10, 20, -5], [np.nan, 10, 20, 20], [10, 10, np.inf, 20]], float)
    gt = np.tile(GT_BOX, (4, 1))
    np.testing.assert_array_equal(iou(pred, gt), 0.0)
    np.testing.assert_array_equal(iou(gt, pred), 0.0)
    assert np.isinf(center_error(pred, gt)).all()
    assert np.isinf(normalized_center_error(pred, gt)).all()
    # Two identical zero-area boxes: union 0, overlap defined as 0 rather than NaN.
    assert iou([5, 5, 0, 0], [5, 5, 0, 0])[0] == 0.0


def test_center_errors_hand_computed():
    assert center_error([13, 14, 20, 20], GT_BOX)[0] == pytest.approx(5.0)  # 3-4-5 triangle
    # Centre offset (10, 5) on a 20 x 10 box: normalised (0.5, 0.5).
    assert normalized_center_error([20, 15, 20, 10], [10, 10, 20, 10])[0] == pytest.approx(np.sqrt(0.5))
    # The floor (GOT-10k-derived LaSOT code) only matters for boxes under 1 px: 0.5 px offset of a 0.5 px box.
    assert normalized_center_error([0.5, 0, 0.5, 1], [0, 0, 0.5, 1], floor=1.0)[0] == pytest.approx(0.5)
    assert normalized_center_error([0.5, 0, 0.5, 1], [0, 0, 0.5, 1], floor=0.0)[0] == pytest.approx(1.0)


def test_clip_to_image_shifts_like_the_got10k_toolkit():
    clipped = clip_to_image([[-10, 5, 50, 20], [90, 90, 30, 30]], (100, 100))
    np.testing.assert_array_equal(clipped, [[0, 5, 50, 20], [90, 90, 10, 10]])


def test_success_curve_strict_and_inclusive_thresholds():
    overlaps = np.array([0.5, 1.0])
    strict = success_curve(overlaps)
    inclusive = success_curve(overlaps, strict=False)
    assert strict[10] == 0.5 and inclusive[10] == 1.0  # threshold 0.5: 0.5 > 0.5 is false
    assert strict[20] == 0.0 and inclusive[20] == 0.5  # threshold 1.0


def test_bad_inputs_raise_naming_the_argument():
    with pytest.raises(ValueError, match="boxes1"):
        iou(np.zeros((3, 5)), np.zeros((3, 5)))
    with pytest.raises(ValueError, match="same shape"):
        iou(np.ones((3, 4)), np.ones((2, 4)))
    with pytest.raises(ValueError, match="absent"):
        evaluate_sequence(*constant_sequence(3, [0, 0]), absent="ignore")
    with pytest.raises(ValueError, match="visible"):
        evaluate_sequence(*constant_sequence(3, [0, 0]), visible=[True, False])
    with pytest.raises(ValueError, match="convention"):
        evaluate_sequence(*constant_sequence(3, [0, 0]), convention="vot")
    with pytest.raises(ValueError, match="no annotated frame"):
        evaluate_sequence(*constant_sequence(3, [0, 0]), visible=[False] * 3)
    with pytest.raises(ValueError, match="empty"):
        summarize([])


# --- sequences and summaries ------------------------------------------------------------------------
@pytest.mark.parametrize("convention", sorted(CONVENTIONS))
def test_perfect_tracker(convention):
    pred, gt = constant_sequence(12, [0, 0])
    summary = summarize([evaluate_sequence(pred, gt, convention=convention)], convention)
    # Success is "overlap > threshold": a perfect overlap of 1 fails the last threshold (1.0) in both toolkits.
    assert summary.auc == pytest.approx(20 / 21)
    assert summary.precision == 1.0 and summary.norm_precision == 1.0
    assert summary.ao == 1.0 and summary.sr50 == 1.0 and summary.sr75 == 1.0
    # With ">=" (no toolkit's default) a perfect tracker scores exactly 1.0.
    inclusive = summarize([evaluate_sequence(pred, gt, convention=INCLUSIVE)], INCLUSIVE)
    assert inclusive.auc == 1.0


def test_constant_offset_got10k_convention():
    frames = 11
    pred, gt = constant_sequence(frames, [10, 0])  # IoU 1/3, centre error 10 px, normalised 0.5
    summary = summarize([evaluate_sequence(pred, gt)], "got10k")
    first = 1 / frames  # frame 0 is scored as the given box
    # Thresholds 0 .. 0.30 (7 of them) are passed by every frame; 0.35 .. 0.95 (13) by frame 0 only.
    assert summary.auc == pytest.approx((7 + 13 * first) / 21)
    assert summary.success_curve[6] == 1.0 and summary.success_curve[7] == pytest.approx(first)
    assert summary.precision == 1.0
    assert summary.precision_curve[9] == pytest.approx(first) and summary.precision_curve[10] == 1.0
    # Normalised error 0.5 passes only the last of the 51 thresholds 0 .. 0.5; the score is the curve's mean.
    assert summary.norm_precision == pytest.approx((50 * first + 1) / 51)
    # GOT-10k AO pools frames 1.. only: every one has IoU 1/3.
    assert summary.ao == pytest.approx(1 / 3)
    assert summary.sr50 == 0.0 and summary.sr75 == 0.0


def test_constant_offset_pytracking_convention():
    frames = 11
    pred, gt = constant_sequence(frames, [10, 0])
    summary = summarize([evaluate_sequence(pred, gt, convention="pytracking")], "pytracking")
    first = 1 / frames
    assert summary.auc == pytest.approx((7 + 13 * first) / 21)
    assert summary.norm_precision == pytest.approx(first)  # the curve at 0.2
    assert summary.ao == pytest.approx((1 + (frames - 1) / 3) / frames)  # frame 0 included
    assert summary.sr50 == pytest.approx(first)  # OP50 from the success curve


def test_absent_frames_excluded_or_failed():
    pred, gt = constant_sequence(5, [0, 0])
    visible = np.array([True, True, False, False, True])
    pred[2:4] = [300, 300, 5, 5]  # garbage where the target is absent
    excluded = evaluate_sequence(pred, gt, visible, absent="exclude")
    assert excluded.scored_frames == 3
    assert metrics.auc(excluded.success) == pytest.approx(20 / 21)
    failed = evaluate_sequence(pred, gt, visible, absent="fail")
    assert failed.scored_frames == 5
    assert metrics.auc(failed.success) == pytest.approx(20 / 21 * 3 / 5)
    assert failed.success[0] == pytest.approx(3 / 5)  # IoU -1 on absent frames fails even threshold 0
    assert failed.precision[-1] == pytest.approx(3 / 5)
    # A box on an absent frame matching nothing still fails with ">=" at threshold 0.
    assert evaluate_sequence(pred, gt, visible, absent="fail", convention=INCLUSIVE).success[0] == pytest.approx(3 / 5)


def test_unannotated_ground_truth_counts_as_absent():
    pred, gt = constant_sequence(4, [0, 0])
    gt[1] = np.nan  # GOT-10k test / LaSOT NaN rows
    gt[2, 2] = 0.0  # zero width
    scores = evaluate_sequence(pred, gt)
    assert scores.scored_frames == 2
    np.testing.assert_array_equal(scores.ao_overlaps, [1.0])  # frame 3 only: frame 0 skipped


def test_got10k_ao_pools_frames_and_skips_first_and_absent():
    pred_a, gt_a = constant_sequence(5, [10, 0])  # IoU 1/3
    visible_a = np.array([True, True, False, True, True])
    pred_b, gt_b = constant_sequence(2, [0, 0])  # IoU 1
    seqs = [evaluate_sequence(pred_a, gt_a, visible_a), evaluate_sequence(pred_b, gt_b)]
    summary = summarize(seqs, "got10k")
    assert summary.ao == pytest.approx((3 * (1 / 3) + 1) / 4)  # 3 scored frames of a, 1 of b, pooled
    assert summary.sr50 == pytest.approx(1 / 4)
    # Curves are averaged per sequence instead: a's curve at 0.5 is 1/4 (frame 0), b's is 1.
    assert summary.success_curve[10] == pytest.approx((1 / 4 + 1) / 2)
    pyt = summarize([evaluate_sequence(pred_a, gt_a, visible_a, convention="pytracking"),
                     evaluate_sequence(pred_b, gt_b, convention="pytracking")], "pytracking")
    assert pyt.ao == pytest.approx(((1 + 3 / 3) / 4 + 1) / 2)  # per-sequence means, frame 0 included


def test_got10k_ao_clips_to_the_image():
    gt = np.array([[0, 0, 50, 50], [0, 0, 50, 50]], float)
    pred = np.array([[0, 0, 50, 50], [-50, 0, 50, 50]], float)  # left of the image: shifted onto the gt
    assert evaluate_sequence(pred, gt).ao_overlaps[0] == 0.0
    assert evaluate_sequence(pred, gt, image_size=(100, 100)).ao_overlaps[0] == 1.0


def test_invalid_predictions_per_convention():
    pred, gt = constant_sequence(4, [0, 0])
    pred[2] = [20, 20, 0, 0]  # zero size
    got = evaluate_sequence(pred, gt)
    assert got.overlaps[2] == 0.0  # a failure
    pyt = evaluate_sequence(pred, gt, convention="pytracking")
    assert pyt.overlaps[2] == 1.0  # pytracking holds frame 1's (perfect) box
    pred[3] = np.nan
    assert evaluate_sequence(pred, gt).overlaps[3] == 0.0
    with pytest.raises(ValueError, match="NaN"):
        evaluate_sequence(pred, gt, convention="pytracking")


def test_first_frame_scored_as_given():
    pred, gt = constant_sequence(3, [0, 0])
    pred[0] = [0, 0, 1, 1]
    assert evaluate_sequence(pred, gt).overlaps[0] == 1.0


def test_summary_to_dict_is_json_ready():
    import json
    pred, gt = constant_sequence(3, [2, 1])
    d = summarize([evaluate_sequence(pred, gt)], name="t", fps=12.5).to_dict()
    assert json.loads(json.dumps(d))["name"] == "t" and len(d["success_curve"]) == 21


# --- properties -------------------------------------------------------------------------------------
coords = st.floats(-500, 500, allow_nan=False)
sizes = st.floats(0.1, 400, allow_nan=False)
box = st.tuples(coords, coords, sizes, sizes)
boxes = st.lists(st.tuples(box, box), min_size=1, max_size=16)


@settings(max_examples=200, deadline=None)
@given(boxes)
def test_iou_symmetric_bounded_and_geometry_independent(pairs):
    a = np.array([p[0] for p in pairs])
    b = np.array([p[1] for p in pairs])
    forward = iou(a, b)
    np.testing.assert_array_equal(forward, iou(b, a))
    assert ((forward >= 0) & (forward <= 1)).all()
    np.testing.assert_allclose(iou(a, a), 1.0, rtol=1e-12)
    # The pixel-inclusive formula is the continuous one for x,y,w,h boxes (see metrics' docstring).
    np.testing.assert_allclose(iou(a, b, pixel_inclusive=True), forward, atol=1e-9)


@settings(max_examples=100, deadline=None)
@given(boxes, st.floats(-100, 100), st.floats(0.5, 4))
def test_iou_invariant_to_shared_translation_and_scale(pairs, shift, scale):
    a = np.array([p[0] for p in pairs])
    b = np.array([p[1] for p in pairs])
    moved = lambda x: np.concatenate([(x[:, :2] + shift) * scale, x[:, 2:] * scale], axis=1)  # noqa: E731
    np.testing.assert_allclose(iou(moved(a), moved(b)), iou(a, b), atol=1e-9)
