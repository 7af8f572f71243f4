"""Non-causal multi-head attention over every token of a frame (flash-attention forward in Triton).

Reads q, k and v straight out of the fused qkv projection (B*N, 3*C) and writes the heads merged,
(B*N, C), as ``proj`` consumes them: the reference's permute and reshape copies disappear. Optionally only a
frame's first ``queries`` tokens attend (over all N keys): the encoder's last block, whose other rows nobody reads.
The softmax is online (running max and sum in fp32, base-2 exponentials with the scale folded in), so the N x N
scores never reach memory.

Small batches split the keys (flash-decoding's split-KV): at one B256 frame the 128-row query tiles of 12 heads are
72 programs for 132 SMs, each walking all 768 keys. With ``SPLITS`` = S, S programs share a tile, each walks 1/S
of the keys and stores its unnormalised output with its running max and sum; the last of them to finish (a ticket
counter per tile, reset by that program) merges the S partials and writes the tile. No second launch: in a
CUDA-graph step at one frame a launch costs about as much as the merge saves.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import triton
import triton.language as tl

from .tuning import choose, dot_precision, keep_fp32, quick_bench

LOG2E = 1.4426950408889634
# Largest key split tuned, and the largest query tile (the workspace is sized for it).
MAX_SPLITS = 4
_MAX_BLOCK_M = 128


def _config(block_m: int, block_n: int, stages: int, warps: int, splits: int = 1) -> triton.Config:
    return triton.Config({"BLOCK_M": block_m, "BLOCK_N": block_n, "SPLITS": splits}, num_stages=stages,
                         num_warps=warps)


_TILES = [(128, 64, 3, 4), (128, 128, 3, 8), (64, 64, 3, 4), (64, 128, 3, 4), (64, 32, 2, 4)]
_CONFIGS = choose(_config(16, 16, 1, 4), [_config(*tile, splits) for tile in _TILES for splits in (1, 2, 3, 4)])


def _is_fp32_config(config: triton.Config) -> bool:
    return config.kwargs["BLOCK_N"] == 32


def _prune(configs, named_args, **kwargs):
    """fp32 keeps the small-tile configs (``keep_fp32``); key splits only up to ``max_splits`` (1 without a
    workspace)."""
    kept = keep_fp32(_is_fp32_config, "qkv_ptr")(configs, named_args, **kwargs)
    return [c for c in kept if c.kwargs["SPLITS"] <= named_args["max_splits"]] or kept[:1]


@triton.autotune(configs=_CONFIGS, key=["N", "queries", "batch", "max_splits", "NUM_HEADS", "HEAD_DIM"],
                 do_bench=quick_bench, prune_configs_by={"early_config_prune": _prune})
@triton.heuristics({"EVEN_N": lambda args: args["N"] % args["BLOCK_N"] == 0})
@triton.jit
def _attention_kernel(qkv_ptr, out_ptr, partial_ptr, stats_ptr, ticket_ptr, partial_rows, N, queries, batch,
                      max_splits, qk_scale, NUM_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr,
                      PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, SPLITS: tl.constexpr,
                      EVEN_N: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    split = tl.program_id(2)
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

    # This program's keys: whole BLOCK_N blocks, so that only the last split can end inside one.
    span = tl.cdiv(tl.cdiv(N, SPLITS), BLOCK_N) * BLOCK_N
    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_M, HEAD_DIM), dtype=tl.float32)
    for start in range(split * span, tl.minimum(N, (split + 1) * span), BLOCK_N):
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

    out_ptrs = out_ptr + (b.to(tl.int64) * queries + rows)[:, None] * dim + h * HEAD_DIM + ds[None, :]
    if SPLITS == 1:
        tl.store(out_ptrs, (acc / l_i[:, None]).to(out_ptr.dtype.element_ty), mask=rows[:, None] < queries)
    else:
        tile = pid_bh * tl.num_programs(0) + pid_m
        local = tile * BLOCK_M + tl.arange(0, BLOCK_M)  # this tile's rows in the workspace, < partial_rows
        tl.store(partial_ptr + (split * partial_rows + local)[:, None] * HEAD_DIM + ds[None, :], acc)
        tl.store(stats_ptr + (split * partial_rows + local) * 2, m_i)
        tl.store(stats_ptr + (split * partial_rows + local) * 2 + 1, l_i)
        tl.debug_barrier()  # every thread's partial is issued before the release below
        ticket = tl.atomic_add(ticket_ptr + tile, 1, sem="acq_rel", scope="gpu")
        if ticket == SPLITS - 1:  # the last program of the tile: every other partial is visible
            m_max = m_i
            for other in tl.static_range(SPLITS):
                m_max = tl.maximum(m_max, tl.load(stats_ptr + (other * partial_rows + local) * 2,
                                                  cache_modifier=".cg"))
            total = tl.zeros((BLOCK_M,), dtype=tl.float32)
            merged = tl.zeros((BLOCK_M, HEAD_DIM), dtype=tl.float32)
            for other in tl.static_range(SPLITS):
                at = other * partial_rows + local
                # A split past the last key block saw no key (max -inf, sum 0): weight 0.
                weight = tl.exp2(tl.load(stats_ptr + at * 2, cache_modifier=".cg") - m_max)
                total += weight * tl.load(stats_ptr + at * 2 + 1, cache_modifier=".cg")
                merged += weight[:, None] * tl.load(partial_ptr + at[:, None] * HEAD_DIM + ds[None, :],
                                                    cache_modifier=".cg")
            tl.store(out_ptrs, (merged / total[:, None]).to(out_ptr.dtype.element_ty), mask=rows[:, None] < queries)
            tl.atomic_xchg(ticket_ptr + tile, 0)  # ready for the next call


@dataclass(frozen=True)
class AttentionWorkspace:
    """Scratch for split-key attention (see the module docstring), valid for calls with at most ``batch`` frames,
    ``queries`` query rows and the head layout it was made for, run one after the other on one stream (each
    call leaves the tickets at zero for the next). ``partials`` (S, R, d) and ``stats`` (S, R, 2) fp32 hold
    each split's output and running max and sum for R padded query rows; ``tickets`` (tiles,) int32."""

    partials: torch.Tensor
    stats: torch.Tensor
    tickets: torch.Tensor


def attention_workspace(batch: int, queries: int, num_heads: int, head_dim: int,
                        device: torch.device) -> Optional[AttentionWorkspace]:
    """A workspace for attention over ``batch`` frames of ``queries`` query rows, or None where the query tiles
    alone already fill the GPU (no key split is tuned then). The tickets are zeroed here (one memset)."""
    device = torch.device(device)
    fewest_tiles = batch * num_heads * triton.cdiv(queries, _MAX_BLOCK_M)
    if device.type == "cuda" and fewest_tiles >= torch.cuda.get_device_properties(device).multi_processor_count:
        return None
    tiles = batch * num_heads * triton.cdiv(queries, 16)  # the smallest query tile (interpreter) gives the most
    rows = batch * num_heads * triton.cdiv(queries, _MAX_BLOCK_M) * _MAX_BLOCK_M
    return AttentionWorkspace(torch.empty(MAX_SPLITS, rows, head_dim, device=device, dtype=torch.float32),
                              torch.empty(MAX_SPLITS, rows, 2, device=device, dtype=torch.float32),
                              torch.zeros(tiles, device=device, dtype=torch.int32))


def attention(qkv: torch.Tensor, batch: int, num_heads: int, queries: Optional[int] = None,
              workspace: Optional[AttentionWorkspace] = None, config: Optional[triton.Config] = None) -> torch.Tensor:
    """Softmax(q k^T / sqrt(d)) v per head: qkv (B*N, 3*C) in (3, heads, d) column order -> (B*N, C), or, with
    ``queries`` = Q <= N, the outputs of each frame's first Q tokens only, (B*Q, C).

    ``workspace`` (from :func:`attention_workspace` for at least these sizes) lets small batches split the keys;
    without one, a call that could split makes its own. ``config`` runs one tile config instead of the tuned
    ones (probes, tests). The head dim d = C / heads must be a power of two >= 16 (64 in every ViT
    configuration); the caller validates shapes.
    """
    rows, three_dim = qkv.shape
    dim = three_dim // 3
    tokens = rows // batch
    queries = tokens if queries is None else queries
    head_dim = dim // num_heads
    out = torch.empty((batch * queries, dim), device=qkv.device, dtype=qkv.dtype)
    if workspace is None:
        workspace = attention_workspace(batch, queries, num_heads, head_dim, qkv.device)
    max_splits = 1 if workspace is None else MAX_SPLITS
    scratch = (out, out, out) if workspace is None else (workspace.partials, workspace.stats, workspace.tickets)
    partial_rows = 0 if workspace is None else workspace.partials.shape[1]

    def grid(meta):
        return (triton.cdiv(queries, meta["BLOCK_M"]), batch * num_heads, meta["SPLITS"])

    args = (qkv, out, *scratch, partial_rows, tokens, queries, batch, max_splits, LOG2E / math.sqrt(head_dim))
    meta = dict(NUM_HEADS=num_heads, HEAD_DIM=head_dim, PRECISION=dot_precision(qkv.dtype))
    if config is None:
        _attention_kernel[grid](*args, **meta)
    else:
        if config.kwargs["SPLITS"] > max_splits:
            raise ValueError(f"config splits the keys {config.kwargs['SPLITS']} ways; this call allows {max_splits}")
        _attention_kernel.fn[grid({**config.kwargs})](*args, **meta, **config.kwargs, num_warps=config.num_warps,
                                                      num_stages=config.num_stages)
    return out
