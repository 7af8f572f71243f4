"""Non-causal multi-head attention over every token of a frame (flash-attention forward in Triton).

Reads q, k and v straight out of the fused qkv projection (B*N, 3*C) and writes the heads merged,
(B*N, C), as ``proj`` consumes them: the reference's permute and reshape copies disappear. Optionally only a
frame's first ``queries`` tokens attend (over all N keys): the encoder's last block, whose other rows nobody
reads. The softmax is online (running max and sum in fp32, base-2 exponentials with the scale folded in), so
the N x N scores never reach memory.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import triton
import triton.language as tl

from .tuning import choose, dot_precision, keep_fp32, quick_bench

LOG2E = 1.4426950408889634


def _config(block_m: int, block_n: int, stages: int, warps: int) -> triton.Config:
    return triton.Config({"BLOCK_M": block_m, "BLOCK_N": block_n}, num_stages=stages, num_warps=warps)


_CONFIGS = choose(_config(16, 16, 1, 4), [
    _config(128, 64, 3, 4),
    _config(128, 128, 3, 8),
    _config(64, 64, 3, 4),
    _config(64, 32, 2, 4),
])


def _is_fp32_config(config: triton.Config) -> bool:
    return config.kwargs["BLOCK_N"] == 32


@triton.autotune(configs=_CONFIGS, key=["N", "queries", "batch", "NUM_HEADS", "HEAD_DIM"], do_bench=quick_bench,
                 prune_configs_by={"early_config_prune": keep_fp32(_is_fp32_config, "qkv_ptr")})
@triton.heuristics({"EVEN_N": lambda args: args["N"] % args["BLOCK_N"] == 0})
@triton.jit
def _attention_kernel(qkv_ptr, out_ptr, N, queries, batch, qk_scale, NUM_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr,
                      PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, EVEN_N: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // NUM_HEADS
    h = pid_bh % NUM_HEADS
    dim = NUM_HEADS * HEAD_DIM
    row_stride = 3 * dim
    q_base = qkv_ptr + b.to(tl.int64) * N * row_stride + h * HEAD_DIM
    k_base = q_base + dim
    v_base = q_base + 2 * dim

    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    ds = tl.arange(0, HEAD_DIM)
    q = tl.load(q_base + rows[:, None] * row_stride + ds[None, :], mask=rows[:, None] < queries, other=0.0)

    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_M, HEAD_DIM), dtype=tl.float32)
    for start in range(0, N, BLOCK_N):
        keys = start + tl.arange(0, BLOCK_N)
        kv_offsets = keys[:, None] * row_stride + ds[None, :]
        if EVEN_N:
            k = tl.load(k_base + kv_offsets)
            v = tl.load(v_base + kv_offsets)
        else:
            k = tl.load(k_base + kv_offsets, mask=keys[:, None] < N, other=0.0)
            v = tl.load(v_base + kv_offsets, mask=keys[:, None] < N, other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
        if not EVEN_N:
            s = tl.where(keys[None, :] < N, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.exp2(s - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision=PRECISION)
        m_i = m_new

    out = acc / l_i[:, None]
    out_ptrs = out_ptr + (b.to(tl.int64) * queries + rows)[:, None] * dim + h * HEAD_DIM + ds[None, :]
    tl.store(out_ptrs, out.to(out_ptr.dtype.element_ty), mask=rows[:, None] < queries)


def attention(qkv: torch.Tensor, batch: int, num_heads: int, queries: Optional[int] = None) -> torch.Tensor:
    """Softmax(q k^T / sqrt(d)) v per head: qkv (B*N, 3*C) in (3, heads, d) column order -> (B*N, C), or, with
    ``queries`` = Q <= N, the outputs of each frame's first Q tokens only, (B*Q, C).

    The head dim d = C / heads must be a power of two >= 16 (64 in every ViT configuration); the caller
    validates shapes.
    """
    rows, three_dim = qkv.shape
    dim = three_dim // 3
    tokens = rows // batch
    queries = tokens if queries is None else queries
    head_dim = dim // num_heads
    out = torch.empty((batch * queries, dim), device=qkv.device, dtype=qkv.dtype)

    def grid(meta):
        return (triton.cdiv(queries, meta["BLOCK_M"]), batch * num_heads)

    _attention_kernel[grid](qkv, out, tokens, queries, batch, LOG2E / math.sqrt(head_dim), NUM_HEADS=num_heads,
                            HEAD_DIM=head_dim, PRECISION=dot_precision(qkv.dtype))
    return out
