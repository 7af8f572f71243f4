"""One pre-norm ViT encoder block with ACTrack's additive input, in two forms chosen by the number of token rows.

From ``EPILOGUE_GEMMS_FROM_ROWS`` rows: eight launches of three Triton kernels,

    x' = x + additive @ W_inj^T + b_inj            fused_linear  (the injection; residual in the epilogue)
    h = LN1(x')                                    layernorm
    qkv = h @ W_qkv^T + b_qkv                      fused_linear
    o = attention(q, k, v) over all N tokens       attention     (heads read from qkv in place, no permutes;
                                                                 cuDNN's through SDPA for large 16-bit batches)
    x'' = x' + o @ W_proj^T + b_proj               fused_linear  (residual epilogue)
    h = LN2(x'')                                   layernorm
    u = GELU(h @ W_fc1^T + b_fc1)                  fused_linear  (bias + GELU epilogue)
    x''' = x'' + u @ W_fc2^T + b_fc2               fused_linear  (residual epilogue)

Below it our GEMM tiles leave the GPU part-empty and cuBLAS's win (benchmarks/NOTES.md), so the GEMMs run on
torch (cuBLAS) and the passes between them are fused instead (``add_layernorm``: residual sums in fp32, one
rounding, and the norm, in one kernel):

    s, h = x + (additive @ W_inj^T) + b_inj + b_fc2 of the block before, LN1(...)      add_layernorm
    qkv = h @ W_qkv^T + b_qkv; o = attention; p = o @ W_proj^T                         cuBLAS, attention
    s, h = s + p + b_proj, LN2(...)                                                    add_layernorm
    u = GELU(h @ W_fc1^T + b_fc1); s += u @ W_fc2^T                                    cuBLAS (beta = 1)

fc2 accumulates into the stream and leaves its bias to the next block's first kernel (``encoder_stack``; a
lone block adds it at the end). For 16-bit inputs fc1's GELU runs in cuBLASLt's bias + GELU epilogue
(``_linear_gelu``), which computes the tanh approximation: at most 4.7e-4 from the exact GELU (at x = 2.7, where
bf16 rounds to within 7.8e-3), so the 16-bit block's error is the rounding's; fp32 keeps the exact GELU pass. Eight launches per block against thirteen for the reference, with as many
full-width roundings of the residual stream (three), and the caller may run every block's injection as one
GEMM beforehand (``projected``, see ``actrack_fast.fast_encoder``).

Every intermediate is written once in the input dtype and read once; accumulation is fp32. The injection
is a GEMM of its own rather than a prologue of the LayerNorm kernel: a row-block kernel re-reads the whole
(C, C_a) injection weight for every few rows and, holding whole rows, needed 255 registers with spills at
C = 1024 (ptxas, sm_90).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from .attention import attention
from .fused_linear import fused_linear
from .layernorm import add_layernorm, layernorm

# From this many token rows (32 B256 frames) 16-bit attention runs cuDNN's kernel through SDPA. H100, bf16,
# per call (benchmarks/NOTES.md): 265 us against this Triton kernel's 329 us at 64 frames, but 43 against 41 us
# at 8 frames and 12.9 against 11.9 us at one; 32 sits between the measured points.
SDPA_FROM_ROWS = 24_576

# From this many token rows the Triton GEMMs with fused epilogues run the block; below, torch's (cuBLAS). H100,
# bf16 (benchmarks/NOTES.md): at 768 rows fc1 takes 20.5 us on our tiles against 13.5 on cuBLAS's, at 6,144 the
# qkv and fc2 GEMMs lose too, while at 49,152 the epilogues win (proj 1.44x, injection 1.68x).
EPILOGUE_GEMMS_FROM_ROWS = 24_576
GEMM_CHOICES = ("triton", "torch")


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


def gemm_choice(rows: int, requested: Optional[str] = None) -> str:
    """``'triton'`` (fused-epilogue GEMMs) or ``'torch'`` (cuBLAS GEMMs, fused LayerNorm passes) for ``rows``."""
    if requested is None:
        return "triton" if rows >= EPILOGUE_GEMMS_FROM_ROWS else "torch"
    if requested not in GEMM_CHOICES:
        raise ValueError(f"gemms must be one of {GEMM_CHOICES} or None, got {requested!r}")
    return requested


def encoder_block(x: torch.Tensor, weights: BlockWeights, additive: Optional[torch.Tensor] = None,
                  injection_weight: Optional[torch.Tensor] = None,
                  injection_bias: Optional[torch.Tensor] = None, *, projected: Optional[torch.Tensor] = None,
                  gemms: Optional[str] = None) -> torch.Tensor:
    """The block on x (B, N, C) with the injection of additive (B, N, C_a) -> (B, N, C).

    injection_weight (C, C_a) and injection_bias (C,) come with ``additive`` or not at all. Instead of
    ``additive`` and ``injection_weight``, ``projected`` (B*N, C) may hold ``additive @ injection_weight^T``
    already computed (any row stride, unit column stride; the bias not yet added). ``gemms`` forces one form
    (see ``gemm_choice``). Inputs are validated by the caller (``actrack_fast.fast_encoder``): contiguous, one
    dtype, one device; x itself is never written.
    """
    B, N, C = x.shape
    if additive is not None:
        features = additive.reshape(B * N, additive.shape[-1])
    if gemm_choice(B * N, gemms) == "torch":
        if additive is not None:
            projected = torch.mm(features, injection_weight.t())
        return encoder_stack(x, [weights], [projected], [injection_bias])
    stream = x.reshape(B * N, C)
    if additive is not None:
        stream = fused_linear(features, injection_weight, injection_bias, residual=stream)
        h = layernorm(stream, weights.norm1_weight, weights.norm1_bias, weights.eps)
    elif projected is not None:
        stream, h = add_layernorm(stream, weights.norm1_weight, weights.norm1_bias, weights.eps,
                                  residual=projected, residual_bias=injection_bias)
    else:
        h = layernorm(stream, weights.norm1_weight, weights.norm1_bias, weights.eps)
    qkv = fused_linear(h, weights.qkv_weight, weights.qkv_bias)
    heads = _attention(qkv, B, weights.num_heads)
    stream = fused_linear(heads, weights.proj_weight, weights.proj_bias, residual=stream)
    h = layernorm(stream, weights.norm2_weight, weights.norm2_bias, weights.eps)
    hidden = fused_linear(h, weights.fc1_weight, weights.fc1_bias, gelu=True)
    stream = fused_linear(hidden, weights.fc2_weight, weights.fc2_bias, residual=stream)
    return stream.reshape(B, N, C)


def encoder_stack(x: torch.Tensor, weights: Sequence[BlockWeights], projected: Sequence[Optional[torch.Tensor]],
                  injection_biases: Sequence[Optional[torch.Tensor]]) -> torch.Tensor:
    """Blocks one after the other in the torch-GEMM form: x (B, N, C) -> (B, N, C).

    ``projected[i]`` is block i's ``additive @ W_inj^T`` as (B*N, C) (any row stride, unit column stride) and
    ``injection_biases[i]`` its bias, both None for a block without injection. Each fc2 bias is added by the
    next block's first kernel; the last one costs one addition at the end. x itself is never written.
    """
    B, N, C = x.shape
    stream, pending = x.reshape(B * N, C), None
    for block, part, bias in zip(weights, projected, injection_biases, strict=True):
        stream, h = add_layernorm(stream, block.norm1_weight, block.norm1_bias, block.eps, residual=part,
                                  residual_bias=bias, pending_bias=pending)
        qkv = F.linear(h, block.qkv_weight, block.qkv_bias)
        attended = torch.mm(_attention(qkv, B, block.num_heads), block.proj_weight.t())
        stream, h = add_layernorm(stream, block.norm2_weight, block.norm2_bias, block.eps, residual=attended,
                                  residual_bias=block.proj_bias)
        hidden = _linear_gelu(h, block.fc1_weight, block.fc1_bias)
        stream.addmm_(hidden, block.fc2_weight.t())  # the stream is this iteration's own tensor
        pending = block.fc2_bias
    return (stream if pending is None else stream.add_(pending)).reshape(B, N, C)


def _linear_gelu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """GELU(x @ W^T + b): one cuBLASLt GEMM with the tanh-approximate GELU in its epilogue for 16-bit CUDA
    inputs (a pass over the hidden activations fewer; see the module docstring), exact otherwise."""
    if x.is_cuda and x.dtype in (torch.float16, torch.bfloat16):
        return torch._addmm_activation(bias, x, weight.t(), use_gelu=True)
    return F.gelu(F.linear(x, weight, bias))


def _attention(qkv: torch.Tensor, batch: int, num_heads: int) -> torch.Tensor:
    """(B*N, 3*C) -> (B*N, C) by the faster kernel for the size (see ``SDPA_FROM_ROWS``)."""
    rows, three_dim = qkv.shape
    if not (qkv.is_cuda and qkv.dtype in (torch.float16, torch.bfloat16) and rows >= SDPA_FROM_ROWS):
        return attention(qkv, batch, num_heads)
    dim = three_dim // 3
    q, k, v = qkv.view(batch, rows // batch, 3, num_heads, dim // num_heads).permute(2, 0, 3, 1, 4)
    return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(rows, dim)
