"""LayerNorm over the rows of the residual stream, optionally fused with the residual additions before it.

``add_layernorm`` computes s = x + residual + residual_bias + pending_bias (the last one a bias that the GEMM
before left out so that it could accumulate into the stream, or a table with a row per token of a frame: the
position embedding), writes the stream s and LN(s); ``layernorm`` writes only LN(x + pending_bias). One read of each input and one write of each output per element; fp32 statistics.
Each program holds whole rows in registers (BLOCK_D = next power of two of the width), so the mean and
variance are exact two-pass ones without a second trip to memory.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from .tuning import choose, quick_bench


def _config(block_m: int, warps: int) -> triton.Config:
    return triton.Config({"BLOCK_M": block_m}, num_warps=warps)


_CONFIGS = choose(_config(4, 4), [_config(4, 4), _config(8, 8), _config(16, 8)])


@triton.autotune(configs=_CONFIGS, key=["M", "D", "HAS_RESIDUAL", "STORE_STREAM"], do_bench=quick_bench)
@triton.jit
def _layernorm_kernel(x_ptr, residual_ptr, residual_stride, residual_bias_ptr, pending_bias_ptr, pending_period,
                      w_ptr, b_ptr, stream_ptr, y_ptr, M, D, eps, HAS_RESIDUAL: tl.constexpr, HAS_RESIDUAL_BIAS: tl.constexpr,
                      HAS_PENDING_BIAS: tl.constexpr, STORE_STREAM: tl.constexpr, BLOCK_D: tl.constexpr,
                      BLOCK_M: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_D)
    col_ok = cols < D
    mask = (rows < M)[:, None] & col_ok[None, :]
    offsets = rows.to(tl.int64)[:, None] * D + cols[None, :]
    x = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    if HAS_RESIDUAL:
        x += tl.load(residual_ptr + rows.to(tl.int64)[:, None] * residual_stride + cols[None, :], mask=mask,
                     other=0.0).to(tl.float32)
    if HAS_RESIDUAL_BIAS:
        x += tl.load(residual_bias_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    if HAS_PENDING_BIAS:  # row r takes the table's row r % period (a period of 1: one bias vector)
        x += tl.load(pending_bias_ptr + (rows % pending_period)[:, None] * D + cols[None, :], mask=mask,
                     other=0.0).to(tl.float32)
    if STORE_STREAM:
        tl.store(stream_ptr + offsets, x.to(stream_ptr.dtype.element_ty), mask=mask)
    mean = tl.sum(x, axis=1) / D
    centred = tl.where(col_ok[None, :], x - mean[:, None], 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(centred * centred, axis=1) / D + eps)
    gamma = tl.load(w_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
    beta = tl.load(b_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
    y = centred * rstd[:, None] * gamma[None, :] + beta[None, :]
    tl.store(y_ptr + offsets, y.to(y_ptr.dtype.element_ty), mask=mask)


def _launch(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float,
            residual: Optional[torch.Tensor], residual_bias: Optional[torch.Tensor],
            pending_bias: Optional[torch.Tensor], stream: Optional[torch.Tensor]) -> torch.Tensor:
    M, D = x.shape
    y = torch.empty_like(x)
    period = 1 if pending_bias is None or pending_bias.dim() == 1 else pending_bias.shape[0]
    if pending_bias is not None and (pending_bias.shape[-1] != D or M % period or not pending_bias.is_contiguous()):
        raise ValueError(f"pending_bias must be a contiguous ({D},) vector or (P, {D}) table with P dividing "
                         f"{M} rows, got shape {tuple(pending_bias.shape)}")

    def grid(meta):
        return (triton.cdiv(M, meta["BLOCK_M"]),)

    # Absent operands are passed as x: never read (their constexpr flag is off), and no None pointers.
    _layernorm_kernel[grid](
        x, x if residual is None else residual, D if residual is None else residual.stride(0),
        x if residual_bias is None else residual_bias, x if pending_bias is None else pending_bias, period,
        weight, bias, x if stream is None else stream, y, M, D, eps,
        HAS_RESIDUAL=residual is not None, HAS_RESIDUAL_BIAS=residual_bias is not None,
        HAS_PENDING_BIAS=pending_bias is not None, STORE_STREAM=stream is not None,
        BLOCK_D=triton.next_power_of_2(D))
    return y


def layernorm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float, *,
              pending_bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """LayerNorm of each row of x + pending_bias: x (M, D), weight, bias (D,), pending_bias (D,) or (P, D) (row r
    takes row r % P) -> (M, D) in x's dtype; the sum is formed in fp32 and not stored.

    Inputs must be on one device, x contiguous (the caller validates).
    """
    return _launch(x, weight, bias, eps, None, None, pending_bias, None)


def add_layernorm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float, *,
                  residual: Optional[torch.Tensor] = None, residual_bias: Optional[torch.Tensor] = None,
                  pending_bias: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(s, LN(s)) with s = x + residual + residual_bias + pending_bias, both (M, D) in x's dtype.

    The sum is formed in fp32 and rounded once. ``residual`` (M, D) may be a column slice of a wider matrix
    (unit column stride, any row stride); the biases are (D,) vectors, pending_bias may be a (P, D) table whose
    row r % P goes to row r; absent terms count as zero. Both
    outputs are new tensors: the autotuner re-runs the kernel, so it must not write over its inputs. Inputs
    must be on one device, x contiguous; LayerNorm parameters may be fp32 next to 16-bit x (the caller
    validates).
    """
    if residual is not None and (residual.shape != x.shape or residual.stride(1) != 1):
        raise ValueError(f"residual must be ({x.shape[0]}, {x.shape[1]}) with unit column stride, got shape "
                         f"{tuple(residual.shape)} and strides {residual.stride()}")
    stream = torch.empty_like(x)
    return stream, _launch(x, weight, bias, eps, residual, residual_bias, pending_bias, stream)
