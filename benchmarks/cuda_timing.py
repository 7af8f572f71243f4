"""CUDA-graph capture shared by the benchmarks."""
from __future__ import annotations

from typing import Callable

import torch


def capture_graph(step: Callable[[], object], repeats: int = 1, warmup: int = 1) -> torch.cuda.CUDAGraph:
    """Run ``step`` ``warmup`` times on a side stream (autotuning, compilation and library handles happen
    outside the capture, as CUDA graphs require), then capture ``repeats`` calls of it in one graph."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(repeats):
            step()
    return graph
