"""CUDA-graph capture shared by the tracker's graphed step and the benchmarks, and CUDA-event timing."""
from __future__ import annotations

import statistics
from typing import Callable, Optional

import torch


def capture_graph(step: Callable[[], object], repeats: int = 1, warmup: int = 1) -> torch.cuda.CUDAGraph:
    """Run ``step`` ``warmup`` times on a side stream (autotuning, compilation and library handles happen
    outside the capture, as CUDA graphs require), then capture ``repeats`` calls of it in one graph.

    ``step`` must be replayable: fixed shapes, inputs read from and outputs written to tensors that outlive
    the graph, no host synchronisation. The warm-up calls really run, so a ``step`` that updates state in
    place has updated it ``warmup`` times when this returns (capturing itself runs nothing).
    """
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


def median_us(run: Callable[[], object], rounds: int, before: Optional[Callable[[], object]] = None) -> float:
    """Median microseconds of ``rounds`` calls of ``run`` timed as :func:`event_times` times them."""
    return statistics.median(event_times(run, rounds, before)) * 1e3


def graph_median_us(step: Callable[[], object], rounds: int, repeats: int = 1, warmup: int = 2) -> float:
    """Median microseconds of ``rounds`` replays of ``step`` captured ``repeats`` times in one graph
    (:func:`capture_graph`; divide by ``repeats`` for one call)."""
    return median_us(capture_graph(step, repeats, warmup).replay, rounds)


def event_times(run: Callable[[], object], rounds: int, before: Optional[Callable[[], object]] = None) -> list[float]:
    """Milliseconds of ``rounds`` calls of ``run`` (e.g. ``graph.replay``) between CUDA events on the current
    stream, each waited for before the next; ``before`` runs ahead of each call, untimed (e.g. an L2 flush)."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(rounds):
        if before is not None:
            before()
        start.record()
        run()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return times
