"""One tracking step for N targets as device tensor ops with static shapes (spec section 6), so the whole
step can be captured once as a CUDA graph and replayed per frame.

:class:`TargetState` keeps every target's box, frame counter, last confidence and templates on the device.
:class:`FrameStep` advances it by one frame, in place: search crop and normalisation, ``model.generate``, box
mapping and clipping, confidence, the template-update decision and the update itself. Where an update is due,
the later templates shift down one slot (``torch.where``) and the new template is cropped straight into the last
(:func:`~actrack_fast.preprocessing.crop_normalized_into`, which with the compiled op crops only those targets,
the mask read on the device): the step has no data-dependent control flow and never waits for the host.
:class:`GraphedStep` captures it for one frame layout (target count, image shapes) and replays it; calling the
same :class:`FrameStep` eagerly is the fallback on any device, and gives the same results bit for bit.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from . import backend as backends
from . import boxes_op
from .additive import ConvBNReLU
from .cuda_graphs import capture_graph
from .preprocessing import (ImageLayout, boxes_in_crop, crop_geometry, crop_normalized, crop_normalized_into,
                            track_boxes)
from .presets import TrackerSettings

# Layers whose weights autocast casts to the low-precision dtype on every call.
_AUTOCAST_CAST = (nn.Linear, nn.Conv2d)
# Warm-up calls before a capture: the first autotunes Triton kernels and creates library handles, the
# second runs with everything cached, as every replay will.
_WARMUP = 2


@dataclass
class TargetState:
    """Per-target tracking state, on the model's device.

    boxes: (N, 4) float64 (x, y, w, h) in pixels. frames: (N,) int64 frames tracked since the target was
    added. confidences: (N,) float64 confidence of the last frame (NaN before the first).
    templates: (N, T, 3, St, St) normalised template crops, the initial one first.
    """

    boxes: torch.Tensor
    frames: torch.Tensor
    confidences: torch.Tensor
    templates: torch.Tensor

    @classmethod
    def new(cls, boxes: torch.Tensor, templates: torch.Tensor) -> "TargetState":
        """State of freshly added targets: ``boxes`` (N, 4) float64 and their templates (N, T, 3, St, St)."""
        count = boxes.shape[0]
        return cls(boxes, torch.zeros(count, dtype=torch.int64, device=boxes.device),
                   torch.full((count,), float("nan"), dtype=torch.float64, device=boxes.device), templates)

    def __len__(self) -> int:
        return self.boxes.shape[0]

    def tensors(self) -> list[torch.Tensor]:
        return [getattr(self, field.name) for field in dataclasses.fields(self)]

    def clone(self) -> "TargetState":
        return TargetState(*(t.clone() for t in self.tensors()))

    def copy_(self, other: "TargetState") -> None:
        """Overwrite in place (a captured graph keeps reading and writing these same tensors)."""
        for mine, theirs in zip(self.tensors(), other.tensors()):
            mine.copy_(theirs)

    def select(self, index: torch.Tensor) -> "TargetState":
        return TargetState(*(t[index] for t in self.tensors()))

    def cat(self, other: "TargetState") -> "TargetState":
        return TargetState(*(torch.cat([a, b]) for a, b in zip(self.tensors(), other.tensors())))


class FrameStep:
    """Advance a :class:`TargetState` by one frame (see the module docstring).

    Args:
        model: an ACTrack model in eval mode, on the device of the state.
        settings: the tracker's update interval/threshold, window and margin.
        dtype: ``float32``, or ``bfloat16``/``float16`` to run the model under autocast (on a
            :func:`precast_copy` of an fp32 model, taken here: later changes to the model's weights are not seen).
    """

    def __init__(self, model: torch.nn.Module, settings: TrackerSettings, dtype: torch.dtype) -> None:
        self.config = model.config
        self.settings = settings
        self.dtype = dtype
        self.input_dtype = next(model.parameters()).dtype
        self.autocast = dtype != torch.float32
        self.model = precast_copy(model, dtype) if self.autocast and self.input_dtype != dtype else model

    def crop_templates(self, pixels: torch.Tensor, layout: ImageLayout, boxes: torch.Tensor) -> torch.Tensor:
        """Normalised template crops (N, 3, St, St) around ``boxes`` (N, 4) float64."""
        cfg = self.config
        return crop_normalized(pixels, layout, boxes, cfg.template_factor, cfg.template_size, self.input_dtype)

    @torch.no_grad()
    def __call__(self, state: TargetState, pixels: torch.Tensor, layout: ImageLayout) -> None:
        """Track every target of ``state`` into the frame(s) in ``pixels`` (P, 3) uint8 laid out by ``layout``."""
        cfg, settings = self.config, self.settings
        previous = state.boxes
        search = crop_normalized(pixels, layout, previous, cfg.search_factor, cfg.search_size, self.input_dtype)
        prompt = None
        if cfg.prompt_tokens:
            geometry = crop_geometry(previous, cfg.search_factor, cfg.search_size)
            prompt = boxes_in_crop(previous, previous, geometry, cfg.search_size).float()
        # Autocast's weight cache off: graph capture requires it (its casts would outlive the capture's pool),
        # and it lasts one call anyway; precast_copy is what saves the casts.
        with torch.autocast(pixels.device.type, dtype=self.dtype, enabled=self.autocast, cache_enabled=False):
            result = self.model.generate(search, state.templates, prompt, window=settings.window, check_finite=False)
        due = advance_targets(state, result.boxes, result.probs, layout, cfg.search_factor, cfg.search_size, settings)
        if cfg.num_templates > 1:  # with one template there is nothing to update
            # The initial template stays first; where due, the later ones shift down one slot (the oldest drops
            # out) and the new one takes the last. Slot by slot in place, in increasing order so that each reads
            # its successor before that is overwritten; updates are rare, so the new template is cropped only
            # where due, straight into the last slot, rather than for every target and then selected.
            slots = state.templates
            for i in range(1, cfg.num_templates - 1):
                torch.where(due[:, None, None, None], slots[:, i + 1], slots[:, i], out=slots[:, i])
            crop_normalized_into(pixels, layout, state.boxes, cfg.template_factor, cfg.template_size, slots[:, -1],
                                 due)


def advance_targets(state: TargetState, pred: torch.Tensor, probs: torch.Tensor, layout: ImageLayout, factor: float,
                    size: int, settings: TrackerSettings) -> torch.Tensor:
    """The end of a step for every target of ``state``, in place: the next box (``track_boxes`` of the prediction
    ``pred`` (N, 4) float32 from the crops placed with ``factor``/``size`` around the current boxes), SeqTrack's
    confidence (the float32 sum ((p0 + p1) + p2) + p3 of the token probabilities ``probs`` (N, 4), scaled by 10 in
    float64), and the frame count + 1; returns the template-update decision of :meth:`TrackerSettings.update_due`,
    (N,) bool.

    The ``boxes`` backend ``"cuda"`` runs it as one compiled op (:func:`actrack_fast.boxes_op.advance_targets`,
    bit-identical), ``"reference"`` as torch ops.
    """
    pred, probs = pred.float(), probs.float()
    if backends.select("boxes", state.boxes.device) == "cuda":
        return boxes_op.advance_targets(pred, probs, state.boxes, state.frames, state.confidences, layout.height,
                                        layout.width, factor, size, settings.margin, settings.update_interval,
                                        settings.update_threshold)
    boxes = track_boxes(pred, state.boxes, layout, factor, size, settings.margin)
    confidences = (((probs[:, 0] + probs[:, 1]) + probs[:, 2]) + probs[:, 3]).double() * 10
    state.boxes.copy_(boxes)
    state.frames.add_(1)
    state.confidences.copy_(confidences)
    return settings.update_due(state.frames, state.confidences)


def precast_copy(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A copy of ``model`` whose encoder-side Linear and Conv2d weights (encoder, additive net, bottleneck) are
    stored in ``dtype``, the values autocast would cast them to: under autocast it computes bit for bit what
    ``model`` computes, without recasting ~150 weight tensors every frame. LayerNorms, position embeddings and
    the decoder keep their precision (autocast runs LayerNorm in fp32, and the decoder is fp32 by design), and so
    do the additive net's conv + BatchNorm pairs."""
    shadow = copy.deepcopy(model)
    # Convolutions whose BatchNorm folds into them at inference stay fp32: autocast casts the folded weight,
    # and casting the conv weight first would round twice.
    folded = {id(module[0]) for module in shadow.modules() if isinstance(module, ConvBNReLU)}
    for part in (shadow.encoder, shadow.additive, shadow.bottleneck):
        for module in part.modules():
            if isinstance(module, _AUTOCAST_CAST) and id(module) not in folded:
                module.to(dtype)
    return shadow


class GraphedStep:
    """A :class:`FrameStep` captured as a CUDA graph for one frame layout, replayed per frame.

    The graph reads the frames from its own pixel buffer (each call copies the new frames in) and updates
    ``state`` in place; ``state``'s tensors must therefore stay the same objects while it is used.
    Capturing happens on the first call.
    """

    def __init__(self, step: FrameStep, state: TargetState, shapes: Sequence[tuple],
                 image_index: Sequence[int]) -> None:
        device = state.boxes.device
        self.key = layout_key(len(state), shapes, image_index)
        self.layout = ImageLayout.of(shapes, image_index, device)
        sizes = [shape[0] * shape[1] for shape in shapes]
        self.pixels = torch.empty(sum(sizes), 3, dtype=torch.uint8, device=device)
        self._images = list(torch.split(self.pixels, sizes))
        self._step, self._state = step, state
        self._graph = None

    def __call__(self, images: Sequence[torch.Tensor]) -> None:
        """Track into ``images`` ((H, W, 3) uint8 each, of the shapes given at construction)."""
        for buffer, image in zip(self._images, images):
            buffer.copy_(image.reshape(-1, 3))
        if self._graph is None:
            # The warm-up calls really track: run them from a copy of the state and put it back after.
            saved = self._state.clone()
            self._graph = capture_graph(lambda: self._step(self._state, self.pixels, self.layout), warmup=_WARMUP)
            self._state.copy_(saved)
        self._graph.replay()


def layout_key(count: int, shapes: Sequence[tuple], image_index: Sequence[int]) -> tuple:
    """What fixes a step's shapes: target count, image shapes, image of each target."""
    return count, tuple(tuple(shape) for shape in shapes), tuple(image_index)
