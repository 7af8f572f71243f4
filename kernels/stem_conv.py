"""The additive net's stem convolutions (3x3, stride 2, padding 1) with their folded BatchNorm and ReLU, as
implicit GEMMs on the tensor cores, writing channels-last maps.

cuDNN has no tensor-core kernel for 3 input channels: in bf16 it ran a generic one at 522 us for the 192 crops of
64 B256 frames (memory floor: 75 MB in, 151 MB out, 78 us at 2.9 TB/s) and 15.8 us for the 3 crops of one
frame, after a cat of the search and template crops and a conversion to channels-last, each a pass of its own
(benchmarks/NOTES.md, step version 8); for the later stages (24 -> 48 -> 96 -> 96 channels) it picked an sm80
"indexed" kernel at 2.5x the memory floor (199 us for 24 -> 48 at 64 frames, floor 78 us) and ~10 us per stage
at one frame. Here each program gathers the inputs of a tile of output pixels of one crop, 32 of the
9 x C_in (tap, channel) products at a time, into a [pixels, 32] tile and multiplies it by the matching [32, C_out]
slice of the weight, accumulating in fp32 (fp32 inputs use exact products). The input is addressed by strides,
so the first stage reads the NCHW search and template crops where they are (a crop is taken from one batch or
the other by its index: no cat, no conversion) and the later ones read the channels-last map before them.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .tuning import choose, dot_precision, quick_bench

BLOCK_K = 32


def _config(block_p: int, warps: int) -> triton.Config:
    return triton.Config({"BLOCK_P": block_p}, num_warps=warps)


_CONFIGS = choose(_config(16, 4), [_config(64, 4), _config(128, 4), _config(256, 8)])


@triton.autotune(configs=_CONFIGS, key=["crops", "size", "CIN", "COUT"], do_bench=quick_bench)
@triton.jit
def _conv3x3s2_kernel(search_ptr, templates_ptr, w_ptr, b_ptr, out_ptr, crops, templates_per_frame, size, out_size,
                      stride_crop, stride_channel, stride_y, stride_x,
                      w_stride_out, w_stride_channel, w_stride_y, w_stride_x, CIN: tl.constexpr, COUT: tl.constexpr,
                      C_PAD: tl.constexpr, PRECISION: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_P: tl.constexpr):
    # Crop c of frame f is the search crop (slot 0) or template slot - 1 of that frame; without templates
    # (templates_per_frame = 0) every crop comes from search_ptr.
    crop = tl.program_id(1)
    frame = crop // (templates_per_frame + 1)
    slot = crop % (templates_per_frame + 1)
    if slot == 0:
        base = search_ptr + frame.to(tl.int64) * stride_crop
    else:
        base = templates_ptr + (frame.to(tl.int64) * templates_per_frame + slot - 1) * stride_crop
    pixels = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    pixel_ok = pixels < out_size * out_size
    top, left = 2 * (pixels // out_size) - 1, 2 * (pixels % out_size) - 1
    out_channel = tl.arange(0, C_PAD)
    acc = tl.zeros((BLOCK_P, C_PAD), dtype=tl.float32)
    for k0 in range(0, 9 * CIN, BLOCK_K):
        # k runs over (tap, channel) with the channel fastest: contiguous runs in a channels-last input.
        k = k0 + tl.arange(0, BLOCK_K)
        tap, channel = k // CIN, k % CIN
        ky, kx = tap // 3, tap % 3
        iy = top[:, None] + ky[None, :]
        ix = left[:, None] + kx[None, :]
        inside = pixel_ok[:, None] & (k < 9 * CIN)[None, :] & (iy >= 0) & (iy < size) & (ix >= 0) & (ix < size)
        patches = tl.load(base + channel[None, :] * stride_channel + iy * stride_y + ix * stride_x, mask=inside,
                          other=0.0)
        w_offsets = (out_channel[None, :] * w_stride_out + channel[:, None] * w_stride_channel
                     + ky[:, None] * w_stride_y + kx[:, None] * w_stride_x)
        weight = tl.load(w_ptr + w_offsets, mask=(k < 9 * CIN)[:, None] & (out_channel < COUT)[None, :], other=0.0)
        acc = tl.dot(patches.to(weight.dtype), weight, acc, input_precision=PRECISION)
    acc += tl.load(b_ptr + out_channel, mask=out_channel < COUT, other=0.0).to(tl.float32)[None, :]
    acc = tl.maximum(acc, 0.0)
    rows = crop.to(tl.int64) * out_size * out_size + pixels
    tl.store(out_ptr + rows[:, None] * COUT + out_channel[None, :], acc.to(out_ptr.dtype.element_ty),
             mask=pixel_ok[:, None] & (out_channel < COUT)[None, :])


def _launch(search: torch.Tensor, templates: torch.Tensor, templates_per_frame: int, crops: int,
            weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """search / templates: 4-D (crop, channel, y, x) views in any strides (templates only read when
    templates_per_frame > 0)."""
    size = search.shape[-1]
    out_size, channels = (size + 1) // 2, weight.shape[0]
    out = torch.empty(crops, out_size, out_size, channels, device=search.device, dtype=weight.dtype)

    def grid(meta):
        return (triton.cdiv(out_size * out_size, meta["BLOCK_P"]), crops)

    _conv3x3s2_kernel[grid](search, templates, weight, bias, out, crops, templates_per_frame, size, out_size,
                            *search.stride(), *weight.stride(), CIN=weight.shape[1], COUT=channels,
                            C_PAD=max(16, triton.next_power_of_2(channels)), PRECISION=dot_precision(weight.dtype),
                            BLOCK_K=BLOCK_K)
    return out.permute(0, 3, 1, 2)


def stem_conv_relu(search: torch.Tensor, templates: torch.Tensor, weight: torch.Tensor,
                   bias: torch.Tensor) -> torch.Tensor:
    """ReLU(conv3x3/2(crop) + bias) of every crop: search (B, C_in, S, S) and templates (B, T, C_in, S, S), any
    strides (the same for both), any float dtype; weight (C, C_in, 3, 3) in any layout and bias (C,) in the
    compute dtype -> (B * (1 + T), C, S', S') channels-last in the weight's dtype, S' = (S + 1) // 2, crops ordered
    search, templates per frame. Shapes, dtypes and devices are validated by the caller (``actrack_fast.additive``)."""
    frames, per_frame = templates.shape[:2]
    return _launch(search, templates.flatten(0, 1), per_frame, frames * (1 + per_frame), weight, bias)


def conv3x3s2_relu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """ReLU(conv3x3/2(x) + bias): x (N, C_in, S, S) in any strides (channels-last reads fastest), weight
    (C, C_in, 3, 3) in any layout, bias (C,) -> (N, C, S', S') channels-last in the weight's dtype. Validated by
    the caller."""
    return _launch(x, x, 0, x.shape[0], weight, bias)
