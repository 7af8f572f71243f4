"""Triton kernels for the coordinate decoder's inference loop (spec section 3).

One kernel, ``_decode_kernel``, runs the whole 4-token decode of a batch as a sequence of *phases*; a phase
is a set of independent work units spread over the programs, and every phase needs all results of the one
before it (a full row of the residual stream, for a LayerNorm). ``persistent=True`` runs every phase in
one launch with a grid-wide barrier between phases (one program per SM, all resident); otherwise each phase
is its own launch of the kernel compiled for that phase's kind alone, over one program per unit (up to a cap),
the launch boundary being the barrier. Phases are numbered from 0 (:func:`phase_count`); per step and layer:

1. self-attention: unit (row tile, head). LayerNorm of the previous layer's residual sum (or the token
   embedding), q/k/v of the head, append k/v to the cache, attend over the cached prefix, and the head's
   share of the output projection, written as a partial sum (``part``);
2. cross-attention: unit (row tile, head). Residual + partials + norm1, the head's query, attention over the
   memory keys/values, the head's share of the output projection (absorbed form: three phases, below);
3. feed-forward: unit (row tile, FFN chunk). Residual + partials + norm2, a chunk of linear1 + ReLU and its
   share of linear2.

then two vocabulary phases (units: (sample tile, hidden chunk) for the first two MLP layers, (sample tile,
vocabulary chunk) for the logits with per-chunk softmax/argmax statistics); the next step's first phase
combines those statistics into the chosen token, and one last phase picks the fourth. The output
projections are split by *input* columns, so each unit writes a partial sum that the next phase adds up
while it loads the rows for its LayerNorm: no phase waits for a reduction of its own.

Cross-attention memory. ``cross="cached"`` projects the memory once per frame, before the kernel, with a
3xTF32 Triton GEMM (:func:`project_memory`: keys from memory + memory positions, values from memory, every
layer at once into one (B, M, 2, L, D) buffer), and attends over those per head, reading the GEMM's output in
place. ``cross="absorbed"`` never
projects the memory: a head's score q·(W_k (m + p) + b_k) equals (W_kᵀ q)·(m + p) plus a per-query constant
that the softmax cancels, and its output W_v (Σ a m) + b_v; so each (sample, memory chunk) unit scores all
heads against the raw memory, and a third unit set applies W_v and the output projection. The cached form
moves less per step (B = 1 latency); the absorbed form does (heads / queries) x fewer FLOPs per frame and
re-reads one memory tensor shared by both layers instead of two layers' keys and values (large batches).
The weight pack stacks every layer's cross-attention key and value projections in one block for the GEMM
(:func:`pack_layout`). See benchmarks/NOTES.md.

Code size. Every phase is inlined into the one kernel and runs its code once per unit, so straight-line
code is fetched cold from L2 (B = 1 phases spend much of their time waiting for instruction fetches): loops
stay rolled unless the unroll buys memory-level parallelism (the partial sums of a single row), tl.dot
K-loops are pipelined two stages deep (ptxas unrolls a three-stage one), GEMV tiles multiply the weights by
a 1-D vector (a 2-D row has Triton move the whole weight tile through shared memory), below 16 rows only
the valid rows (a prefix of the tile) are computed, and GEMV-tile LayerNorms take both statistics from one
float64 reduction.

Precision: float32 throughout. Below 16 rows, matrix products are float32 broadcast-multiply-sums; from 16,
``tl.dot(..., input_precision=DOT_PRECISION)``: 3xTF32 (each operand split into a TF32 high part and a TF32
remainder, three tensor-core products, float32 accumulation), whose error measured as float32 FMA's and
cuBLAS float32's (benchmarks/NOTES.md, decode version 6); Triton's GPU default for float32 is plain TF32.
"""
from __future__ import annotations

import itertools
import math
import os
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import triton
import triton.language as tl

QMAX = 8  # rows per sample in a step (prompt + start, padded) and self-attention cache length (K + 4 <= 8)
NUM_STEPS = 4  # cx, cy, w, h
STEPS = tl.constexpr(NUM_STEPS)
SPIN_LIMIT = tl.constexpr(1 << 20)  # barrier polls (~1 s) before a program flags an error instead of hanging
DOT_PRECISION = tl.constexpr("tf32x3")  # tl.dot on float32 tiles: see the module docstring
LN_EPS = tl.constexpr(1e-5)  # nn.LayerNorm default, as in the reference decoder
CROSS_MODES = ("cached", "absorbed")
# Phase kinds, as the kernel dispatches on them (their index) and phase_names() names them.
PHASE_KINDS = ("self", "cross", "cross-query", "cross-scores", "cross-value", "ffn", "vocab-hidden", "vocab-logits",
               "select")
KIND_SELF, KIND_CROSS, KIND_CROSS_QUERY, KIND_CROSS_SCORES, KIND_CROSS_VALUE, KIND_FFN, KIND_VOCAB_HIDDEN, \
    KIND_VOCAB_LOGITS, KIND_SELECT = (tl.constexpr(i) for i in range(len(PHASE_KINDS)))


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


# ------------------------------------------------------------------------------------------------------
# Device helpers
# ------------------------------------------------------------------------------------------------------
@triton.jit
def _prefetch(w_ptr, row_stride, n_limit, N: tl.constexpr, K: tl.constexpr, ROWS: tl.constexpr,
              COL_STRIDE: tl.constexpr = 1):
    """The (N, K) weight block at ``w_ptr`` (rows >= ``n_limit`` read as zero), loaded where the caller asks
    so that its latency overlaps the work before its use. GEMV tiles (< 16 rows) only: tl.dot tiles stream
    the block in chunks (see _linear) and get a placeholder."""
    if ROWS < 16:
        outs = tl.arange(0, N)
        tile = tl.load(w_ptr + outs[:, None] * row_stride + tl.arange(0, K)[None, :] * COL_STRIDE,
                       mask=(outs < n_limit)[:, None], other=0.0)
    else:
        tile = 0.0
    return tile


@triton.jit
def _linear(x, valid, w_tile, scr_ptr, w_ptr, row_stride, n_limit, K: tl.constexpr, N: tl.constexpr,
            ROWS: tl.constexpr, KC: tl.constexpr, COL_STRIDE: tl.constexpr = 1):
    """x (ROWS, K) times the (N, K) weight block -> (ROWS, N), in float32.

    Below 16 rows (tl.dot's minimum) each row is a GEMV against the prefetched tile ``w_tile`` in its
    coalesced load layout, all in registers, one valid row after another (below 16 rows the valid rows of a
    tile are a prefix: one sample's rows, or one row per sample); the other rows come out as zeros. From 16
    rows, x goes through the program's scratch (tl.dot operands cannot be sliced in registers) and the
    block streams in KC-wide chunks."""
    rows = tl.arange(0, ROWS)
    if ROWS < 16:
        if ROWS == 1:
            # Through a 1-D vector: multiplying by the (1, K) row directly makes Triton convert the whole
            # weight tile to the row's layout (through shared memory) instead of the K-vector to the tile's.
            acc = tl.sum(w_tile * tl.reshape(x, (K,))[None, :], axis=1)[None, :]
        else:
            acc = tl.zeros((ROWS, N), dtype=tl.float32)
            for r in range(tl.sum(valid.to(tl.int32), axis=0)):
                y = tl.sum(w_tile * _row(x, r, ROWS)[None, :], axis=1)
                acc += tl.where(rows[:, None] == r, y[None, :], 0.0)
    else:
        tl.debug_barrier()  # earlier readers of the scratch are done
        _store_rows(scr_ptr, K, x, K, ROWS)
        tl.debug_barrier()
        outs = tl.arange(0, N)
        ks = tl.arange(0, KC)
        acc = tl.zeros((ROWS, N), dtype=tl.float32)
        # Rolled: unrolled, each chunk's code is fetched cold once per phase and a large block's chunks are
        # all live at once. Two stages keep the next chunk's load in flight; with three, ptxas unrolls the
        # pipelined loop again.
        for k0 in tl.range(0, K, KC, num_stages=2):
            a = tl.load(scr_ptr + rows[:, None] * K + (k0 + ks)[None, :])
            w = tl.load(w_ptr + outs[:, None] * row_stride + (k0 + ks)[None, :] * COL_STRIDE,
                        mask=(outs < n_limit)[:, None], other=0.0)
            acc += tl.dot(a, tl.trans(w), input_precision=DOT_PRECISION)
    return acc


@triton.jit
def _small_matmul(a, b, EXACT_DOT: tl.constexpr):
    """a (R, K) x b (K, N) of register tensors. Written as a broadcast-multiply-sum, Triton rewrites the
    product into tl.dot at its default (tf32) precision once every size is >= 16; so there, say which."""
    if EXACT_DOT:
        out = tl.dot(a, b, input_precision=DOT_PRECISION)
    else:
        out = tl.sum(a[:, :, None] * b[None, :, :], axis=1)
    return out


@triton.jit
def _row(x, r, ROWS: tl.constexpr):
    """Row ``r`` of a (ROWS, W) tensor as a (W,) vector (a masked sum: register tensors have no indexing)."""
    return tl.sum(tl.where(tl.arange(0, ROWS)[:, None] == r, x, 0), axis=0)


@triton.jit
def _scalar(x, r, ROWS: tl.constexpr):
    """Element ``r`` of a (ROWS,) tensor."""
    return tl.sum(tl.where(tl.arange(0, ROWS) == r, x, 0), axis=0)


@triton.jit
def _add_pairs(a0, a1, b0, b1):
    return a0 + b0, a1 + b1


@triton.jit
def _layer_norm(x, w_ptr, b_ptr, D: tl.constexpr):
    """LayerNorm of each row of x (ROWS, D). GEMV tiles (< 16 rows, latency-bound) take both statistics from
    one reduction instead of two dependent ones (each a cross-warp round trip); in float64, where var =
    E[x²] - mean² loses nothing to cancellation that matters (a float32 square is exact in float64). Larger
    tiles hold many values per thread, whose float64 conversions would cost more than the second pass."""
    cols = tl.arange(0, D)
    if x.shape[0] < 16:
        wide = x.to(tl.float64)
        total, squares = tl.reduce((wide, wide * wide), 1, _add_pairs)
        mean = total * (1.0 / D)
        var = (squares * (1.0 / D) - mean * mean).to(tl.float32)
        centred = x - mean.to(tl.float32)[:, None]
    else:
        centred = x - (tl.sum(x, axis=1) / D)[:, None]
        var = tl.sum(centred * centred, axis=1) / D
    scale = 1.0 / tl.sqrt(var + LN_EPS)
    return centred * scale[:, None] * tl.load(w_ptr + cols)[None, :] + tl.load(b_ptr + cols)[None, :]


@triton.jit
def _store_rows(ptr, stride, x, W: tl.constexpr, ROWS: tl.constexpr):
    rows = tl.arange(0, ROWS)
    tl.store(ptr + rows[:, None] * stride + tl.arange(0, W)[None, :], x)


@triton.jit
def _step_geometry(s, NPRE, QMAX: tl.constexpr):
    """Rows per sample this step (the whole prefix at step 0, one token after), their padded count and the
    position of the first one."""
    first = (s == 0).to(tl.int32)
    nq = 1 + first * (NPRE - 1)
    nqp = 1 + (nq > 1).to(tl.int32) * (QMAX - 1)
    pos0 = (1 - first) * (NPRE + s - 1)
    return nq, nqp, pos0


@triton.jit
def _tile_rows(tile, B, nq, nqp, q_base, ROWS: tl.constexpr):
    """Sample, row-in-step and validity of the ROWS rows of ``tile``: whole samples of ``nqp`` rows each."""
    r = tl.arange(0, ROWS)
    b = tile * (ROWS // nqp) + r // nqp
    q = r % nqp
    valid = (b < B) & (q < nq)
    return b.to(tl.int64), q + q_base, valid


@triton.jit
def _row_offsets(b, q, QMAX: tl.constexpr):
    return b * QMAX + q


@triton.jit
def _sum_parts(part_ptr, row, valid, NPARTS: tl.constexpr, NPART: tl.constexpr, D: tl.constexpr):
    """Sum of the NPARTS partial results the previous phase wrote for each row: (ROWS, D)."""
    cols = tl.arange(0, D)
    if row.shape[0] == 1:
        # One load and one add per part (the part's offset is an immediate), all loads in flight at once.
        x = tl.load(part_ptr + (row * NPART)[:, None] * D + cols[None, :], mask=valid[:, None], other=0.0,
                    cache_modifier=".cg")
        for j in tl.static_range(1, NPARTS):
            x += tl.load(part_ptr + (row * NPART + j)[:, None] * D + cols[None, :], mask=valid[:, None],
                         other=0.0, cache_modifier=".cg")
    else:
        # Several registers per thread per part: unrolled over every part, the code grows with the row
        # count; PU parts per iteration keep PU x ROWS x D / threads loads in flight.
        PU: tl.constexpr = min(4, NPARTS)
        x = tl.zeros((row.shape[0], D), tl.float32)
        for j0 in tl.range(0, NPARTS, PU, num_stages=1):
            for j in tl.static_range(PU):
                x += tl.load(part_ptr + (row * NPART + j0 + j)[:, None] * D + cols[None, :],
                             mask=(valid & (j0 + j < NPARTS))[:, None], other=0.0, cache_modifier=".cg")
    return x


@triton.jit
def _gather_residual(act_ptr, bias_ptr, part_ptr, row, valid, NPARTS: tl.constexpr, NPART: tl.constexpr,
                     D: tl.constexpr):
    """residual + bias + the NPARTS partial sums of the previous phase, for each row: (ROWS, D)."""
    cols = tl.arange(0, D)
    x = tl.load(act_ptr + row[:, None] * D + cols[None, :], mask=valid[:, None], other=0.0, cache_modifier=".cg")
    return x + tl.load(bias_ptr + cols)[None, :] + _sum_parts(part_ptr, row, valid, NPARTS, NPART, D)


@triton.jit
def _select_token(stats_ptr, b, valid, NVC, NVC_P2: tl.constexpr):
    """Combine the per-chunk softmax statistics of each row's sample: (token, probability).

    Chunk c holds (max logit m_c, sum of exp(logit - m_c), best windowed exp(logit - m_c), its index); the
    chosen probability is best_c exp(m_c - g) / sum_c s_c exp(m_c - g) with g the global max."""
    c = tl.arange(0, NVC_P2)
    mask = valid[:, None] & (c < NVC)[None, :]
    base = stats_ptr + (b[:, None] * NVC_P2 + c[None, :]) * 4
    top = tl.load(base, mask=mask, other=-1e30, cache_modifier=".cg")
    total = tl.load(base + 1, mask=mask, other=0.0, cache_modifier=".cg")
    best = tl.load(base + 2, mask=mask, other=0.0, cache_modifier=".cg")
    index = tl.load(base + 3, mask=mask, other=0.0, cache_modifier=".cg")
    g = tl.max(top, axis=1)
    scale = tl.where(mask, tl.exp(top - g[:, None]), 0.0)
    denominator = tl.sum(total * scale, axis=1)
    candidate = tl.where(mask, best * scale, -1.0)
    winner = tl.argmax(candidate, axis=1)
    chosen = c[None, :] == winner[:, None]
    token = tl.sum(tl.where(chosen, index, 0.0), axis=1).to(tl.int64)
    prob = tl.max(candidate, axis=1) / tl.where(valid, denominator, 1.0)
    return token, prob


@triton.jit
def _phase_kind(p, L: tl.constexpr, PER_LAYER: tl.constexpr, CROSS_ABSORBED: tl.constexpr):
    """Index into PHASE_KINDS of phase ``p`` (the order of phase_names())."""
    PER_STEP: tl.constexpr = PER_LAYER * L + 2
    k = p % PER_STEP
    j = k % PER_LAYER
    kind = j
    if CROSS_ABSORBED:  # self, cross-query, cross-scores, cross-value
        kind = tl.where(j == 0, j, j + 1)
    kind = tl.where(j == PER_LAYER - 1, KIND_FFN, kind)
    kind = tl.where(k == PER_LAYER * L, KIND_VOCAB_HIDDEN, kind)
    kind = tl.where(k == PER_LAYER * L + 1, KIND_VOCAB_LOGITS, kind)
    return tl.where(p == STEPS * PER_STEP, KIND_SELECT, kind)


@triton.jit
def _global_time():
    """The GPU's global nanosecond timer (comparable across SMs), read after every warp got here."""
    tl.debug_barrier()
    return tl.inline_asm_elementwise("mov.u64 $0, %globaltimer;", "=l", [], dtype=tl.int64, is_pure=False, pack=1)


@triton.jit
def _grid_barrier(sync_ptr, target):
    """Wait until every program has arrived ``target // num_programs`` times (counter never reset mid-run)."""
    tl.debug_barrier()  # every thread's global writes are issued before the release below
    tl.atomic_add(sync_ptr, 1, sem="release", scope="gpu")
    seen = tl.atomic_add(sync_ptr, 0, sem="acquire", scope="gpu")
    polls = seen * 0
    while (seen < target) & (polls < SPIN_LIMIT):
        seen = tl.atomic_add(sync_ptr, 0, sem="acquire", scope="gpu")
        polls += 1
    if seen < target:
        tl.atomic_xchg(sync_ptr + 2, 1)  # error flag: a program never arrived (not all resident?)
    tl.debug_barrier()


@triton.jit
def _mark_invalid(tokens_ptr, probs_ptr, B):
    """Token -1 and probability NaN for every sample and step."""
    BLOCK: tl.constexpr = 256
    for start in range(0, B * STEPS, BLOCK):
        i = start + tl.arange(0, BLOCK)
        tl.store(tokens_ptr + i, tl.full((BLOCK,), -1, tl.int64), mask=i < B * STEPS)
        tl.store(probs_ptr + i, tl.full((BLOCK,), float("nan"), tl.float32), mask=i < B * STEPS)


# ------------------------------------------------------------------------------------------------------
# Phases
# ------------------------------------------------------------------------------------------------------
@triton.jit
def _self_attention_phase(pid, nprog, s, layer, B, NPRE, prefix_ptr, emb_ptr, qpos_ptr, stats_ptr, NVC,
                          tokens_ptr, probs_ptr, lw_ptr, prev_lw_ptr, gw_ptr, act_ptr, part_in, part_out,
                          kv_self_ptr, scr_ptr,
                          LO_SELF_W: tl.constexpr, LO_SELF_B: tl.constexpr, LO_SELF_OUT_W: tl.constexpr,
                          LO_LIN2_B: tl.constexpr, LO_NORM3_W: tl.constexpr, GO_EMB_NORM_W: tl.constexpr,
                          L: tl.constexpr, D: tl.constexpr, H: tl.constexpr, F: tl.constexpr, FC: tl.constexpr,
                          NPART: tl.constexpr, NVC_P2: tl.constexpr, ROWS: tl.constexpr, QMAX: tl.constexpr,
                          KC_HEAD: tl.constexpr, KC_OUT: tl.constexpr):
    """Unit (row tile, head): the layer input (token embedding, or norm3 of the previous layer's residual
    sum), the head's q/k/v, attention over the earlier steps' cached keys/values and this step's rows, the
    head's share of the output projection; k/v appended to the cache for later steps."""
    DH: tl.constexpr = D // H
    cols = tl.arange(0, D)
    dcols = tl.arange(0, DH)
    t = tl.arange(0, QMAX)
    nq, nqp, pos0 = _step_geometry(s, NPRE, QMAX)
    n_tiles = tl.cdiv(B, ROWS // nqp)
    for u in range(pid, n_tiles * H, nprog):
        tile = u // H
        h = u % H
        w_qkv = lw_ptr + LO_SELF_W + h * DH * D
        w_out = lw_ptr + LO_SELF_OUT_W + h * DH
        wq = _prefetch(w_qkv, D, DH, DH, D, ROWS)
        wk = _prefetch(w_qkv + D * D, D, DH, DH, D, ROWS)
        wv = _prefetch(w_qkv + 2 * D * D, D, DH, DH, D, ROWS)
        b, q, valid = _tile_rows(tile, B, nq, nqp, 0, ROWS)
        row = _row_offsets(b, q, QMAX)
        pos = pos0 + q
        # Keys/values of earlier steps (positions < pos0) do not depend on this phase: load them first.
        cache = kv_self_ptr + ((layer * 2 * B + b) * H + h) * QMAX * DH  # (ROWS,) this head's key cache
        earlier = valid[:, None] & (t[None, :] < pos0)
        cached = (cache[:, None] + t[None, :] * DH)[:, :, None] + dcols[None, None, :]
        keys = tl.load(cached, mask=earlier[:, :, None], other=0.0, cache_modifier=".cg")
        values = tl.load(cached + B * H * QMAX * DH, mask=earlier[:, :, None], other=0.0, cache_modifier=".cg")
        if layer == 0:
            if s == 0:
                token = tl.load(prefix_ptr + b * NPRE + q, mask=valid, other=0)
            else:
                token, prob = _select_token(stats_ptr, b, valid, NVC, NVC_P2)
                if h == 0:
                    tl.store(tokens_ptr + b * 4 + s - 1, token, mask=valid)
                    tl.store(probs_ptr + b * 4 + s - 1, prob, mask=valid)
            x = tl.load(emb_ptr + token[:, None] * D + cols[None, :], mask=valid[:, None], other=0.0)
            x = _layer_norm(x, gw_ptr + GO_EMB_NORM_W, gw_ptr + GO_EMB_NORM_W + D, D)
        else:
            x = _gather_residual(act_ptr + 2 * B * QMAX * D, prev_lw_ptr + LO_LIN2_B, part_in, row, valid,
                                 F // FC, NPART, D)
            x = _layer_norm(x, prev_lw_ptr + LO_NORM3_W, prev_lw_ptr + LO_NORM3_W + D, D)
        if h == 0:
            tl.store(act_ptr + row[:, None] * D + cols[None, :], x, mask=valid[:, None])
        xq = x + tl.load(qpos_ptr + pos[:, None] * D + cols[None, :], mask=valid[:, None], other=0.0)
        bias = lw_ptr + LO_SELF_B + h * DH + dcols
        qh = _linear(xq, valid, wq, scr_ptr, w_qkv, D, DH, D, DH, ROWS, KC_HEAD) + tl.load(bias)[None, :]
        kh = _linear(xq, valid, wk, scr_ptr, w_qkv + D * D, D, DH, D, DH, ROWS, KC_HEAD) + tl.load(bias + D)[None, :]
        vh = _linear(x, valid, wv, scr_ptr, w_qkv + 2 * D * D, D, DH, D, DH, ROWS, KC_HEAD) \
            + tl.load(bias + 2 * D)[None, :]
        wo = _prefetch(w_out, D, D, D, DH, ROWS)
        tl.store((cache + pos * DH)[:, None] + dcols[None, :], kh, mask=valid[:, None])
        tl.store((cache + B * H * QMAX * DH + pos * DH)[:, None] + dcols[None, :], vh, mask=valid[:, None])
        # Scores against the cache and against this step's rows of the same sample (causal); a padded row
        # sees itself so that its softmax stays finite.
        scale = 1.0 / math.sqrt(DH)
        cached_scores = tl.where(earlier, tl.sum(qh[:, None, :] * keys, axis=2) * scale, -float("inf"))
        r = tl.arange(0, ROWS)
        visible = ((b[:, None] == b[None, :]) & (q[None, :] <= q[:, None]) & valid[None, :]) | (r[:, None] == r[None, :])
        own_scores = tl.where(visible, _small_matmul(qh, tl.trans(kh), ROWS >= 16) * scale, -float("inf"))
        top = tl.maximum(tl.max(cached_scores, axis=1), tl.max(own_scores, axis=1))
        p_cached = tl.exp(cached_scores - top[:, None])
        p_own = tl.exp(own_scores - top[:, None])
        total = tl.sum(p_cached, axis=1) + tl.sum(p_own, axis=1)
        attended = (tl.sum(p_cached[:, :, None] * values, axis=1) + _small_matmul(p_own, vh, ROWS >= 16)) / total[:, None]
        out = _linear(attended, valid, wo, scr_ptr, w_out, D, D, DH, D, ROWS, KC_OUT)
        tl.store(part_out + (row * NPART + h)[:, None] * D + cols[None, :], out, mask=valid[:, None])


@triton.jit
def _cross_norm_query(tile, h, wq, B, nq, nqp, pos0, qpos_ptr, lw_ptr, act_ptr, part_in, scr_ptr,
                      LO_SELF_OUT_B: tl.constexpr, LO_CROSS_W: tl.constexpr, LO_CROSS_B: tl.constexpr,
                      LO_NORM1_W: tl.constexpr, D: tl.constexpr, H: tl.constexpr, NPART: tl.constexpr,
                      ROWS: tl.constexpr, QMAX: tl.constexpr, KC_HEAD: tl.constexpr):
    """Shared start of the cross-attention units: x1 = norm1(x + self-attention), stored by head 0, and the
    head's scaled query (ROWS, DH) from the prefetched query weights ``wq``."""
    DH: tl.constexpr = D // H
    cols = tl.arange(0, D)
    b, q, valid = _tile_rows(tile, B, nq, nqp, 0, ROWS)
    row = _row_offsets(b, q, QMAX)
    x = _gather_residual(act_ptr, lw_ptr + LO_SELF_OUT_B, part_in, row, valid, H, NPART, D)
    x = _layer_norm(x, lw_ptr + LO_NORM1_W, lw_ptr + LO_NORM1_W + D, D)
    if h == 0:
        tl.store(act_ptr + B * QMAX * D + row[:, None] * D + cols[None, :], x, mask=valid[:, None])
    xq = x + tl.load(qpos_ptr + (pos0 + q)[:, None] * D + cols[None, :], mask=valid[:, None], other=0.0)
    bias = tl.load(lw_ptr + LO_CROSS_B + h * DH + tl.arange(0, DH))
    qh = _linear(xq, valid, wq, scr_ptr, lw_ptr + LO_CROSS_W + h * DH * D, D, DH, D, DH, ROWS, KC_HEAD) + bias[None, :]
    return qh * (1.0 / math.sqrt(DH)), b, row, valid


@triton.jit
def _cross_attention_cached_phase(pid, nprog, s, layer, B, M, NPRE, qpos_ptr, lw_ptr, act_ptr, part_in,
                                  part_out, kv_cross_ptr, scr_ptr,
                                  LO_SELF_OUT_B: tl.constexpr, LO_CROSS_W: tl.constexpr,
                                  LO_CROSS_B: tl.constexpr, LO_CROSS_OUT_W: tl.constexpr,
                                  LO_NORM1_W: tl.constexpr, L: tl.constexpr, D: tl.constexpr, H: tl.constexpr,
                                  NPART: tl.constexpr, ROWS: tl.constexpr, QMAX: tl.constexpr, MC: tl.constexpr,
                                  KC_HEAD: tl.constexpr, KC_OUT: tl.constexpr):
    """Unit (row tile, head): query, online-softmax attention over the projected memory (keys of memory token
    m: kv_cross[b, m, 0, layer, head columns], values at [b, m, 1, layer, ...], as :func:`project_memory`
    writes them), the head's share of the output projection."""
    DH: tl.constexpr = D // H
    cols = tl.arange(0, D)
    dcols = tl.arange(0, DH)
    mc = tl.arange(0, MC)
    nq, nqp, pos0 = _step_geometry(s, NPRE, QMAX)
    n_tiles = tl.cdiv(B, ROWS // nqp)
    for u in range(pid, n_tiles * H, nprog):
        tile = u // H
        h = u % H
        w_out = lw_ptr + LO_CROSS_OUT_W + h * DH
        wq = _prefetch(lw_ptr + LO_CROSS_W + h * DH * D, D, DH, DH, D, ROWS)
        wo = _prefetch(w_out, D, D, D, DH, ROWS)
        qh, b, row, valid = _cross_norm_query(tile, h, wq, B, nq, nqp, pos0, qpos_ptr, lw_ptr, act_ptr, part_in,
                                              scr_ptr, LO_SELF_OUT_B, LO_CROSS_W, LO_CROSS_B, LO_NORM1_W, D, H,
                                              NPART, ROWS, QMAX, KC_HEAD)
        attended = tl.zeros((ROWS, DH), tl.float32)
        if ROWS < 16:  # the valid rows are a prefix of the tile (see _linear)
            n_rows = tl.sum(valid.to(tl.int32), axis=0)
        else:
            n_rows = ROWS
        for r in range(n_rows):
            q_r = _row(qh, r, ROWS)
            # Computed from the row's sample after the row is picked out, so that Triton sees a multiple of DH
            # and loads 16-byte vectors (an offset picked out of a (ROWS,) tensor loads one float at a time).
            first = (_scalar(b, r, ROWS) * M * 2 * L + layer) * D + h * DH
            key_rows = kv_cross_ptr + first + mc[:, None] * (2 * L * D) + dcols[None, :]
            row_valid = _scalar(valid.to(tl.int32), r, ROWS) != 0
            running_max = -float("inf")
            running_sum = 0.0
            acc = tl.zeros((DH,), tl.float32)
            for m0 in range(0, M, MC):
                inside = (m0 + mc < M) & row_valid
                # Plain loads: project_memory wrote these before the launch (.cg is for this launch's own writes).
                keys = tl.load(key_rows + m0 * (2 * L * D), mask=inside[:, None], other=0.0)
                values = tl.load(key_rows + m0 * (2 * L * D) + L * D, mask=inside[:, None], other=0.0)
                scores = tl.where(m0 + mc < M, tl.sum(keys * q_r[None, :], axis=1), -float("inf"))
                new_max = tl.maximum(running_max, tl.max(scores, axis=0))
                correction = tl.exp(running_max - new_max)
                p = tl.exp(scores - new_max)
                running_sum = running_sum * correction + tl.sum(p, axis=0)
                acc = acc * correction + tl.sum(values * p[:, None], axis=0)
                running_max = new_max
            attended += tl.where(tl.arange(0, ROWS)[:, None] == r, (acc / running_sum)[None, :], 0.0)
        out = _linear(attended, valid, wo, scr_ptr, w_out, D, D, DH, D, ROWS, KC_OUT)
        tl.store(part_out + (row * NPART + h)[:, None] * D + cols[None, :], out, mask=valid[:, None])


@triton.jit
def _cross_query_absorbed_phase(pid, nprog, s, B, NPRE, qpos_ptr, lw_ptr, key_w_ptr, act_ptr, part_in, qt_ptr,
                                scr_ptr,
                                LO_SELF_OUT_B: tl.constexpr, LO_CROSS_W: tl.constexpr, LO_CROSS_B: tl.constexpr,
                                LO_NORM1_W: tl.constexpr, D: tl.constexpr, H: tl.constexpr, NPART: tl.constexpr,
                                ROWS: tl.constexpr, QMAX: tl.constexpr, KC_HEAD: tl.constexpr,
                                KC_KEYT: tl.constexpr):
    """Unit (row tile, head): the head's query folded through its key projection (``key_w_ptr``: the layer's
    W_k), W_k,hᵀ q_h (ROWS, D), written to qt[b, q, h]; the key bias only shifts every score of a query and
    cancels in the softmax."""
    DH: tl.constexpr = D // H
    cols = tl.arange(0, D)
    nq, nqp, pos0 = _step_geometry(s, NPRE, QMAX)
    n_tiles = tl.cdiv(B, ROWS // nqp)
    for u in range(pid, n_tiles * H, nprog):
        tile = u // H
        h = u % H
        key_rows = key_w_ptr + h * DH * D  # W_k,h: (DH, D), used transposed as (D, DH)
        wq = _prefetch(lw_ptr + LO_CROSS_W + h * DH * D, D, DH, DH, D, ROWS)
        wkt = _prefetch(key_rows, 1, D, D, DH, ROWS, D)
        qh, b, row, valid = _cross_norm_query(tile, h, wq, B, nq, nqp, pos0, qpos_ptr, lw_ptr, act_ptr, part_in,
                                              scr_ptr, LO_SELF_OUT_B, LO_CROSS_W, LO_CROSS_B, LO_NORM1_W, D, H,
                                              NPART, ROWS, QMAX, KC_HEAD)
        folded = _linear(qh, valid, wkt, scr_ptr, key_rows, 1, D, DH, D, ROWS, KC_KEYT, D)
        tl.store(qt_ptr + (row * H + h)[:, None] * D + cols[None, :], folded, mask=valid[:, None])


@triton.jit
def _cross_scores_absorbed_phase(pid, nprog, s, B, M, NPRE, mem_ptr, mpos_ptr, mpos_bstride, qt_ptr, ctx_ptr,
                                 cstats_ptr, D: tl.constexpr, H: tl.constexpr, QMAX: tl.constexpr,
                                 MCH: tl.constexpr):
    """Unit (sample, memory chunk): every head's scores against (memory + positions) of the chunk, their
    chunk-local softmax statistics (max, sum) and the chunk's exp-weighted sum of raw memory rows (H, D).
    Rows are (query, head) pairs, 16 at a time so that tl.dot applies."""
    QB: tl.constexpr = 16 // H  # queries per 16-row block
    DC: tl.constexpr = 32  # reduction chunk of the scores: an FMA dot keeps whole K-rows in registers
    cols = tl.arange(0, D)
    dcols = tl.arange(0, DC)
    r = tl.arange(0, 16)
    mrows = tl.arange(0, MCH)
    nq, nqp, pos0 = _step_geometry(s, NPRE, QMAX)
    n_chunks = tl.cdiv(M, MCH)
    for u in range(pid, B * n_chunks, nprog):
        b = (u // n_chunks).to(tl.int64)
        c = u % n_chunks
        m = c * MCH + mrows
        in_memory = m < M
        memory_rows = mem_ptr + (b * M + m)[:, None] * D
        position_rows = mpos_ptr + b * mpos_bstride + m[:, None] * D
        for q0 in range(0, nq, QB):
            q = q0 + r // H
            h = r % H
            valid = q < nq
            qrow = (b * QMAX + q) * H + h
            scores = tl.zeros((16, MCH), tl.float32)
            for d0 in tl.range(0, D, DC, num_stages=2):  # three stages: ptxas unrolls it
                folded = tl.load(qt_ptr + qrow[:, None] * D + (d0 + dcols)[None, :], mask=valid[:, None], other=0.0,
                                 cache_modifier=".cg")
                keys = tl.load(memory_rows + d0 + dcols[None, :], mask=in_memory[:, None], other=0.0) \
                    + tl.load(position_rows + d0 + dcols[None, :], mask=in_memory[:, None], other=0.0)
                scores += tl.dot(folded, tl.trans(keys), input_precision=DOT_PRECISION)
            scores = tl.where(in_memory[None, :], scores, -float("inf"))
            top = tl.max(scores, axis=1)
            p = tl.exp(scores - top[:, None])
            memory = tl.load(memory_rows + cols[None, :], mask=in_memory[:, None], other=0.0)
            attended = tl.dot(p, memory, input_precision=DOT_PRECISION)
            slot = ((b * n_chunks + c) * QMAX + q) * H + h
            tl.store(ctx_ptr + slot[:, None] * D + cols[None, :], attended, mask=valid[:, None])
            tl.store(cstats_ptr + slot * 2, top, mask=valid)
            tl.store(cstats_ptr + slot * 2 + 1, tl.sum(p, axis=1), mask=valid)


@triton.jit
def _cross_value_absorbed_phase(pid, nprog, s, B, M, NPRE, lw_ptr, value_w_ptr, value_b_ptr, part_out, ctx_ptr,
                                cstats_ptr, scr_ptr, LO_CROSS_OUT_W: tl.constexpr,
                                D: tl.constexpr, H: tl.constexpr, NPART: tl.constexpr, ROWS: tl.constexpr,
                                QMAX: tl.constexpr, MCH: tl.constexpr, KC_HEAD: tl.constexpr,
                                KC_OUT: tl.constexpr):
    """Unit (row tile, head): merge the chunks' softmax-weighted memory sums, apply W_v,h (+ b_v,h: the
    weights sum to one; ``value_w_ptr``, ``value_b_ptr``: the layer's W_v and b_v) and the head's share of the
    output projection."""
    DH: tl.constexpr = D // H
    cols = tl.arange(0, D)
    nq, nqp, pos0 = _step_geometry(s, NPRE, QMAX)
    n_tiles = tl.cdiv(B, ROWS // nqp)
    n_chunks = tl.cdiv(M, MCH)
    for u in range(pid, n_tiles * H, nprog):
        tile = u // H
        h = u % H
        w_value = value_w_ptr + h * DH * D
        w_out = lw_ptr + LO_CROSS_OUT_W + h * DH
        wv = _prefetch(w_value, D, DH, DH, D, ROWS)
        wo = _prefetch(w_out, D, D, D, DH, ROWS)
        b, q, valid = _tile_rows(tile, B, nq, nqp, 0, ROWS)
        row = _row_offsets(b, q, QMAX)
        top = tl.full((ROWS,), -1e30, tl.float32)
        total = tl.zeros((ROWS,), tl.float32)
        acc = tl.zeros((ROWS, D), tl.float32)
        for c in range(0, n_chunks):
            slot = ((b * n_chunks + c) * QMAX + q) * H + h
            chunk_top = tl.load(cstats_ptr + slot * 2, mask=valid, other=-1e30, cache_modifier=".cg")
            chunk_total = tl.load(cstats_ptr + slot * 2 + 1, mask=valid, other=0.0, cache_modifier=".cg")
            chunk_acc = tl.load(ctx_ptr + slot[:, None] * D + cols[None, :], mask=valid[:, None], other=0.0,
                                cache_modifier=".cg")
            new_top = tl.maximum(top, chunk_top)
            old_scale = tl.exp(top - new_top)
            chunk_scale = tl.exp(chunk_top - new_top)
            total = total * old_scale + chunk_total * chunk_scale
            acc = acc * old_scale[:, None] + chunk_acc * chunk_scale[:, None]
            top = new_top
        context = acc / tl.where(valid, total, 1.0)[:, None]
        bias = tl.load(value_b_ptr + h * DH + tl.arange(0, DH))
        value = _linear(context, valid, wv, scr_ptr, w_value, D, DH, D, DH, ROWS, KC_HEAD) + bias[None, :]
        out = _linear(value, valid, wo, scr_ptr, w_out, D, D, DH, D, ROWS, KC_OUT)
        tl.store(part_out + (row * NPART + h)[:, None] * D + cols[None, :], out, mask=valid[:, None])


@triton.jit
def _feed_forward_phase(pid, nprog, s, B, NPRE, lw_ptr, act_ptr, part_in, part_out, scr_ptr,
                        LO_CROSS_OUT_B: tl.constexpr, LO_LIN1_W: tl.constexpr, LO_LIN1_B: tl.constexpr,
                        LO_LIN2_W: tl.constexpr, LO_NORM2_W: tl.constexpr, D: tl.constexpr, H: tl.constexpr,
                        F: tl.constexpr, FC: tl.constexpr, NPART: tl.constexpr, ROWS: tl.constexpr,
                        QMAX: tl.constexpr, KC_FFN1: tl.constexpr, KC_FFN2: tl.constexpr):
    """Unit (row tile, FFN chunk): x2 = norm2(x1 + cross-attention) (stored by chunk 0), a chunk of
    ReLU(linear1) and its share of linear2."""
    cols = tl.arange(0, D)
    nq, nqp, pos0 = _step_geometry(s, NPRE, QMAX)
    n_tiles = tl.cdiv(B, ROWS // nqp)
    n_chunks: tl.constexpr = F // FC
    act_stride = B * QMAX * D
    for u in range(pid, n_tiles * n_chunks, nprog):
        tile = u // n_chunks
        c = u % n_chunks
        w_in = lw_ptr + LO_LIN1_W + c * FC * D
        w_out = lw_ptr + LO_LIN2_W + c * FC
        w1 = _prefetch(w_in, D, FC, FC, D, ROWS)
        w2 = _prefetch(w_out, F, D, D, FC, ROWS)
        b, q, valid = _tile_rows(tile, B, nq, nqp, 0, ROWS)
        row = _row_offsets(b, q, QMAX)
        x = _gather_residual(act_ptr + act_stride, lw_ptr + LO_CROSS_OUT_B, part_in, row, valid, H, NPART, D)
        x = _layer_norm(x, lw_ptr + LO_NORM2_W, lw_ptr + LO_NORM2_W + D, D)
        if c == 0:
            tl.store(act_ptr + 2 * act_stride + row[:, None] * D + cols[None, :], x, mask=valid[:, None])
        bias = tl.load(lw_ptr + LO_LIN1_B + c * FC + tl.arange(0, FC))
        hidden = tl.maximum(_linear(x, valid, w1, scr_ptr, w_in, D, FC, D, FC, ROWS, KC_FFN1) + bias[None, :], 0.0)
        out = _linear(hidden, valid, w2, scr_ptr, w_out, F, D, FC, D, ROWS, KC_FFN2)
        tl.store(part_out + (row * NPART + c)[:, None] * D + cols[None, :], out, mask=valid[:, None])


@triton.jit
def _vocab_hidden_phase(pid, nprog, s, B, NPRE, last_lw_ptr, gw_ptr, act_ptr, part_in, part_out, scr_ptr,
                        LO_LIN2_B: tl.constexpr, LO_NORM3_W: tl.constexpr, GO_FINAL_NORM_W: tl.constexpr,
                        GO_VOCAB0_W: tl.constexpr, GO_VOCAB0_B: tl.constexpr, GO_VOCAB1_W: tl.constexpr,
                        D: tl.constexpr, F: tl.constexpr, FC: tl.constexpr, HC: tl.constexpr,
                        NPART: tl.constexpr, ROWS: tl.constexpr, QMAX: tl.constexpr,
                        KC_V0: tl.constexpr, KC_V1: tl.constexpr):
    """Unit (sample tile, hidden chunk): the last row of each sample through norm3, the final norm, a chunk
    of ReLU(vocab layer 0) and its share of vocab layer 1."""
    cols = tl.arange(0, D)
    nq, nqp, pos0 = _step_geometry(s, NPRE, QMAX)
    n_tiles = tl.cdiv(B, ROWS)
    n_chunks: tl.constexpr = D // HC
    act_stride = B * QMAX * D
    for u in range(pid, n_tiles * n_chunks, nprog):
        tile = u // n_chunks
        c = u % n_chunks
        w_in = gw_ptr + GO_VOCAB0_W + c * HC * D
        w_out = gw_ptr + GO_VOCAB1_W + c * HC
        w0 = _prefetch(w_in, D, HC, HC, D, ROWS)
        w1 = _prefetch(w_out, D, D, D, HC, ROWS)
        b, q, valid = _tile_rows(tile, B, 1, 1, nq - 1, ROWS)
        row = _row_offsets(b, q, QMAX)
        x = _gather_residual(act_ptr + 2 * act_stride, last_lw_ptr + LO_LIN2_B, part_in, row, valid, F // FC,
                             NPART, D)
        x = _layer_norm(x, last_lw_ptr + LO_NORM3_W, last_lw_ptr + LO_NORM3_W + D, D)
        x = _layer_norm(x, gw_ptr + GO_FINAL_NORM_W, gw_ptr + GO_FINAL_NORM_W + D, D)
        bias = tl.load(gw_ptr + GO_VOCAB0_B + c * HC + tl.arange(0, HC))
        hidden = tl.maximum(_linear(x, valid, w0, scr_ptr, w_in, D, HC, D, HC, ROWS, KC_V0) + bias[None, :], 0.0)
        out = _linear(hidden, valid, w1, scr_ptr, w_out, D, D, HC, D, ROWS, KC_V1)
        tl.store(part_out + (row * NPART + c)[:, None] * D + cols[None, :], out, mask=valid[:, None])


@triton.jit
def _vocab_logits_phase(pid, nprog, s, B, NPRE, gw_ptr, window_ptr, use_window, store_logits, logits_ptr,
                        part_in, stats_ptr, NVC, scr_ptr,
                        GO_VOCAB1_B: tl.constexpr, GO_VOCAB2_W: tl.constexpr, GO_VOCAB2_B: tl.constexpr,
                        D: tl.constexpr, V: tl.constexpr, BINS: tl.constexpr, HC: tl.constexpr,
                        VC: tl.constexpr, NPART: tl.constexpr, NVC_P2: tl.constexpr, ROWS: tl.constexpr,
                        QMAX: tl.constexpr, KC_V2: tl.constexpr):
    """Unit (sample tile, vocabulary chunk): logits of the chunk and their softmax/argmax statistics
    (max, sum of exp, best windowed exp and its token); the window weights steps 0 and 1 if enabled."""
    cols = tl.arange(0, D)
    nq, nqp, pos0 = _step_geometry(s, NPRE, QMAX)
    n_tiles = tl.cdiv(B, ROWS)
    windowed = (use_window != 0) & (s < 2)
    for u in range(pid, n_tiles * NVC, nprog):
        tile = u // NVC
        c = u % NVC
        w_logits = gw_ptr + GO_VOCAB2_W + c * VC * D
        w2 = _prefetch(w_logits, D, V - c * VC, VC, D, ROWS)
        b, q, valid = _tile_rows(tile, B, 1, 1, nq - 1, ROWS)
        row = _row_offsets(b, q, QMAX)
        hidden = _sum_parts(part_in, row, valid, D // HC, NPART, D) + tl.load(gw_ptr + GO_VOCAB1_B + cols)[None, :]
        token = c * VC + tl.arange(0, VC)
        in_vocab = token < V
        logits = _linear(tl.maximum(hidden, 0.0), valid, w2, scr_ptr, w_logits, D, V - c * VC, D, VC, ROWS, KC_V2)
        logits += tl.load(gw_ptr + GO_VOCAB2_B + token, mask=in_vocab, other=0.0)[None, :]
        if store_logits != 0:
            tl.store(logits_ptr + (b * 4 + s)[:, None] * V + token[None, :], logits,
                     mask=valid[:, None] & in_vocab[None, :])
        logits = tl.where(in_vocab[None, :], logits, -float("inf"))
        top = tl.max(logits, axis=1)
        e = tl.exp(logits - top[:, None])
        weight = tl.load(window_ptr + token, mask=(token < BINS) & windowed, other=1.0)
        candidate = tl.where((token < BINS)[None, :], e * weight[None, :], -1.0)
        best = tl.argmax(candidate, axis=1)
        stat = stats_ptr + (b * NVC_P2 + c) * 4
        tl.store(stat, top, mask=valid)
        tl.store(stat + 1, tl.sum(e, axis=1), mask=valid)
        tl.store(stat + 2, tl.max(candidate, axis=1), mask=valid)
        tl.store(stat + 3, (c * VC + best).to(tl.float32), mask=valid)


@triton.jit
def _final_select_phase(pid, nprog, B, stats_ptr, NVC, tokens_ptr, probs_ptr, NVC_P2: tl.constexpr,
                        ROWS: tl.constexpr):
    for tile in range(pid, tl.cdiv(B, ROWS), nprog):
        b = (tile * ROWS + tl.arange(0, ROWS)).to(tl.int64)
        valid = b < B
        token, prob = _select_token(stats_ptr, b, valid, NVC, NVC_P2)
        tl.store(tokens_ptr + b * 4 + 3, token, mask=valid)
        tl.store(probs_ptr + b * 4 + 3, prob, mask=valid)


# Runtime sizes and phase bounds stay plain integers: specialising on them (== 1, divisible by 16) would
# compile a new kernel per batch size and per phase launch.
@triton.jit(do_not_specialize=["mpos_bstride", "B", "M", "NPRE", "NVC", "use_window", "store_logits",
                               "phase_begin", "phase_end"])
def _decode_kernel(
    w_ptr, emb_ptr, qpos_ptr, mem_ptr, mpos_ptr, mpos_bstride, prefix_ptr, window_ptr,
    kv_self_ptr, kv_cross_ptr, qt_ptr, ctx_ptr, cstats_ptr, act_ptr, part_ptr, stats_ptr, scratch_ptr, sync_ptr,
    tokens_ptr, probs_ptr, logits_ptr, timeline_ptr,
    B, M, NPRE, NVC, use_window, store_logits, phase_begin, phase_end,
    LO_SELF_W: tl.constexpr, LO_SELF_B: tl.constexpr, LO_SELF_OUT_W: tl.constexpr, LO_SELF_OUT_B: tl.constexpr,
    LO_CROSS_W: tl.constexpr, LO_CROSS_B: tl.constexpr, LO_CROSS_OUT_W: tl.constexpr,
    LO_CROSS_OUT_B: tl.constexpr, LO_LIN1_W: tl.constexpr, LO_LIN1_B: tl.constexpr, LO_LIN2_W: tl.constexpr,
    LO_LIN2_B: tl.constexpr, LO_NORM1_W: tl.constexpr, LO_NORM2_W: tl.constexpr, LO_NORM3_W: tl.constexpr,
    LAYER_SIZE: tl.constexpr, GO_EMB_NORM_W: tl.constexpr, GO_FINAL_NORM_W: tl.constexpr,
    GO_VOCAB0_W: tl.constexpr, GO_VOCAB0_B: tl.constexpr, GO_VOCAB1_W: tl.constexpr, GO_VOCAB1_B: tl.constexpr,
    GO_VOCAB2_W: tl.constexpr, GO_VOCAB2_B: tl.constexpr, GO_CROSS_KV_W: tl.constexpr,
    GO_CROSS_KV_B: tl.constexpr, GLOBAL_BASE: tl.constexpr,
    L: tl.constexpr, D: tl.constexpr, H: tl.constexpr, F: tl.constexpr, V: tl.constexpr, BINS: tl.constexpr,
    ROWS: tl.constexpr, FROWS: tl.constexpr, LROWS: tl.constexpr, SCR_ROWS: tl.constexpr, QMAX: tl.constexpr,
    MC: tl.constexpr, FC: tl.constexpr, HC: tl.constexpr,
    VC: tl.constexpr, NPART: tl.constexpr, NVC_P2: tl.constexpr,
    KC_HEAD: tl.constexpr, KC_OUT: tl.constexpr, KC_FFN1: tl.constexpr, KC_FFN2: tl.constexpr,
    KC_V0: tl.constexpr, KC_V1: tl.constexpr, KC_V2: tl.constexpr, KC_KEYT: tl.constexpr,
    MCH: tl.constexpr, CROSS_ABSORBED: tl.constexpr, KIND: tl.constexpr = -1, TIMELINE: tl.constexpr = False,
):
    """Phases [phase_begin, phase_end) of the decode (see the module docstring): per step and layer,
    self-attention, cross-attention (one phase cached; query, scores, value absorbed), feed-forward; then
    vocabulary hidden and vocabulary logits; the last phase picks the final token. ``KIND`` >= 0 (an index
    into ``PHASE_KINDS``): every phase of the launch is of that kind, and only its code is compiled, so that
    the kernel gets that phase's register needs (one launch per phase). With ``TIMELINE``, each
    program records the global timer when it starts a phase and when it reaches the barrier after it, at
    ``timeline_ptr[phase - phase_begin, program, 0 / 1]`` (profiling only)."""
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    gw_ptr = w_ptr + GLOBAL_BASE
    scr_ptr = scratch_ptr + pid * SCR_ROWS * D
    part_size = B * QMAX * NPART * D
    PER_LAYER: tl.constexpr = 5 if CROSS_ABSORBED else 3
    PER_STEP: tl.constexpr = PER_LAYER * L + 2
    for p in range(phase_begin, phase_end):
        # Partial sums alternate between two buffers: a phase reads its predecessor's while writing its own.
        part_in = part_ptr + (p % 2) * part_size
        part_out = part_ptr + ((p + 1) % 2) * part_size
        if TIMELINE:
            tl.store(timeline_ptr + ((p - phase_begin) * nprog + pid) * 2, _global_time())
        if KIND >= 0:
            kind = KIND  # this launch runs phases of one kind only: the other kinds' code is not compiled
        else:
            kind = _phase_kind(p, L, PER_LAYER, CROSS_ABSORBED)
        s = p // PER_STEP
        layer = p % PER_STEP // PER_LAYER
        lw_ptr = w_ptr + layer * LAYER_SIZE
        if kind == KIND_SELF:
            _self_attention_phase(pid, nprog, s, layer, B, NPRE, prefix_ptr, emb_ptr, qpos_ptr, stats_ptr, NVC,
                                  tokens_ptr, probs_ptr, lw_ptr, lw_ptr - LAYER_SIZE, gw_ptr, act_ptr, part_in,
                                  part_out, kv_self_ptr, scr_ptr, LO_SELF_W, LO_SELF_B, LO_SELF_OUT_W, LO_LIN2_B,
                                  LO_NORM3_W, GO_EMB_NORM_W, L, D, H, F, FC, NPART, NVC_P2, ROWS, QMAX, KC_HEAD,
                                  KC_OUT)
        elif kind == KIND_CROSS:
            if not CROSS_ABSORBED:
                _cross_attention_cached_phase(pid, nprog, s, layer, B, M, NPRE, qpos_ptr, lw_ptr, act_ptr, part_in,
                                              part_out, kv_cross_ptr, scr_ptr, LO_SELF_OUT_B, LO_CROSS_W,
                                              LO_CROSS_B, LO_CROSS_OUT_W, LO_NORM1_W, L, D, H, NPART, ROWS, QMAX,
                                              MC, KC_HEAD, KC_OUT)
        elif kind == KIND_CROSS_QUERY:
            if CROSS_ABSORBED:
                _cross_query_absorbed_phase(pid, nprog, s, B, NPRE, qpos_ptr, lw_ptr,
                                            gw_ptr + GO_CROSS_KV_W + layer * D * D, act_ptr, part_in, qt_ptr,
                                            scr_ptr, LO_SELF_OUT_B, LO_CROSS_W, LO_CROSS_B, LO_NORM1_W, D, H,
                                            NPART, ROWS, QMAX, KC_HEAD, KC_KEYT)
        elif kind == KIND_CROSS_SCORES:
            if CROSS_ABSORBED:
                _cross_scores_absorbed_phase(pid, nprog, s, B, M, NPRE, mem_ptr, mpos_ptr, mpos_bstride, qt_ptr,
                                             ctx_ptr, cstats_ptr, D, H, QMAX, MCH)
        elif kind == KIND_CROSS_VALUE:
            if CROSS_ABSORBED:
                _cross_value_absorbed_phase(pid, nprog, s, B, M, NPRE, lw_ptr,
                                            gw_ptr + GO_CROSS_KV_W + (L + layer) * D * D,
                                            gw_ptr + GO_CROSS_KV_B + (L + layer) * D, part_out, ctx_ptr,
                                            cstats_ptr, scr_ptr, LO_CROSS_OUT_W, D, H, NPART, ROWS, QMAX, MCH,
                                            KC_HEAD, KC_OUT)
        elif kind == KIND_FFN:
            _feed_forward_phase(pid, nprog, s, B, NPRE, lw_ptr, act_ptr, part_in, part_out, scr_ptr,
                                LO_CROSS_OUT_B, LO_LIN1_W, LO_LIN1_B, LO_LIN2_W, LO_NORM2_W, D, H, F, FC, NPART,
                                FROWS, QMAX, KC_FFN1, KC_FFN2)
        elif kind == KIND_VOCAB_HIDDEN:
            _vocab_hidden_phase(pid, nprog, s, B, NPRE, w_ptr + (L - 1) * LAYER_SIZE, gw_ptr, act_ptr, part_in,
                                part_out, scr_ptr, LO_LIN2_B, LO_NORM3_W, GO_FINAL_NORM_W, GO_VOCAB0_W,
                                GO_VOCAB0_B, GO_VOCAB1_W, D, F, FC, HC, NPART, ROWS, QMAX, KC_V0, KC_V1)
        elif kind == KIND_VOCAB_LOGITS:
            _vocab_logits_phase(pid, nprog, s, B, NPRE, gw_ptr, window_ptr, use_window, store_logits, logits_ptr,
                                part_in, stats_ptr, NVC, scr_ptr, GO_VOCAB1_B, GO_VOCAB2_W, GO_VOCAB2_B, D, V,
                                BINS, HC, VC, NPART, NVC_P2, LROWS, QMAX, KC_V2)
        else:
            _final_select_phase(pid, nprog, B, stats_ptr, NVC, tokens_ptr, probs_ptr, NVC_P2, ROWS)
        if TIMELINE:
            tl.store(timeline_ptr + ((p - phase_begin) * nprog + pid) * 2 + 1, _global_time())
        if p + 1 < phase_end:
            _grid_barrier(sync_ptr, (p - phase_begin + 1) * nprog)
    if phase_end - phase_begin > 1:
        # The last program out resets the counters for the next launch (and the next CUDA-graph replay).
        tl.debug_barrier()
        done = tl.atomic_add(sync_ptr + 1, 1, sem="acq_rel", scope="gpu")
        if done == nprog - 1:
            if tl.atomic_xchg(sync_ptr + 2, 0, sem="acq_rel", scope="gpu") != 0:
                # A barrier gave up waiting, so later phases read unfinished inputs: no result may stand.
                _mark_invalid(tokens_ptr, probs_ptr, B)
            tl.atomic_xchg(sync_ptr, 0, sem="acq_rel", scope="gpu")
            tl.atomic_xchg(sync_ptr + 1, 0, sem="acq_rel", scope="gpu")


# ------------------------------------------------------------------------------------------------------
# Host side
# ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DecoderShape:
    """Shapes of the decoder the kernel is specialised for."""

    dim: int
    heads: int
    ffn: int
    layers: int
    bins: int

    @property
    def vocab(self) -> int:
        return self.bins + 2


def _layer_fields(shape: DecoderShape) -> list[tuple[Optional[str], str, int, int]]:
    """(kernel offset name, reference parameter name, size, first element) of one layer's block in the weight
    pack. The cross-attention in-projection contributes only its query rows here (see _global_fields)."""
    D, F = shape.dim, shape.ffn
    return [
        ("LO_SELF_W", "self_attn.in_proj_weight", 3 * D * D, 0), ("LO_SELF_B", "self_attn.in_proj_bias", 3 * D, 0),
        ("LO_SELF_OUT_W", "self_attn.out_proj.weight", D * D, 0),
        ("LO_SELF_OUT_B", "self_attn.out_proj.bias", D, 0),
        ("LO_CROSS_W", "multihead_attn.in_proj_weight", D * D, 0),
        ("LO_CROSS_B", "multihead_attn.in_proj_bias", D, 0),
        ("LO_CROSS_OUT_W", "multihead_attn.out_proj.weight", D * D, 0),
        ("LO_CROSS_OUT_B", "multihead_attn.out_proj.bias", D, 0),
        ("LO_LIN1_W", "linear1.weight", F * D, 0), ("LO_LIN1_B", "linear1.bias", F, 0),
        ("LO_LIN2_W", "linear2.weight", D * F, 0), ("LO_LIN2_B", "linear2.bias", D, 0),
        # Each norm's bias directly follows its weight: the kernel addresses it as weight + D.
        ("LO_NORM1_W", "norm1.weight", D, 0), (None, "norm1.bias", D, 0),
        ("LO_NORM2_W", "norm2.weight", D, 0), (None, "norm2.bias", D, 0),
        ("LO_NORM3_W", "norm3.weight", D, 0), (None, "norm3.bias", D, 0),
    ]


def _global_fields(shape: DecoderShape) -> list[tuple[Optional[str], str, int, int]]:
    """(kernel offset name, parameter name, size, first element) of the pack's tail; 'decoder.' /
    'vocab_embed.' prefixed. The cross-attention key and value projections of all layers come first,
    stacked (every layer's W_k, then every layer's W_v, and their biases alike) so that one GEMM projects
    the memory for all of them (:func:`project_memory`); first, so that they stay 16-byte aligned."""
    D, V, L = shape.dim, shape.vocab, shape.layers
    cross = "decoder.body.layers.{}.multihead_attn.in_proj_"
    stacked = []
    for suffix, name, size in (("weight", "GO_CROSS_KV_W", D * D), ("bias", "GO_CROSS_KV_B", D)):
        for i, (kv, layer) in enumerate(itertools.product((1, 2), range(L))):
            stacked.append((None if i else name, cross.format(layer) + suffix, size, kv * size))
    return stacked + [
        ("GO_EMB_NORM_W", "decoder.embedding.LayerNorm.weight", D, 0),
        (None, "decoder.embedding.LayerNorm.bias", D, 0),
        ("GO_FINAL_NORM_W", "decoder.body.norm.weight", D, 0), (None, "decoder.body.norm.bias", D, 0),
        ("GO_VOCAB0_W", "vocab_embed.layers.0.weight", D * D, 0), ("GO_VOCAB0_B", "vocab_embed.layers.0.bias", D, 0),
        ("GO_VOCAB1_W", "vocab_embed.layers.1.weight", D * D, 0), ("GO_VOCAB1_B", "vocab_embed.layers.1.bias", D, 0),
        ("GO_VOCAB2_W", "vocab_embed.layers.2.weight", V * D, 0), ("GO_VOCAB2_B", "vocab_embed.layers.2.bias", V, 0),
    ]


def pack_layout(shape: DecoderShape) -> dict[str, int]:
    """Kernel offset constants of the packed weights: per-layer offsets (``LO_*``) within a block of
    ``LAYER_SIZE`` floats, the decoder-wide tensors (``GO_*``) after the ``layers`` blocks at ``GLOBAL_BASE``."""
    layout, offset = {}, 0
    for name, _, size, _ in _layer_fields(shape):
        if name:
            layout[name] = offset
        offset += size
    layout["LAYER_SIZE"] = offset
    layout["GLOBAL_BASE"] = shape.layers * offset
    offset = 0
    for name, _, size, _ in _global_fields(shape):
        if name:
            layout[name] = offset
        offset += size
    return layout


def pack_weights(shape: DecoderShape, parameters: dict[str, torch.Tensor]) -> torch.Tensor:
    """One contiguous float32 buffer of the decoder and vocabulary-head weights in :func:`pack_layout` order.

    ``parameters`` maps the reference names (``decoder.body.layers.0.norm1.weight``, ``vocab_embed...``) to
    tensors, e.g. a state dict."""
    fields = [(f"decoder.body.layers.{layer}.{name}", size, start) for layer in range(shape.layers)
              for _, name, size, start in _layer_fields(shape)]
    fields += [(name, size, start) for _, name, size, start in _global_fields(shape)]
    pieces = [parameters[name].detach().reshape(-1)[start : start + size] for name, size, start in fields]
    return torch.cat([p.float() for p in pieces]).contiguous()


def _k_chunk(k: int, rows: int, chunk: int) -> int:
    """Reduction chunk of a product with ``rows`` rows and reduction length ``k``: tl.dot tiles stream the
    weights in chunks of ``chunk`` (LaunchConfig.dot_chunk); GEMV tiles are loaded whole. The interpreter pays
    per operation, not per register: one chunk."""
    return min(k, chunk) if rows >= 16 and not _interpreting() else k


@dataclass(frozen=True)
class LaunchConfig:
    """Tiling of one decode launch. ``rows``: rows (sample x prefix position) per unit, a power of two; 8 or
    more when the prefix has several tokens; >= 16 uses tl.dot. ``ffn_rows`` and ``logit_rows`` (default:
    ``rows``): the same for the feed-forward and vocabulary-logits units, whose weight chunks already spread
    the work over the programs, so that a larger tile reads each chunk once for several samples (logit rows
    are samples: one row each). ``dot_chunk``: reduction chunk in which tl.dot tiles (>= 16 rows) stream
    their weights. ``programs``: programs of the grid."""

    rows: int
    programs: int
    cross: str = "cached"
    ffn_chunk: int = 32
    hidden_chunk: int = 32
    vocab_chunk: int = 32
    memory_chunk: int = 32
    num_warps: int = 8
    ffn_rows: Optional[int] = None
    logit_rows: Optional[int] = None
    dot_chunk: int = 32

    def __post_init__(self) -> None:
        if self.cross not in CROSS_MODES:
            raise ValueError(f"cross must be one of {CROSS_MODES}, got {self.cross!r}")
        for name in ("rows", "ffn_chunk", "hidden_chunk", "vocab_chunk", "memory_chunk", "ffn_rows", "logit_rows",
                     "dot_chunk"):
            value = getattr(self, name)
            if value is not None and (value < 1 or value & (value - 1)):
                raise ValueError(f"{name} must be a power of two, got {value}")

    @property
    def tiles(self) -> tuple[int, int, int]:
        """Rows per unit of the self/cross-attention, feed-forward and vocabulary-logits phases."""
        return self.rows, self.ffn_rows or self.rows, self.logit_rows or self.rows


# Up to this batch a decode runs one sample per unit (GEMV tiles) with the cached cross-attention; above it,
# 16-row tl.dot tiles with the absorbed form. H100, B256 decoder, K = 0, warm (benchmarks/NOTES.md, decode
# version 5): one sample per unit beat every larger tile at B = 8 (312 us vs 1037 with 8 rows) and B = 64
# (1512 us vs 2055 with 16 rows, absorbed); the cached form beat the absorbed one at both. Larger batches were
# not measured, and there a unit per sample re-reads every weight once per sample.
GEMV_MAX_BATCH = 64
# Feed-forward and vocabulary-logits rows per unit for one-sample attention units, by largest batch: the best
# of twelve (ffn_rows, logit_rows) pairs from 1 to 32 at B = 8, 16, 32, 64 (same measurement; 64 samples:
# 1328 -> 1099 us, L384 1808 -> 1569). Their chunks keep the programs busy, so they can share weight reads.
CHUNK_UNIT_ROWS = ((1, (None, None)), (8, (1, 8)), (16, (4, 16)), (32, (8, 16)), (GEMV_MAX_BATCH, (16, 32)))


# From this batch a decode launches each phase on its own by default (every phase kind's kernel compiled alone,
# PHASE_WARPS warps, PHASE_PROGRAMS_PER_SM programs per SM), with the absorbed cross-attention. H100, B256 decoder,
# K = 0, warm (benchmarks/NOTES.md, decode version 8), against one persistent launch: B = 32 592.9 -> 520.3 us,
# B = 64 919.6 -> 722.4, B = 128 1687 -> 1295; at B = 16 the persistent launch stays faster (313.7 against 348.1).
# Below it, a phase launch keeps 8 warps and the cached form (B = 1 169.0 us, B = 8 239.9).
PHASE_LAUNCH_FROM_BATCH = 32
PHASE_WARPS = 4
PHASE_PROGRAMS_PER_SM = 2


def default_persistent(batch: int) -> bool:
    """Whether :func:`decode` runs as one persistent launch (True) or one launch per phase, unless told."""
    return batch < PHASE_LAUNCH_FROM_BATCH


def default_launch_config(batch: int, prefix_len: int, device: torch.device,
                          persistent: Optional[bool] = None) -> LaunchConfig:
    """The launch :func:`decode` uses unless given one (``persistent`` None: :func:`default_persistent`). A
    persistent launch: one program per SM, 8 warps, cached cross-attention up to ``GEMV_MAX_BATCH`` samples
    and absorbed above; one launch per phase: ``PHASE_PROGRAMS_PER_SM`` programs per SM, and from
    ``PHASE_LAUNCH_FROM_BATCH`` samples ``PHASE_WARPS`` warps and the absorbed form. Up to ``GEMV_MAX_BATCH``
    samples one sample per attention unit (all its prefix rows with prompt tokens: a tile holds a sample's rows)
    and feed-forward and logits units from ``CHUNK_UNIT_ROWS``; above it 16-row tiles. Small chunks spread a
    GEMV's weights over many SMs; tl.dot tiles take larger ones so that a unit re-reads fewer partial sums."""
    if persistent is None:
        persistent = default_persistent(batch)
    small = batch <= GEMV_MAX_BATCH
    phase_batch = not persistent and batch >= PHASE_LAUNCH_FROM_BATCH
    rows = 1 if small else 16
    if prefix_len > 1:
        rows = max(rows, QMAX)
    if device.type == "cuda":
        programs = torch.cuda.get_device_properties(device).multi_processor_count
        if not persistent:
            programs *= PHASE_PROGRAMS_PER_SM
    else:
        programs = 1 if persistent else 4
    chunk = 64 if rows >= 16 else 32
    ffn_rows, logit_rows = next((tiles for most, tiles in CHUNK_UNIT_ROWS if batch <= most), (None, None))
    if prefix_len > 1 and ffn_rows is not None:
        ffn_rows = max(ffn_rows, QMAX)
    return LaunchConfig(rows=rows, programs=programs, cross="cached" if small and not phase_batch else "absorbed",
                        ffn_chunk=chunk, hidden_chunk=chunk, vocab_chunk=chunk,
                        num_warps=PHASE_WARPS if phase_batch else 8, ffn_rows=ffn_rows, logit_rows=logit_rows)


class DecodeWorkspace:
    """Static buffers of one decode shape (batch, memory tokens, prefix length, launch config): allocate once,
    reuse across calls and CUDA-graph replays. Not shareable between concurrent decodes."""

    def __init__(self, shape: DecoderShape, batch: int, memory_tokens: int, prefix_len: int,
                 config: LaunchConfig, device: torch.device) -> None:
        D, H, L = shape.dim, shape.heads, shape.layers
        self.key = (shape, batch, memory_tokens, prefix_len, config, device)
        self.n_vocab_chunks = triton.cdiv(shape.vocab, config.vocab_chunk)
        self.n_parts = max(H, shape.ffn // config.ffn_chunk, D // config.hidden_chunk)
        empty = lambda *size: torch.empty(size, device=device, dtype=torch.float32)  # noqa: E731
        self.n_memory_chunks = triton.cdiv(memory_tokens, config.memory_chunk)
        self.kv_self = empty(L, 2, batch, H, QMAX, D // H)
        cached = config.cross == "cached"
        # Cached cross-attention: the projected memory (keys, values of every layer: see project_memory);
        # absorbed: folded queries and chunk partials.
        self.kv_cross = empty(batch, memory_tokens, 2, L, D) if cached else empty(1)
        self.folded_queries = empty(1) if cached else empty(batch, QMAX, H, D)
        self.chunk_sums = empty(1) if cached else empty(batch, self.n_memory_chunks, QMAX, H, D)
        self.chunk_stats = empty(1) if cached else empty(batch, self.n_memory_chunks, QMAX, H, 2)
        self.act = empty(3, batch, QMAX, D)
        self.part = empty(2, batch, QMAX, self.n_parts, D)
        self.stats = empty(batch, triton.next_power_of_2(self.n_vocab_chunks), 4)
        self.scratch = empty(config.programs, max(config.tiles), D)  # tl.dot operands (>= 16 rows) pass through it
        # Barrier counter, exit counter, error flag (a barrier gave up waiting), spare.
        self.sync = torch.zeros(4, device=device, dtype=torch.int32)
        self.resident_checked: set[bool] = set()  # persistent kernels (by timeline flag) found to fit the device


def phase_count(shape: DecoderShape, cross: str) -> int:
    """Phases of a decode: per step, 3 (cached) or 5 (absorbed) per layer and 2 for the vocabulary; then the
    final token's selection."""
    per_layer = 3 if cross == "cached" else 5
    return 1 + NUM_STEPS * (per_layer * shape.layers + 2)


def phase_names(shape: DecoderShape, cross: str) -> dict[int, str]:
    """The kind of each phase, in launch order (the dispatch in ``_decode_kernel``); -1 names the cached
    form's memory projection (a GEMM before phase 0)."""
    layer = ["self", "cross"] if cross == "cached" else ["self", "cross-query", "cross-scores", "cross-value"]
    per_step = [kind for _ in range(shape.layers) for kind in layer + ["ffn"]] + ["vocab-hidden", "vocab-logits"]
    end = phase_count(shape, cross)
    names = {phase: per_step[phase % len(per_step)] for phase in range(end - 1)}
    names[end - 1] = "select"
    if cross == "cached":
        names[-1] = "project-memory"
    return names


def phase_units(kind: str, step: int, batch: int, prefix_len: int, shape: DecoderShape, config: LaunchConfig,
                workspace: DecodeWorkspace) -> int:
    """Work units of a phase of ``kind`` (one of PHASE_KINDS) in ``step``: its phase function's loop bound."""
    rows, ffn_rows, logit_rows = config.tiles
    rows_per_sample = QMAX if step == 0 and prefix_len > 1 else 1  # the whole prompt at step 0

    def tiles(tile_rows: int) -> int:
        return triton.cdiv(batch, tile_rows // rows_per_sample)

    if kind in ("self", "cross", "cross-query", "cross-value"):
        return tiles(rows) * shape.heads
    return {"cross-scores": batch * workspace.n_memory_chunks,
            "ffn": tiles(ffn_rows) * (shape.ffn // config.ffn_chunk),
            "vocab-hidden": triton.cdiv(batch, rows) * (shape.dim // config.hidden_chunk),
            "vocab-logits": triton.cdiv(batch, logit_rows) * workspace.n_vocab_chunks,
            "select": triton.cdiv(batch, rows)}[kind]


# Memory projection tiles (memory rows, output columns, reduction chunk, warps, pipeline stages), the smaller
# up to PROJECTION_SMALL_ROWS memory rows: the best of five on the H100 for the B256 / L384 decoders at
# B = 1 / 8 / 64 (benchmarks/probe_memory_projection.py; benchmarks/NOTES.md, decode version 6).
PROJECTION_TILES = (dict(BM=32, BN=64, BK=32, num_warps=4, num_stages=2),
                    dict(BM=64, BN=128, BK=32, num_warps=4, num_stages=3))
PROJECTION_SMALL_ROWS = 1024


@triton.jit
def _project_memory_kernel(mem_ptr, mpos_ptr, mpos_bstride, w_ptr, bias_ptr, out_ptr, R, M,
                           LD: tl.constexpr, D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
                           BK: tl.constexpr):
    """One (BM memory rows x BN output columns) tile of :func:`project_memory`. A tile's columns are all keys or
    all values (BN divides D); key tiles add the positions to the memory as they load it."""
    rows = tl.program_id(0) * BM + tl.arange(0, BM)
    n0 = tl.program_id(1) * BN
    cols = n0 + tl.arange(0, BN)
    ks = tl.arange(0, BK)
    inside = rows < R
    memory_rows = mem_ptr + rows.to(tl.int64)[:, None] * D
    position_rows = mpos_ptr + ((rows // M).to(tl.int64) * mpos_bstride + rows % M * D)[:, None]
    with_positions = inside & (n0 < LD)
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for k0 in tl.range(0, D, BK):
        a = tl.load(memory_rows + (k0 + ks)[None, :], mask=inside[:, None], other=0.0) \
            + tl.load(position_rows + (k0 + ks)[None, :], mask=with_positions[:, None], other=0.0)
        w = tl.load(w_ptr + cols[:, None] * D + (k0 + ks)[None, :])
        acc += tl.dot(a, tl.trans(w), input_precision=DOT_PRECISION)
    acc += tl.load(bias_ptr + cols)[None, :]
    tl.store(out_ptr + rows.to(tl.int64)[:, None] * (2 * LD) + cols[None, :], acc, mask=inside[:, None])


def project_memory(weights: torch.Tensor, shape: DecoderShape, memory: torch.Tensor, memory_pos: torch.Tensor,
                   out: torch.Tensor, tile: Optional[dict] = None) -> None:
    """Cross-attention keys ((memory + positions) W_kᵀ + b_k) and values (memory W_vᵀ + b_v) of every layer,
    into ``out`` (B, M, 2, L, D): [b, m, 0, l] holds layer l's key of memory token m, [b, m, 1, l] its value.

    One Triton GEMM, launched on the current stream (no host synchronisation): memory (B·M, D) against the
    stacked keys and values of all layers (D -> 2·L·D) with their biases; memory_pos (1 or B, M, D) is added
    to the memory as key tiles load it. Products in 3xTF32 (each float32 operand split into a TF32 high part
    and a TF32 remainder, three tensor-core products, float32 accumulation): float32-level error, so the
    decode's tokens equal the float32 reference's, whatever the caller's TF32 setting. ``tile``: one of
    ``PROJECTION_TILES``' form (default: by the number of memory rows)."""
    B, M, D = memory.shape
    LD = shape.layers * D
    tile = PROJECTION_TILES[B * M > PROJECTION_SMALL_ROWS] if tile is None else tile
    BN = min(tile["BN"], D)  # D is a power of two, so a tile never straddles the keys and the values
    BK = min(tile["BK"], D)
    layout = pack_layout(shape)
    w_base = layout["GLOBAL_BASE"] + layout["GO_CROSS_KV_W"]
    b_base = layout["GLOBAL_BASE"] + layout["GO_CROSS_KV_B"]
    grid = (triton.cdiv(B * M, tile["BM"]), 2 * LD // BN)
    _project_memory_kernel[grid](
        memory, memory_pos, memory_pos.stride(0) if memory_pos.shape[0] > 1 else 0, weights[w_base:],
        weights[b_base:], out, B * M, M, LD=LD, D=D, BM=tile["BM"], BN=BN, BK=BK,
        num_warps=tile["num_warps"], num_stages=tile["num_stages"])


def resident_programs_per_sm(registers_per_thread: int, warps: int, shared_bytes: int, *, registers_per_sm: int,
                             threads_per_sm: int, shared_per_sm: int, max_programs: int = 32) -> int:
    """How many programs of a kernel one SM holds at once, as the CUDA occupancy rules count them: registers
    are allocated per warp in units of 256, and the driver reserves 1 KB of shared memory per block."""
    per_warp = -(-registers_per_thread * 32 // 256) * 256
    return min(registers_per_sm // max(per_warp, 1) // warps, threads_per_sm // (32 * warps),
               shared_per_sm // (shared_bytes + 1024), max_programs)


def check_resident(kernel: "triton.compiler.CompiledKernel", programs: int, device: torch.device) -> None:
    """Raise ValueError unless ``programs`` programs of the compiled persistent ``kernel`` fit on ``device`` at
    once. Its phases wait for each other at grid barriers, so a program left waiting for an SM would hold the
    others at a barrier until the barrier gives up (and the decode returns invalid results)."""
    kernel.run  # loading the binary sets n_regs
    props = torch.cuda.get_device_properties(device)
    per_sm = resident_programs_per_sm(kernel.n_regs, kernel.metadata.num_warps, kernel.metadata.shared,
                                      registers_per_sm=props.regs_per_multiprocessor,
                                      threads_per_sm=props.max_threads_per_multi_processor,
                                      shared_per_sm=props.shared_memory_per_multiprocessor)
    capacity = per_sm * props.multi_processor_count
    if programs > capacity:
        raise ValueError(
            f"a persistent decode needs all of its {programs} programs resident at once, but {props.name} holds "
            f"{capacity} of this kernel ({per_sm} per SM at {kernel.n_regs} registers x {kernel.metadata.num_warps} "
            f"warps, {kernel.metadata.shared} bytes of shared memory): use at most {capacity} programs, or "
            f"persistent=False")


def kernel_constants(shape: DecoderShape, memory_tokens: int, config: LaunchConfig,
                     workspace: DecodeWorkspace) -> dict:
    """The constexpr arguments of ``_decode_kernel`` for one decode shape (also used by offline code-size
    measurements, which must compile exactly what :func:`decode` launches)."""
    D, M = shape.dim, memory_tokens
    rows, ffn_rows, logit_rows = config.tiles
    H, F = shape.heads, shape.ffn
    DH = D // H

    def chunk(k: int, tile_rows: int) -> int:
        return _k_chunk(k, tile_rows, config.dot_chunk)

    return dict(
        pack_layout(shape), L=shape.layers, D=D, H=H, F=F, V=shape.vocab, BINS=shape.bins, ROWS=rows, FROWS=ffn_rows,
        LROWS=logit_rows, SCR_ROWS=max(config.tiles), QMAX=QMAX,
        MC=min(triton.next_power_of_2(M), 8192 // DH),
        FC=config.ffn_chunk, HC=config.hidden_chunk, VC=config.vocab_chunk,
        NPART=workspace.n_parts, NVC_P2=triton.next_power_of_2(workspace.n_vocab_chunks),
        KC_HEAD=chunk(D, rows), KC_OUT=chunk(DH, rows), KC_FFN1=chunk(D, ffn_rows),
        KC_FFN2=chunk(config.ffn_chunk, ffn_rows), KC_V0=chunk(D, rows), KC_V1=chunk(config.hidden_chunk, rows),
        KC_V2=chunk(D, logit_rows), KC_KEYT=chunk(DH, rows), MCH=config.memory_chunk,
        CROSS_ABSORBED=config.cross == "absorbed",
    )


def decode(weights: torch.Tensor, shape: DecoderShape, word_embeddings: torch.Tensor, query_pos: torch.Tensor,
           memory: torch.Tensor, memory_pos: torch.Tensor, prefix: torch.Tensor, window: Optional[torch.Tensor],
           *, persistent: Optional[bool] = None, return_logits: bool = False,
           workspace: Optional[DecodeWorkspace] = None, config: Optional[LaunchConfig] = None,
           before_phase: Optional[Callable[[int], None]] = None, timeline: Optional[torch.Tensor] = None):
    """Launch the decode. Inputs are assumed validated (see ``actrack_fast.fast_decoder``):

    weights: :func:`pack_weights` buffer; word_embeddings (vocab, D); query_pos (>= K + 4, D);
    memory (B, M, D) contiguous float32; memory_pos (1 or B, M, D); prefix (B, K + 1) int64;
    window (bins,) float32 or None.
    Returns tokens (B, 4) int64, probs (B, 4) float32 and, with ``return_logits``, logits (B, 4, vocab).
    Launches only: no host synchronisation, so it can be captured in a CUDA graph once warm.
    ``persistent``: one launch for the whole decode (True) or one per phase (default: :func:`default_persistent`).
    A persistent launch must fit on the device at once (:func:`check_resident`, first call per workspace); should
    one of its grid barriers still give up waiting (~1 s, e.g. another workload holding SMs), every token comes
    back as -1 and every probability as NaN.
    ``before_phase(phase)`` (one launch per phase only) runs before each launch, e.g. to record an event, and
    with cached cross-attention ``before_phase(-1)`` before the memory projection's GEMMs.
    ``timeline`` (persistent only; profiling): an int64 (phases, programs, 2) tensor that receives each
    program's global-timer stamps at the start of each phase and at its barrier (nanoseconds).
    """
    B, M, D = memory.shape
    prefix_len = prefix.shape[1]
    device = memory.device
    if persistent is None:
        persistent = default_persistent(B)
    if config is None:
        config = default_launch_config(B, prefix_len, device, persistent)
    if prefix_len > 1 and min(config.tiles[:2]) < QMAX:
        raise ValueError(f"with prompt tokens a unit holds a sample's {QMAX} padded rows: rows and ffn_rows must be "
                         f">= {QMAX}, got {config.tiles[:2]}")
    if persistent and config.programs > 1 and _interpreting():
        # The interpreter runs programs one after another, so the first would spin at the grid barrier.
        raise ValueError("the Triton interpreter runs a persistent decode with programs=1 only")
    if workspace is None or workspace.key != (shape, B, M, prefix_len, config, device):
        workspace = DecodeWorkspace(shape, B, M, prefix_len, config, device)
    tokens = torch.empty(B, NUM_STEPS, device=device, dtype=torch.int64)
    probs = torch.empty(B, NUM_STEPS, device=device, dtype=torch.float32)
    logits = torch.empty(B, NUM_STEPS, shape.vocab, device=device) if return_logits else probs
    constants = kernel_constants(shape, M, config, workspace)
    phases = phase_count(shape, config.cross)
    if timeline is not None:
        expected = (phases, config.programs, 2)
        if not persistent or tuple(timeline.shape) != expected or timeline.dtype != torch.int64:
            raise ValueError(f"timeline needs persistent=True and an int64 tensor of shape {expected}")
        constants["TIMELINE"] = True
    args = (
        weights, word_embeddings, query_pos, memory, memory_pos, memory_pos.stride(0) if memory_pos.shape[0] > 1 else 0,
        prefix, window if window is not None else probs,
        workspace.kv_self, workspace.kv_cross, workspace.folded_queries, workspace.chunk_sums,
        workspace.chunk_stats, workspace.act, workspace.part, workspace.stats, workspace.scratch,
        workspace.sync, tokens, probs, logits, timeline if timeline is not None else tokens,
        B, M, prefix_len, workspace.n_vocab_chunks, int(window is not None), int(return_logits),
    )
    grid = (config.programs,)
    if config.cross == "cached":
        if before_phase is not None and not persistent:
            before_phase(-1)
        project_memory(weights, shape, memory, memory_pos, workspace.kv_cross)
    if persistent:
        variant = timeline is not None
        if device.type == "cuda" and variant not in workspace.resident_checked:
            check_resident(_decode_kernel.warmup(*args, 0, phases, grid=grid, num_warps=config.num_warps, **constants),
                           config.programs, device)
            workspace.resident_checked.add(variant)
        _decode_kernel[grid](*args, 0, phases, num_warps=config.num_warps, **constants)
    else:
        names = phase_names(shape, config.cross)
        for phase in range(phases):
            if before_phase is not None:
                before_phase(phase)
            units = phase_units(names[phase], phase // ((phases - 1) // NUM_STEPS), B, prefix_len, shape, config,
                                workspace)
            _decode_kernel[(min(config.programs, units),)](*args, phase, phase + 1, num_warps=config.num_warps,
                                                           KIND=PHASE_KINDS.index(names[phase]), **constants)
    return (tokens, probs, logits) if return_logits else (tokens, probs)
