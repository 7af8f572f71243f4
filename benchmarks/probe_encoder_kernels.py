"""Kernel count, GPU busy time and graph replay time of one bf16 B256 encode (additive net + 12 blocks), per
batch, with the reference blocks and with the Triton path; the per-kernel tables for one frame.

Busy time close to the replay time means the encode is bound by its kernels' own work, not by launch gaps.
Run on a GPU: ``python benchmarks/probe_encoder_kernels.py``.
"""
from __future__ import annotations

import statistics

import torch
from torch.profiler import ProfilerActivity, profile

from actrack_fast import backend, build_model
from actrack_fast.cuda_graphs import capture_graph, event_times


def main() -> None:
    torch.manual_seed(0)
    model = build_model("B256").cuda().eval().to(torch.bfloat16)
    for projection in model.additive.injections.values():
        torch.nn.init.normal_(projection.weight, std=0.02)
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, bf16\n")
    for batch in (1, 8, 32, 64):
        search = torch.randn(batch, 3, 256, 256, device="cuda", dtype=torch.bfloat16)
        templates = torch.randn(batch, 2, 3, 256, 256, device="cuda", dtype=torch.bfloat16)
        for blocks in ("reference", "triton"):
            with torch.no_grad(), backend.use_backend(blocks, ("encoder_block",)):
                def encode():
                    return model.encoder(search, templates, model.additive(search, templates),
                                         model.additive.injections)
                for _ in range(3):
                    encode()
                torch.cuda.synchronize()
                with profile(activities=[ProfilerActivity.CUDA]) as prof:
                    encode()
                    torch.cuda.synchronize()
                kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
                graph = capture_graph(encode, warmup=2)
                times = event_times(graph.replay, 60)
                busy = sum(e.device_time for e in kernels) / 1e3
                print(f"batch {batch}, {blocks} blocks: {len(kernels)} kernels, busy {busy:.3f} ms, "
                      f"graph replay {statistics.median(times[10:]):.3f} ms")
                if batch == 1:
                    print(prof.key_averages().table(sort_by="self_device_time_total", row_limit=14,
                                                    max_name_column_width=60))
                del graph


if __name__ == "__main__":
    main()
