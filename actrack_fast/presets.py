"""Tracker settings and SeqTrack's per-model, per-dataset template-update presets (spec section 6).

Where each value comes from (public SeqTrack release, github.com/microsoft/VideoX, folder SeqTrack/,
commit cbfe81548cbdee1ec4e0f8e1db611bc905010ea6):

* ``lib/config/seqtrack/config.py``: ``TEST.UPDATE_INTERVALS`` / ``TEST.UPDATE_THRESHOLD`` defaults for
  every model: DEFAULT 9999 / 0.6, LASOT 450, LASOT_EXTENSION_SUBSET 9999, GOT10K_TEST 1, TRACKINGNET 25,
  TNL2K 25, OTB 9999, NFS 9999, UAV 9999, VOT20/VOT21/VOT22 10 / 0.475 (datasets without their own
  threshold use DEFAULT's 0.6).
* ``experiments/seqtrack/seqtrack_b256.yaml``: VOT20/VOT21/VOT22 interval 1, threshold 0.55.
* ``experiments/seqtrack/seqtrack_b384.yaml``: VOT20/VOT21/VOT22 interval 20, threshold 0.45.
* ``experiments/seqtrack/seqtrack_l256.yaml``, ``seqtrack_l384.yaml`` (and every ``*_got.yaml``): no
  ``UPDATE_*`` entries, so the config.py defaults apply.

SeqTrack's tracker looks the dataset up by its upper-cased name and falls back to DEFAULT; here an
unknown name is an error (a typo would otherwise silently switch template updates off).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Optional

import torch

DEFAULT_DATASET = "DEFAULT"

_INTERVALS = {
    "DEFAULT": 9999, "LASOT": 450, "LASOT_EXTENSION_SUBSET": 9999, "GOT10K_TEST": 1, "TRACKINGNET": 25,
    "TNL2K": 25, "OTB": 9999, "NFS": 9999, "UAV": 9999, "VOT20": 10, "VOT21": 10, "VOT22": 10,
}
_THRESHOLDS = {"DEFAULT": 0.6, "VOT20": 0.475, "VOT21": 0.475, "VOT22": 0.475}
_VOT = ("VOT20", "VOT21", "VOT22")
# Per-model yaml overrides: (intervals, thresholds).
_MODEL_OVERRIDES = {
    "B256": ({name: 1 for name in _VOT}, {name: 0.55 for name in _VOT}),
    "B384": ({name: 20 for name in _VOT}, {name: 0.45 for name in _VOT}),
}

DATASETS = tuple(sorted(_INTERVALS))


@dataclass(frozen=True)
class TrackerSettings:
    """How the tracker runs beyond the model.

    update_interval: try a template update every this many tracked frames (9999: practically never).
    update_threshold: update only when the confidence (10 x sum of token probabilities) exceeds this.
    window: Hanning window on the centre tokens; ``None`` uses the model config's ``use_window``.
    margin: a tracked box keeps at least this many pixels inside the image (SeqTrack: 10).
    """

    update_interval: int = _INTERVALS["DEFAULT"]
    update_threshold: float = _THRESHOLDS["DEFAULT"]
    window: Optional[bool] = None
    margin: float = 10.0

    def __post_init__(self) -> None:
        interval = self.update_interval
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise ValueError(f"update_interval must be an integer >= 1, got {self.update_interval!r}")
        if not isinstance(self.update_threshold, (int, float)) or not math.isfinite(self.update_threshold):
            raise ValueError(f"update_threshold must be a finite number, got {self.update_threshold!r}")
        if self.window not in (None, True, False):
            raise ValueError(f"window must be None, True or False, got {self.window!r}")
        if not isinstance(self.margin, (int, float)) or not 0 <= self.margin < math.inf:
            raise ValueError(f"margin must be a finite number >= 0, got {self.margin!r}")

    @classmethod
    def from_preset(cls, config_name: str, dataset: str = "default", **overrides: Any) -> "TrackerSettings":
        """SeqTrack's update interval/threshold for model ``config_name`` (``B256`` ...; other names get
        the defaults) on ``dataset`` (case-insensitive, one of :data:`DATASETS`), then ``overrides``
        (fields of this class; ``None`` keeps the preset value)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise TypeError(f"unknown tracker setting(s) {unknown}; known settings are {sorted(fields)}")
        interval, threshold = update_preset(config_name, dataset)
        values = {"update_interval": interval, "update_threshold": threshold}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def update_due(self, frames: torch.Tensor, confidences: torch.Tensor) -> torch.Tensor:
        """SeqTrack's rule, per target (N,) bool: every ``update_interval``-th tracked frame (``frames``, counted
        from 1 after initialisation) whose confidence exceeds ``update_threshold``. Only models with more
        than one template update."""
        return (frames % self.update_interval == 0) & (confidences > self.update_threshold)


def update_preset(config_name: str, dataset: str = "default") -> tuple[int, float]:
    """(update interval, update threshold) of SeqTrack's tracker for a model and a dataset."""
    if not isinstance(dataset, str) or dataset.upper() not in _INTERVALS:
        raise ValueError(f"unknown dataset preset {dataset!r}; expected one of {list(DATASETS)} (any case)")
    name = dataset.upper()
    intervals, thresholds = dict(_INTERVALS), dict(_THRESHOLDS)
    model_intervals, model_thresholds = _MODEL_OVERRIDES.get(config_name, ({}, {}))
    intervals.update(model_intervals)
    thresholds.update(model_thresholds)
    return intervals[name], thresholds.get(name, thresholds[DEFAULT_DATASET])
