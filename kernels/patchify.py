"""The encoder's patch matrix: the search crop and every template crop of each frame cut into non-overlapping p x p
patches, one row per patch, in one launch.

Two strided copies (one per crop kind, ``PatchEmbed.patches``) took 2 x 72 us for 64 B256 frames in bf16 on the
H100, against ~50 us for one pass over the 75 MB read and written; this kernel takes 55 us (2.7 TB/s;
benchmarks/results/step_kernels_v9_h100.txt and _v10_h100.txt). Each program copies one channel of a block of
patches of one crop kind as a [patches, p, p] tile: a patch row's p pixels are contiguous in the crop where its
x stride is 1 (32 bytes in bf16: vector loads), and a patch's p * p values of one channel are contiguous in the
output.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .tuning import INTERPRET, choose, quick_bench

DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def _config(block_r: int, warps: int) -> triton.Config:
    return triton.Config({"BLOCK_R": block_r}, num_warps=warps)


_CONFIGS = choose(_config(4, 4), [_config(4, 4), _config(8, 4), _config(16, 4), _config(16, 8), _config(32, 8)])


@triton.jit
def _copy_patches(crop, index, ok, grid_width, stride_y, stride_x, out_ptr, row, channel, channels,
                  PATCH: tl.constexpr, P: tl.constexpr):
    """Channel ``channel`` of the patches ``index`` (place in the crop, row-major) of the crops at ``crop`` (that
    channel's pointers) to output rows ``row``; ``ok`` masks the block's tail."""
    top = (index // grid_width * PATCH).to(tl.int64) * stride_y
    left = (index % grid_width * PATCH).to(tl.int64) * stride_x
    y = tl.arange(0, P)
    x = tl.arange(0, P)
    pixels = (crop + top + left)[:, None, None] + y[None, :, None] * stride_y + x[None, None, :] * stride_x
    inside = ok[:, None, None] & (y < PATCH)[None, :, None] & (x < PATCH)[None, None, :]
    values = tl.load(pixels, mask=inside)
    columns = channel * PATCH * PATCH + y[:, None] * PATCH + x[None, :]
    rows = row.to(tl.int64) * (channels * PATCH * PATCH)
    tl.store(out_ptr + rows[:, None, None] + columns[None, :, :], values.to(out_ptr.dtype.element_ty), mask=inside)


@triton.autotune(configs=_CONFIGS, key=["frames", "search_tokens", "template_tokens", "channels"],
                 do_bench=quick_bench)
@triton.jit
def _patchify_kernel(search_ptr, templates_ptr, out_ptr, frames, channels, search_tokens, search_grid_width,
                     search_stride_frame, search_stride_c, search_stride_y, search_stride_x, templates_per_frame,
                     template_tokens, template_grid_width, templates_stride_frame, templates_stride_slot,
                     templates_stride_c, templates_stride_y, templates_stride_x, PATCH: tl.constexpr,
                     P: tl.constexpr, BLOCK_R: tl.constexpr):
    # Programs [0, search_programs) take the search patches of every frame, the rest the template patches.
    channel = tl.program_id(1)
    tokens = search_tokens + templates_per_frame * template_tokens
    search_programs = tl.cdiv(frames * search_tokens, BLOCK_R)
    program = tl.program_id(0)
    if program < search_programs:
        patch = program * BLOCK_R + tl.arange(0, BLOCK_R)
        frame, index = patch // search_tokens, patch % search_tokens
        crop = search_ptr + frame.to(tl.int64) * search_stride_frame + channel * search_stride_c
        _copy_patches(crop, index, patch < frames * search_tokens, search_grid_width, search_stride_y,
                      search_stride_x, out_ptr, frame.to(tl.int64) * tokens + index, channel, channels, PATCH, P)
    else:
        patch = (program - search_programs) * BLOCK_R + tl.arange(0, BLOCK_R)
        per_frame = templates_per_frame * template_tokens
        frame, in_frame = patch // per_frame, patch % per_frame
        slot, index = in_frame // template_tokens, in_frame % template_tokens
        crop = (templates_ptr + frame.to(tl.int64) * templates_stride_frame + slot.to(tl.int64) * templates_stride_slot
                + channel * templates_stride_c)
        _copy_patches(crop, index, patch < frames * per_frame, template_grid_width, templates_stride_y,
                      templates_stride_x, out_ptr, frame.to(tl.int64) * tokens + search_tokens + in_frame, channel,
                      channels, PATCH, P)


def patchify(search: torch.Tensor, templates: torch.Tensor, patch_size: int) -> torch.Tensor:
    """The patches of every crop of each frame as rows: search (B, C, H, W) and templates (B, T, C, h, w), any
    strides, -> (B, Nx + T * Nz, C * p * p) contiguous in search's dtype, Nx = (H / p) (W / p) and
    Nz = (h / p) (w / p): per frame the search patches, then each template's, each in row-major order, each row in
    (c, y, x) order. The same values as ``encoder.PatchEmbed.patches`` of each crop batch written side by side
    (templates in another dtype are cast as a copy casts them).

    Raises ``TypeError``/``ValueError`` naming the argument for inputs it cannot take.
    """
    _check(search, templates, patch_size)
    frames, channels, height, width = search.shape
    per_frame, template_height, template_width = templates.shape[1], templates.shape[3], templates.shape[4]
    search_tokens = (height // patch_size) * (width // patch_size)
    template_tokens = (template_height // patch_size) * (template_width // patch_size)
    out = torch.empty(frames, search_tokens + per_frame * template_tokens, channels * patch_size ** 2,
                      device=search.device, dtype=search.dtype)
    if out.numel() == 0:
        return out

    def grid(meta):
        block = meta["BLOCK_R"]
        return (triton.cdiv(frames * search_tokens, block) + triton.cdiv(frames * per_frame * template_tokens, block),
                channels)

    _patchify_kernel[grid](search, templates, out, frames, channels, search_tokens, width // patch_size,
                           search.stride(0), *search.stride()[1:], per_frame, template_tokens,
                           template_width // patch_size, *templates.stride(), PATCH=patch_size,
                           P=triton.next_power_of_2(patch_size))
    return out


def _check(search: torch.Tensor, templates: torch.Tensor, patch_size: int) -> None:
    if not isinstance(patch_size, int) or isinstance(patch_size, bool) or patch_size < 1:
        raise ValueError(f"patch_size must be a positive int, got {patch_size!r}")
    if not isinstance(search, torch.Tensor) or search.dim() != 4:
        raise ValueError(f"search must be a (B, C, H, W) tensor, got {getattr(search, 'shape', type(search).__name__)}")
    if not isinstance(templates, torch.Tensor) or templates.dim() != 5:
        raise ValueError("templates must be a (B, T, C, h, w) tensor, got "
                         f"{getattr(templates, 'shape', type(templates).__name__)}")
    if templates.shape[0] != search.shape[0] or templates.shape[2] != search.shape[1]:
        raise ValueError(f"templates {tuple(templates.shape)} must have search's frames and channels "
                         f"{tuple(search.shape[:2])}")
    for name, tensor in (("search", search), ("templates", templates)):
        if any(size % patch_size for size in tensor.shape[-2:]):
            raise ValueError(f"{name}'s height and width must be multiples of patch_size={patch_size}, got shape "
                             f"{tuple(tensor.shape)}")
        if tensor.dtype not in DTYPES:
            raise TypeError(f"{name} must be a float tensor ({', '.join(map(str, DTYPES))}), got {tensor.dtype}")
    if templates.device != search.device:
        raise ValueError(f"templates ({templates.device}) must be on search's device ({search.device})")
    if search.device.type != "cuda" and not INTERPRET:
        raise ValueError(f"search must be a CUDA tensor for the Triton patch kernel, got device {search.device}")
