"""Inference-time coordinate decoding, two reference ways.

* :func:`decode_recompute` is SeqTrack's loop: every step re-runs the decoder over the whole prefix.
* :func:`decode_cached` computes the cross-attention K/V of the memory once per frame and appends one
  self-attention K/V entry per layer and step, so a step pushes a single token through the layers.

Both return a :class:`DecodeResult` and give identical tokens in fp32 (tested); the cached way is the
reference for the fast decoders.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .decoder import NUM_COORDINATES, SeqTrackDecoder, head_merge, head_split, in_projections

# Steps whose probabilities the Hanning window reweights: the box centre (cx, cy).
WINDOWED_STEPS = (0, 1)


@dataclass
class DecodeResult:
    """Decoded box tokens of a batch.

    tokens: (B, 4) int64 coordinate tokens (cx, cy, w, h) in [0, bins).
    probs: (B, 4) probability of each chosen token (after the window on the centre steps).
    boxes: (B, 4) (cx, cy, w, h) as fractions of the search crop side, ``tokens / (bins - 1)``.
    """

    tokens: torch.Tensor
    probs: torch.Tensor
    boxes: torch.Tensor

    @property
    def confidence(self) -> torch.Tensor:
        """SeqTrack's tracking confidence: 10 x the sum of the four token probabilities, (B,)."""
        return 10 * self.probs.sum(dim=-1)


def tokens_to_boxes(tokens: torch.Tensor, bins: int) -> torch.Tensor:
    """Coordinate tokens -> fractions of the crop side."""
    return tokens.to(torch.float32) / (bins - 1)


def boxes_to_tokens(boxes: torch.Tensor, bins: int) -> torch.Tensor:
    """Fractions of the crop side (any shape) -> nearest coordinate tokens, clamped to [0, bins)."""
    return (boxes * (bins - 1)).round().clamp(0, bins - 1).long()


def select_token(logits: torch.Tensor, step: int, bins: int, window: Optional[torch.Tensor]):
    """SeqTrack's choice at one step: softmax over the vocabulary, keep the coordinate bins, window the
    centre steps, argmax. (B, vocab) -> (probability (B,), token (B,))."""
    probs = logits.float().softmax(dim=-1)[:, :bins]
    if window is not None and step in WINDOWED_STEPS:
        probs = probs * window
    prob, token = probs.max(dim=-1)
    return prob, token


def decode_recompute(decoder: SeqTrackDecoder, vocab_embed: nn.Module, memory: torch.Tensor,
                     memory_pos: torch.Tensor, prefix: torch.Tensor, query_pos: torch.Tensor,
                     bins: int, window: Optional[torch.Tensor] = None) -> DecodeResult:
    """SeqTrack's decode: four full decoder passes over the growing sequence.

    Args:
        memory: (B, M, d) bottlenecked search features; memory_pos: (1 or B, M, d).
        prefix: (B, K + 1) prompt tokens followed by the start token.
        query_pos: (K + 5, d) query positions of prefix plus generated tokens.
        window: (bins,) Hanning window for the centre steps, or None.
    """
    sequence = prefix
    probs, tokens = [], []
    for step in range(NUM_COORDINATES):
        hidden = decoder(sequence, memory, memory_pos, query_pos[: sequence.shape[1]])
        prob, token = select_token(vocab_embed(hidden[:, -1]), step, bins, window)
        sequence = torch.cat([sequence, token[:, None]], dim=1)
        probs.append(prob)
        tokens.append(token)
    return _result(tokens, probs, bins)


def decode_cached(decoder: SeqTrackDecoder, vocab_embed: nn.Module, memory: torch.Tensor,
                  memory_pos: torch.Tensor, prefix: torch.Tensor, query_pos: torch.Tensor,
                  bins: int, window: Optional[torch.Tensor] = None) -> DecodeResult:
    """KV-cached decode with the same arguments and result as :func:`decode_recompute`."""
    heads = decoder.num_heads
    layers = decoder.body.layers
    cross_kv = []
    for layer in layers:
        _, (wk, bk), (wv, bv) = in_projections(layer.multihead_attn)
        cross_kv.append((head_split(F.linear(memory + memory_pos, wk, bk), heads),
                         head_split(F.linear(memory, wv, bv), heads)))
    self_kv: list[Optional[tuple[torch.Tensor, torch.Tensor]]] = [None] * len(layers)

    new_tokens, position = prefix, 0
    probs, tokens = [], []
    for step in range(NUM_COORDINATES):
        count = new_tokens.shape[1]
        pos = query_pos[position : position + count]
        x = decoder.embedding(new_tokens)
        for index, layer in enumerate(layers):
            x, self_kv[index] = _layer_step(layer, x, pos, self_kv[index], cross_kv[index], heads)
        prob, token = select_token(vocab_embed(decoder.body.norm(x[:, -1])), step, bins, window)
        probs.append(prob)
        tokens.append(token)
        new_tokens, position = token[:, None], position + count
    return _result(tokens, probs, bins)


def _layer_step(layer, x: torch.Tensor, pos: torch.Tensor, cache, cross_kv, heads: int):
    """One post-norm decoder layer over the ``count`` newest positions x (B, count, d), attending to
    the cached prefix. Returns the layer output and the cache with the new positions appended."""
    (wq, bq), (wk, bk), (wv, bv) = in_projections(layer.self_attn)
    q = head_split(F.linear(x + pos, wq, bq), heads)
    k = head_split(F.linear(x + pos, wk, bk), heads)
    v = head_split(F.linear(x, wv, bv), heads)
    if cache is not None:
        k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
    count, total = q.shape[2], k.shape[2]
    # Position i of the new chunk sits at total - count + i and sees every key up to itself.
    mask = None
    if count > 1:
        mask = torch.ones(count, total, dtype=torch.bool, device=x.device).tril(total - count)
    attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    x = layer.norm1(x + layer.self_attn.out_proj(head_merge(attended)))

    (wq, bq), _, _ = in_projections(layer.multihead_attn)
    q = head_split(F.linear(x + pos, wq, bq), heads)
    attended = F.scaled_dot_product_attention(q, *cross_kv)
    x = layer.norm2(x + layer.multihead_attn.out_proj(head_merge(attended)))
    return layer.feed_forward(x), (k, v)


def _result(tokens: list[torch.Tensor], probs: list[torch.Tensor], bins: int) -> DecodeResult:
    token_tensor = torch.stack(tokens, dim=1)
    return DecodeResult(token_tensor, torch.stack(probs, dim=1), tokens_to_boxes(token_tensor, bins))
