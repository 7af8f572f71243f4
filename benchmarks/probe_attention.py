"""Encoder attention per call at small batches: the Triton kernel under each tile config, its autotuned choice,
and SDPA (cuDNN), on B256 shapes (768 tokens, 12 heads of 64, bf16); 12 calls on distinct qkv buffers per CUDA
graph, as in a 12-block encode, median of 50 replays. Run on a GPU: ``python benchmarks/probe_attention.py``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import triton

from actrack_fast.cuda_graphs import graph_median_us
from kernels import attention as module

TOKENS, HEADS, HEAD_DIM, CALLS = 768, 12, 64, 12
TILES = [(128, 64, 3, 4), (128, 128, 3, 8), (64, 64, 3, 4), (64, 128, 3, 4), (64, 128, 2, 8), (64, 64, 2, 4),
         (32, 64, 3, 4), (32, 128, 3, 4)]


def per_call_us(fn) -> float:
    return graph_median_us(fn, 50) / CALLS


def main() -> None:
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}, bf16\n")
    print("| frames | variant | us per call |\n|---|---|---|")
    dim = HEADS * HEAD_DIM
    scale = module.LOG2E / math.sqrt(HEAD_DIM)
    for batch in (1, 2, 8):
        rows = batch * TOKENS
        qkvs = [torch.randn(rows, 3 * dim, device="cuda", dtype=torch.bfloat16) for _ in range(CALLS)]
        outs = [torch.empty(rows, dim, device="cuda", dtype=torch.bfloat16) for _ in range(CALLS)]
        for block_m, block_n, stages, warps in TILES:
            def tiles(block_m=block_m, block_n=block_n, stages=stages, warps=warps):
                for qkv, out in zip(qkvs, outs):
                    module._attention_kernel.fn[(triton.cdiv(TOKENS, block_m), batch * HEADS)](
                        qkv, out, TOKENS, batch, scale, NUM_HEADS=HEADS, HEAD_DIM=HEAD_DIM, PRECISION="tf32",
                        BLOCK_M=block_m, BLOCK_N=block_n, num_stages=stages, num_warps=warps)
            name = f"Triton {block_m}x{block_n}, {stages} stages, {warps} warps"
            print(f"| {batch} | {name} | {per_call_us(tiles):.2f} |")
        print(f"| {batch} | Triton, autotuned | "
              f"{per_call_us(lambda: [module.attention(qkv, batch, HEADS) for qkv in qkvs]):.2f} |")

        def sdpa():
            for qkv in qkvs:
                q, k, v = qkv.view(batch, TOKENS, 3, HEADS, HEAD_DIM).permute(2, 0, 3, 1, 4)
                F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(rows, dim)
        print(f"| {batch} | SDPA (default backend) + merge heads | {per_call_us(sdpa):.2f} |")


if __name__ == "__main__":
    main()
