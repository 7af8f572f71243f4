"""Frames per second of the tracker and its parts, per component and backend (pytest-benchmark).

    pytest benchmarks/test_fps.py --benchmark-json fps.json
    python benchmarks/fps_table.py fps.json            # the markdown table

Each case is ``actrack_fast.benchmarking.prepare(component, backend, ...)`` (the measurement ``actrack-fast
bench`` runs too): warm-up calls, then timed calls, each between CUDA events on a GPU (graph replay for graph
backends) or perf_counter on CPU. The row (median/p10/p90 ms, ``frames_per_s``, ``target_frames_per_s``, device,
versions) goes to ``extra_info``; pytest-benchmark's own statistics are the host wall time of the same calls.
Groups are components; names carry the backend and the number of targets.

On a GPU: config B256, 1 and 64 targets, >= 500 frames for the full step, >= 100 replays for the other
components, every backend. Without one: config tiny, 1 and 2 targets, a few calls, the backends that run on CPU
(a smoke test that CI runs). Environment variables narrow or widen a run:
``ACTRACK_FPS_CONFIG``, ``ACTRACK_FPS_BATCHES`` (``1,64``), ``ACTRACK_FPS_BACKENDS`` and ``ACTRACK_FPS_COMPONENTS``
(comma lists), ``ACTRACK_FPS_FRAMES`` (timed step calls), ``ACTRACK_FPS_REPLAYS`` (timed component calls),
``ACTRACK_FPS_COMPILE_MODE`` (``default`` or ``max-autotune-no-cudagraphs``), ``ACTRACK_FPS_ROWS`` (a JSON-lines
file each row is appended to as soon as it is measured, so a run cut short still leaves its numbers).
"""
from __future__ import annotations

import json
import math
import os

import pytest
import torch

from actrack_fast import benchmarking

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")


def _list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


CONFIG = os.environ.get("ACTRACK_FPS_CONFIG", benchmarking.default_config(DEVICE))
BATCHES = [int(b) for b in _list("ACTRACK_FPS_BATCHES", "1,64" if CUDA else "1,2")]
BACKENDS = _list("ACTRACK_FPS_BACKENDS", ",".join(benchmarking.default_backends(DEVICE)))
# The full step first: the numbers that matter most survive a run stopped at its time limit.
COMPONENTS = _list("ACTRACK_FPS_COMPONENTS", ",".join(("step",) + benchmarking.COMPONENTS[:-1]))
MIN_FRAMES, MIN_REPLAYS = (500, 100) if CUDA else (1, 1)
FRAMES = max(MIN_FRAMES, int(os.environ.get("ACTRACK_FPS_FRAMES", "500" if CUDA else "5")))
REPLAYS = max(MIN_REPLAYS, int(os.environ.get("ACTRACK_FPS_REPLAYS", "100" if CUDA else "5")))
WARMUP = {"step": 20, "other": 10} if CUDA else {"step": 2, "other": 1}
COMPILE_MODE = os.environ.get("ACTRACK_FPS_COMPILE_MODE", "default")
ROWS_FILE = os.environ.get("ACTRACK_FPS_ROWS")

CASES = [(component, backend_name, batch) for component in COMPONENTS for backend_name in BACKENDS
         for batch in BATCHES]


@pytest.fixture(scope="module", autouse=True)
def models():
    """Models are built once and kept across cases (compiled code included); dropped at the end."""
    yield
    benchmarking.release()


@pytest.mark.parametrize("component,backend_name,batch", CASES,
                         ids=[f"{c}-{b}-{n}targets" for c, b, n in CASES])
def test_fps(benchmark, component, backend_name, batch):
    try:
        case = benchmarking.prepare(component, backend_name, CONFIG, batch, device=DEVICE, compile_mode=COMPILE_MODE)
    except benchmarking.Unavailable as reason:
        pytest.skip(str(reason))
    try:
        case.warm_up(WARMUP["step" if component == "step" else "other"])
        benchmark.group = benchmarking.COMPONENT_TITLES[component]
        benchmark.pedantic(case, rounds=FRAMES if component == "step" else REPLAYS, iterations=1)
        row = case.row()
    finally:
        case.close()
    benchmark.extra_info.update(row)
    if ROWS_FILE:
        with open(ROWS_FILE, "a") as rows:
            rows.write(json.dumps(row) + "\n")
    assert all(math.isfinite(row[k]) and row[k] > 0 for k in ("median_ms", "p10_ms", "p90_ms", "frames_per_s"))
    assert row["p10_ms"] <= row["median_ms"] <= row["p90_ms"]
