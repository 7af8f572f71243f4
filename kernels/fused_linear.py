"""Linear layer with its epilogue fused: ``act(x @ W^T + b) (+ residual)`` in one Triton GEMM.

The encoder block uses it four times: qkv (bias), proj (bias + residual), fc1 (bias + GELU) and fc2
(bias + residual), so no bias, activation or residual add ever makes its own pass over memory.
Accumulation is fp32 for every input dtype; fp32 inputs use exact products (``input_precision="ieee"``).

Two kernels: on Hopper and newer, 16-bit inputs take a persistent kernel fed by TMA tensor descriptors (one
program per SM walks the output tiles, so the next tile's loads overlap this tile's epilogue, which is
written in two halves to keep registers and shared memory small); everything else (fp32, older GPUs,
TMA-misaligned shapes, the CPU interpreter) takes a pointer-based kernel with one program per tile.
"""
from __future__ import annotations

import functools
from typing import Optional

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

from .tuning import INTERPRET, choose, dot_precision, keep_fp32, quick_bench


def _config(block_m: int, block_n: int, block_k: int, stages: int, warps: int, pre_hook=None) -> triton.Config:
    return triton.Config({"BLOCK_M": block_m, "BLOCK_N": block_n, "BLOCK_K": block_k, "GROUP_M": 8},
                         num_stages=stages, num_warps=warps, pre_hook=pre_hook)


# Hopper-sized tiles for 16-bit inputs (the small ones fill the chip at batch 1, where M is only 768
# tokens), and one small tile for fp32, whose exact products run on CUDA cores.
_CONFIGS = choose(_config(32, 32, 32, 1, 4), [
    _config(128, 256, 64, 3, 8),
    _config(128, 128, 64, 4, 8),
    _config(64, 128, 64, 4, 4),
    _config(64, 64, 64, 4, 4),
    _config(64, 64, 32, 2, 4),
])


@triton.jit
def _tile_coordinates(tile, tiles_m, tiles_n, GROUP_M: tl.constexpr):
    # Grouped order: GROUP_M row tiles share each weight column tile while it is in L2.
    group = GROUP_M * tiles_n
    first_m = (tile // group) * GROUP_M
    group_rows = tl.minimum(tiles_m - first_m, GROUP_M)
    return first_m + (tile % group) % group_rows, (tile % group) // group_rows


def _is_fp32_config(config: triton.Config) -> bool:
    return config.kwargs["BLOCK_K"] == 32


@triton.autotune(configs=_CONFIGS, key=["M", "N", "K"], do_bench=quick_bench,
                 prune_configs_by={"early_config_prune": keep_fp32(_is_fp32_config, "x_ptr")})
@triton.heuristics({"EVEN_K": lambda args: args["K"] % args["BLOCK_K"] == 0})
@triton.jit
def _linear_kernel(x_ptr, w_ptr, b_ptr, res_ptr, out_ptr, M, N, K,
                   APPLY_GELU: tl.constexpr, PRECISION: tl.constexpr, BLOCK_M: tl.constexpr,
                   BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr, EVEN_K: tl.constexpr):
    pid_m, pid_n = _tile_coordinates(tl.program_id(0), tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N), GROUP_M)

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


def _tma_config(block_m: int, block_n: int, block_k: int, stages: int, warps: int) -> triton.Config:
    def set_block_shapes(args):
        args["x_desc"].block_shape = [block_m, block_k]
        args["w_desc"].block_shape = [block_n, block_k]
        args["out_desc"].block_shape = [block_m, block_n // 2]
        if args["res_desc"] is not None:
            args["res_desc"].block_shape = [block_m, block_n // 2]

    return _config(block_m, block_n, block_k, stages, warps, pre_hook=set_block_shapes)


# Small tiles keep every SM busy at batch 1 (M = 768 tokens, N down to 768); large ones feed wgmma at batch >= 8.
_TMA_CONFIGS = choose(_tma_config(32, 32, 32, 1, 4), [
    _tma_config(128, 256, 64, 3, 8),
    _tma_config(128, 128, 64, 4, 8),
    _tma_config(128, 128, 128, 3, 8),
    _tma_config(128, 64, 64, 4, 4),
    _tma_config(64, 128, 64, 4, 4),
    _tma_config(64, 64, 64, 4, 4),
])


@triton.autotune(configs=_TMA_CONFIGS, key=["M", "N", "K"], do_bench=quick_bench)
@triton.jit
def _linear_tma_kernel(x_desc, w_desc, b_ptr, res_desc, out_desc, M, N, K, APPLY_GELU: tl.constexpr,
                       NUM_SMS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                       BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr):
    tiles_m = tl.cdiv(M, BLOCK_M)
    tiles_n = tl.cdiv(N, BLOCK_N)
    k_tiles = tl.cdiv(K, BLOCK_K)
    # The epilogue recomputes its tile's coordinates from a counter of its own, so that the flattened
    # loop does not keep the main loop's ones alive across the next tile's prologue.
    done = tl.program_id(0) - NUM_SMS
    for tile in tl.range(tl.program_id(0), tiles_m * tiles_n, NUM_SMS, flatten=True):
        pid_m, pid_n = _tile_coordinates(tile, tiles_m, tiles_n, GROUP_M)
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k in range(k_tiles):  # TMA zero-fills past the edges of x and W
            x = x_desc.load([pid_m * BLOCK_M, k * BLOCK_K])
            w = w_desc.load([pid_n * BLOCK_N, k * BLOCK_K])
            acc = tl.dot(x, w.T, acc)
        done += NUM_SMS
        pid_m, pid_n = _tile_coordinates(done, tiles_m, tiles_n, GROUP_M)
        halves = tl.split(tl.permute(tl.reshape(acc, (BLOCK_M, 2, BLOCK_N // 2)), (0, 2, 1)))
        row = pid_m * BLOCK_M
        for i in tl.static_range(2):
            part = halves[i]
            col = pid_n * BLOCK_N + i * (BLOCK_N // 2)
            cols = col + tl.arange(0, BLOCK_N // 2)
            part += tl.load(b_ptr + cols, mask=cols < N, other=0.0).to(tl.float32)[None, :]
            if APPLY_GELU:  # exact (erf) GELU, as nn.GELU()
                part = 0.5 * part * (1.0 + tl.math.erf(part * 0.7071067811865476))
            if res_desc is not None:
                part += res_desc.load([row, col]).to(tl.float32)
            out_desc.store([row, col], part.to(out_desc.dtype))  # TMA clips the store at the edges


def uses_tma(*tensors: torch.Tensor) -> bool:
    """Whether these operands take the TMA kernel: Hopper or newer, 16-bit data, 16-byte-aligned bases and
    row strides (what a TMA descriptor accepts)."""
    if INTERPRET or tensors[0].device.type != "cuda" or _capability(tensors[0].device) < 9:
        return False
    return all(t.dtype in (torch.float16, torch.bfloat16) and t.data_ptr() % 16 == 0
               and (t.stride(0) * t.element_size()) % 16 == 0 for t in tensors)


@functools.lru_cache(maxsize=None)
def _capability(device: torch.device) -> int:
    return torch.cuda.get_device_capability(device)[0]


@functools.lru_cache(maxsize=None)
def _sm_count(device: torch.device) -> int:
    # Four programs under the interpreter still exercise the persistent loop over several tiles each.
    return 4 if device.type != "cuda" else torch.cuda.get_device_properties(device).multi_processor_count


def _descriptor(t: torch.Tensor) -> TensorDescriptor:
    # The block shape is a placeholder: each autotuned config sets its own in its pre-hook.
    return TensorDescriptor.from_tensor(t, [16, 16])


def linear_tma(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, out: torch.Tensor, gelu: bool,
               residual: Optional[torch.Tensor]) -> None:
    """The persistent TMA kernel into ``out``; :func:`fused_linear` calls it where :func:`uses_tma` holds
    (tests call it directly under the interpreter)."""
    M, K = x.shape
    N = weight.shape[0]
    sms = _sm_count(x.device)

    def grid(meta):
        return (min(sms, triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"])),)

    _linear_tma_kernel[grid](_descriptor(x), _descriptor(weight), bias,
                             None if residual is None else _descriptor(residual), _descriptor(out), M, N, K,
                             APPLY_GELU=gelu, NUM_SMS=sms)


def linear_pointer(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, out: torch.Tensor, gelu: bool,
                   residual: Optional[torch.Tensor]) -> None:
    """The pointer-based kernel into ``out`` (any dtype, any GPU, the interpreter)."""
    M, K = x.shape
    N = weight.shape[0]

    def grid(meta):
        return (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]),)

    _linear_kernel[grid](x, weight, bias, residual, out, M, N, K, APPLY_GELU=gelu,
                         PRECISION=dot_precision(x.dtype))


def fused_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, *, gelu: bool = False,
                 residual: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``gelu?(x @ weight.T + bias) + residual``: x (M, K), weight (N, K), bias (N,), residual (M, N) -> (M, N).

    Inputs must be contiguous, of one dtype and on one device (the caller validates); the output has
    the input dtype.
    """
    out = torch.empty((x.shape[0], weight.shape[0]), device=x.device, dtype=x.dtype)
    launch = linear_tma if uses_tma(x, weight, out, *([residual] if residual is not None else [])) else linear_pointer
    launch(x, weight, bias, out, gelu, residual)
    return out
