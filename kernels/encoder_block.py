"""One pre-norm ViT encoder block with ACTrack's additive input: eight launches of three Triton kernels.

    x' = x + additive @ W_inj^T + b_inj            fused_linear  (the injection; residual in the epilogue)
    h = LN1(x')                                    layernorm
    qkv = h @ W_qkv^T + b_qkv                      fused_linear
    o = attention(q, k, v) over all N tokens       attention     (heads read from qkv in place, no permutes;
                                                                 cuDNN's through SDPA for large 16-bit batches)
    x'' = x' + o @ W_proj^T + b_proj               fused_linear  (residual epilogue)
    h = LN2(x'')                                   layernorm
    u = GELU(h @ W_fc1^T + b_fc1)                  fused_linear  (bias + GELU epilogue)
    x''' = x'' + u @ W_fc2^T + b_fc2               fused_linear  (residual epilogue)

Every intermediate is written once in the input dtype and read once; accumulation is fp32. The injection
is a GEMM of its own rather than a prologue of the LayerNorm kernel: a row-block kernel re-reads the whole
(C, C_a) injection weight for every few rows and, holding whole rows, needed 255 registers with spills at
C = 1024 (ptxas, sm_90).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from .attention import attention
from .fused_linear import fused_linear
from .layernorm import layernorm

# From this many token rows (32 B256 frames) 16-bit attention runs cuDNN's kernel through SDPA. H100, bf16,
# per call (benchmarks/NOTES.md): 265 us against this Triton kernel's 329 us at 64 frames, but 43 against 41 us
# at 8 frames and 12.9 against 11.9 us at one; 32 sits between the measured points.
SDPA_FROM_ROWS = 24_576


@dataclass(frozen=True)
class BlockWeights:
    """The frozen block's tensors (nn.Linear layout: weight (out, in)), all contiguous, one dtype."""

    norm1_weight: torch.Tensor
    norm1_bias: torch.Tensor
    qkv_weight: torch.Tensor
    qkv_bias: torch.Tensor
    proj_weight: torch.Tensor
    proj_bias: torch.Tensor
    norm2_weight: torch.Tensor
    norm2_bias: torch.Tensor
    fc1_weight: torch.Tensor
    fc1_bias: torch.Tensor
    fc2_weight: torch.Tensor
    fc2_bias: torch.Tensor
    num_heads: int
    eps: float


def encoder_block(x: torch.Tensor, weights: BlockWeights, additive: Optional[torch.Tensor] = None,
                  injection_weight: Optional[torch.Tensor] = None,
                  injection_bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The block on x (B, N, C) with the injection of additive (B, N, C_a) -> (B, N, C).

    injection_weight (C, C_a) and injection_bias (C,) come with ``additive`` or not at all. Inputs are
    validated by the caller (``actrack_fast.fast_encoder``): contiguous, one dtype, one device.
    """
    B, N, C = x.shape
    stream = x.reshape(B * N, C)
    if additive is not None:
        features = additive.reshape(B * N, additive.shape[-1])
        stream = fused_linear(features, injection_weight, injection_bias, residual=stream)
    h = layernorm(stream, weights.norm1_weight, weights.norm1_bias, weights.eps)
    qkv = fused_linear(h, weights.qkv_weight, weights.qkv_bias)
    heads = _attention(qkv, B, weights.num_heads)
    stream = fused_linear(heads, weights.proj_weight, weights.proj_bias, residual=stream)
    h = layernorm(stream, weights.norm2_weight, weights.norm2_bias, weights.eps)
    hidden = fused_linear(h, weights.fc1_weight, weights.fc1_bias, gelu=True)
    stream = fused_linear(hidden, weights.fc2_weight, weights.fc2_bias, residual=stream)
    return stream.reshape(B, N, C)


def _attention(qkv: torch.Tensor, batch: int, num_heads: int) -> torch.Tensor:
    """(B*N, 3*C) -> (B*N, C) by the faster kernel for the size (see ``SDPA_FROM_ROWS``)."""
    rows, three_dim = qkv.shape
    if not (qkv.is_cuda and qkv.dtype in (torch.float16, torch.bfloat16) and rows >= SDPA_FROM_ROWS):
        return attention(qkv, batch, num_heads)
    dim = three_dim // 3
    q, k, v = qkv.view(batch, rows // batch, 3, num_heads, dim // num_heads).permute(2, 0, 3, 1, 4)
    return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(rows, dim)
