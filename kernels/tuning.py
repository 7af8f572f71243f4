"""Autotuning helpers shared by the encoder-block kernels.

Configs are tuned once per key (shapes and dtype, see each kernel) and cached in the process by
``triton.autotune``, so a tracker that runs the same shapes every frame never re-tunes or recompiles.
Under ``TRITON_INTERPRET=1`` (CPU tests) every kernel gets exactly one small config: the interpreter cannot
benchmark, and tiny tiles keep interpreted tests fast.
"""
from __future__ import annotations

import os
from typing import Callable, Sequence

import torch
import triton
import triton.testing

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


def dot_precision(dtype: torch.dtype) -> str:
    """``tl.dot`` input precision: exact fp32 products for fp32 inputs (no tf32), the default otherwise."""
    return "ieee" if dtype == torch.float32 else "tf32"


def choose(interpreted: triton.Config, tuned: Sequence[triton.Config]) -> list[triton.Config]:
    return [interpreted] if INTERPRET else list(tuned)


def keep_fp32(fp32_config: Callable[[triton.Config], bool], pointer_arg: str):
    """Early prune: fp32 inputs (exact products on CUDA cores) keep only the small-tile configs that
    ``fp32_config`` accepts; 16-bit inputs keep the others."""

    def prune(configs, named_args, **kwargs):
        is_fp32 = named_args[pointer_arg].dtype == torch.float32
        kept = [c for c in configs if fp32_config(c) == is_fp32]
        return kept or configs[:1]

    return prune


def quick_bench(kernel_call, quantiles):
    """Short timing runs: the candidates differ by far more than the noise of 25 ms of repeats."""
    return triton.testing.do_bench(kernel_call, warmup=5, rep=25, quantiles=quantiles)
