"""Where one tracking step's GPU time goes: the fast path's step (the FPS suite's ``fast`` backend, B256 bf16,
replayed from the tracker's CUDA graph), profiled over a few frames; kernel count and busy time per frame, the
largest kernels, and one frame's kernels in launch order (runs of one kernel collapsed). Run on a GPU:
``python benchmarks/probe_step_kernels.py [targets ...]`` (default 1).
"""
from __future__ import annotations

import sys

import torch
from torch.profiler import ProfilerActivity, profile

from actrack_fast.benchmarking import prepare

FRAMES = 5


def main(batches: list[int]) -> None:
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}\n")
    for batch in batches:
        case = prepare("step", "fast", "B256", batch=batch)
        case.warm_up(10)
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(FRAMES):
                case()
            torch.cuda.synchronize()
        kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
        busy = sum(e.device_time for e in kernels) / 1e3 / FRAMES
        step = sorted(case.times)[len(case.times) // 2]
        print(f"{batch} target(s), ops {case.ops}: {len(kernels) / FRAMES:.0f} kernels per frame, busy "
              f"{busy:.3f} ms per frame, step {step:.3f} ms (median of {len(case.times)})")
        print(prof.key_averages().table(sort_by="self_device_time_total", row_limit=25, max_name_column_width=70))
        print_sequence(sorted(kernels, key=lambda e: e.time_range.start)[: len(kernels) // FRAMES])
        case.close()


def print_sequence(kernels: list) -> None:
    """Kernels (in start order): count x name (first 90 characters), microseconds per launch."""
    runs: list[list] = []
    for event in kernels:
        if runs and runs[-1][0] == event.name:
            runs[-1][1] += 1
            runs[-1][2] += event.device_time
        else:
            runs.append([event.name, 1, event.device_time])
    print("one frame in launch order (count x kernel: us per launch)")
    for name, count, total in runs:
        print(f"{count:3d} x {name[:90]}: {total / count:.1f}")
    print()


if __name__ == "__main__":
    main([int(arg) for arg in sys.argv[1:]] or [1])
