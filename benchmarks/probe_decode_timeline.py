"""Where a persistent decode's time goes, phase by phase, from inside the kernel: each program stamps the GPU's
global timer when it starts a phase and when it reaches the grid barrier after it (``decode(timeline=...)``).

Per phase kind (summed over the 4 steps and the layers): the span from one phase's start to the next's, the
slowest program's work, and the barrier's hand-off (last arrival to last departure). Also the cost of bare
grid barriers (a kernel that only synchronises) and of the decode's memory projection, in CUDA graphs.
Run on a GPU: ``python benchmarks/probe_decode_timeline.py [batch ...]`` (default 1; B256 decoder shapes).
"""
from __future__ import annotations

import statistics
import sys

import torch
import triton
import triton.language as tl

from actrack_fast.cuda_graphs import graph_median_us
from kernels import decode as kernels
from tests.test_decode_triton import make_parts

ROUNDS = 30  # decodes whose timelines are pooled (after WARMUP), and graph replays per barrier timing
WARMUP = 5


@triton.jit
def _barriers_only(sync_ptr, count):
    nprog = tl.num_programs(0)
    for i in range(count):
        kernels._grid_barrier(sync_ptr, (i + 1) * nprog)


def barrier_us(count: int) -> float:
    """Median time of one launch of ``count`` grid barriers over one program per SM (counter reset in-graph)."""
    programs = torch.cuda.get_device_properties(0).multi_processor_count
    sync = torch.zeros(4, dtype=torch.int32, device="cuda")

    def run():
        sync.zero_()
        _barriers_only[(programs,)](sync, count, num_warps=8)
    return graph_median_us(run, ROUNDS)


def timeline_table(batch: int) -> list[str]:
    torch.manual_seed(0)
    parts = make_parts("B256", 0, "cuda")
    shape, weights = parts.packed()
    memory = torch.randn(batch, parts.memory_tokens, shape.dim, device="cuda")
    prefix = parts.prefix(batch, "cuda")
    config = kernels.default_launch_config(batch, prefix.shape[1], memory.device, True)
    cross = config.cross
    workspace = kernels.DecodeWorkspace(shape, batch, memory.shape[1], prefix.shape[1], config, memory.device)
    names = kernels.phase_names(shape, cross)
    phases = kernels.phase_count(shape, cross)
    timeline = torch.zeros(phases, config.programs, 2, dtype=torch.int64, device="cuda")
    embeddings = parts.decoder.embedding.word_embeddings.weight.detach()
    stamps = []
    for i in range(WARMUP + ROUNDS):
        kernels.decode(weights, shape, embeddings, parts.query_pos, memory, parts.memory_pos, prefix, parts.window,
                       workspace=workspace, config=config, timeline=timeline)
        if i >= WARMUP:
            stamps.append(timeline.clone())
    torch.cuda.synchronize()
    assert workspace.sync.tolist() == [0, 0, 0, 0], "a grid barrier gave up waiting"
    per_kind: dict[str, list[float]] = {}  # kind -> [span, slowest work, median work, hand-off] (us, summed)
    totals = []
    for t in stamps:
        t = (t - t[0, :, 0].min()).double() / 1000  # us from the first program's start
        start, end = t[..., 0], t[..., 1]
        totals.append(float(end[-1].max()))
        for p in range(phases):
            work = end[p] - start[p]
            nxt = start[p + 1] if p + 1 < phases else end[p]
            values = [float(nxt.median() - start[p].median()), float(work.max()), float(work.median()),
                      float(nxt.max() - end[p].max()) if p + 1 < phases else 0.0]
            acc = per_kind.setdefault(names[p], [0.0] * 4)
            for j, v in enumerate(values):
                acc[j] += v / len(stamps)
    lines = [f"B = {batch}, cross {cross}, {config.programs} programs x {config.num_warps} warps, rows {config.rows}: "
             f"kernel {statistics.median(totals):.1f} us from first start to last end (median of {len(stamps)})",
             "", "| phase kind | count | span us | slowest program's work us | median work us | barrier hand-off us |",
             "|---|---|---|---|---|---|"]
    counts = {kind: sum(1 for p in range(phases) if names[p] == kind) for kind in per_kind}
    for kind, (span, slowest, median, handoff) in per_kind.items():
        lines.append(f"| {kind} | {counts[kind]} | {span:.1f} | {slowest:.1f} | {median:.1f} | {handoff:.1f} |")
    sums = [sum(v[j] for v in per_kind.values()) for j in range(4)]
    lines.append(f"| all | {phases} | {sums[0]:.1f} | {sums[1]:.1f} | {sums[2]:.1f} | {sums[3]:.1f} |")
    if cross == "cached":
        out = workspace.kv_cross

        def project():
            kernels.project_memory(weights, shape, memory, parts.memory_pos, out)
        lines += ["", f"memory projection (project_memory, in a graph, before the kernel): "
                      f"{graph_median_us(project, ROUNDS):.1f} us"]
    return lines


def main(batches: list[int]) -> None:
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}\n")
    one, many = barrier_us(1), barrier_us(33)
    print(f"bare grid barriers (graph replay): 1 -> {one:.1f} us, 33 -> {many:.1f} us "
          f"({(many - one) / 32:.2f} us per extra barrier)\n")
    for batch in batches:
        print("\n".join(timeline_table(batch)) + "\n")


if __name__ == "__main__":
    main([int(arg) for arg in sys.argv[1:]] or [1])
