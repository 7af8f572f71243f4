"""Encoder attention per call at small batches: the Triton kernel under each tile config and key split, its
autotuned choice, and SDPA (cuDNN), on B256 shapes (768 tokens, 12 heads of 64, bf16), for every token's queries
and for the search tokens' only (the last block, 256); 12 calls on distinct qkv buffers per CUDA graph, as in a
12-block encode, one workspace for all (as ``encoder_stack``), median of 50 replays.
Run on a GPU: ``python benchmarks/probe_attention.py``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
import triton

from actrack_fast.cuda_graphs import graph_median_us
from kernels.attention import attention, attention_workspace

TOKENS, SEARCH, HEADS, HEAD_DIM, CALLS = 768, 256, 12, 64, 12
TILES = [(128, 64, 3, 4), (128, 128, 3, 8), (64, 64, 3, 4), (64, 128, 3, 4)]


def per_call_us(fn) -> float:
    return graph_median_us(fn, 50) / CALLS


def main() -> None:
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}, bf16\n")
    print("| frames | queries | variant | us per call |\n|---|---|---|---|")
    dim = HEADS * HEAD_DIM
    for batch in (1, 2, 8):
        rows = batch * TOKENS
        qkvs = [torch.randn(rows, 3 * dim, device="cuda", dtype=torch.bfloat16) for _ in range(CALLS)]
        for queries in (TOKENS, SEARCH):
            workspace = attention_workspace(batch, queries, HEADS, HEAD_DIM, "cuda")
            for splits in (1, 2, 3, 4) if workspace is not None else (1,):
                for block_m, block_n, stages, warps in TILES:
                    config = triton.Config({"BLOCK_M": block_m, "BLOCK_N": block_n, "SPLITS": splits},
                                           num_stages=stages, num_warps=warps)

                    def tiles(config=config):
                        for qkv in qkvs:
                            attention(qkv, batch, HEADS, queries, workspace, config)
                    name = f"Triton {block_m}x{block_n}, {stages} stages, {warps} warps, {splits} split(s)"
                    print(f"| {batch} | {queries} | {name} | {per_call_us(tiles):.2f} |")
            print(f"| {batch} | {queries} | Triton, autotuned | "
                  f"{per_call_us(lambda: [attention(qkv, batch, HEADS, queries, workspace) for qkv in qkvs]):.2f} |")

            def sdpa():
                for qkv in qkvs:
                    q, k, v = qkv.view(batch, TOKENS, 3, HEADS, HEAD_DIM).permute(2, 0, 3, 1, 4)
                    F.scaled_dot_product_attention(q[:, :, :queries], k, v).transpose(1, 2).reshape(-1, dim)
            print(f"| {batch} | {queries} | SDPA (default backend) + merge heads | {per_call_us(sdpa):.2f} |")


if __name__ == "__main__":
    main()
