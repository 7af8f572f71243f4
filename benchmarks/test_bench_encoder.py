"""Encoder speed: the Triton blocks against the best PyTorch path, measured in the same run.

B256 and L256 encoders with the additive net (nonzero injections), bfloat16, batch 1, 8 and 32. Each path
is one CUDA graph of the whole encode (additive net, patch embedding, every block, final norm); a replay is
timed with CUDA events around it, and the median over ``ACTRACK_BENCH_REPLAYS`` (>= 100) replays after
warm-up is the number reported (pytest-benchmark's own statistics time the same replays on the host).

Paths (the additive net runs eagerly inside the graph in all three, so only the blocks differ; its own
time is recorded as ``additive_ms``):
- ``reference``: the PyTorch blocks (SDPA attention), eager, in a CUDA graph;
- ``compiled``: every block through ``torch.compile(mode="max-autotune-no-cudagraphs")``, in our CUDA graph
  (what ``mode="max-autotune"`` adds is its own graph capture);
- ``triton``: our blocks.

The best PyTorch path is the faster of the first two. Results (JSON and a markdown table, with the device
and versions) go to ``ACTRACK_BENCH_RESULTS`` (default ``benchmarks/results``).
"""
from __future__ import annotations

import copy
import datetime
import json
import os
import statistics
from pathlib import Path

import pytest
import torch

from actrack_fast import backend, build_model
from actrack_fast.config import ModelConfig, get_config
from actrack_fast.cuda_graphs import capture_graph

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

NAMES = tuple(os.environ.get("ACTRACK_BENCH_CONFIGS", "B256,L256").split(","))
BATCHES = (1, 8, 32)
ALL_PATHS = ("reference", "compiled", "triton")
PATHS = tuple(os.environ.get("ACTRACK_BENCH_PATHS", ",".join(ALL_PATHS)).split(","))
REPLAYS = max(100, int(os.environ.get("ACTRACK_BENCH_REPLAYS", "100")))
WARMUP = 10
RESULTS = Path(os.environ.get("ACTRACK_BENCH_RESULTS", "benchmarks/results"))
COMPILE_MODE = "max-autotune-no-cudagraphs"
PEAK_FLOPS = 740e12  # H100 SXM bf16 dense, as measured with a large cuBLAS GEMM
PEAK_BYTES = 2.9e12  # H100 HBM3, device-to-device copy
DTYPE = torch.bfloat16


def block_flops(config: ModelConfig) -> float:
    """FLOPs of one block on one frame: the five GEMMs plus QK^T and PV over all N tokens."""
    C, N, A = config.embed_dim, config.num_tokens, config.additive_dim
    hidden = int(C * config.mlp_ratio)
    per_token = 2 * (A * C + 3 * C * C + C * C + 2 * C * hidden) + 4 * N * C
    return float(per_token * N)


def encoder_floor_s(config: ModelConfig, batch: int) -> dict:
    """Compute and memory floors of the encoder's blocks: FLOPs at peak; weights once + stream in/out."""
    C, N, A = config.embed_dim, config.num_tokens, config.additive_dim
    flops = config.depth * block_flops(config) * batch
    weights = config.depth * (A * C + 12 * C * C) * 2
    stream = batch * N * (2 * C + A) * 2
    return {"flops": flops, "compute_s": flops / PEAK_FLOPS, "bytes": weights + stream,
            "memory_s": (weights + stream) / PEAK_BYTES}


_MODELS: dict = {}
_RESULTS: list = []


def path_model(name: str, path: str) -> torch.nn.Module:
    """One model per (config, path), built once: compiled modules keep their compiled code across batches."""
    if (name, path) not in _MODELS:
        if (name, "reference") not in _MODELS:
            torch.manual_seed(0)
            model = build_model(name)
            for projection in model.additive.injections.values():
                torch.nn.init.normal_(projection.weight, std=0.02)
                torch.nn.init.normal_(projection.bias, std=0.02)
            _MODELS[name, "reference"] = model.cuda().eval().to(DTYPE)
        model = _MODELS[name, "reference"] if path == "reference" else copy.deepcopy(_MODELS[name, "reference"])
        if path == "compiled":
            for block in model.encoder.body.blocks:
                block.compile(mode=COMPILE_MODE, dynamic=False)
        _MODELS[name, path] = model
    return _MODELS[name, path]


def encode_fn(model):
    # ACTrack.encode minus its input check, whose host-side finiteness test cannot run inside a capture.
    def encode(search, templates):
        return model.encoder(search, templates, model.additive(search, templates), model.additive.injections)
    return encode


def capture(fn, args, block_backend: str) -> torch.cuda.CUDAGraph:
    with backend.use_backend(block_backend, ("encoder_block",)):
        return capture_graph(lambda: fn(*args), warmup=3)


def replay_times(graph: torch.cuda.CUDAGraph):
    """``(times, replay)``: each call of ``replay`` runs the graph once and appends its CUDA-event ms."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []

    def replay():
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))

    return times, replay


def write_results() -> None:
    """Rewritten after every case, so a run cut short still leaves its numbers."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    import triton

    best = {}
    for r in _RESULTS:
        if r["path"] != "triton":
            key = (r["config"], r["batch"])
            best[key] = min(best.get(key, float("inf")), r["median_ms"])
    lines = ["| config | batch | reference ms | compiled ms | triton ms | speed-up vs best PyTorch | triton % of floor |",
             "|---|---|---|---|---|---|---|"]
    by_case = {}
    for r in _RESULTS:
        by_case.setdefault((r["config"], r["batch"]), {})[r["path"]] = r
    for (name, batch), paths in by_case.items():
        ms = {p: paths[p]["median_ms"] if p in paths else float("nan") for p in ALL_PATHS}
        floor_ms = paths[next(iter(paths))]["floor_ms"]
        speedup = best.get((name, batch), float("nan")) / ms["triton"]
        lines.append(f"| {name} | {batch} | {ms['reference']:.3f} | {ms['compiled']:.3f} | {ms['triton']:.3f} | "
                     f"{speedup:.2f}x | {100 * floor_ms / ms['triton']:.0f}% |")
    meta = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
            "date": datetime.date.today().isoformat(), "dtype": str(DTYPE), "replays": REPLAYS,
            "compile_mode": COMPILE_MODE, "timing": "median of CUDA-event times of single graph replays"}
    stem = "encoder_bench_" + "_".join(NAMES)
    (RESULTS / f"{stem}.json").write_text(json.dumps({"meta": meta, "results": _RESULTS}, indent=1))
    header = f"{meta['device']}, torch {meta['torch']}, triton {meta['triton']}, {meta['date']}, bf16\n\n"
    (RESULTS / f"{stem}.md").write_text(header + "\n".join(lines) + "\n")


@pytest.mark.parametrize("name,batch,path", [(n, b, p) for n in NAMES for b in BATCHES for p in PATHS])
@torch.no_grad()
def test_encoder_speed(benchmark, name, batch, path):
    config = get_config(name)
    model = path_model(name, path)
    torch.manual_seed(1)
    search = torch.randn(batch, 3, config.search_size, config.search_size, device="cuda", dtype=DTYPE)
    templates = torch.randn(batch, config.num_templates, 3, config.template_size, config.template_size,
                            device="cuda", dtype=DTYPE)
    graph = capture(encode_fn(model), (search, templates), "triton" if path == "triton" else "reference")
    times, replay = replay_times(graph)
    benchmark.pedantic(replay, rounds=REPLAYS, warmup_rounds=WARMUP, iterations=1)
    median_ms = statistics.median(times[WARMUP:])
    floor = encoder_floor_s(config, batch)
    floor_ms = 1e3 * max(floor["compute_s"], floor["memory_s"])
    record = {"config": name, "batch": batch, "path": path, "median_ms": median_ms, "floor_ms": floor_ms,
              "tflops": floor["flops"] / median_ms / 1e9, "replays": len(times) - WARMUP}
    if path == "reference":
        additive = capture(lambda s, t: model.additive(s, t), (search, templates), "reference")
        additive_times, additive_replay = replay_times(additive)
        for _ in range(REPLAYS):
            additive_replay()
        record["additive_ms"] = statistics.median(additive_times)
        del additive
    benchmark.extra_info.update(record)
    _RESULTS.append(record)
    write_results()
    del graph
    torch.cuda.empty_cache()
    assert median_ms > 0


@torch.no_grad()
def test_profile_kernels():
    """Where a B256 frame batch of 8 spends its time, per kernel, on the Triton path and a PyTorch one."""
    from torch.profiler import ProfilerActivity, profile

    config = get_config("B256")
    search = torch.randn(8, 3, config.search_size, config.search_size, device="cuda", dtype=DTYPE)
    templates = torch.randn(8, config.num_templates, 3, config.template_size, config.template_size,
                            device="cuda", dtype=DTYPE)
    RESULTS.mkdir(parents=True, exist_ok=True)
    report = []
    for path in ("triton", "compiled" if "compiled" in PATHS else "reference"):
        fn = encode_fn(path_model("B256", path))
        with backend.use_backend("triton" if path == "triton" else "reference", ("encoder_block",)):
            for _ in range(3):
                fn(search, templates)
            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                fn(search, templates)
                torch.cuda.synchronize()
        table = prof.key_averages().table(sort_by="self_device_time_total", row_limit=15, max_name_column_width=70)
        report.append(f"## {path}: B256, batch 8, bf16, one encode (12 blocks)\n\n{table}\n")
    (RESULTS / "encoder_profile.txt").write_text("\n".join(report))
    assert report
