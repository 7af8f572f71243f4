"""LayerNorm over rows, optionally after adding the injected additive features to the residual stream.

``x' = x + additive @ W_inj^T + b_inj`` (the ACTrack injection, a GEMM with K = C_a) and ``LN(x')`` are
one pass: each program holds whole rows in registers, so the residual stream is read once, the new
stream and its normalised copy are written once, and the statistics are exact two-pass ones on the
rounded stream (what the reference normalises).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from .tuning import choose, dot_precision, quick_bench


def _config(block_m: int, warps: int) -> triton.Config:
    return triton.Config({"BLOCK_M": block_m}, num_warps=warps)


_CONFIGS = choose(_config(16, 4), [_config(16, 4), _config(16, 8), _config(32, 8), _config(32, 16)])


@triton.autotune(configs=_CONFIGS, key=["M", "D", "A", "HAS_INJECTION"], do_bench=quick_bench)
@triton.jit
def _add_layernorm_kernel(x_ptr, add_ptr, inj_w_ptr, inj_b_ptr, ln_w_ptr, ln_b_ptr, x_out_ptr, y_ptr, M, D, A, eps,
                          HAS_INJECTION: tl.constexpr, PRECISION: tl.constexpr, BLOCK_D: tl.constexpr,
                          BLOCK_A: tl.constexpr, BLOCK_M: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_D)
    row_ok = rows < M
    col_ok = cols < D
    mask = row_ok[:, None] & col_ok[None, :]
    offsets = rows.to(tl.int64)[:, None] * D + cols[None, :]
    x = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    if HAS_INJECTION:
        acc = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)
        for start in range(0, A, BLOCK_A):
            feats = start + tl.arange(0, BLOCK_A)
            f = tl.load(add_ptr + rows.to(tl.int64)[:, None] * A + feats[None, :],
                        mask=row_ok[:, None] & (feats[None, :] < A), other=0.0)
            w = tl.load(inj_w_ptr + cols[None, :] * A + feats[:, None],  # a (BLOCK_A, BLOCK_D) tile of W_inj^T
                        mask=(feats[:, None] < A) & col_ok[None, :], other=0.0)
            acc = tl.dot(f, w, acc, input_precision=PRECISION)
        acc += tl.load(inj_b_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
        x_new = (x + acc).to(x_out_ptr.dtype.element_ty)
        tl.store(x_out_ptr + offsets, x_new, mask=mask)
        x = x_new.to(tl.float32)
    mean = tl.sum(x, axis=1) / D
    centred = tl.where(col_ok[None, :], x - mean[:, None], 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(centred * centred, axis=1) / D + eps)
    gamma = tl.load(ln_w_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
    beta = tl.load(ln_b_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
    y = centred * rstd[:, None] * gamma[None, :] + beta[None, :]
    tl.store(y_ptr + offsets, y.to(y_ptr.dtype.element_ty), mask=mask)


def add_layernorm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float,
                  additive: Optional[torch.Tensor] = None, injection_weight: Optional[torch.Tensor] = None,
                  injection_bias: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """``x' = x + additive @ injection_weight.T + injection_bias`` (when given) and ``LayerNorm(x')``.

    Shapes: x (M, D), weight and bias (D,), additive (M, A), injection_weight (D, A), injection_bias (D,).
    Returns ``(x', LayerNorm(x'))``, both (M, D) in x's dtype; without an injection ``x'`` is ``x`` itself.
    Inputs must be contiguous, of one dtype and on one device (the caller validates).
    """
    M, D = x.shape
    has_injection = additive is not None
    A = additive.shape[1] if has_injection else 0
    x_out = torch.empty_like(x) if has_injection else x
    y = torch.empty_like(x)

    def grid(meta):
        return (triton.cdiv(M, meta["BLOCK_M"]),)

    _add_layernorm_kernel[grid](x, additive, injection_weight, injection_bias, weight, bias, x_out, y, M, D, A, eps,
                                HAS_INJECTION=has_injection, PRECISION=dot_precision(x.dtype),
                                BLOCK_D=triton.next_power_of_2(D),
                                BLOCK_A=max(16, min(32, triton.next_power_of_2(max(A, 1)))))
    return x_out, y
