"""One pre-norm ViT encoder block with ACTrack's additive input, in two forms.

The default form keeps cuBLAS for every GEMM and fuses the passes between them (``add_layernorm``: residual sums
in fp32, one rounding, and the norm, in one kernel). A stack of blocks runs as ``encoder_stack``:

    p = a @ W_inj^T (every block's at once while small)                   cuBLAS
    s, h = stream + p + carried biases, LN1(...)                          add_layernorm
    qkv = h @ W_qkv^T + b_qkv; o = attention(q, k, v)                     cuBLAS, attention
    s += o @ W_proj^T                                                     cuBLAS (beta = 1)
    h = LN2(s + b_proj)                                                   layernorm (s not rewritten)
    u = GELU(h @ W_fc1^T + b_fc1)                                         cuBLASLt (bias + GELU epilogue)
    s += u @ W_fc2^T                                                      cuBLAS (beta = 1)

Both GEMMs that end a sub-layer accumulate into the stream and leave their biases to a later kernel: b_proj
enters LN2's sum without being stored, and b_proj + b_fc2 + the next injection's bias (summed once in fp32,
``StackPlan``) enter the next block's first kernel. So the residual stream is rounded to the input dtype three
times per block, as in the reference, and proj's output is never written on its own. For 16-bit inputs fc1's
GELU runs in cuBLASLt's bias + GELU epilogue (``_linear_gelu``), which computes the tanh approximation: at most
4.7e-4 from the exact GELU (at x = 2.7, where bf16 rounds to within 7.8e-3), so the 16-bit block's error is the
rounding's; fp32 keeps the exact GELU pass. (Carrying the next injection inside fc2's GEMM, [u | a] against
[W_fc2 | W_inj], would save p's write and read, but PyTorch runs the GELU epilogue only into a contiguous
output, and u written into a wider buffer fell back to GEMM + bias copy + GELU pass: 25 % slower at 64 frames.)
H100, bf16, B256 (benchmarks/NOTES.md, encoder versions 3-5): this form is the faster one at every batch
measured (1 to 64 frames).

``gemms="triton"`` selects the other form, eight launches of three Triton kernels per block,

    x' = x + additive @ W_inj^T + b_inj            fused_linear  (the injection; residual in the epilogue)
    h = LN1(x')                                    layernorm
    qkv = h @ W_qkv^T + b_qkv                      fused_linear
    o = attention(q, k, v) over all N tokens       attention     (heads read from qkv in place, no permutes;
                                                                 cuDNN's through SDPA for large 16-bit batches)
    x'' = x' + o @ W_proj^T + b_proj               fused_linear  (residual epilogue)
    h = LN2(x'')                                   layernorm
    u = GELU(h @ W_fc1^T + b_fc1)                  fused_linear  (bias + GELU epilogue)
    x''' = x'' + u @ W_fc2^T + b_fc2               fused_linear  (residual epilogue)

whose GEMMs carry every epilogue; since fc1's GELU moved into cuBLASLt's epilogue it measured 8-28 % slower
at 8-64 frames (at 64 its TMA GEMMs win only where they save a pass: proj, injection), and at one frame our
tiles leave the GPU part-empty where cuBLAS's do not.

Every intermediate is written once in the input dtype and read once; accumulation is fp32. The injection
is not a prologue of the LayerNorm kernel: a row-block kernel re-reads the whole (C, C_a) injection weight for
every few rows and, holding whole rows, needed 255 registers with spills at C = 1024 (ptxas, sm_90).
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

GEMM_CHOICES = ("torch", "triton")


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


# An injection's (weight (C, C_a), bias (C,)).
Injection = tuple[torch.Tensor, torch.Tensor]

# Every block's injection as one GEMM against the stacked injection weights while its output (token rows x
# injected blocks x dim) stays this small, so that it is still in L2 when the blocks read their slices; at B256,
# one frame is 14 MB (L256 38 MB), 8 frames 113 MB. It replaces one launch per block, which dominates at small
# batches.
BATCHED_INJECTION_MAX_BYTES = 48 << 20


@dataclass(frozen=True)
class StackPlan:
    """What ``encoder_stack`` derives from the weights (``plan_stack``); callers keep it while the weights stay.

    ``injection_weights[i]`` is block i's injection weight (C, C_a) or None, ``stacked_injections`` all of them
    stacked along the output dim when there are several, ``first_bias`` block 0's injection bias, and
    ``carried_biases[i]`` (C,) fp32 is b_proj + b_fc2 of block i plus block i + 1's injection bias: the biases
    the next block's first kernel (or the end of the stack) adds.
    """

    injection_weights: tuple[Optional[torch.Tensor], ...]
    stacked_injections: Optional[torch.Tensor]
    first_bias: Optional[torch.Tensor]
    carried_biases: tuple[torch.Tensor, ...]


def gemm_choice(requested: Optional[str] = None) -> str:
    """``'torch'`` (cuBLAS GEMMs, fused LayerNorm passes; the default) or ``'triton'`` (fused-epilogue GEMMs)."""
    if requested is None:
        return "torch"
    if requested not in GEMM_CHOICES:
        raise ValueError(f"gemms must be one of {GEMM_CHOICES} or None, got {requested!r}")
    return requested


def encoder_block(x: torch.Tensor, weights: BlockWeights, additive: Optional[torch.Tensor] = None,
                  injection_weight: Optional[torch.Tensor] = None,
                  injection_bias: Optional[torch.Tensor] = None, *, gemms: Optional[str] = None,
                  queries: Optional[int] = None) -> torch.Tensor:
    """The block on x (B, N, C) with the injection of additive (B, N, C_a) -> (B, N, C); with ``queries`` = Q,
    only each frame's first Q tokens attend and go on through the block: -> (B, Q, C) (see ``encoder_stack``).

    injection_weight (C, C_a) and injection_bias (C,) come with ``additive`` or not at all. ``gemms`` picks
    the form (see ``gemm_choice``). Inputs are validated by the caller (``actrack_fast.fast_encoder``):
    contiguous, one dtype, one device; x itself is never written.
    """
    B, N, C = x.shape
    features = None if additive is None else additive.reshape(B * N, additive.shape[-1])
    if gemm_choice(gemms) == "torch":
        injection = None if additive is None else (injection_weight, injection_bias)
        return encoder_stack(x, [weights], plan_stack([weights], [injection]), features, queries=queries)
    stream = x.reshape(B * N, C)
    if additive is not None:
        stream = fused_linear(features, injection_weight, injection_bias, residual=stream)
    h = layernorm(stream, weights.norm1_weight, weights.norm1_bias, weights.eps)
    qkv = fused_linear(h, weights.qkv_weight, weights.qkv_bias)
    heads = _attention(qkv, B, weights.num_heads, queries)
    stream = fused_linear(heads, weights.proj_weight, weights.proj_bias, residual=_query_rows(stream, B, queries))
    h = layernorm(stream, weights.norm2_weight, weights.norm2_bias, weights.eps)
    hidden = fused_linear(h, weights.fc1_weight, weights.fc1_bias, gelu=True)
    stream = fused_linear(hidden, weights.fc2_weight, weights.fc2_bias, residual=stream)
    return stream.reshape(B, -1, C)


@torch.no_grad()
def plan_stack(weights: Sequence[BlockWeights], injections: Sequence[Optional[Injection]]) -> StackPlan:
    """The ``StackPlan`` of blocks ``weights`` with ``injections`` (one per block, None for a block without)."""
    if len(injections) != len(weights):
        raise ValueError(f"one injection (or None) per block: {len(weights)} blocks, {len(injections)} injections")
    carried = []
    for block, following in zip(weights, [*injections[1:], None]):
        bias = block.proj_bias.float() + block.fc2_bias.float()
        carried.append(bias if following is None else bias + following[1].float())
    present = [injection[0] for injection in injections if injection is not None]
    return StackPlan(tuple(None if injection is None else injection[0] for injection in injections),
                     torch.cat(present) if len(present) > 1 else None,
                     None if injections[0] is None else injections[0][1], tuple(carried))


def encoder_stack(x: torch.Tensor, weights: Sequence[BlockWeights], plan: StackPlan,
                  features: Optional[torch.Tensor] = None,
                  final_norm: Optional[tuple[torch.Tensor, torch.Tensor, float]] = None,
                  queries: Optional[int] = None, positions: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Blocks one after the other in the torch-GEMM form, then LayerNorm ``final_norm`` = (weight, bias, eps) if
    given: x (B, N, C) -> (B, N, C), or (B, Q, C) with ``queries`` = Q.

    ``plan`` comes from ``plan_stack`` for these weights; ``features`` (B*N, C_a) are the additive features
    every injected block receives (required when any block has an injection). ``positions`` (N, C), a
    position embedding not yet in x, joins the first block's fp32 sum (a pass over the stream fewer). The final
    norm takes the last biases in its fp32 sum, so the stream is not rounded once more before it. x itself is
    never written.
    With ``queries``, the last block computes keys and values for every token but everything after them only
    for each frame's first Q tokens (the search tokens, which alone become the decoder's memory): at B256 that
    block's attention, proj, MLP and the final norm shrink to a third.
    """
    B, N, C = x.shape
    projected = _project_injections(features, plan, B * N, C, x.element_size())
    stream, carried = x.reshape(B * N, C), None
    for i, (block, part, carry) in enumerate(zip(weights, projected, plan.carried_biases, strict=True)):
        stream, h = add_layernorm(stream, block.norm1_weight, block.norm1_bias, block.eps, residual=part,
                                  residual_bias=plan.first_bias if i == 0 else None,
                                  pending_bias=positions if i == 0 else carried)
        qkv = F.linear(h, block.qkv_weight, block.qkv_bias)
        rows = queries if i == len(weights) - 1 else None
        stream = _query_rows(stream, B, rows)
        # The stream is this call's own (add_layernorm's output or a copy of its rows).
        stream.addmm_(_attention(qkv, B, block.num_heads, rows), block.proj_weight.t())
        h = layernorm(stream, block.norm2_weight, block.norm2_bias, block.eps, pending_bias=block.proj_bias)
        stream.addmm_(_linear_gelu(h, block.fc1_weight, block.fc1_bias), block.fc2_weight.t())
        carried = carry
    if final_norm is not None:
        stream = layernorm(stream, *final_norm, pending_bias=carried)
    else:
        stream.add_(carried)
    return stream.reshape(B, -1, C)


def _query_rows(stream: torch.Tensor, batch: int, queries: Optional[int]) -> torch.Tensor:
    """The rows of each frame's first ``queries`` tokens of stream (B*N, C), as one (B*Q, C) matrix (a view for
    one frame, else a copy); the whole stream without ``queries``."""
    if queries is None:
        return stream
    return stream.view(batch, -1, stream.shape[-1])[:, :queries].reshape(-1, stream.shape[-1])


def _project_injections(features: Optional[torch.Tensor], plan: StackPlan, rows: int, dim: int,
                        element_size: int) -> list[Optional[torch.Tensor]]:
    """Each block's features @ W_inj^T (rows, dim) or None: one GEMM for all while ``BATCHED_INJECTION_MAX_BYTES``
    allows, else one per block."""
    count = sum(weight is not None for weight in plan.injection_weights)
    if plan.stacked_injections is not None and rows * dim * count * element_size <= BATCHED_INJECTION_MAX_BYTES:
        parts = iter(torch.mm(features, plan.stacked_injections.t()).split(dim, dim=1))
        return [None if weight is None else next(parts) for weight in plan.injection_weights]
    return [None if weight is None else torch.mm(features, weight.t()) for weight in plan.injection_weights]


def _linear_gelu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """GELU(x @ W^T + b): one cuBLASLt GEMM with the tanh-approximate GELU in its epilogue for 16-bit CUDA
    inputs (a pass over the hidden activations fewer; see the module docstring), exact otherwise."""
    if x.is_cuda and x.dtype in (torch.float16, torch.bfloat16):
        return torch._addmm_activation(bias, x, weight.t(), use_gelu=True)
    return F.gelu(F.linear(x, weight, bias))


def _attention(qkv: torch.Tensor, batch: int, num_heads: int, queries: Optional[int] = None) -> torch.Tensor:
    """(B*N, 3*C) -> (B*N, C), or (B*Q, C) for each frame's first ``queries`` = Q tokens, by the faster kernel
    for the size (see ``SDPA_FROM_ROWS``)."""
    rows, three_dim = qkv.shape
    if not (qkv.is_cuda and qkv.dtype in (torch.float16, torch.bfloat16) and rows >= SDPA_FROM_ROWS):
        return attention(qkv, batch, num_heads, queries)
    dim = three_dim // 3
    q, k, v = qkv.view(batch, rows // batch, 3, num_heads, dim // num_heads).permute(2, 0, 3, 1, 4)
    if queries is not None:
        q = q[:, :, :queries]
    return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(-1, dim)
