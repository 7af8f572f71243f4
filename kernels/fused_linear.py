"""Linear layer with its epilogue fused: ``act(x @ W^T + b) (+ residual)`` in one Triton GEMM.

The encoder block uses it four times: qkv (bias), proj (bias + residual), fc1 (bias + GELU) and fc2
(bias + residual), so no bias, activation or residual add ever makes its own pass over memory.
Accumulation is fp32 for every input dtype; fp32 inputs use exact products (``input_precision="ieee"``).
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from .tuning import choose, dot_precision, keep_fp32, quick_bench


def _config(block_m: int, block_n: int, block_k: int, stages: int, warps: int) -> triton.Config:
    return triton.Config({"BLOCK_M": block_m, "BLOCK_N": block_n, "BLOCK_K": block_k, "GROUP_M": 8},
                         num_stages=stages, num_warps=warps)


# Hopper-sized tiles for 16-bit inputs (the small ones fill the chip at batch 1, where M is only 768
# tokens), and one small tile for fp32, whose exact products run on CUDA cores.
_CONFIGS = choose(_config(32, 32, 32, 1, 4), [
    _config(128, 256, 64, 3, 8),
    _config(128, 128, 64, 4, 8),
    _config(64, 128, 64, 4, 4),
    _config(64, 64, 64, 4, 4),
    _config(64, 64, 32, 2, 4),
])


def _is_fp32_config(config: triton.Config) -> bool:
    return config.kwargs["BLOCK_K"] == 32


@triton.autotune(configs=_CONFIGS, key=["M", "N", "K"], do_bench=quick_bench,
                 prune_configs_by={"early_config_prune": keep_fp32(_is_fp32_config, "x_ptr")})
@triton.heuristics({"EVEN_K": lambda args: args["K"] % args["BLOCK_K"] == 0})
@triton.jit
def _linear_kernel(x_ptr, w_ptr, b_ptr, res_ptr, out_ptr, M, N, K,
                   APPLY_GELU: tl.constexpr, PRECISION: tl.constexpr, BLOCK_M: tl.constexpr,
                   BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr, EVEN_K: tl.constexpr):
    # Grouped tile order: GROUP_M row tiles share each weight column tile while it is in L2.
    pid = tl.program_id(0)
    tiles_m = tl.cdiv(M, BLOCK_M)
    tiles_n = tl.cdiv(N, BLOCK_N)
    group = GROUP_M * tiles_n
    first_m = (pid // group) * GROUP_M
    group_rows = tl.minimum(tiles_m - first_m, GROUP_M)
    pid_m = first_m + (pid % group) % group_rows
    pid_n = (pid % group) // group_rows

    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    ks = tl.arange(0, BLOCK_K)
    # Rows and columns past the edge wrap around so the main loop loads without masks; stores are masked.
    x_ptrs = x_ptr + (rows % M).to(tl.int64)[:, None] * K + ks[None, :]
    w_ptrs = w_ptr + (cols % N).to(tl.int64)[None, :] * K + ks[:, None]  # a (BLOCK_K, BLOCK_N) tile of W^T
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, tl.cdiv(K, BLOCK_K)):
        if EVEN_K:
            x = tl.load(x_ptrs)
            w = tl.load(w_ptrs)
        else:
            k_left = K - k * BLOCK_K
            x = tl.load(x_ptrs, mask=ks[None, :] < k_left, other=0.0)
            w = tl.load(w_ptrs, mask=ks[:, None] < k_left, other=0.0)
        acc = tl.dot(x, w, acc, input_precision=PRECISION)
        x_ptrs += BLOCK_K
        w_ptrs += BLOCK_K

    acc += tl.load(b_ptr + cols, mask=cols < N, other=0.0).to(tl.float32)[None, :]
    if APPLY_GELU:  # exact (erf) GELU, as nn.GELU()
        acc = 0.5 * acc * (1.0 + tl.math.erf(acc * 0.7071067811865476))
    mask = (rows[:, None] < M) & (cols[None, :] < N)
    offsets = rows.to(tl.int64)[:, None] * N + cols[None, :]
    if res_ptr is not None:
        acc += tl.load(res_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + offsets, acc.to(out_ptr.dtype.element_ty), mask=mask)


def fused_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, *, gelu: bool = False,
                 residual: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``gelu?(x @ weight.T + bias) + residual``: x (M, K), weight (N, K), bias (N,), residual (M, N) -> (M, N).

    Inputs must be contiguous, of one dtype and on one device (the caller validates); the output has
    the input dtype.
    """
    M, K = x.shape
    N = weight.shape[0]
    out = torch.empty((M, N), device=x.device, dtype=x.dtype)

    def grid(meta):
        return (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]),)

    _linear_kernel[grid](x, weight, bias, residual, out, M, N, K, APPLY_GELU=gelu,
                         PRECISION=dot_precision(x.dtype))
    return out
