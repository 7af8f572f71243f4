"""LayerNorm over the rows of the residual stream, optionally fused with the residual additions before it.

``add_layernorm`` computes s = x + residual + residual_bias + pending_bias (the last one a bias that the GEMM
before left out so that it could accumulate into the stream, or a table with a row per token of a frame: the
position embedding), writes the stream s and LN(s); ``layernorm`` writes only LN(x + pending_bias). One read of
each input and one write of each output per element; fp32 statistics.
Each program holds whole rows in registers (BLOCK_D = next power of two of the width), so the mean and
variance are exact two-pass ones without a second trip to memory.

``maps_layernorm`` gathers its rows from two stacks of feature maps where they lie, one row per pixel (the
additive net's per-token features: the search map's pixels, then every template map's): at 64 B256 frames in
bf16 on the H100 the token copies and torch.cat before PyTorch's LayerNorm took ~42 us and the LayerNorm 58 us
(benchmarks/results/step_kernels_v9_h100.txt); this one pass takes 13.5 us (step_kernels_v10_h100.txt).
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from .tuning import INTERPRET, choose, quick_bench


def _config(block_m: int, warps: int) -> triton.Config:
    return triton.Config({"BLOCK_M": block_m}, num_warps=warps)


_CONFIGS = choose(_config(4, 4), [_config(4, 4), _config(8, 8), _config(16, 8)])


@triton.jit
def _normalized(x, cols, col_ok, D, w_ptr, b_ptr, eps):
    """LayerNorm of each row of the fp32 tile x [rows, BLOCK_D] (columns past D hold zeros), in fp32."""
    mean = tl.sum(x, axis=1) / D
    centred = tl.where(col_ok[None, :], x - mean[:, None], 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(centred * centred, axis=1) / D + eps)
    gamma = tl.load(w_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
    beta = tl.load(b_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
    return centred * rstd[:, None] * gamma[None, :] + beta[None, :]


@triton.autotune(configs=_CONFIGS, key=["M", "D", "HAS_RESIDUAL", "STORE_STREAM"], do_bench=quick_bench)
@triton.jit
def _layernorm_kernel(x_ptr, residual_ptr, residual_stride, residual_bias_ptr, pending_bias_ptr, pending_period,
                      w_ptr, b_ptr, stream_ptr, y_ptr, M, D, eps, HAS_RESIDUAL: tl.constexpr,
                      HAS_RESIDUAL_BIAS: tl.constexpr, HAS_PENDING_BIAS: tl.constexpr, STORE_STREAM: tl.constexpr,
                      BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr):
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
    y = _normalized(x, cols, col_ok, D, w_ptr, b_ptr, eps)
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


@triton.jit
def _load_map_rows(ptr, frame, token, mask, cols, plane, width, stride_frame, stride_map, stride_c, stride_y,
                   stride_x):
    """The pixels ``token`` (numbered over a frame's maps, each row-major; ``plane`` = H * W pixels a map) of
    frames ``frame`` of maps (B, K, C, H, W) at ptr as fp32 rows of channels ``cols``; masked lanes read 0."""
    which, pixel = token // plane, token % plane
    offsets = (frame.to(tl.int64) * stride_frame + which.to(tl.int64) * stride_map
               + (pixel // width).to(tl.int64) * stride_y + (pixel % width).to(tl.int64) * stride_x)
    return tl.load(ptr + offsets[:, None] + cols[None, :] * stride_c, mask=mask, other=0.0).to(tl.float32)


@triton.autotune(configs=_CONFIGS, key=["M", "D", "first_tokens", "tokens"], do_bench=quick_bench)
@triton.jit
def _maps_layernorm_kernel(first_ptr, first_plane, first_width, first_stride_frame, first_stride_map,
                           first_stride_c, first_stride_y, first_stride_x, second_ptr, second_plane, second_width,
                           second_stride_frame, second_stride_map, second_stride_c, second_stride_y,
                           second_stride_x, first_tokens, tokens, w_ptr, b_ptr, y_ptr, M, D, eps,
                           BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_D)
    col_ok = cols < D
    frame, token = rows // tokens, rows % tokens
    from_first = token < first_tokens
    row_ok = rows < M
    # Each row comes from one source: the other's load is masked off, so every element is read once.
    x = _load_map_rows(first_ptr, frame, token, (row_ok & from_first)[:, None] & col_ok[None, :], cols,
                       first_plane, first_width, first_stride_frame, first_stride_map, first_stride_c,
                       first_stride_y, first_stride_x)
    x += _load_map_rows(second_ptr, frame, token - first_tokens, (row_ok & ~from_first)[:, None] & col_ok[None, :],
                        cols, second_plane, second_width, second_stride_frame, second_stride_map, second_stride_c,
                        second_stride_y, second_stride_x)
    y = _normalized(x, cols, col_ok, D, w_ptr, b_ptr, eps)
    tl.store(y_ptr + rows.to(tl.int64)[:, None] * D + cols[None, :], y.to(y_ptr.dtype.element_ty),
             mask=row_ok[:, None] & col_ok[None, :])


MAPS_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def maps_layernorm(first: torch.Tensor, second: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float,
                   out_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """LayerNorm over the channels of every pixel of two stacks of feature maps, the pixels of each frame
    concatenated: first (B, K1, C, H1, W1) and second (B, K2, C, H2, W2), any strides, weight and bias (C,) ->
    (B, K1 H1 W1 + K2 H2 W2, C) contiguous in ``out_dtype`` (default: the maps' dtype). Row order per frame: the
    first stack's maps, then the second's, each map's pixels row-major; each element is read once, the statistics
    are fp32.

    The maps share one dtype (float32, float16 or bfloat16); weight and bias are in it or fp32. Raises
    ``TypeError``/``ValueError`` naming the argument for inputs it cannot take.
    """
    out_dtype = out_dtype or first.dtype
    _check_maps(first, second, weight, bias, out_dtype)
    frames, channels = first.shape[0], first.shape[2]
    first_tokens = first.shape[1] * first.shape[3] * first.shape[4]
    tokens = first_tokens + second.shape[1] * second.shape[3] * second.shape[4]
    y = torch.empty(frames, tokens, channels, device=first.device, dtype=out_dtype)
    M = frames * tokens
    if M == 0:
        return y

    def grid(meta):
        return (triton.cdiv(M, meta["BLOCK_M"]),)

    _maps_layernorm_kernel[grid](
        first, first.shape[3] * first.shape[4], first.shape[4], *first.stride(),
        second, second.shape[3] * second.shape[4], second.shape[4], *second.stride(),
        first_tokens, tokens, weight, bias, y, M, channels, eps, BLOCK_D=triton.next_power_of_2(channels))
    return y


def _check_maps(first: torch.Tensor, second: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                out_dtype: torch.dtype) -> None:
    for name, maps in (("first", first), ("second", second)):
        if not isinstance(maps, torch.Tensor) or maps.dim() != 5:
            raise ValueError(f"{name} must be a (B, K, C, H, W) tensor, got "
                             f"{getattr(maps, 'shape', type(maps).__name__)}")
    if second.shape[0] != first.shape[0] or second.shape[2] != first.shape[2]:
        raise ValueError(f"second {tuple(second.shape)} must have first's frames and channels (dims 0 and 2 of "
                         f"{tuple(first.shape)})")
    channels = first.shape[2]
    for name, param in (("weight", weight), ("bias", bias)):
        if not isinstance(param, torch.Tensor) or tuple(param.shape) != (channels,) or param.stride(0) != 1:
            raise ValueError(f"{name} must be a contiguous ({channels},) vector (the maps' channels), got "
                             f"{getattr(param, 'shape', type(param).__name__)}")
    if first.dtype not in MAPS_DTYPES or second.dtype != first.dtype:
        raise TypeError(f"first and second must share a dtype among {MAPS_DTYPES}, got {first.dtype} and "
                        f"{second.dtype}")
    if out_dtype not in MAPS_DTYPES:
        raise TypeError(f"out_dtype must be one of {MAPS_DTYPES}, got {out_dtype}")
    for name, param in (("weight", weight), ("bias", bias)):
        if param.dtype not in (first.dtype, torch.float32):
            raise TypeError(f"{name} ({param.dtype}) must be float32 or the maps' dtype ({first.dtype})")
    for name, tensor in (("second", second), ("weight", weight), ("bias", bias)):
        if tensor.device != first.device:
            raise ValueError(f"{name} ({tensor.device}) must be on first's device ({first.device})")
    if first.device.type != "cuda" and not INTERPRET:
        raise ValueError(f"the maps must be CUDA tensors for the Triton LayerNorm, got device {first.device}")
