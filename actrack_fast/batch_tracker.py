"""Batched tracking: N targets, in one video or in N videos, with one encoder and one decoder call per frame.

Each target keeps its own box, frame counter and template list (SeqTrack's procedure, spec section 6), all
on the model's device (:class:`~actrack_fast.frame_step.TargetState`). A frame is one
:class:`~actrack_fast.frame_step.FrameStep`: on CUDA captured once as a CUDA graph per frame layout and
replayed, elsewhere (or with ``cuda_graph=False``) run eagerly, with identical results. The host reads the
boxes only when asked (:meth:`BatchTracker.results`, :meth:`BatchTracker.track`).
"""
from __future__ import annotations

import math
from typing import Any, Hashable, Mapping, NamedTuple, Optional, Sequence, Union

import torch

from .frame_step import FrameStep, GraphedStep, TargetState, layout_key
from .preprocessing import ImageLayout, ImageLike, as_boxes, as_image, check_box
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
        dtype: ``float32`` (default), or ``bfloat16``/``float16`` to run the model under autocast, on a copy
            whose encoder-side weights are cast once (same results, no per-frame weight casts). (A model
            already converted with ``model.to(dtype)`` gets its crops in its own parameter dtype.)
        cuda_graph: replay each frame as a CUDA graph (default: on CUDA devices). A graph is captured on the
            first frame of each layout (target count, frame sizes) and again after :meth:`add`/:meth:`remove`;
            it keeps the weights the Triton decoder packed at capture, so make a new tracker after changing
            the model's weights. Targets that come and go every frame are better served eagerly (``False``).
        **settings: overrides of :class:`TrackerSettings` (``update_interval``, ``update_threshold``,
            ``window``, ``margin``).

    Usage::

        tracker = BatchTracker(model)
        a = tracker.add(frame0, (10, 20, 40, 30))
        b = tracker.add(frame0, (200, 50, 25, 60))
        for frame in frames:                      # every target in the same video
            results = tracker.track(frame)        # {a: TrackResult, b: TrackResult}
        # targets in different videos: tracker.track({a: frame_of_video_a, b: frame_of_video_b})
        # throughput: tracker.step(frame) per frame, tracker.results() only when the boxes are needed
    """

    def __init__(self, model: torch.nn.Module, preset: str = "default", *,
                 dtype: Union[str, torch.dtype, None] = None, cuda_graph: Optional[bool] = None,
                 **settings: Any) -> None:
        if not isinstance(model, torch.nn.Module) or not hasattr(model, "config"):
            raise TypeError(f"model must be an ACTrack model, got {type(model).__name__}")
        self.model = model.eval()
        self.config = model.config
        self.settings = TrackerSettings.from_preset(self.config.name, preset, **settings)
        self.dtype = resolve_dtype(dtype)
        self.device = next(model.parameters()).device
        if cuda_graph is None:
            cuda_graph = self.device.type == "cuda"
        elif cuda_graph and self.device.type != "cuda":
            raise ValueError(f"cuda_graph=True needs the model on a CUDA device, got {self.device}")
        self.cuda_graph = bool(cuda_graph)
        self._step = FrameStep(self.model, self.settings, self.dtype)
        T, St = self.config.num_templates, self.config.template_size
        empty = torch.empty(0, 4, dtype=torch.float64, device=self.device)
        self._state = TargetState.new(empty, torch.empty(0, T, 3, St, St, device=self.device,
                                                         dtype=self._step.input_dtype))
        self._ids: list[Hashable] = []
        self._next_id = 0
        self._graph: Optional[GraphedStep] = None
        self._layouts: dict[tuple, ImageLayout] = {}

    # --- targets --------------------------------------------------------------------------------
    @property
    def target_ids(self) -> tuple:
        """Ids of the targets being tracked, in the order of the batch."""
        return tuple(self._ids)

    def __len__(self) -> int:
        return len(self._ids)

    def box(self, target_id: Hashable) -> tuple[float, float, float, float]:
        """The current (x, y, w, h) box of a target (reads it from the device)."""
        return tuple(self._state.boxes[self._slot(target_id)].tolist())

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
        boxes = as_boxes([check_box(box, frame.shape[0], frame.shape[1], self.config.template_factor)], self.device)
        layout = ImageLayout.of([frame.shape], [0], self.device)
        template = self._step.crop_templates(frame.reshape(-1, 3), layout, boxes)
        templates = template[:, None].expand(-1, self.config.num_templates, -1, -1, -1)
        self._set_state(self._state.cat(TargetState.new(boxes, templates)))
        self._ids.append(target_id)
        return target_id

    def remove(self, target_id: Hashable) -> None:
        """Stop tracking a target."""
        slot = self._slot(target_id)
        keep = torch.tensor([i for i in range(len(self._ids)) if i != slot], dtype=torch.long, device=self.device)
        self._set_state(self._state.select(keep))
        del self._ids[slot]

    def _set_state(self, state: TargetState) -> None:
        # New state tensors: a captured graph still points at the old ones.
        self._state, self._graph = state, None

    def _slot(self, target_id: Hashable) -> int:
        try:
            return self._ids.index(target_id)
        except ValueError:
            raise KeyError(f"unknown target_id {target_id!r}; tracked targets: {self._ids}") from None

    # --- tracking -------------------------------------------------------------------------------
    def step(self, frames: Union[ImageLike, Mapping[Hashable, ImageLike]]) -> None:
        """Track every target into its next frame without waiting for the device (no host copy of the
        results; read them with :meth:`results`).

        Args:
            frames: one (H, W, 3) uint8 RGB image holding every target, or a mapping target id -> image
                (targets in different videos; the same image object may serve several targets).
        """
        if not self._ids:
            raise RuntimeError("no targets to track: add() one first")
        images, image_index = self._frames_per_target(frames)
        shapes = [tuple(image.shape) for image in images]
        key = layout_key(len(self), shapes, image_index)
        if self.cuda_graph:
            if self._graph is None or self._graph.key != key:
                self._graph = GraphedStep(self._step, self._state, shapes, image_index)
            self._graph(images)
            return
        if key not in self._layouts:
            self._layouts = {key: ImageLayout.of(shapes, image_index, self.device)}
        pixels = images[0].reshape(-1, 3) if len(images) == 1 else torch.cat([im.reshape(-1, 3) for im in images])
        self._step(self._state, pixels, self._layouts[key])

    def results(self) -> dict[Hashable, TrackResult]:
        """``{target_id: TrackResult(box, confidence)}`` after the last frame, in the order of :attr:`target_ids`
        (one device-to-host copy; the confidence is NaN before a target's first tracked frame)."""
        state = self._state
        host = torch.cat([state.boxes, state.confidences[:, None], state.frames[:, None].double()], dim=1).cpu().numpy()
        broken = [target for target, row in zip(self._ids, host) if row[5] > 0 and not math.isfinite(row[4])]
        if broken:
            raise RuntimeError(f"targets {broken} got a non-finite confidence from a tracked frame: the model produced "
                               "non-finite values, or the decode kernel could not synchronise its programs (another "
                               "workload held the GPU's SMs); these results are invalid")
        return {target: TrackResult(tuple(row[:4].tolist()), float(row[4])) for target, row in zip(self._ids, host)}

    def track(self, frames: Union[ImageLike, Mapping[Hashable, ImageLike]]) -> dict[Hashable, TrackResult]:
        """:meth:`step` then :meth:`results`: every target's box and confidence in its next frame."""
        self.step(frames)
        return self.results()

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
