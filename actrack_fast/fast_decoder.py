"""The ``"triton"`` backend of op ``"decoder"``: the 4-token coordinate decode in Triton (kernels/decode.py).

:func:`decode` has the signature and result of :func:`actrack_fast.decoding.decode_cached` and computes the
same thing in float32: tokens equal to the reference's, probabilities within 1e-5 relative. It packs the
decoder and vocabulary-head weights once (repacked when a parameter changes), keeps static work buffers per
shape, and only launches kernels, so a warm call can be captured in a CUDA graph. Inference only: no
gradients flow through it.

:class:`FastSeqTrackDecoder` is the drop-in module: the reference :class:`SeqTrackDecoder` (same parameters
and state-dict keys) with a ``generate`` that takes the backend that :mod:`actrack_fast.backend` selects.

On CPU the kernels run only in Triton's interpreter (``TRITON_INTERPRET=1``, set by the tests): available
when asked for explicitly, never picked by ``auto``.
"""
from __future__ import annotations

import dataclasses
import os
import threading
import weakref
from typing import Optional

import torch
from torch import nn

from . import backend
from .decoder import NUM_COORDINATES, SeqTrackDecoder
from .decoding import DecodeResult, decode_cached, tokens_to_boxes
from .validation import check_tensor

MAX_PROMPT_TOKENS = 4


def is_available(device: torch.device) -> bool:
    """A CUDA device with Triton, or the CPU under Triton's interpreter."""
    if not backend.triton_installed():
        return False
    if device.type == "cuda":
        return torch.cuda.is_available()
    return device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1"


backend.register(
    "decoder", "triton", is_available,
    "install triton (`pip install triton`) and use a CUDA GPU; on CPU set TRITON_INTERPRET=1 (interpreter, tests)",
    auto=lambda device, memory: device.type == "cuda",
)


class _Prepared:
    """Weight pack and work buffers of one (decoder, vocabulary head) pair."""

    def __init__(self) -> None:
        self.version: Optional[tuple] = None
        self.weights: Optional[torch.Tensor] = None
        self.workspaces: dict = {}


_prepared: "weakref.WeakKeyDictionary[nn.Module, _Prepared]" = weakref.WeakKeyDictionary()
_lock = threading.Lock()


# float32 copies of 16-bit parameters (a model converted to bf16 as a whole), by id of the parameter object
# (tensors compare elementwise, so they cannot be dict keys), each checked against a weak reference to that
# object and against its storage and version counter, so that a new or changed parameter never meets a stale
# copy; an entry goes with its parameter.
_float32_copies: dict[int, tuple] = {}


def _float32(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` as contiguous float32: itself when it already is, a copy kept between calls for a parameter
    (one conversion kernel fewer per decode), a fresh copy otherwise."""
    if tensor.dtype == torch.float32 and tensor.is_contiguous():
        return tensor.detach()
    if not isinstance(tensor, nn.Parameter):
        return tensor.detach().to(torch.float32).contiguous()
    state = (tensor.data_ptr(), tensor._version, tensor.dtype, tuple(tensor.shape))
    key = id(tensor)
    with _lock:
        cached = _float32_copies.get(key)
        if cached is None or cached[0]() is not tensor or cached[1] != state:
            forget = lambda _ref, key=key: _float32_copies.pop(key, None)  # noqa: E731
            cached = (weakref.ref(tensor, forget), state, tensor.detach().to(torch.float32).contiguous())
            _float32_copies[key] = cached
    return cached[2]


def _parameters(decoder: SeqTrackDecoder, vocab_embed: nn.Module) -> dict[str, torch.Tensor]:
    named = {f"decoder.{k}": v for k, v in decoder.named_parameters()}
    named.update({f"vocab_embed.{k}": v for k, v in vocab_embed.named_parameters()})
    return named


def _prepare(decoder: SeqTrackDecoder, vocab_embed: nn.Module, shape, device: torch.device) -> _Prepared:
    from kernels import decode as kernels

    with _lock:
        prepared = _prepared.setdefault(decoder, _Prepared())
    parameters = _parameters(decoder, vocab_embed)
    # In-place updates (optimiser steps, load_state_dict) bump _version; a new tensor changes data_ptr.
    version = (id(vocab_embed), device) + tuple((p.data_ptr(), p._version) for p in parameters.values())
    if prepared.version != version:
        prepared.weights = kernels.pack_weights(shape, parameters).to(device)
        prepared.version = version
    return prepared


def _decoder_shape(decoder: SeqTrackDecoder, vocab_embed: nn.Module, bins: int):
    from kernels.decode import DecoderShape

    layer = decoder.body.layers[0]
    dim = layer.linear1.in_features
    shape = DecoderShape(dim=dim, heads=decoder.num_heads, ffn=layer.linear1.out_features,
                         layers=len(decoder.body.layers), bins=bins)
    head_dim = dim // shape.heads
    if dim & (dim - 1) or head_dim & (head_dim - 1) or 16 % shape.heads or shape.ffn % 32:
        raise ValueError(f"the Triton decoder needs a power-of-two hidden size and head size, heads dividing 16 "
                         f"and an FFN size divisible by 32; got hidden {dim}, heads {shape.heads}, ffn {shape.ffn}")
    if vocab_embed.layers[-1].out_features != shape.vocab:
        raise ValueError(f"vocab_embed has {vocab_embed.layers[-1].out_features} outputs, bins={bins} needs "
                         f"{shape.vocab}")
    return shape


def decode(decoder: SeqTrackDecoder, vocab_embed: nn.Module, memory: torch.Tensor, memory_pos: torch.Tensor,
           prefix: torch.Tensor, query_pos: torch.Tensor, bins: int,
           window: Optional[torch.Tensor] = None, *, persistent: Optional[bool] = None, cross: Optional[str] = None
           ) -> DecodeResult:
    """The Triton decode, arguments and result as :func:`actrack_fast.decoding.decode_cached`.

    Args:
        memory: (B, M, d) bottlenecked search features (computed in float32).
        memory_pos: (1 or B, M, d) memory positions.
        prefix: (B, K + 1) int64 prompt tokens then the start token, K <= 4.
        query_pos: (K + 5, d) query positions (K + 4 rows are used).
        window: (bins,) Hanning window for the centre steps, or None.
        persistent: one launch for the whole decode (True) or one launch per phase (default: by batch size, see
            kernels/decode.py).
        cross: ``'cached'`` or ``'absorbed'`` cross-attention (default: by batch size, see kernels/decode.py).
    """
    shape = _decoder_shape(decoder, vocab_embed, bins)
    D = shape.dim
    check_tensor("memory", memory, (None, None, D), finite=False)
    B, M, _ = memory.shape
    device = memory.device
    check_tensor("memory_pos", memory_pos, (None, M, D), finite=False)
    if memory_pos.shape[0] not in (1, B):
        raise ValueError(f"memory_pos must have batch size 1 or {B}, got shape {tuple(memory_pos.shape)}")
    check_tensor("prefix", prefix, (B, None), floating=False)
    if prefix.dtype != torch.int64:
        raise TypeError(f"prefix must hold int64 tokens, got {prefix.dtype}")
    prompt = prefix.shape[1] - 1
    if prompt > MAX_PROMPT_TOKENS:
        raise ValueError(f"prefix must have at most {MAX_PROMPT_TOKENS} prompt tokens plus start, got shape "
                         f"{tuple(prefix.shape)}")
    check_tensor("query_pos", query_pos, (None, D), finite=False)
    if query_pos.shape[0] < prompt + NUM_COORDINATES:
        raise ValueError(f"query_pos must have at least {prompt + NUM_COORDINATES} rows, got {query_pos.shape[0]}")
    if window is not None:
        check_tensor("window", window, (bins,), finite=False)
    for name, tensor in (("memory_pos", memory_pos), ("prefix", prefix), ("query_pos", query_pos),
                         ("window", window)):
        if tensor is not None and tensor.device != device:
            raise ValueError(f"{name} is on {tensor.device}, memory on {device}")
    if not is_available(device):
        raise RuntimeError(f"the Triton decoder cannot run on {device}: needs a CUDA GPU, or TRITON_INTERPRET=1 "
                           "on CPU")
    from kernels import decode as kernels

    prepared = _prepare(decoder, vocab_embed, shape, device)
    config = kernels.default_launch_config(B, prefix.shape[1], device, persistent)
    if cross is not None:
        config = dataclasses.replace(config, cross=cross)
    key = (B, M, prefix.shape[1], config)
    workspace = prepared.workspaces.get(key)
    if workspace is None:
        workspace = kernels.DecodeWorkspace(shape, B, M, prefix.shape[1], config, device)
        prepared.workspaces[key] = workspace
    tokens, probs = kernels.decode(
        prepared.weights, shape, _float32(decoder.embedding.word_embeddings.weight), _float32(query_pos),
        _float32(memory), _float32(memory_pos), prefix.contiguous(),
        None if window is None else _float32(window), persistent=persistent, workspace=workspace, config=config)
    return DecodeResult(tokens, probs, tokens_to_boxes(tokens, bins))


class FastSeqTrackDecoder(SeqTrackDecoder):
    """:class:`SeqTrackDecoder` (same parameters, same state-dict keys, same teacher-forcing ``forward``) whose
    ``generate`` runs the backend selected for op ``"decoder"``: Triton on CUDA, the reference elsewhere."""

    @torch.no_grad()
    def generate(self, vocab_embed: nn.Module, memory: torch.Tensor, memory_pos: torch.Tensor, prefix: torch.Tensor,
                 query_pos: torch.Tensor, bins: int, window: Optional[torch.Tensor] = None,
                 requested: Optional[str] = None) -> DecodeResult:
        """Decode 4 box tokens; arguments as :func:`decode`; ``requested`` overrides the backend choice."""
        if backend.select("decoder", memory.device, requested) == "triton":
            return decode(self, vocab_embed, memory, memory_pos, prefix, query_pos, bins, window)
        return decode_cached(self, vocab_embed, memory, memory_pos, prefix, query_pos, bins, window)
