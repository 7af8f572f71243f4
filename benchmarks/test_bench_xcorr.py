"""xcorr_depthwise: the compiled op (backend ``"cuda"``) against the grouped-conv reference, on the GPU.

Shapes: ACTrack-B256's template-search correlation (additive width 96, 16x16 search map, 4x4 target kernel,
the search repeated per template, T = 2) for B = 1, 8, 64, forward and forward+backward, float32 and bfloat16.
Each benchmark times rounds of INNER calls between two CUDA events and records the median per-call time in
``extra_info["cuda_event_median_us"]`` (pytest-benchmark's own statistics are the wall time of a round, host
synchronisation included). ``launch="eager"`` launches every call from Python, so host overhead counts;
``launch="graph"`` replays the INNER calls captured in one CUDA graph, which leaves the GPU time.

    pytest benchmarks/test_bench_xcorr.py --benchmark-json=xcorr.json
"""
import statistics

import pytest
import torch

from actrack_fast.additive import target_kernel_size
from actrack_fast.config import get_config
from actrack_fast.correlation import xcorr_depthwise
from actrack_fast.cuda_graphs import capture_graph

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

CONFIG = get_config("B256")
CHANNELS = CONFIG.additive_dim
SEARCH = CONFIG.search_size // CONFIG.patch_size
KERNEL = target_kernel_size(CONFIG)
TEMPLATES = CONFIG.num_templates
INNER = 20
ROUNDS = 40
WARMUP = 5


def make_step(batch, dtype, direction, impl):
    """One call of the op at the B256 shape; with ``fwd+bwd`` also both gradients."""
    planes = batch * TEMPLATES
    search = torch.randn(planes, CHANNELS, SEARCH, SEARCH, device="cuda", dtype=dtype,
                         requires_grad=direction == "fwd+bwd")
    kernel = torch.randn(planes, CHANNELS, KERNEL, KERNEL, device="cuda", dtype=dtype,
                         requires_grad=direction == "fwd+bwd")
    grad_output = torch.randn(planes, CHANNELS, SEARCH, SEARCH, device="cuda", dtype=dtype)

    def step():
        out = xcorr_depthwise(search, kernel, "same", backend=impl)
        if direction == "fwd+bwd":
            torch.autograd.grad(out, (search, kernel), grad_output)

    return step


def make_round(step, launch):
    """A callable running INNER steps; ``graph`` captures them once and replays the graph."""
    if launch == "eager":
        def run():
            for _ in range(INNER):
                step()
        return run
    return capture_graph(step, INNER).replay


@pytest.mark.parametrize("launch", ["eager", "graph"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("direction", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("batch", [1, 8, 64])
@pytest.mark.parametrize("impl", ["reference", "cuda"])
def test_xcorr(benchmark, impl, batch, direction, dtype, launch):
    run = make_round(make_step(batch, dtype, direction, impl), launch)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    per_call_us = []

    def timed_round():
        start.record()
        run()
        end.record()
        end.synchronize()
        per_call_us.append(start.elapsed_time(end) * 1e3 / INNER)

    for _ in range(WARMUP):
        timed_round()
    per_call_us.clear()
    benchmark.group = f"xcorr {direction} B={batch} {str(dtype)[6:]} {launch}"
    benchmark.pedantic(timed_round, rounds=ROUNDS, iterations=1)
    benchmark.extra_info.update(
        impl=impl, batch=batch, direction=direction, dtype=str(dtype)[6:], launch=launch, inner=INNER,
        shape=f"search ({batch * TEMPLATES}, {CHANNELS}, {SEARCH}, {SEARCH}), kernel {KERNEL}x{KERNEL}",
        cuda_event_median_us=statistics.median(per_call_us), device=torch.cuda.get_device_name(),
        torch=torch.__version__)
