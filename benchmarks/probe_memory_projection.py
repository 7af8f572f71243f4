"""The decode's memory projection (kernels.decode.project_memory, a 3xTF32 Triton GEMM) per tile configuration,
against the same keys and values from cuBLAS float32 GEMMs (TF32 off): time in a CUDA graph (median of ROUNDS
replays) and error against float64. Run on a GPU: ``python benchmarks/probe_memory_projection.py [batch ...]`` (default 1 8 64).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

import torch

from actrack_fast.cuda_graphs import graph_median_us
from kernels import decode as kernels
from tests.test_decode_triton import make_parts

ROUNDS = 50
TILES = [dict(BM=64, BN=128, BK=32, num_warps=4, num_stages=3), dict(BM=128, BN=128, BK=32, num_warps=8, num_stages=3),
         dict(BM=64, BN=64, BK=32, num_warps=4, num_stages=3), dict(BM=128, BN=64, BK=32, num_warps=4, num_stages=4),
         dict(BM=32, BN=64, BK=32, num_warps=4, num_stages=2),
         # Small-batch candidates: more programs and fewer, wider reduction steps.
         dict(BM=16, BN=64, BK=64, num_warps=4, num_stages=2), dict(BM=16, BN=32, BK=128, num_warps=4, num_stages=2),
         dict(BM=32, BN=32, BK=64, num_warps=4, num_stages=2), dict(BM=16, BN=64, BK=256, num_warps=4, num_stages=1),
         dict(BM=32, BN=64, BK=128, num_warps=4, num_stages=2)]


@dataclass
class Inputs:
    weights: torch.Tensor
    shape: kernels.DecoderShape
    memory: torch.Tensor
    memory_pos: torch.Tensor
    out: torch.Tensor


def stacked_kv(x: Inputs) -> tuple[torch.Tensor, torch.Tensor]:
    """Every layer's cross-attention key then value weights (2·L·D, D) and biases, as packed for the decode."""
    LD = x.shape.layers * x.shape.dim
    layout = kernels.pack_layout(x.shape)
    w_base = layout["GLOBAL_BASE"] + layout["GO_CROSS_KV_W"]
    b_base = layout["GLOBAL_BASE"] + layout["GO_CROSS_KV_B"]
    return x.weights[w_base : w_base + 2 * LD * x.shape.dim].view(2 * LD, -1), x.weights[b_base : b_base + 2 * LD]


def cublas_projection(x: Inputs) -> None:
    """Keys and values with two cuBLAS float32 GEMMs (the previous implementation)."""
    B, M, D = x.memory.shape
    LD = x.shape.layers * D
    w_kv, b_kv = stacked_kv(x)
    torch.addmm(b_kv, x.memory.reshape(B * M, D), w_kv.t(), out=x.out.view(B * M, 2 * LD))
    x.out.view(B, M, 2 * LD)[:, :, :LD].baddbmm_(x.memory_pos.expand(B, M, D), w_kv[:LD].t().expand(B, D, LD))


def float64_projection(x: Inputs) -> torch.Tensor:
    LD = x.shape.layers * x.shape.dim
    w, b = (t.double() for t in stacked_kv(x))
    keys = (x.memory + x.memory_pos).double() @ w[:LD].T + b[:LD]
    values = x.memory.double() @ w[LD:].T + b[LD:]
    return torch.cat([keys, values], dim=-1).view(x.out.shape)


def measure(run, x: Inputs, expected: torch.Tensor) -> str:
    x.out.fill_(float("nan"))
    run()
    error = float((x.out.double() - expected).norm() / expected.norm())
    return f"{graph_median_us(run, ROUNDS):.1f} us, rel err {error:.1e}"


def main(batches: list[int]) -> None:
    torch.backends.cuda.matmul.allow_tf32 = False
    print(torch.cuda.get_device_name(), torch.__version__)
    for name in ("B256", "L384"):
        parts = make_parts(name, 0, "cuda")
        shape, weights = parts.packed()
        for batch in batches:
            D, M = shape.dim, parts.memory_tokens
            x = Inputs(weights, shape, torch.randn(batch, M, D, device="cuda"), parts.memory_pos,
                       torch.empty(batch, M, 2, shape.layers, D, device="cuda"))
            expected = float64_projection(x)
            print(f"{name} B={batch} cuBLAS fp32: {measure(lambda: cublas_projection(x), x, expected)}", flush=True)
            for tile in TILES:
                run = lambda: kernels.project_memory(x.weights, x.shape, x.memory, x.memory_pos, x.out, tile)  # noqa: E731
                print(f"{name} B={batch} triton {tile}: {measure(run, x, expected)}", flush=True)


if __name__ == "__main__":
    main([int(arg) for arg in sys.argv[1:]] or [1, 8, 64])
