"""Single-target tracking: SeqTrack's tracker procedure (spec section 6) around an ACTrack model.

``initialize(image, box)`` crops the template (factor 4, side St) around the box and fills the template
list with T copies; ``track(image)`` crops the search region around the previous box, encodes the
templates and the search crop, decodes the four coordinate tokens, maps the box back to the image,
clips it with the 10-pixel margin and, every ``update_interval`` frames when the confidence exceeds
``update_threshold``, swaps in a template cropped at the new box. Everything runs on the model's device; on
CUDA each frame replays one CUDA graph (see :class:`~actrack_fast.BatchTracker`, which this wraps).
"""
from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import torch

from .batch_tracker import BatchTracker, TrackResult
from .preprocessing import ImageLike
from .presets import TrackerSettings

_TARGET = 0


class Tracker:
    """Track one target through a video.

    Args:
        model: an :class:`~actrack_fast.ACTrack` in eval mode, on the device to run on.
        preset: dataset whose SeqTrack template-update preset to use (``'default'``, ``'lasot'``,
            ``'got10k_test'``, ``'vot20'`` ...; see :mod:`actrack_fast.presets`).
        dtype: ``float32`` (default), or ``bfloat16``/``float16`` to run the model under autocast.
        cuda_graph: replay each frame as a CUDA graph (default: on CUDA devices); ``False`` runs eagerly,
            with identical results.
        **settings: overrides of :class:`TrackerSettings`: ``update_interval``, ``update_threshold``,
            ``window`` (Hanning window on/off; default from the model config), ``margin``.

    Images are (H, W, 3) uint8 RGB numpy arrays or torch tensors (a tensor already on the model's device
    is cropped there without a host copy). Usage::

        tracker = Tracker(model, preset="lasot")
        tracker.initialize(first_frame, (x, y, w, h))
        for frame in frames:
            box, confidence = tracker.track(frame)
    """

    def __init__(self, model: torch.nn.Module, preset: str = "default", *,
                 dtype: Union[str, torch.dtype, None] = None, cuda_graph: Optional[bool] = None,
                 **settings: Any) -> None:
        self._batch = BatchTracker(model, preset, dtype=dtype, cuda_graph=cuda_graph, **settings)

    @property
    def settings(self) -> TrackerSettings:
        return self._batch.settings

    @property
    def model(self) -> torch.nn.Module:
        return self._batch.model

    @property
    def box(self) -> Optional[tuple[float, float, float, float]]:
        """The current (x, y, w, h) box, ``None`` before :meth:`initialize`."""
        return self._batch.box(_TARGET) if len(self._batch) else None

    def initialize(self, image: ImageLike, box_xywh: Sequence[float]) -> None:
        """Start (or restart) tracking the target in ``box_xywh`` (x, y, w, h pixels) of ``image``."""
        if len(self._batch):
            self._batch.remove(_TARGET)
        self._batch.add(image, box_xywh, target_id=_TARGET)

    def step(self, image: ImageLike) -> None:
        """Track the target into ``image`` without waiting for the device; :attr:`box` reads the result."""
        if not len(self._batch):
            raise RuntimeError("call initialize(image, box_xywh) before track(image)")
        self._batch.step(image)

    def track(self, image: ImageLike) -> TrackResult:
        """The target's box (x, y, w, h) in ``image`` and the confidence (10 x sum of token probabilities)."""
        self.step(image)
        return self._batch.results()[_TARGET]
