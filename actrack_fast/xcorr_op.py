"""The compiled correlation op ``torch.ops.actrack_fast.xcorr_depthwise`` (csrc/), the ``"cuda"`` backend of op
``"xcorr"``.

``"cuda"`` names the C++/CUDA extension ``actrack_fast._C`` on both devices: its CUDA kernels for GPU tensors
and its C++ (OpenMP) kernels for CPU tensors, so that CI exercises the same op, schema and autograd formula
without a GPU. The extension is optional: without it, importing works and the reference serves every call.

This module registers, with :mod:`torch.library`, the op's fake implementation (output shapes for
``torch.compile`` and meta tensors) and its autograd formula (one backward op returns both gradients), so the
op traces into a single graph, is captured by CUDA graphs (no host synchronisation, no allocation outside
torch's allocator) and trains.
"""
from __future__ import annotations

import torch

from . import backend

try:
    from . import _C
except ImportError:  # built without the extension (pure Python install)
    _C = None

BUILD_HINT = ("build it with `pip install --no-build-isolation -e .` in an environment with torch (and, for the "
              "CUDA kernels, a CUDA build of torch plus nvcc; `FORCE_CUDA=1` turns a missing toolchain into an "
              "error): see csrc/README.md")


def is_available(device: torch.device) -> bool:
    """True if the extension has kernels for ``device`` (any CPU; a CUDA GPU if built with CUDA)."""
    if _C is None:
        return False
    if device.type == "cpu":
        return True
    return device.type == "cuda" and bool(_C.with_cuda) and torch.cuda.is_available()


def how_to_get() -> str:
    """Why the extension cannot run here, and how to build it."""
    if _C is None:
        return f"the C++/CUDA extension actrack_fast._C is not built; {BUILD_HINT}"
    if not _C.with_cuda:
        return f"actrack_fast._C was built without its CUDA kernels (no nvcc or a CPU build of torch); re{BUILD_HINT}"
    return "no CUDA device is visible (the extension has kernels for CPU tensors and CUDA tensors)"


backend.register("xcorr", "cuda", is_available, how_to_get())


def xcorr_depthwise(search: torch.Tensor, kernel: torch.Tensor, padding: str) -> torch.Tensor:
    """The compiled op: (B, C, H, W), (B, C, h, w) -> (B, C, H', W'), as :func:`actrack_fast.xcorr_depthwise`.

    Both tensors must be contiguous, on one device, of one dtype (float32/float64/float16/bfloat16); the op
    raises ``RuntimeError`` otherwise. Half precision accumulates in float32.
    """
    return torch.ops.actrack_fast.xcorr_depthwise(search, kernel, padding)


def _output_size(size: int, k: int, padding: str) -> int:
    return size if padding == "same" else size - k + 1


def _fake_xcorr(search: torch.Tensor, kernel: torch.Tensor, padding: str) -> torch.Tensor:
    B, C, H, W = search.shape
    h, w = kernel.shape[-2:]
    return search.new_empty((B, C, _output_size(H, h, padding), _output_size(W, w, padding)))


def _fake_xcorr_backward(grad_output: torch.Tensor, search: torch.Tensor, kernel: torch.Tensor,
                         padding: str) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.empty_like(search), torch.empty_like(kernel)


def _setup_context(ctx, inputs, output) -> None:
    search, kernel, padding = inputs
    ctx.save_for_backward(search, kernel)
    ctx.padding = padding


def _backward(ctx, grad_output: torch.Tensor):
    search, kernel = ctx.saved_tensors
    # Autograd may hand over an expanded (stride-0) gradient, e.g. behind a mean over templates.
    grad_search, grad_kernel = torch.ops.actrack_fast.xcorr_depthwise_backward(
        grad_output.contiguous(), search, kernel, ctx.padding)
    return (grad_search if ctx.needs_input_grad[0] else None,
            grad_kernel if ctx.needs_input_grad[1] else None,
            None)


if _C is not None:
    torch.library.register_fake("actrack_fast::xcorr_depthwise", _fake_xcorr)
    torch.library.register_fake("actrack_fast::xcorr_depthwise_backward", _fake_xcorr_backward)
    torch.library.register_autograd("actrack_fast::xcorr_depthwise", _backward, setup_context=_setup_context)
