"""Per-kernel times of the encoder block's GEMMs, attention and LayerNorm at B256 shapes, bf16, CUDA graphs.

For each linear: cuBLAS (``F.linear``) followed by its unfused epilogue (GELU or residual add), the
pointer-based Triton kernel and the persistent TMA one, both with the epilogue fused. ``--weights 12``
cycles through 12 distinct weight sets in the graph, as the 12 blocks of an encoder do (weights come from
HBM); ``--weights 1`` reuses one (weights stay in L2). Prints a markdown table; run on a GPU:

    python benchmarks/probe_encoder_gemms.py --weights 12 --rows 768 6144
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
import triton

from actrack_fast.cuda_graphs import graph_median_us
from kernels import fused_linear as fl
from kernels.attention import attention
from kernels.layernorm import layernorm

LINEARS = (("injection", 768, 96, False, True), ("qkv", 2304, 768, False, False), ("proj", 768, 768, False, True),
           ("fc1", 3072, 768, True, False), ("fc2", 768, 3072, False, True))


def graph_us(fn, calls: int, samples: int = 30) -> float:
    """Median per-call time (us) of ``fn(i)`` for i < calls, captured in one CUDA graph."""
    return graph_median_us(lambda: [fn(i) for i in range(calls)], samples, warmup=1) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights", type=int, default=12, help="distinct weight sets per graph (1: L2-warm)")
    parser.add_argument("--rows", type=int, nargs="+", default=[768, 6144], help="token rows (768 per frame)")
    args = parser.parse_args()
    dtype, sets, calls = torch.bfloat16, args.weights, max(args.weights, 12)
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}, bf16, "
          f"{sets} weight set(s), us per call\n")
    print("| rows | op | cuBLAS + epilogue | Triton pointer | Triton TMA | TMA config |\n|---|---|---|---|---|---|")
    for M in args.rows:
        for name, N, K, gelu, residual in LINEARS:
            weights = [torch.randn(N, K, device="cuda", dtype=dtype) * K ** -0.5 for _ in range(sets)]
            biases = [torch.randn(N, device="cuda", dtype=dtype) for _ in range(sets)]
            x = torch.randn(M, K, device="cuda", dtype=dtype)
            res = torch.randn(M, N, device="cuda", dtype=dtype) if residual else None
            out = torch.empty(M, N, device="cuda", dtype=dtype)

            def cublas(i):
                y = F.linear(x, weights[i % sets], biases[i % sets])
                y = F.gelu(y) if gelu else y
                return y + res if residual else y

            times = [graph_us(cublas, calls),
                     graph_us(lambda i: fl.linear_pointer(x, weights[i % sets], biases[i % sets], out, gelu, res), calls),
                     graph_us(lambda i: fl.linear_tma(x, weights[i % sets], biases[i % sets], out, gelu, res), calls)]
            c = fl._linear_tma_kernel.best_config
            tile = f"{c.kwargs['BLOCK_M']}x{c.kwargs['BLOCK_N']}x{c.kwargs['BLOCK_K']}, {c.num_stages} stages, {c.num_warps} warps"
            print(f"| {M} | {name} | " + " | ".join(f"{t:.1f}" for t in times) + f" | {tile} |", flush=True)
        # cuBLASLt's bias + GELU epilogue (tanh approximation) against the bias-only GEMM it would replace.
        weights = [torch.randn(3072, 768, device="cuda", dtype=dtype) * 768 ** -0.5 for _ in range(sets)]
        biases = [torch.randn(3072, device="cuda", dtype=dtype) for _ in range(sets)]
        x = torch.randn(M, 768, device="cuda", dtype=dtype)
        bias_only = graph_us(lambda i: F.linear(x, weights[i % sets], biases[i % sets]), calls)
        lt_gelu = graph_us(lambda i: torch._addmm_activation(biases[i % sets], x, weights[i % sets].t(),
                                                              use_gelu=True), calls)
        print(f"| {M} | fc1 bias only / cuBLASLt bias + tanh-GELU epilogue | {bias_only:.1f} | {lt_gelu:.1f} | | |")
        batch = M // 768
        qkvs = [torch.randn(M, 2304, device="cuda", dtype=dtype) for _ in range(calls)]

        def sdpa(i):
            q, k, v = qkvs[i].reshape(batch, 768, 3, 12, 64).permute(2, 0, 3, 1, 4)
            return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, 768, 768)

        print(f"| {M} | attention (SDPA / Triton) | {graph_us(sdpa, calls):.1f} | "
              f"{graph_us(lambda i: attention(qkvs[i], batch, 12), calls):.1f} | | |")
        xs = [torch.randn(M, 768, device="cuda", dtype=dtype) for _ in range(calls)]
        norm = torch.nn.LayerNorm(768, eps=1e-6, device="cuda", dtype=dtype)
        print(f"| {M} | LayerNorm (torch / Triton) | {graph_us(lambda i: norm(xs[i]), calls):.1f} | "
              f"{graph_us(lambda i: layernorm(xs[i], norm.weight, norm.bias, 1e-6), calls):.1f} | | |")


if __name__ == "__main__":
    main()
