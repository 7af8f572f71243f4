"""The encoder block on Triton kernels (``kernels.encoder_block``), a drop-in for ``encoder.Block``.

``Block.forward`` routes here when ``backend.select("encoder_block", x)`` picks ``triton``: when asked for,
or by default for 16-bit inference on Hopper or newer (``backend._triton_block_pays``); :class:`FusedBlock`
is the same module with the Triton path forced.
Both keep the reference block's parameters and state-dict keys.

Training: the frozen encoder must pass gradients to the additive net (through ``additive`` and the
injection Linear). :class:`FusedBlockFunction` runs the forward on the Triton kernels and its backward
recomputes the block through the reference path (``Block.reference_forward``: PyTorch ops with SDPA)
and differentiates that, so gradients are the reference's exactly, at the cost of a second forward.
Under ``torch.compile`` the hook stays on the reference path: Inductor generates its own kernels.

:func:`fused_blocks_forward` runs a whole stack of blocks (``VisionTransformer.forward`` calls it when the
backend picks Triton); for inference it runs them as one ``encoder_stack``.
"""
from __future__ import annotations

import weakref
from typing import Optional, Sequence

import torch
from torch import nn

from kernels.encoder_block import BlockWeights, StackPlan, encoder_block, encoder_stack, plan_stack
from kernels.tuning import INTERPRET

from . import backend
from .encoder import Block, VisionTransformer

DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def block_weights(block: Block, x: Optional[torch.Tensor] = None) -> BlockWeights:
    """The kernel-side view of a reference block's parameters; with ``x`` given, the Linear weights cast as
    autocast would cast them for it (see ``_as_autocast_would``)."""
    cast = (lambda t: t) if x is None else (lambda t: _as_autocast_would(t, x))  # noqa: E731
    return BlockWeights(
        norm1_weight=block.norm1.weight, norm1_bias=block.norm1.bias,
        qkv_weight=cast(block.attn.qkv.weight), qkv_bias=cast(block.attn.qkv.bias),
        proj_weight=cast(block.attn.proj.weight), proj_bias=cast(block.attn.proj.bias),
        norm2_weight=block.norm2.weight, norm2_bias=block.norm2.bias,
        fc1_weight=cast(block.mlp.fc1.weight), fc1_bias=cast(block.mlp.fc1.bias),
        fc2_weight=cast(block.mlp.fc2.weight), fc2_bias=cast(block.mlp.fc2.bias),
        num_heads=block.attn.num_heads, eps=block.norm1.eps,
    )


def _autocast_casts(tensor: torch.Tensor, x: torch.Tensor) -> bool:
    """Whether autocast, running in x's dtype on x's device, hands ``tensor`` to a Linear in that dtype."""
    device = x.device.type
    return (tensor.dtype != x.dtype and tensor.dtype in DTYPES and torch.is_autocast_enabled(device)
            and torch.get_autocast_dtype(device) == x.dtype)


def _as_autocast_would(tensor: Optional[torch.Tensor], x: torch.Tensor) -> Optional[torch.Tensor]:
    """``tensor`` (an injection's input, a Linear's weight) as the reference's Linear gets it under autocast:
    cast to x's dtype where autocast would cast it (a cast per call, as there), else unchanged."""
    if tensor is not None and _autocast_casts(tensor, x):
        return tensor.to(x.dtype)
    return tensor


def fused_block_forward(block: Block, x: torch.Tensor, additive: Optional[torch.Tensor] = None,
                        injection: Optional[nn.Linear] = None, queries: Optional[int] = None) -> torch.Tensor:
    """``block(x, additive, injection, queries)`` on the Triton kernels: x (B, N, C), additive (B, N, C_a) ->
    (B, N, C), or (B, Q, C) with ``queries`` = Q (only the first Q tokens attend and go on through the block).

    As in the reference, the injection applies only when both ``additive`` and ``injection`` are given.
    Raises ``TypeError``/``ValueError`` naming the argument for inputs the kernels cannot take.
    """
    if additive is None or injection is None:
        additive = injection = None
    additive = _as_autocast_would(additive, x)
    _check_inputs(block, x, additive, injection, queries)
    params = _parameters(block, injection)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, additive, *params)):
        return FusedBlockFunction.apply(block, injection, queries, x, additive, *params)
    return _run_kernels(block, x, additive, injection, queries)


_plans: "weakref.WeakKeyDictionary[nn.Module, tuple]" = weakref.WeakKeyDictionary()


def fused_blocks_forward(blocks: Sequence[Block], x: torch.Tensor, additive: Optional[torch.Tensor] = None,
                         injections: Optional[nn.ModuleDict] = None,
                         norm: Optional[nn.LayerNorm] = None, queries: Optional[int] = None,
                         positions: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``x = block(x, additive, injections[str(i)])`` for each block i, then ``norm(x)`` if given, on the Triton
    path; (B, N, C) -> (B, N, C), or (B, Q, C) with ``queries`` = Q, which the last block gets. ``positions``
    (N, C), when given, is added to x first (as ``VisionTransformer.add_positions`` would, x itself unchanged).

    ``injections`` maps a block index (as a string) to its projection; blocks without one get no injection.
    For inference the blocks run as one ``encoder_stack``, whose plan (stacked injection weights, summed
    biases) is kept between calls until a weight changes (version counters; a CUDA graph captured before such a
    change keeps the old plan).
    """
    additive = _as_autocast_would(additive, x)
    chosen = [injections[str(i)] if injections is not None and additive is not None and str(i) in injections
              else None for i in range(len(blocks))]
    for block, injection in zip(blocks, chosen):
        _check_inputs(block, x, additive, injection, queries)
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in _all_parameters(blocks, chosen, x, additive))
    if grad:
        if positions is not None:  # rounded to x's dtype as the reference's in-place add rounds it
            x = (x + positions).to(x.dtype)
        for i, (block, injection) in enumerate(zip(blocks, chosen)):
            x = fused_block_forward(block, x, additive, injection, queries if i == len(blocks) - 1 else None)
        return x if norm is None else norm(x)
    with torch.no_grad():
        weights = [block_weights(block, x) for block in blocks]
        features = None if additive is None else additive.reshape(-1, additive.shape[-1])
        # Under autocast the module norm runs as autocast runs LayerNorm (an fp32 output); else in the stack.
        fused_norm = norm is not None and not torch.is_autocast_enabled(x.device.type)
        out = encoder_stack(x.contiguous(), weights, _plan(blocks, chosen, weights, x), features,
                            (norm.weight, norm.bias, norm.eps) if fused_norm else None, queries, positions)
    return out if norm is None or fused_norm else norm(out)


_position_tables: "weakref.WeakKeyDictionary[nn.Module, tuple]" = weakref.WeakKeyDictionary()


def position_table(encoder: VisionTransformer, templates: int) -> torch.Tensor:
    """The position embedding of every token of a frame with ``templates`` templates, (N, C) with
    N = Nx + T * Nz, from the encoder's ``pos_embed`` (1, Nx + Nz, C) (every template takes the template rows):
    kept until ``pos_embed`` changes, or built per call where gradients must reach it."""
    pos_embed, num_search = encoder.pos_embed, encoder.num_search_tokens

    def build() -> torch.Tensor:
        return torch.cat([pos_embed[0, :num_search], pos_embed[0, num_search:].repeat(templates, 1)])

    if torch.is_grad_enabled() and pos_embed.requires_grad:
        return build()
    key = (pos_embed.data_ptr(), pos_embed._version, pos_embed.dtype, templates)
    cached = _position_tables.get(encoder)
    if cached is None or cached[0] != key:
        with torch.no_grad():
            cached = (key, build())
        _position_tables[encoder] = cached
    return cached[1]


def _all_parameters(blocks: Sequence[Block], injections: Sequence[Optional[nn.Linear]], *tensors):
    yield from (t for t in tensors if t is not None)
    for block, injection in zip(blocks, injections):
        yield from _parameters(block, injection)


def _plan(blocks: Sequence[Block], injections: Sequence[Optional[nn.Linear]], weights: Sequence[BlockWeights],
          x: torch.Tensor) -> StackPlan:
    """``plan_stack`` for these blocks, rebuilt when one of the tensors it derives from changes."""
    sources = [t for block, injection in zip(blocks, injections)
               for t in (block.attn.proj.bias, block.mlp.fc2.bias,
                         *(() if injection is None else (injection.weight, injection.bias)))]
    key = (x.dtype, len(blocks), tuple(i is None for i in injections),
           tuple((t.data_ptr(), t._version, t.dtype) for t in sources))
    cached = _plans.get(blocks[0])
    if cached is None or cached[0] != key:
        linears = [None if i is None else (_as_autocast_would(i.weight, x), _as_autocast_would(i.bias, x))
                   for i in injections]
        cached = (key, plan_stack(weights, linears))
        _plans[blocks[0]] = cached
    return cached[1]


class FusedBlock(Block):
    """``encoder.Block`` whose forward always takes the Triton path (same parameters, same state dict)."""

    def forward(self, x: torch.Tensor, additive: Optional[torch.Tensor] = None,
                injection: Optional[nn.Module] = None, queries: Optional[int] = None) -> torch.Tensor:
        backend.select("encoder_block", x.device, "triton")  # a clear error where Triton cannot run
        return fused_block_forward(self, x, additive, injection, queries)


class FusedBlockFunction(torch.autograd.Function):
    """Forward on the Triton kernels; backward recomputes through ``Block.reference_forward`` (SDPA).

    ``apply(block, injection, queries, x, additive, *parameters)`` with ``parameters`` as listed by
    ``_parameters`` so that gradients reach whichever of them require it.
    """

    @staticmethod
    def forward(ctx, block: Block, injection: Optional[nn.Linear], queries: Optional[int], x: torch.Tensor,
                additive: Optional[torch.Tensor], *params: torch.Tensor) -> torch.Tensor:
        ctx.block, ctx.injection, ctx.queries = block, injection, queries
        device = x.device.type
        ctx.autocast = (device, torch.is_autocast_enabled(device), torch.get_autocast_dtype(device))
        ctx.save_for_backward(x, additive)
        return _run_kernels(block, x, additive, injection, queries)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        x, additive = ctx.saved_tensors
        needs = ctx.needs_input_grad[3:]
        device, autocast, dtype = ctx.autocast
        # The recomputation sees the autocast state of the forward (backward runs outside it).
        with torch.enable_grad(), torch.autocast(device, dtype=dtype, enabled=autocast):
            x = x.detach().requires_grad_(needs[0])
            if additive is not None:
                additive = additive.detach().requires_grad_(needs[1])
            output = ctx.block.reference_forward(x, additive, ctx.injection, ctx.queries)
        inputs = [x, additive, *_parameters(ctx.block, ctx.injection)]
        wanted = [t for t, need in zip(inputs, needs) if need]
        grads = iter(torch.autograd.grad(output, wanted, grad_output, allow_unused=True))
        return (None, None, None, *(next(grads) if need else None for need in needs))


def _parameters(block: Block, injection: Optional[nn.Linear]) -> list[torch.Tensor]:
    injected = [injection.weight, injection.bias] if injection is not None else []
    return injected + list(block.parameters())


def _run_kernels(block: Block, x: torch.Tensor, additive: Optional[torch.Tensor],
                 injection: Optional[nn.Linear], queries: Optional[int]) -> torch.Tensor:
    with torch.no_grad():
        if injection is None:
            return encoder_block(x.contiguous(), block_weights(block, x), queries=queries)
        return encoder_block(x.contiguous(), block_weights(block, x), additive.contiguous(),
                             _as_autocast_would(injection.weight, x), _as_autocast_would(injection.bias, x),
                             queries=queries)


def _check_inputs(block: Block, x: torch.Tensor, additive: Optional[torch.Tensor],
                  injection: Optional[nn.Linear], queries: Optional[int] = None) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 3:
        raise ValueError(f"x must be a (B, N, C) tensor, got {getattr(x, 'shape', type(x).__name__)}")
    if queries is not None and not (isinstance(queries, int) and 0 < queries <= x.shape[1]):
        raise ValueError(f"queries must be an int in [1, {x.shape[1]}] (the tokens), got {queries!r}")
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
    # LayerNorm parameters may stay fp32 next to 16-bit weights, as in a model prepared for autocast (the
    # kernels compute the norms in fp32 either way).
    norms = [*block.norm1.parameters(), *block.norm2.parameters()]
    _check_like("block parameters", [p for p in block.parameters() if all(p is not n for n in norms)], x)
    for norm in norms:
        if norm.dtype not in (x.dtype, torch.float32) or norm.device != x.device:
            raise TypeError(f"LayerNorm parameters ({norm.dtype}, {norm.device}) must be float32 or match x "
                            f"({x.dtype}, {x.device})")
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
    """Each tensor on x's device and in x's dtype, or in a dtype that autocast turns into x's."""
    for t in tensors:
        if (t.dtype != x.dtype and not _autocast_casts(t, x)) or t.device != x.device:
            raise TypeError(f"{name} ({t.dtype}, {t.device}) must match x ({x.dtype}, {x.device})")
