"""The one place that decides which implementation runs each op.

Every op (``xcorr``, ``encoder_block``, ``decoder``, ``crop``, ``boxes``, ``conv_relu``) has the pure PyTorch reference, always
available and the ground truth, and may have fast paths that register themselves here with an availability test.
The choice, in order of precedence:

1. an explicit ``backend=`` argument where an API takes one, or the innermost :func:`use_backend` context;
2. the ``ACTRACK_BACKEND`` environment variable: one name for every op (``reference``) or per-op
   assignments (``xcorr=cuda,decoder=triton``);
3. ``auto``: the first available fast path in :data:`PRIORITY` for the tensor's device, else the reference
   (a provider may narrow where ``auto`` picks it, e.g. to keep a test-only interpreter out of it, or to the
   input sizes and dtypes where it measured faster: callers that pass the op's input let it see them).

Asking explicitly for a backend that is not available raises ``RuntimeError`` with the reason and how to
get it; ``auto`` silently falls back.
"""
from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import threading
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, Optional, Union

import torch

OPS = ("xcorr", "encoder_block", "decoder", "crop", "boxes", "conv_relu")
REFERENCE = "reference"
BACKENDS = (REFERENCE, "triton", "cuda")
PRIORITY = ("triton", "cuda")
ENV_VAR = "ACTRACK_BACKEND"


# ``auto(device, input)``: whether ``auto`` may pick the backend there; ``input`` is the op's input tensor when
# the caller passed one to :func:`select`, else None.
AutoRule = Callable[[torch.device, Optional[torch.Tensor]], bool]


@dataclass(frozen=True)
class _Provider:
    is_available: Callable[[torch.device], bool]
    how_to_get: str
    auto: Optional[AutoRule] = None


_PROVIDERS: Dict[str, Dict[str, _Provider]] = {op: {} for op in OPS}
_local = threading.local()


def register(op: str, backend: str, is_available: Callable[[torch.device], bool], how_to_get: str,
             auto: Optional[AutoRule] = None) -> None:
    """Declare that ``backend`` implements ``op`` on devices where ``is_available(device)`` is true;
    ``auto(device, input)``, if given, must also hold for ``auto`` to pick it there (explicit requests need not)."""
    _check_name(op, OPS, "op")
    _check_name(backend, BACKENDS, "backend")
    if backend == REFERENCE:
        raise ValueError("the reference backend is always available and is not registered")
    _PROVIDERS[op][backend] = _Provider(is_available, how_to_get, auto)


def available(op: str, device: Union[str, torch.device]) -> list[str]:
    """Backends that can run ``op`` on ``device``, fastest first, the reference last."""
    _check_name(op, OPS, "op")
    device = torch.device(device)
    fast = [b for b in PRIORITY if b in _PROVIDERS[op] and _PROVIDERS[op][b].is_available(device)]
    return fast + [REFERENCE]


def select(op: str, where: Union[str, torch.device, torch.Tensor], requested: Optional[str] = None) -> str:
    """The backend that runs ``op`` on ``where``: a device, or the op's input tensor, whose device counts and
    whose shape and dtype ``auto`` rules may consult (see the module docstring for the precedence)."""
    _check_name(op, OPS, "op")
    tensor = where if isinstance(where, torch.Tensor) else None
    device = where.device if tensor is not None else torch.device(where)
    choice = requested or _context_choice(op) or _env_choice(op) or "auto"
    if choice == "auto":
        return next(b for b in available(op, device)
                    if b == REFERENCE or _PROVIDERS[op][b].auto is None or _PROVIDERS[op][b].auto(device, tensor))
    _check_name(choice, BACKENDS, "backend")
    if choice == REFERENCE:
        return REFERENCE
    provider = _PROVIDERS[op].get(choice)
    if provider is None:
        raise RuntimeError(f"backend {choice!r} does not implement op {op!r}; available: {available(op, device)}")
    if not provider.is_available(device):
        raise RuntimeError(f"backend {choice!r} for op {op!r} is not available on {device}: {provider.how_to_get}")
    return choice


@contextlib.contextmanager
def use_backend(backend: str, ops: Optional[tuple[str, ...]] = None) -> Iterator[None]:
    """Run the enclosed code with ``backend`` (or ``auto``) for ``ops`` (default: every op)."""
    if backend != "auto":
        _check_name(backend, BACKENDS, "backend")
    for op in ops or OPS:
        _check_name(op, OPS, "op")
    stack = _stack()
    stack.append({op: backend for op in (ops or OPS)})
    try:
        yield
    finally:
        stack.pop()


def _stack() -> list:
    if not hasattr(_local, "stack"):
        _local.stack = []
    return _local.stack


def _context_choice(op: str) -> Optional[str]:
    for frame in reversed(_stack()):
        if op in frame:
            return frame[op]
    return None


def _env_choice(op: str) -> Optional[str]:
    value = os.environ.get(ENV_VAR, "").strip()
    if not value:
        return None
    if "=" not in value:
        return value
    for item in value.split(","):
        name, _, backend = item.partition("=")
        _check_name(name.strip(), OPS, f"op in {ENV_VAR}")
        if name.strip() == op:
            return backend.strip()
    return None


def _check_name(value: str, allowed: tuple[str, ...], what: str) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; expected one of {list(allowed)}")


@functools.lru_cache(maxsize=None)
def triton_installed() -> bool:
    """Whether the ``triton`` package can be imported (checked once, without importing it)."""
    return importlib.util.find_spec("triton") is not None


def _triton_on_cuda(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_available() and triton_installed()


# Measured on the H100 (benchmarks/NOTES.md, encoder section, versions 3-5): for inference in 16 bits the fast
# path (cuBLAS GEMMs with fused LayerNorm passes, biases carried into them, see kernels/encoder_block.py)
# beats the cuBLAS/SDPA reference at every batch measured (1 to 64 B256 frames); as a training step it is ~10x
# slower, and fp32 and pre-Hopper GPUs were not measured. There ``auto`` keeps the reference;
# ``encoder_block=triton`` still selects it explicitly. Training is told by autograd being on: the frozen
# encoder's own input needs no gradient even when the additive features flowing into it do.
def _triton_block_pays(device: torch.device, x: Optional[torch.Tensor]) -> bool:
    return (x is not None and x.dim() == 3 and x.dtype in (torch.float16, torch.bfloat16)
            and not torch.is_grad_enabled()
            and device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 9)


register("encoder_block", "triton", _triton_on_cuda, "needs a CUDA GPU and the triton package (pip install triton)",
         auto=_triton_block_pays)
