"""The 4-token coordinate decode: Triton (kernels/decode.py) against the PyTorch decodes, all in CUDA graphs.

Decoder shapes B256 (256 memory tokens) and L384 (576), B = 1 and 64 targets (and 8 for B256), K = 0, window on,
float32.
Variants: ``recompute`` (SeqTrack's loop, four full decoder passes) and ``cached`` (the KV-cached reference)
in PyTorch; ``triton`` (the default: launch mode and cross-attention form by batch size),
``triton-other`` (the other cross-attention form), ``triton-persistent`` and ``triton-phases`` (one launch, or one
launch per phase, whatever the batch), ``triton-wN`` (N warps per program) and ``triton-pN`` (N programs).

Two times per case, each the median over ROUNDS of CUDA-event intervals:
``warm_us``: a graph of INNER back-to-back decodes, replayed, divided by INNER (weights and memory stay in
L2, as in a loop of decodes); ``cold_us``: one decode after a 256 MB write that evicts L2 (as after the
encoder in a tracker). pytest-benchmark's statistics are the host wall time of a warm round. Results and
ratios against the PyTorch decodes of the same run go to ``$DECODE_BENCH_OUT`` (default benchmarks/results)
as decode_bench.json and decode_bench.md.

    pytest benchmarks/test_bench_decode.py --benchmark-json=decode_pytest_benchmark.json
"""
from __future__ import annotations

import datetime
import functools
import json
import os
import statistics
from dataclasses import replace
from pathlib import Path
from typing import Optional

import pytest
import torch
import triton

from actrack_fast.cuda_graphs import capture_graph, median_us
from actrack_fast.decoding import decode_cached, decode_recompute
from kernels import decode as kernels
from tests.test_decode_triton import make_parts

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

INNER = 20
ROUNDS = 30
FLUSH_BYTES = 256 << 20
RESULTS: list[dict] = []


def _triton_step(parts, memory, prefix, cross: str, persistent: Optional[bool], **tiling):
    shape, weights = parts.packed()
    config = kernels.default_launch_config(memory.shape[0], prefix.shape[1], memory.device, persistent)
    config = replace(config, cross=cross, **tiling)
    workspace = kernels.DecodeWorkspace(shape, memory.shape[0], memory.shape[1], prefix.shape[1], config,
                                        memory.device)
    embeddings = parts.decoder.embedding.word_embeddings.weight.detach()
    step = functools.partial(kernels.decode, weights, shape, embeddings, parts.query_pos, memory, parts.memory_pos,
                             prefix, parts.window, persistent=persistent, workspace=workspace, config=config)
    return step, workspace


def make_step(variant: str, parts, memory, prefix):
    """A no-argument decode of ``variant`` and the Triton workspace (None for the PyTorch decodes)."""
    if variant in ("recompute", "cached"):
        fn = decode_recompute if variant == "recompute" else decode_cached
        return (lambda: fn(parts.decoder, parts.vocab_embed, memory, parts.memory_pos, prefix, parts.query_pos,
                           parts.bins, parts.window)), None
    persistent = {"triton-persistent": True, "triton-phases": False}.get(variant)
    default = kernels.default_launch_config(memory.shape[0], prefix.shape[1], memory.device, persistent).cross
    other = "cached" if default == "absorbed" else "absorbed"
    cross = other if variant == "triton-other" else default
    tiling = {}
    if variant[:8] in ("triton-p", "triton-w") and variant[8:].isdigit():
        tiling["programs" if variant[7] == "p" else "num_warps"] = int(variant[8:])
    return _triton_step(parts, memory, prefix, cross, persistent, **tiling)


CASES = [("B256", batch, variant) for batch in (1, 64)
         for variant in ("recompute", "cached", "triton", "triton-other", "triton-persistent", "triton-phases",
                         "triton-w16")]
CASES += [("B256", 8, variant) for variant in ("cached", "triton", "triton-other")]
CASES += [("L384", batch, variant) for batch in (1, 64) for variant in ("recompute", "cached", "triton", "triton-other")]
CASES += [("B256", 1, "triton-p64"), ("B256", 1, "triton-w4")]


@pytest.mark.parametrize("shape,batch,variant", CASES, ids=[f"{s}-B{b}-{v}" for s, b, v in CASES])
@torch.no_grad()
def test_decode(benchmark, shape, batch, variant):
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.manual_seed(0)
    parts = make_parts(shape, 0, "cuda")
    memory = torch.randn(batch, parts.memory_tokens, 256, device="cuda")
    prefix = parts.prefix(batch, "cuda")
    step, workspace = make_step(variant, parts, memory, prefix)
    warm = capture_graph(step, INNER, warmup=2)
    cold = capture_graph(step, 1, warmup=2)
    flush = torch.empty(FLUSH_BYTES // 4, device="cuda")
    warm_us = median_us(warm.replay, ROUNDS) / INNER
    cold_us = median_us(cold.replay, ROUNDS, before=flush.zero_)
    if workspace is not None:
        assert workspace.sync.tolist() == [0, 0, 0, 0], "a grid barrier gave up waiting"

    def timed_round():
        warm.replay()
        torch.cuda.synchronize()

    benchmark.pedantic(timed_round, rounds=ROUNDS, iterations=1, warmup_rounds=2)
    record = dict(shape=shape, batch=batch, variant=variant, warm_us=round(warm_us, 2), cold_us=round(cold_us, 2))
    benchmark.extra_info.update(record)
    RESULTS.append(record)


@pytest.mark.parametrize("shape,batch", [("B256", 1), ("B256", 64)])
@torch.no_grad()
def test_phase_profile(shape, batch):
    """GPU time of each phase (one launch per phase, queued behind a sleep so that the events time the GPU
    rather than Python's launches); summed per phase kind into PHASES."""
    torch.manual_seed(0)
    parts = make_parts(shape, 0, "cuda")
    memory = torch.randn(batch, parts.memory_tokens, 256, device="cuda")
    prefix = parts.prefix(batch, "cuda")
    step, workspace = make_step("triton-phases", parts, memory, prefix)
    step()
    cross = workspace.key[4].cross
    names = kernels.phase_names(parts.packed()[0], cross)
    per_phase = {phase: [] for phase in names}
    for _ in range(ROUNDS):
        events = {}
        torch.cuda._sleep(20_000_000)  # ~10 ms of GPU time: every launch below queues before the first runs

        def mark(phase):
            events[phase] = torch.cuda.Event(enable_timing=True)
            events[phase].record()
        step(before_phase=mark)
        end = torch.cuda.Event(enable_timing=True)
        end.record()
        end.synchronize()
        ordered = sorted(events) + ["end"]
        events["end"] = end
        for a, b in zip(ordered[:-1], ordered[1:]):
            per_phase[a].append(events[a].elapsed_time(events[b]) * 1000)
    kinds: dict[str, float] = {}
    for phase, times in per_phase.items():
        kinds[names[phase]] = kinds.get(names[phase], 0.0) + statistics.median(times)
    PHASES.append(dict(shape=shape, batch=batch, cross=cross, total_us=round(sum(kinds.values()), 1),
                       per_kind_us={k: round(v, 1) for k, v in kinds.items()},
                       per_phase_us=[round(statistics.median(per_phase[p]), 2) for p in sorted(per_phase)]))


PHASES: list[dict] = []


@pytest.fixture(scope="module", autouse=True)
def write_results():
    yield
    out = Path(os.environ.get("DECODE_BENCH_OUT", "benchmarks/results"))
    out.mkdir(parents=True, exist_ok=True)
    if PHASES:
        (out / "decode_phases.json").write_text(json.dumps(PHASES, indent=1))
        for p in PHASES:
            print(f"\nphases {p['shape']} B={p['batch']} {p['cross']}: total {p['total_us']} us {p['per_kind_us']}")
    if not RESULTS:
        return
    base = {(r["shape"], r["batch"], r["variant"]): r for r in RESULTS}
    lines = ["| shape | B | variant | warm us | cold us | vs cached (warm) | vs recompute (warm) |",
             "|---|---|---|---|---|---|---|"]
    for r in RESULTS:
        cached = base.get((r["shape"], r["batch"], "cached"))
        recompute = base.get((r["shape"], r["batch"], "recompute"))
        r["speedup_vs_cached"] = round(cached["warm_us"] / r["warm_us"], 2) if cached else None
        r["speedup_vs_recompute"] = round(recompute["warm_us"] / r["warm_us"], 2) if recompute else None
        ratios = [f"{ratio}x" if ratio is not None else "not run" for ratio in
                  (r["speedup_vs_cached"], r["speedup_vs_recompute"])]
        lines.append(f"| {r['shape']} | {r['batch']} | {r['variant']} | {r['warm_us']:.1f} | {r['cold_us']:.1f} | "
                     f"{ratios[0]} | {ratios[1]} |")
    meta = dict(device=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__,
                date=datetime.date.today().isoformat(), inner=INNER, rounds=ROUNDS, dtype="float32")
    (out / "decode_bench.json").write_text(json.dumps(dict(meta=meta, results=RESULTS), indent=1))
    header = f"Decode benchmark, {meta['device']}, torch {meta['torch']}, triton {meta['triton']}, {meta['date']}"
    (out / "decode_bench.md").write_text("\n".join([header, ""] + lines) + "\n")
    print("\n" + header + "\n" + "\n".join(lines))
