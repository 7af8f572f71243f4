"""Frozen one-stream ViT encoder, SeqTrack-shaped, with an optional additive input per block.

State-dict keys match SeqTrack's ``encoder.body.*`` (spec section 2): ``pos_embed``,
``patch_embed.proj``, ``blocks.i.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``, ``norm``.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from . import backend
from .config import ModelConfig

LAYER_NORM_EPS = 1e-6


class PatchEmbed(nn.Module):
    """Non-overlapping patches: (B, 3, S, S) -> (B, (S/p)^2, dim).

    The stride-p convolution (``proj``, kept as SeqTrack stores it) runs as the GEMM it is, patches as rows:
    for one bf16 frame on the H100, cuDNN's kernel for it took 82 us against a few us for the GEMM.
    """

    def __init__(self, patch_size: int, dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)

    def patches(self, image: torch.Tensor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(..., 3, S, S) -> (..., (S/p)^2, 3 p p), each row one patch in the conv weight's (c, y, x) order;
        written into ``out`` (that shape, any strides that allow the view) when given, in one copy."""
        p = self.patch_size
        grid = rearrange(image, "... c (h p) (w q) -> ... h w c p q", p=p, q=p)  # a view
        if out is None:
            return grid.flatten(-5, -4).flatten(-3, -1)
        return out.view(grid.shape).copy_(grid).view(out.shape)

    def embed_patches(self, patches: torch.Tensor) -> torch.Tensor:
        """Rows of :meth:`patches` -> tokens (..., dim)."""
        return F.linear(patches, self.proj.weight.flatten(1), self.proj.bias)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.embed_patches(self.patches(image))


class Attention(nn.Module):
    """Multi-head self-attention over every token of the frame (B, N, dim) -> (B, N, dim)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, queries: Optional[int] = None) -> torch.Tensor:
        """(B, N, dim) -> (B, N, dim); with ``queries`` = Q only the first Q tokens attend: -> (B, Q, dim)."""
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        if queries is not None:
            q = q[:, :, :queries]
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(B, -1, C))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm ViT block with the ACTrack additive input.

    ``forward(x, additive, injection)``: when given, ``injection(additive)`` (the zero-initialised
    projection of the additive net's per-token features) is added to the token stream first; then
    ``x += attn(norm1(x)); x += mlp(norm2(x))``. With ``queries`` = Q, only the first Q tokens attend and go
    on through the block (every token still gives keys and values): (B, N, dim) -> (B, Q, dim). ``forward``
    runs the Triton kernels (``fast_encoder``) where ``backend.select("encoder_block", ...)`` picks them,
    ``reference_forward`` otherwise.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(
        self, x: torch.Tensor, additive: Optional[torch.Tensor] = None, injection: Optional[nn.Module] = None,
        queries: Optional[int] = None,
    ) -> torch.Tensor:
        # Under torch.compile the reference is traced: Inductor generates its own kernels.
        if not torch.compiler.is_compiling() and backend.select("encoder_block", x) == "triton":
            from .fast_encoder import fused_block_forward  # imported on first use: loads Triton

            return fused_block_forward(self, x, additive, injection, queries)
        return self.reference_forward(x, additive, injection, queries)

    def reference_forward(
        self, x: torch.Tensor, additive: Optional[torch.Tensor] = None, injection: Optional[nn.Module] = None,
        queries: Optional[int] = None,
    ) -> torch.Tensor:
        if additive is not None and injection is not None:
            x = x + injection(additive)
        attended = self.attn(self.norm1(x), queries)
        x = (x if queries is None else x[:, :queries]) + attended
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """The SeqTrack ViT (``encoder.body``): shared patch embedding, one position table, blocks, norm."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.num_search_tokens = config.num_search_tokens
        self.pos_embed = nn.Parameter(
            torch.zeros(1, config.num_search_tokens + config.num_template_tokens, config.embed_dim)
        )
        self.patch_embed = PatchEmbed(config.patch_size, config.embed_dim)
        self.blocks = nn.ModuleList(
            Block(config.embed_dim, config.num_heads, config.mlp_ratio) for _ in range(config.depth)
        )
        self.norm = nn.LayerNorm(config.embed_dim, eps=LAYER_NORM_EPS)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def patch_tokens(self, search: torch.Tensor, templates: torch.Tensor, fused: bool = False) -> torch.Tensor:
        """Tokens in SeqTrack order before the position embedding (:meth:`add_positions`):
        (B, 3, Ss, Ss), (B, T, 3, St, St) -> (B, Nx + T*Nz, dim); all patches go through one GEMM. With ``fused``
        the patch matrix is cut by one Triton kernel (``kernels.patchify``, the same values) instead of two
        copies."""
        B, T, Nx = templates.shape[0], templates.shape[1], self.num_search_tokens
        p = self.patch_embed.patch_size
        # The kernel's output has no autograd history: crops that need a gradient take the copies.
        if fused and not (torch.is_grad_enabled() and (search.requires_grad or templates.requires_grad)):
            from kernels.patchify import patchify  # imported on first use: loads Triton

            return self.patch_embed.embed_patches(patchify(search, templates, p))
        patches = search.new_empty(B, Nx + T * (templates.shape[-1] // p) ** 2, 3 * p * p)
        self.patch_embed.patches(search, patches[:, :Nx])
        self.patch_embed.patches(templates, patches[:, Nx:].unflatten(1, (T, -1)))
        return self.patch_embed.embed_patches(patches)

    def add_positions(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens`` (B, Nx + T*Nz, dim) += the position embedding, in place; every template shares the template
        part of ``pos_embed`` (broadcast: no per-frame copy of the position table)."""
        Nx = self.num_search_tokens
        tokens[:, :Nx] += self.pos_embed[:, :Nx]
        tokens[:, Nx:].unflatten(1, (-1, self.pos_embed.shape[1] - Nx)).add_(self.pos_embed[:, None, Nx:])
        return tokens

    def forward(
        self,
        search: torch.Tensor,
        templates: torch.Tensor,
        additive: Optional[torch.Tensor] = None,
        injections: Optional[nn.ModuleDict] = None,
        search_only: bool = False,
    ) -> torch.Tensor:
        """(B, 3, Ss, Ss), (B, T, 3, St, St), additive (B, N, C_a) -> (B, N, dim), or (B, Nx, dim) with
        ``search_only``: then the last block runs only the search tokens' queries and everything after them
        (the decoder reads no other token; the same values as slicing the full output).

        ``injections`` maps a block index (as a string) to the projection added before that block.
        """
        # Under torch.compile the reference is traced: Inductor generates its own kernels.
        fused = (not torch.compiler.is_compiling()
                 and backend.select("encoder_block", _token_stand_in(search)) == "triton")
        x = self.patch_tokens(search, templates, fused)
        queries = self.num_search_tokens if search_only else None
        if fused:
            from .fast_encoder import fused_blocks_forward, position_table  # imported on first use: loads Triton

            # The positions join the first block's fused sum instead of a pass of their own.
            positions = position_table(self, templates.shape[1])
            return fused_blocks_forward(self.blocks, x, additive, injections, self.norm, queries, positions)
        x = self.add_positions(x)
        last = len(self.blocks) - 1
        for index, block in enumerate(self.blocks):
            injection = injections[str(index)] if injections is not None and str(index) in injections else None
            x = block(x, additive, injection, queries if index == last else None)
        return self.norm(x)


def _token_stand_in(search: torch.Tensor) -> torch.Tensor:
    """An empty tensor with the rank, device and dtype of the tokens the patch GEMM makes of ``search`` (autocast's
    dtype where it casts search), for choosing the encoder's backend before the patches are cut: the Triton path
    cuts them with a kernel of its own."""
    device = search.device.type
    cast = torch.is_autocast_enabled(device) and search.dtype in (torch.float32, torch.float16, torch.bfloat16)
    return search.new_empty((0, 0, 0), dtype=torch.get_autocast_dtype(device) if cast else search.dtype)


class Encoder(nn.Module):
    """Wrapper whose ``body`` holds the ViT, so keys read ``encoder.body.*`` as in SeqTrack."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.body = VisionTransformer(config)

    def forward(
        self,
        search: torch.Tensor,
        templates: torch.Tensor,
        additive: Optional[torch.Tensor] = None,
        injections: Optional[nn.ModuleDict] = None,
        search_only: bool = False,
    ) -> torch.Tensor:
        return self.body(search, templates, additive, injections, search_only)
