"""The encoder block on Triton kernels (``kernels.encoder_block``), a drop-in for ``encoder.Block``.

``Block.forward`` routes here when ``backend.select("encoder_block", x)`` picks ``triton``: when asked for,
or by default for 16-bit inference batches large enough for it to win (``backend.TRITON_BLOCK_MIN_ROWS``, on
Hopper or newer); :class:`FusedBlock` is the same module with the Triton path forced.
Both keep the reference block's parameters and state-dict keys.

Training: the frozen encoder must pass gradients to the additive net (through ``additive`` and the
injection Linear). :class:`FusedBlockFunction` runs the forward on the Triton kernels and its backward
recomputes the block through the reference path (``Block.reference_forward``: PyTorch ops with SDPA)
and differentiates that, so gradients are the reference's exactly, at the cost of a second forward.
Under ``torch.compile`` the hook stays on the reference path: Inductor generates its own kernels.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from kernels.encoder_block import BlockWeights, encoder_block
from kernels.tuning import INTERPRET

from . import backend
from .encoder import Block

DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def block_weights(block: Block) -> BlockWeights:
    """The kernel-side view of a reference block's parameters."""
    return BlockWeights(
        norm1_weight=block.norm1.weight, norm1_bias=block.norm1.bias,
        qkv_weight=block.attn.qkv.weight, qkv_bias=block.attn.qkv.bias,
        proj_weight=block.attn.proj.weight, proj_bias=block.attn.proj.bias,
        norm2_weight=block.norm2.weight, norm2_bias=block.norm2.bias,
        fc1_weight=block.mlp.fc1.weight, fc1_bias=block.mlp.fc1.bias,
        fc2_weight=block.mlp.fc2.weight, fc2_bias=block.mlp.fc2.bias,
        num_heads=block.attn.num_heads, eps=block.norm1.eps,
    )


def fused_block_forward(block: Block, x: torch.Tensor, additive: Optional[torch.Tensor] = None,
                        injection: Optional[nn.Linear] = None) -> torch.Tensor:
    """``block(x, additive, injection)`` on the Triton kernels: x (B, N, C), additive (B, N, C_a) -> (B, N, C).

    As in the reference, the injection applies only when both ``additive`` and ``injection`` are given.
    Raises ``TypeError``/``ValueError`` naming the argument for inputs the kernels cannot take.
    """
    if additive is None or injection is None:
        additive = injection = None
    _check_inputs(block, x, additive, injection)
    params = _parameters(block, injection)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, additive, *params)):
        return FusedBlockFunction.apply(block, injection, x, additive, *params)
    return _run_kernels(block, x, additive, injection)


class FusedBlock(Block):
    """``encoder.Block`` whose forward always takes the Triton path (same parameters, same state dict)."""

    def forward(self, x: torch.Tensor, additive: Optional[torch.Tensor] = None,
                injection: Optional[nn.Module] = None) -> torch.Tensor:
        backend.select("encoder_block", x.device, "triton")  # a clear error where Triton cannot run
        return fused_block_forward(self, x, additive, injection)


class FusedBlockFunction(torch.autograd.Function):
    """Forward on the Triton kernels; backward recomputes through ``Block.reference_forward`` (SDPA).

    ``apply(block, injection, x, additive, *parameters)`` with ``parameters`` as listed by
    ``_parameters`` so that gradients reach whichever of them require it.
    """

    @staticmethod
    def forward(ctx, block: Block, injection: Optional[nn.Linear], x: torch.Tensor,
                additive: Optional[torch.Tensor], *params: torch.Tensor) -> torch.Tensor:
        ctx.block, ctx.injection = block, injection
        ctx.save_for_backward(x, additive)
        return _run_kernels(block, x, additive, injection)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        x, additive = ctx.saved_tensors
        needs = ctx.needs_input_grad[2:]
        with torch.enable_grad():
            x = x.detach().requires_grad_(needs[0])
            if additive is not None:
                additive = additive.detach().requires_grad_(needs[1])
            output = ctx.block.reference_forward(x, additive, ctx.injection)
        inputs = [x, additive, *_parameters(ctx.block, ctx.injection)]
        wanted = [t for t, need in zip(inputs, needs) if need]
        grads = iter(torch.autograd.grad(output, wanted, grad_output, allow_unused=True))
        return (None, None, *(next(grads) if need else None for need in needs))


def _parameters(block: Block, injection: Optional[nn.Linear]) -> list[torch.Tensor]:
    injected = [injection.weight, injection.bias] if injection is not None else []
    return injected + list(block.parameters())


def _run_kernels(block: Block, x: torch.Tensor, additive: Optional[torch.Tensor],
                 injection: Optional[nn.Linear]) -> torch.Tensor:
    with torch.no_grad():
        if injection is None:
            return encoder_block(x.contiguous(), block_weights(block))
        return encoder_block(x.contiguous(), block_weights(block), additive.contiguous(),
                             injection.weight, injection.bias)


def _check_inputs(block: Block, x: torch.Tensor, additive: Optional[torch.Tensor],
                  injection: Optional[nn.Linear]) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 3:
        raise ValueError(f"x must be a (B, N, C) tensor, got {getattr(x, 'shape', type(x).__name__)}")
    if x.dtype not in DTYPES:
        raise TypeError(f"x must be float32, float16 or bfloat16 for the Triton encoder block, got {x.dtype}")
    if x.device.type != "cuda" and not INTERPRET:
        raise ValueError(f"x must be a CUDA tensor for the Triton encoder block, got device {x.device}")
    dim = block.norm1.normalized_shape[0]
    head_dim = dim // block.attn.num_heads
    if x.shape[-1] != dim:
        raise ValueError(f"x must have {dim} channels (the block's dim), got shape {tuple(x.shape)}")
    if head_dim < 16 or head_dim & (head_dim - 1):
        raise ValueError(f"the Triton encoder block needs a power-of-two head dim >= 16, got {head_dim}")
    _check_like("block parameters", block.parameters(), x)
    if injection is None:
        return
    if not isinstance(injection, nn.Linear) or injection.bias is None or injection.out_features != dim:
        raise TypeError(f"injection must be an nn.Linear(C_a, {dim}) with bias, got {injection}")
    expected = (*x.shape[:2], injection.in_features)
    if not isinstance(additive, torch.Tensor) or tuple(additive.shape) != expected:
        raise ValueError(f"additive must have shape {expected}, got {getattr(additive, 'shape', None)}")
    _check_like("additive", [additive], x)
    _check_like("injection parameters", injection.parameters(), x)


def _check_like(name: str, tensors, x: torch.Tensor) -> None:
    for t in tensors:
        if t.dtype != x.dtype or t.device != x.device:
            raise TypeError(f"{name} ({t.dtype}, {t.device}) must match x ({x.dtype}, {x.device})")
