"""Batched tracking: N targets, in one video or in N videos, with one encoder and one decoder call per frame.

Each target keeps its own box, frame counter and template list (SeqTrack's procedure, spec section 6):
boxes as rows of a float64 host array, templates as rows of a device tensor. A frame costs one copy of
the crop taps to the device, one crop gather, one ``model.generate`` and one device-to-host copy of the
N predicted boxes and confidences, whatever N is.
"""
from __future__ import annotations

from typing import Any, Hashable, Mapping, NamedTuple, Optional, Sequence, Union

import numpy as np
import torch

from .preprocessing import (
    ImageLike,
    as_image,
    boxes_in_crop,
    check_box,
    clip_boxes,
    crop_and_resize,
    map_boxes_back,
    normalize_crops,
)
from .presets import TrackerSettings

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class TrackResult(NamedTuple):
    """One target's result on one frame: ``box`` (x, y, w, h) in pixels and SeqTrack's ``confidence``."""

    box: tuple[float, float, float, float]
    confidence: float


def resolve_dtype(dtype: Union[str, torch.dtype, None]) -> torch.dtype:
    """``None``/``'float32'``/``'bfloat16'``/``'float16'`` or the torch dtype -> the torch dtype."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, str) and dtype in DTYPES:
        return DTYPES[dtype]
    if dtype in DTYPES.values():
        return dtype
    raise ValueError(f"dtype must be one of {sorted(DTYPES)} (or the torch dtype), got {dtype!r}")


class BatchTracker:
    """Track several targets at once; per target the results equal an independent :class:`Tracker`.

    Args:
        model: an :class:`~actrack_fast.ACTrack` in eval mode on the device to run on.
        preset: dataset whose SeqTrack template-update preset to use (see :mod:`actrack_fast.presets`).
        dtype: ``float32`` (default), or ``bfloat16``/``float16`` to run the model under autocast. (A model
            already converted with ``model.to(dtype)`` gets its crops in its own parameter dtype.)
        **settings: overrides of :class:`TrackerSettings` (``update_interval``, ``update_threshold``,
            ``window``, ``margin``).

    Usage::

        tracker = BatchTracker(model)
        a = tracker.add(frame0, (10, 20, 40, 30))
        b = tracker.add(frame0, (200, 50, 25, 60))
        for frame in frames:                      # every target in the same video
            results = tracker.track(frame)        # {a: TrackResult, b: TrackResult}
        # targets in different videos: tracker.track({a: frame_of_video_a, b: frame_of_video_b})
    """

    def __init__(self, model: torch.nn.Module, preset: str = "default", *,
                 dtype: Union[str, torch.dtype, None] = None, **settings: Any) -> None:
        if not isinstance(model, torch.nn.Module) or not hasattr(model, "config"):
            raise TypeError(f"model must be an ACTrack model, got {type(model).__name__}")
        self.model = model.eval()
        self.config = model.config
        self.settings = TrackerSettings.from_preset(self.config.name, preset, **settings)
        self.dtype = resolve_dtype(dtype)
        parameter = next(model.parameters())
        self.device, self._input_dtype = parameter.device, parameter.dtype
        T, St = self.config.num_templates, self.config.template_size
        self._ids: list[Hashable] = []
        self._frame_counts: list[int] = []
        self._boxes = np.empty((0, 4), dtype=np.float64)
        self._templates = torch.empty(0, T, 3, St, St, device=self.device, dtype=self._input_dtype)
        self._next_id = 0

    # --- targets --------------------------------------------------------------------------------
    @property
    def target_ids(self) -> tuple:
        """Ids of the targets being tracked, in the order of the batch."""
        return tuple(self._ids)

    def __len__(self) -> int:
        return len(self._ids)

    def box(self, target_id: Hashable) -> tuple[float, float, float, float]:
        """The current (x, y, w, h) box of a target."""
        return tuple(self._boxes[self._slot(target_id)].tolist())

    def add(self, image: ImageLike, box: Sequence[float], target_id: Optional[Hashable] = None) -> Hashable:
        """Start tracking a target given its box (x, y, w, h) in ``image`` (H, W, 3) uint8 RGB, the frame
        before the first :meth:`track`. Returns its id (``target_id``, or the next free integer)."""
        if target_id is None:
            while self._next_id in self._ids:
                self._next_id += 1
            target_id = self._next_id
            self._next_id += 1
        elif target_id in self._ids:
            raise ValueError(f"target_id {target_id!r} is already being tracked")
        frame = as_image(image, self.device)
        values = check_box(box, frame.shape[0], frame.shape[1], self.config.template_factor)
        boxes = np.asarray([values], dtype=np.float64)
        template = self._crop_templates([frame], boxes, [0])
        templates = template[:, None].expand(-1, self.config.num_templates, -1, -1, -1)
        self._templates = torch.cat([self._templates, templates])
        self._boxes = np.concatenate([self._boxes, boxes])
        self._ids.append(target_id)
        self._frame_counts.append(0)
        return target_id

    def remove(self, target_id: Hashable) -> None:
        """Stop tracking a target."""
        slot = self._slot(target_id)
        keep = [i for i in range(len(self._ids)) if i != slot]
        self._templates = self._templates[torch.tensor(keep, dtype=torch.long, device=self.device)]
        self._boxes = self._boxes[keep]
        del self._ids[slot], self._frame_counts[slot]

    def _slot(self, target_id: Hashable) -> int:
        try:
            return self._ids.index(target_id)
        except ValueError:
            raise KeyError(f"unknown target_id {target_id!r}; tracked targets: {self._ids}") from None

    # --- tracking -------------------------------------------------------------------------------
    @torch.no_grad()
    def track(self, frames: Union[ImageLike, Mapping[Hashable, ImageLike]]) -> dict[Hashable, TrackResult]:
        """Track every target into its next frame.

        Args:
            frames: one (H, W, 3) uint8 RGB image holding every target, or a mapping target id -> image
                (targets in different videos; the same image object may serve several targets).
        Returns:
            ``{target_id: TrackResult(box, confidence)}`` in the order of :attr:`target_ids`.
        """
        if not self._ids:
            raise RuntimeError("no targets to track: add() one first")
        images, image_index = self._frames_per_target(frames)
        heights, widths = np.asarray([images[i].shape[:2] for i in image_index], dtype=np.float64).T
        cfg = self.config

        previous = self._boxes
        crops, geometry = crop_and_resize(images, previous, cfg.search_factor, cfg.search_size, image_index)
        prompt = None
        if cfg.prompt_tokens:
            prompt = torch.from_numpy(boxes_in_crop(previous, previous, geometry, cfg.search_size)).float()
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            search = normalize_crops(crops).to(self._input_dtype)
            result = self.model.generate(search, self._templates, prompt, window=self.settings.window,
                                         check_finite=False)
        # The one device-to-host copy: predicted boxes and SeqTrack's float32 sum of token probabilities.
        host = torch.cat([result.boxes.float(), result.probs.float().sum(dim=-1, keepdim=True)], 1).cpu().numpy()
        boxes = map_boxes_back(host[:, :4], previous, geometry, cfg.search_size)
        self._boxes = clip_boxes(boxes, heights, widths, self.settings.margin)
        confidences = host[:, 4].astype(np.float64) * 10  # scaled by 10 in double, as SeqTrack does

        self._frame_counts = [count + 1 for count in self._frame_counts]
        due = [i for i, (count, confidence) in enumerate(zip(self._frame_counts, confidences))
               if self.settings.should_update(count, confidence, cfg.num_templates)]
        if due:
            self._update_templates(images, image_index, due)
        return {target: TrackResult(tuple(box), confidence)
                for target, box, confidence in zip(self._ids, self._boxes.tolist(), confidences.tolist())}

    def _frames_per_target(self, frames) -> tuple[list[torch.Tensor], list[int]]:
        """Distinct images on the device and, per target, the index of its image."""
        if not isinstance(frames, Mapping):
            return [as_image(frames, self.device, "frames")], [0] * len(self._ids)
        missing = [t for t in self._ids if t not in frames]
        unknown = [t for t in frames if t not in self._ids]
        if missing or unknown:
            raise ValueError(f"frames must map every tracked target to its image: missing {missing}, "
                             f"unknown {unknown}")
        images: list[torch.Tensor] = []
        seen: dict[int, int] = {}
        index = []
        for target in self._ids:
            image = frames[target]
            if id(image) not in seen:
                seen[id(image)] = len(images)
                images.append(as_image(image, self.device, f"frames[{target!r}]"))
            index.append(seen[id(image)])
        return images, index

    def _crop_templates(self, images: list[torch.Tensor], boxes: np.ndarray,
                        image_index: Sequence[int]) -> torch.Tensor:
        cfg = self.config
        crops, _ = crop_and_resize(images, boxes, cfg.template_factor, cfg.template_size, image_index)
        return normalize_crops(crops).to(self._input_dtype)

    def _update_templates(self, images: list[torch.Tensor], image_index: list[int], due: list[int]) -> None:
        """Append a template cropped at the new box and drop the oldest non-initial one (the first
        template, from the initial frame, is always kept)."""
        new = self._crop_templates(images, self._boxes[due], [image_index[i] for i in due])
        rows = torch.tensor(due, dtype=torch.long, device=self.device)
        self._templates[rows, 1:-1] = self._templates[rows, 2:]
        self._templates[rows, -1] = new
