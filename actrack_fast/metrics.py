"""One-pass tracking metrics (vectorised numpy): overlap, success, precision, normalised precision, AO/SR.

Boxes are ``(x, y, w, h)`` rows: ``(N, 4)`` arrays (a single ``(4,)`` box is accepted). Benchmark toolkits
score the same results differently, by whole points. Two named conventions are implemented, each rule
checked against the toolkit's public source:

======================  =========================================  ==========================================
rule                    ``"got10k"`` (default, GOT-10k toolkit)    ``"pytracking"`` (pytracking analysis)
======================  =========================================  ==========================================
overlap                 continuous boxes, ``[x, x + w)``            pixel-inclusive corners, ``[x, x + w - 1]``
success                 overlap > threshold, 21 thresholds 0..1    same (``err_overlap > threshold``)
frame 0                 scored as the given box (IoU 1)            same (``pred_bb[0] = anno_bb[0]``)
curves                  per-sequence curves averaged               same
normalised error        offset / max(1, gt w, h) per axis          offset / (gt w, h) per axis
normalised precision    AUC of the curve over 0..0.5               the curve at 0.2
invalid prediction      scored as a failure                        NaN / negative size raises; a zero-size
                                                                   box is replaced by the previous one
AO, SR@0.5, SR@0.75     frames pooled over sequences, frame 0 and  per-sequence mean overlap averaged;
                        absent frames skipped, boxes clipped to    SR = the averaged success curve at
                        the image (GOT-10k experiment)             0.5 / 0.75 (OP50 / OP75)
======================  =========================================  ==========================================

Sources: GOT-10k toolkit ``got10k/utils/metrics.py`` (``rect_iou``, ``center_error``),
``got10k/experiments/otb.py`` (``_calc_curves``: ``np.greater(ious, linspace(0, 1, 21))``, precision
``<=`` on 0..50 px, score at 20 px, ``boxes[0] = anno[0]``, per-sequence curves averaged),
``got10k/experiments/got10k.py`` (``report``: ``rect_iou(b[1:], anno[1:], bound=resolution)``, frames with
``cover == 0`` dropped, IoUs of all sequences concatenated before ``mean``); its LaSOT experiment (in
derived toolkits) adds ``normalized_center_error`` (``/ max(1, gt w, h)``, curve on ``linspace(0, 0.5, 51)``,
score = mean of the curve, the AUC the LaSOT and TrackingNet papers rank by). pytracking
``pytracking/analysis/extract_results.py`` (``calc_iou_overlap``, ``calc_err_center``,
``calc_seq_err_robust``) and ``plot_results.py`` (AUC = mean of the averaged curve, precision and normalised
precision read at index 20, OP50/OP75).

Algebraic note, verified by the tests: for ``(x, y, w, h)`` boxes the pixel-inclusive intersection
``min(x1 + w1 - 1, x2 + w2 - 1) - max(x1, x2) + 1`` equals the continuous one, and both toolkits use
``x + (w - 1) / 2`` as the centre, whose ``-1`` cancels in a difference. The conventions therefore differ in
absent-frame handling, invalid boxes, normalised precision and AO/SR pooling, not in the overlap itself.

Absent targets: a frame whose ground truth is invalid (NaN, non-positive size) or marked absent
(``visible=False``: GOT-10k ``cover.label == 0``, LaSOT ``full_occlusion`` or ``out_of_view``) is either
dropped from a sequence's curves (``absent="exclude"``: GOT-10k, OTB, TrackingNet) or kept as a failure
(``absent="fail"``: LaSOT; pytracking divides by the full sequence length there, and the GOT-10k toolkit
scores LaSOT's empty absent-frame boxes at IoU 0).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional, Sequence, Union

import numpy as np

SUCCESS_THRESHOLDS = np.linspace(0.0, 1.0, 21)
PRECISION_THRESHOLDS = np.arange(51, dtype=np.float64)  # pixels
NORM_PRECISION_THRESHOLDS = np.linspace(0.0, 0.5, 51)
PRECISION_AT = 20  # index of the 20 px threshold
ABSENT_POLICIES = ("exclude", "fail")

ArrayLike = Union[np.ndarray, Sequence]


@dataclass(frozen=True)
class Convention:
    """How one toolkit turns per-frame boxes into scores (see the module docstring for the rules)."""

    name: str
    pixel_inclusive: bool  # overlap on inclusive pixel corners
    strict: bool  # success means overlap > threshold (else >=)
    norm_floor: float  # normalised error divides by max(norm_floor, gt w, h)
    norm_precision_at: Optional[float]  # None: AUC of the curve over 0..0.5; else the curve at this value
    repair_predictions: bool  # pytracking: NaN/negative size raise, zero size holds the previous box
    got10k_ao: bool  # AO/SR pooled over frames 1.. with image clipping; else per-sequence, read off curves


CONVENTIONS = {
    "got10k": Convention("got10k", pixel_inclusive=False, strict=True, norm_floor=1.0, norm_precision_at=None,
                         repair_predictions=False, got10k_ao=True),
    "pytracking": Convention("pytracking", pixel_inclusive=True, strict=True, norm_floor=0.0,
                             norm_precision_at=0.2, repair_predictions=True, got10k_ao=False),
}


def get_convention(convention: Union[str, Convention]) -> Convention:
    """A :class:`Convention` from its name (``'got10k'``, ``'pytracking'``) or itself."""
    if isinstance(convention, Convention):
        return convention
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {sorted(CONVENTIONS)} or a Convention, got {convention!r}")
    return CONVENTIONS[convention]


# --- per-frame measures -----------------------------------------------------------------------------
def as_boxes(name: str, boxes: ArrayLike) -> np.ndarray:
    """``boxes`` as a float64 ``(N, 4)`` array; a ``(4,)`` box becomes ``(1, 4)``."""
    array = np.asarray(boxes, dtype=np.float64)
    if array.ndim == 1 and array.shape[0] == 4:
        array = array[None]
    if array.ndim != 2 or array.shape[1] != 4:
        raise ValueError(f"{name} must be (N, 4) x,y,w,h boxes, got shape {np.shape(boxes)}")
    return array


def _box_pair(boxes1: ArrayLike, boxes2: ArrayLike, names: tuple = ("boxes1", "boxes2")):
    a, b = as_boxes(names[0], boxes1), as_boxes(names[1], boxes2)
    if a.shape != b.shape:
        raise ValueError(f"{names[0]} {a.shape} and {names[1]} {b.shape} must have the same shape")
    return a, b


def valid_boxes(boxes: ArrayLike) -> np.ndarray:
    """``(N,)`` bool: every value finite and the width and height positive."""
    b = as_boxes("boxes", boxes)
    return np.isfinite(b).all(axis=1) & (b[:, 2] > 0) & (b[:, 3] > 0)


def clip_to_image(boxes: ArrayLike, image_size: tuple) -> np.ndarray:
    """Boxes clipped the way the GOT-10k toolkit's ``rect_iou(bound=...)`` does.

    ``x`` is clamped to ``[0, W]`` and then ``w`` to ``[0, W - x]`` (likewise y, h): a box starting left of
    the image is shifted, not truncated. Kept as is so GOT-10k AO matches the toolkit.
    """
    b = as_boxes("boxes", boxes).copy()
    width, height = image_size
    b[:, 0] = np.clip(b[:, 0], 0, width)
    b[:, 1] = np.clip(b[:, 1], 0, height)
    b[:, 2] = np.clip(b[:, 2], 0, width - b[:, 0])
    b[:, 3] = np.clip(b[:, 3], 0, height - b[:, 1])
    return b


def iou(boxes1: ArrayLike, boxes2: ArrayLike, pixel_inclusive: bool = False,
        image_size: Optional[tuple] = None) -> np.ndarray:
    """Intersection over union ``(N,)`` in [0, 1] of matching rows; 0 where either box is invalid.

    ``pixel_inclusive``: a box covers pixels ``x .. x + w - 1`` and an extent is ``last - first + 1``
    (pytracking, the OTB toolkit); otherwise ``[x, x + w)`` (GOT-10k toolkit). ``image_size=(W, H)``
    clips both boxes first (:func:`clip_to_image`).
    """
    a, b = _box_pair(boxes1, boxes2)
    if image_size is not None:
        a, b = clip_to_image(a, image_size), clip_to_image(b, image_size)
    inclusive = 1.0 if pixel_inclusive else 0.0
    first = np.maximum(a[:, :2], b[:, :2])
    last = np.minimum(a[:, :2] + a[:, 2:] - inclusive, b[:, :2] + b[:, 2:] - inclusive)
    extent = np.clip(last - first + inclusive, 0.0, None)
    intersection = extent[:, 0] * extent[:, 1]
    union = a[:, 2] * a[:, 3] + b[:, 2] * b[:, 3] - intersection
    ok = valid_boxes(a) & valid_boxes(b) & (union > 0)
    overlaps = np.zeros(len(a))
    overlaps[ok] = intersection[ok] / union[ok]
    return np.clip(overlaps, 0.0, 1.0)


def _centre_offsets(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    # Both toolkits use x + (w - 1) / 2; the -1 cancels in the difference, so continuous centres are exact.
    return (pred[:, :2] + pred[:, 2:] / 2) - (gt[:, :2] + gt[:, 2:] / 2)


def center_error(pred: ArrayLike, gt: ArrayLike) -> np.ndarray:
    """Distance in pixels ``(N,)`` between box centres; ``inf`` where the prediction is invalid."""
    p, g = _box_pair(pred, gt, ("pred", "gt"))
    errors = np.linalg.norm(_centre_offsets(p, g), axis=1)
    errors[~valid_boxes(p)] = np.inf
    return errors


def normalized_center_error(pred: ArrayLike, gt: ArrayLike, floor: float = 0.0) -> np.ndarray:
    """Centre offset with each axis divided by the ground-truth size ``(N,)`` (LaSOT/TrackingNet).

    The divisor is ``max(floor, gt w)`` and ``max(floor, gt h)``; ``inf`` where the prediction is invalid.
    """
    p, g = _box_pair(pred, gt, ("pred", "gt"))
    with np.errstate(divide="ignore", invalid="ignore"):
        errors = np.linalg.norm(_centre_offsets(p, g) / np.maximum(floor, g[:, 2:]), axis=1)
    errors[~valid_boxes(p)] = np.inf
    return errors


def success_curve(overlaps: ArrayLike, thresholds: np.ndarray = SUCCESS_THRESHOLDS,
                  strict: bool = True) -> np.ndarray:
    """Fraction of frames whose overlap is above each threshold (``>`` when ``strict``, else ``>=``)."""
    o = np.asarray(overlaps, dtype=np.float64)[:, None]
    hit = o > thresholds[None] if strict else o >= thresholds[None]
    return hit.mean(axis=0)


def precision_curve(errors: ArrayLike, thresholds: np.ndarray = PRECISION_THRESHOLDS) -> np.ndarray:
    """Fraction of frames whose centre error is at most each threshold (both toolkits use ``<=``)."""
    return (np.asarray(errors, dtype=np.float64)[:, None] <= thresholds[None]).mean(axis=0)


def auc(curve: ArrayLike) -> float:
    """Area under a success curve as the toolkits compute it: the mean over its thresholds."""
    return float(np.mean(curve))


# --- one sequence -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class SequenceScores:
    """Per-sequence curves and the overlaps that AO averages, under one convention.

    ``overlaps``: ``(F,)`` per-frame IoU with the convention's rules; ``ao_overlaps``: the frames AO uses.
    """

    name: str
    overlaps: np.ndarray
    success: np.ndarray
    precision: np.ndarray
    norm_precision: np.ndarray
    ao_overlaps: np.ndarray
    scored_frames: int


def _repair_predictions(pred: np.ndarray, gt_valid: np.ndarray) -> np.ndarray:
    # pytracking calc_seq_err_robust: a NaN or negative size is a broken result file; a zero-size box on an
    # annotated frame takes the previous frame's box (sequentially, so runs of zero boxes hold one box).
    if np.isnan(pred).any() or (pred[:, 2:] < 0).any():
        raise ValueError("pred contains NaN or negative sizes (the pytracking convention rejects them)")
    pred = pred.copy()
    for i in np.flatnonzero((pred[:, 2:] == 0).any(axis=1) & gt_valid):
        if i > 0:
            pred[i] = pred[i - 1]
    return pred


def evaluate_sequence(pred: ArrayLike, gt: ArrayLike, visible: Optional[ArrayLike] = None, *,
                      convention: Union[str, Convention] = "got10k", absent: str = "exclude",
                      image_size: Optional[tuple] = None, name: str = "") -> SequenceScores:
    """Score one sequence's predictions ``pred`` ``(F, 4)`` against ``gt`` ``(F, 4)``.

    Args:
        visible: ``(F,)`` bool, False where the target is absent (absence labels); None = all visible.
        absent: ``'exclude'`` drops absent/unannotated frames, ``'fail'`` scores them as failures.
        image_size: ``(W, H)``: GOT-10k AO clips boxes to the image as the toolkit does.
    """
    conv = get_convention(convention)
    p, g = _box_pair(pred, gt, ("pred", "gt"))
    if len(p) == 0:
        raise ValueError("pred and gt are empty")
    if absent not in ABSENT_POLICIES:
        raise ValueError(f"absent must be one of {ABSENT_POLICIES}, got {absent!r}")
    annotated = valid_boxes(g)
    if visible is not None:
        visible = np.asarray(visible, dtype=bool)
        if visible.shape != (len(g),):
            raise ValueError(f"visible must have shape ({len(g)},), got {visible.shape}")
        annotated &= visible
    if conv.repair_predictions:
        p = _repair_predictions(p, annotated)
    p = p.copy()
    p[0] = g[0]  # both toolkits score the initialisation frame as given
    overlaps = iou(p, g, pixel_inclusive=conv.pixel_inclusive)
    errors = center_error(p, g)
    norm_errors = normalized_center_error(p, g, conv.norm_floor)
    if absent == "exclude":
        scored = annotated
    else:
        scored = np.ones(len(g), dtype=bool)
        overlaps[~annotated] = -1.0  # below every threshold, strict or not
        errors[~annotated] = np.inf
        norm_errors[~annotated] = np.inf
    if not scored.any():
        raise ValueError(f"sequence {name!r} has no annotated frame with a visible target to score")
    if conv.got10k_ao:
        ao_frames = annotated.copy()
        ao_frames[0] = False
        ao_overlaps = iou(p[ao_frames], g[ao_frames], image_size=image_size)
    else:
        ao_overlaps = overlaps[annotated]
    return SequenceScores(
        name=name,
        overlaps=overlaps,
        success=success_curve(overlaps[scored], strict=conv.strict),
        precision=precision_curve(errors[scored]),
        norm_precision=precision_curve(norm_errors[scored], NORM_PRECISION_THRESHOLDS),
        ao_overlaps=ao_overlaps,
        scored_frames=int(scored.sum()),
    )


# --- a whole benchmark ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Summary:
    """Benchmark scores of one tracker; curves are averaged over sequences, scores are fractions in [0, 1]."""

    name: str
    convention: str
    sequences: int
    auc: float
    precision: float  # at 20 px
    norm_precision: float
    ao: float
    sr50: float
    sr75: float
    success_curve: np.ndarray
    precision_curve: np.ndarray
    norm_precision_curve: np.ndarray
    fps: Optional[float] = None

    def to_dict(self) -> dict:
        """JSON-ready dictionary (curves as lists)."""
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in asdict(self).items()}


def summarize(scores: Sequence[SequenceScores], convention: Union[str, Convention] = "got10k",
              name: str = "tracker", fps: Optional[float] = None) -> Summary:
    """Average per-sequence curves and compute AUC, precision, normalised precision, AO and SR."""
    conv = get_convention(convention)
    if len(scores) == 0:
        raise ValueError("scores is empty: nothing to summarise")
    success = np.mean([s.success for s in scores], axis=0)
    precision = np.mean([s.precision for s in scores], axis=0)
    norm = np.mean([s.norm_precision for s in scores], axis=0)
    if conv.norm_precision_at is None:
        norm_score = auc(norm)
    else:
        norm_score = float(norm[np.argmin(np.abs(NORM_PRECISION_THRESHOLDS - conv.norm_precision_at))])
    if conv.got10k_ao:
        pooled = np.concatenate([s.ao_overlaps for s in scores])
        if len(pooled) == 0:
            raise ValueError("no frame after the first one has a visible target: AO is undefined")
        ao = float(pooled.mean())
        sr50, sr75 = (float(v) for v in success_curve(pooled, np.array([0.5, 0.75]), strict=conv.strict))
    else:
        ao = float(np.mean([s.ao_overlaps.mean() for s in scores]))
        sr50, sr75 = (float(np.interp(t, SUCCESS_THRESHOLDS, success)) for t in (0.5, 0.75))
    return Summary(name=name, convention=conv.name, sequences=len(scores), auc=auc(success),
                   precision=float(precision[PRECISION_AT]), norm_precision=norm_score, ao=ao, sr50=sr50,
                   sr75=sr75, success_curve=success, precision_curve=precision, norm_precision_curve=norm, fps=fps)
