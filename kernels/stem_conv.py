"""The additive net's first convolution (3 -> C channels, 3x3, stride 2, padding 1) with its folded BatchNorm and
ReLU, from the NCHW search and template crops straight to one channels-last map of every crop.

cuDNN has no tensor-core kernel for 3 input channels: in bf16 it ran a generic one at 522 us for the 192 crops of
64 B256 frames (memory floor: 75 MB in, 151 MB out, 78 us at 2.9 TB/s) and 15.8 us for the 3 crops of one
frame, after a cat of the search and template crops and a conversion to channels-last, each a pass of its own
(benchmarks/NOTES.md, step version 8). Here each program gathers the 27 inputs (3 x 3 x 3, padded to 32) of a
tile of output pixels of one crop into a [pixels, 32] tile and multiplies it by the [32, C] weight on the tensor
cores; the crop is read from the search or the template batch by its index, so the cat and the conversion are
gone. Accumulation is fp32; fp32 inputs use exact products.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .tuning import choose, dot_precision, quick_bench

TAPS = 27  # 3 channels x 3 x 3


def _config(block_p: int, warps: int) -> triton.Config:
    return triton.Config({"BLOCK_P": block_p}, num_warps=warps)


_CONFIGS = choose(_config(16, 4), [_config(64, 4), _config(128, 4), _config(256, 8)])


@triton.autotune(configs=_CONFIGS, key=["crops", "size", "COUT"], do_bench=quick_bench)
@triton.jit
def _stem_conv_kernel(search_ptr, templates_ptr, w_ptr, b_ptr, out_ptr, crops, templates_per_frame, size, out_size,
                      w_stride_out, w_stride_channel, w_stride_y, w_stride_x, COUT: tl.constexpr,
                      C_PAD: tl.constexpr, PRECISION: tl.constexpr, BLOCK_P: tl.constexpr):
    crop = tl.program_id(1)
    frame = crop // (templates_per_frame + 1)
    slot = crop % (templates_per_frame + 1)
    plane = size * size
    if slot == 0:
        base = search_ptr + frame.to(tl.int64) * 3 * plane
    else:
        base = templates_ptr + (frame.to(tl.int64) * templates_per_frame + slot - 1) * 3 * plane
    pixels = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    pixel_ok = pixels < out_size * out_size
    oy, ox = pixels // out_size, pixels % out_size
    tap = tl.arange(0, 32)
    channel, ky, kx = tap // 9, (tap % 9) // 3, tap % 3
    iy = 2 * oy[:, None] - 1 + ky[None, :]
    ix = 2 * ox[:, None] - 1 + kx[None, :]
    inside = pixel_ok[:, None] & (tap < 27)[None, :] & (iy >= 0) & (iy < size) & (ix >= 0) & (ix < size)
    patches = tl.load(base + channel[None, :] * plane + iy * size + ix, mask=inside, other=0.0)
    # The weight in whatever layout it has (the folded one is channels-last).
    out_channel = tl.arange(0, C_PAD)
    offsets = (out_channel[None, :] * w_stride_out + channel[:, None] * w_stride_channel + ky[:, None] * w_stride_y
               + kx[:, None] * w_stride_x)
    weight = tl.load(w_ptr + offsets, mask=(tap < 27)[:, None] & (out_channel < COUT)[None, :], other=0.0)
    acc = tl.dot(patches.to(weight.dtype), weight, input_precision=PRECISION)
    acc += tl.load(b_ptr + out_channel, mask=out_channel < COUT, other=0.0).to(tl.float32)[None, :]
    acc = tl.maximum(acc, 0.0)
    rows = crop.to(tl.int64) * out_size * out_size + pixels
    tl.store(out_ptr + rows[:, None] * COUT + out_channel[None, :], acc.to(out_ptr.dtype.element_ty),
             mask=pixel_ok[:, None] & (out_channel < COUT)[None, :])


def stem_conv_relu(search: torch.Tensor, templates: torch.Tensor, weight: torch.Tensor,
                   bias: torch.Tensor) -> torch.Tensor:
    """ReLU(conv3x3/2(crop) + bias) of every crop: search (B, 3, S, S) and templates (B, T, 3, S, S), contiguous,
    any float dtype; weight (C, 3, 3, 3) in any layout and bias (C,) in the compute dtype -> (B * (1 + T), C,
    S', S') channels-last in the weight's dtype, S' = (S + 1) // 2, crops ordered search, templates per frame.
    Shapes, dtypes and devices are validated by the caller (``actrack_fast.additive``)."""
    frames, per_frame, _, size = templates.shape[:4]
    out_size, channels = (size + 1) // 2, weight.shape[0]
    crops = frames * (1 + per_frame)
    out = torch.empty(crops, out_size, out_size, channels, device=search.device, dtype=weight.dtype)

    def grid(meta):
        return (triton.cdiv(out_size * out_size, meta["BLOCK_P"]), crops)

    _stem_conv_kernel[grid](search, templates, weight, bias, out, crops, per_frame, size, out_size, *weight.stride(),
                            COUT=channels, C_PAD=max(16, triton.next_power_of_2(channels)),
                            PRECISION=dot_precision(weight.dtype))
    return out.permute(0, 3, 1, 2)
