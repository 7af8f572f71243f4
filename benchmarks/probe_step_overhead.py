"""What a fast-path tracking step's time is made of (B256 bf16, the FPS suite's ``fast`` step): the step as the
suite times it (CUDA events around ``Tracker.step``), the host time of that call, the frame copy into the graph's
pixel buffer, and the replay of the captured graph alone, each the median of many calls after warm-up.
Run on a GPU: ``python benchmarks/probe_step_overhead.py [targets ...]`` (default 1 64).
"""
from __future__ import annotations

import statistics
import sys
import time

import torch

from actrack_fast import BatchTracker
from actrack_fast.benchmarking import benchmark_model, benchmark_video, start_boxes, frame_size
from actrack_fast.config import get_config
from actrack_fast.cuda_graphs import median_us

CALLS = 300


def main(batches: list[int]) -> None:
    config, device = get_config("B256"), torch.device("cuda")
    model = benchmark_model(config, device, torch.bfloat16)
    frames, first = benchmark_video(config, device)
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, B256 bf16, median of {CALLS} calls, us\n")
    print("| targets | step (events) | host time of step() | frame copy | graph replay alone |\n|---|---|---|---|---|")
    for batch in batches:
        tracker = BatchTracker(model, cuda_graph=True)
        for box in start_boxes(first, batch, frame_size(config)):
            tracker.add(frames[0], box)
        for i in range(20):  # captures the graph
            tracker.step(frames[1 + i % (len(frames) - 1)])
        torch.cuda.synchronize()
        graph = tracker._graph  # the GraphedStep the tracker replays
        step = median_us(lambda: tracker.step(frames[1]), CALLS)
        host = []
        for _ in range(CALLS):
            begin = time.perf_counter()
            tracker.step(frames[1])
            host.append(time.perf_counter() - begin)
            torch.cuda.synchronize()
        copy = median_us(lambda: graph.pixels.copy_(frames[1].reshape(-1, 3)), CALLS)
        replay = median_us(graph._graph.replay, CALLS)
        print(f"| {batch} | {step:.1f} | {statistics.median(host) * 1e6:.1f} | {copy:.1f} | {replay:.1f} |", flush=True)


if __name__ == "__main__":
    main([int(arg) for arg in sys.argv[1:]] or [1, 64])
