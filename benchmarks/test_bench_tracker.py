"""Tracker per-frame latency on the GPU: Tracker (one target) and BatchTracker (N = 32 targets).

Model: B256 with random weights (the latency does not depend on the values), reference backend. Frames:
a generated 640x480 sequence (textured patch over a natural image), cycled, on the GPU. Each case times ``track()``
wall-clock per call (``track`` returns host floats, so every call ends synchronised), median over
``ROUNDS`` calls after ``WARMUP``. The same run times ``model.generate`` alone on ready crops (synchronised)
and the crop alone, so the tracker's own cost (crop, box geometry, device-to-host copy) is visible.

Results (pytest-benchmark JSON, plus a JSON and a markdown table with the device and versions) go to
``ACTRACK_BENCH_RESULTS`` (default ``benchmarks/results``).
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from actrack_fast import BatchTracker, Tracker, backend, build_model
from actrack_fast.data import render_sequence
from actrack_fast.preprocessing import crop_and_resize, normalize_crops

# ACTRACK_BENCH_DEVICE=cpu ACTRACK_BENCH_CONFIG=tiny ACTRACK_BENCH_ROUNDS=2 smoke-tests this file on a CPU.
DEVICE = os.environ.get("ACTRACK_BENCH_DEVICE", "cuda")
CONFIG = os.environ.get("ACTRACK_BENCH_CONFIG", "B256")
pytestmark = pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA GPU")

TARGETS = 32
ROUNDS = int(os.environ.get("ACTRACK_BENCH_ROUNDS", "30"))
WARMUP = 5
RESULTS = Path(os.environ.get("ACTRACK_BENCH_RESULTS", "benchmarks/results"))
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
_ROWS: list[dict] = []


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(CONFIG).eval().to(DEVICE)


@pytest.fixture(scope="module")
def video():
    sequence = render_sequence(32, (640, 480), clutter=False, target_size=96)
    frames, truth = sequence.frames, sequence.boxes
    return frames, [torch.from_numpy(f).to(DEVICE) for f in frames], truth


@pytest.fixture(scope="module", autouse=True)
def report():
    with backend.use_backend("reference"):
        yield
    if _ROWS:
        write_report()


def synchronize() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def record(benchmark, case: str, targets: int, dtype: str, what: str) -> None:
    times = sorted(benchmark.stats.stats.data)
    median = statistics.median(times)
    _ROWS.append({"case": case, "what": what, "targets": targets, "dtype": dtype, "median_ms": 1e3 * median,
                  "p10_ms": 1e3 * times[len(times) // 10], "p90_ms": 1e3 * times[(9 * len(times)) // 10],
                  "frames_per_s": 1 / median, "targets_per_s": targets / median, "rounds": len(times)})


def cycle(frames):
    state = {"i": 0}

    def next_frame():
        state["i"] += 1
        return frames[state["i"] % len(frames)]
    return next_frame


def starts(truth, count):
    """``count`` different initial boxes around the patch and elsewhere in the first frame."""
    rng = np.random.default_rng(0)
    x, y, w, h = truth[0]
    boxes = [truth[0]]
    while len(boxes) < count:
        boxes.append(np.array([rng.uniform(0, 560), rng.uniform(0, 400), w * rng.uniform(0.5, 1.5),
                               h * rng.uniform(0.5, 1.5)]))
    return boxes


@pytest.mark.parametrize("dtype,frames_on", [("fp32", "host"), ("fp32", "device"), ("bf16", "device")])
def test_tracker_one_target(benchmark, model, video, dtype, frames_on):
    host, device, truth = video
    frames = host if frames_on == "host" else device
    tracker = Tracker(model, dtype=DTYPES[dtype])
    tracker.initialize(frames[0], truth[0])
    step = cycle(frames)
    benchmark.pedantic(lambda: tracker.track(step()), rounds=ROUNDS, warmup_rounds=WARMUP, iterations=1)
    record(benchmark, "Tracker, numpy frames" if frames_on == "host" else "Tracker, frames on GPU", 1, dtype,
           "track()")


@pytest.mark.parametrize("dtype,layout", [("fp32", "one video"), ("bf16", "one video"),
                                          ("bf16", "32 videos"), ("bf16", "one video, update every frame")])
def test_batch_tracker_32_targets(benchmark, model, video, dtype, layout):
    _, frames, truth = video
    updates = dict(update_interval=1, update_threshold=-1.0) if "update" in layout else {}
    tracker = BatchTracker(model, dtype=DTYPES[dtype], **updates)
    ids = [tracker.add(frames[0], box) for box in starts(truth, TARGETS)]
    step = cycle(frames)
    if layout == "32 videos":
        # A different frame per target: the crop gathers from 32 images in one call.
        def run():
            first = step()
            index = next(i for i, f in enumerate(frames) if f is first)
            return tracker.track({t: frames[(index + k) % len(frames)] for k, t in enumerate(ids)})
    else:
        def run():
            return tracker.track(step())
    benchmark.pedantic(run, rounds=ROUNDS, warmup_rounds=WARMUP, iterations=1)
    record(benchmark, f"BatchTracker, {layout}, frames on GPU", TARGETS, dtype, "track()")


@pytest.mark.parametrize("targets", [1, TARGETS])
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_model_generate_alone(benchmark, model, targets, dtype):
    cfg = model.config
    search = torch.randn(targets, 3, cfg.search_size, cfg.search_size, device=DEVICE)
    templates = torch.randn(targets, cfg.num_templates, 3, cfg.template_size, cfg.template_size, device=DEVICE)

    def run():
        with torch.autocast(DEVICE, dtype=DTYPES[dtype], enabled=dtype != "fp32"):
            model.generate(search, templates)
        synchronize()
    benchmark.pedantic(run, rounds=ROUNDS, warmup_rounds=WARMUP, iterations=1)
    record(benchmark, "model.generate alone (ready crops)", targets, dtype, "generate()")


@pytest.mark.parametrize("targets", [1, TARGETS])
def test_search_crop_alone(benchmark, model, video, targets):
    _, frames, truth = video
    boxes = np.stack(starts(truth, targets))

    def run():
        crops, _ = crop_and_resize(frames[0], boxes, 4.0, model.config.search_size)
        normalize_crops(crops)
        synchronize()
    benchmark.pedantic(run, rounds=ROUNDS, warmup_rounds=WARMUP, iterations=1)
    record(benchmark, "search crop + normalise alone", targets, "uint8->fp32", "crop")


def write_report() -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = {
        "device": torch.cuda.get_device_name() if DEVICE == "cuda" else platform.processor() or "CPU",
        "torch": torch.__version__, "cuda": torch.version.cuda,
        "opencv": cv2.__version__, "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "model": f"{CONFIG}, random weights (fixed seed), reference backend, on {DEVICE}",
        "frames": "640x480 generated sequence", "rounds": ROUNDS, "warmup": WARMUP,
        "matmul_tf32": torch.backends.cuda.matmul.allow_tf32, "cudnn_tf32": torch.backends.cudnn.allow_tf32,
    }
    name = "tracker_latency" if DEVICE == "cuda" else "tracker_latency_cpu_smoke"
    (RESULTS / f"{name}.json").write_text(json.dumps({"meta": meta, "rows": _ROWS}, indent=1))
    lines = [f"# Tracker per-frame latency: {meta['device']}", "",
             f"{meta['model']}; {meta['frames']}; torch {meta['torch']} (CUDA {meta['cuda']}), OpenCV "
             f"{meta['opencv']}, Python {meta['python']}; {meta['date']}. Median of {ROUNDS} calls after "
             f"{WARMUP} warm-up calls; TF32 matmul {meta['matmul_tf32']}, cuDNN TF32 {meta['cudnn_tf32']}.", "",
             "| case | targets | dtype | median ms | p10-p90 ms | frames/s | targets/s |",
             "|---|---|---|---|---|---|---|"]
    for row in _ROWS:
        lines.append(f"| {row['case']} | {row['targets']} | {row['dtype']} | {row['median_ms']:.2f} | "
                     f"{row['p10_ms']:.2f}-{row['p90_ms']:.2f} | {row['frames_per_s']:.1f} | "
                     f"{row['targets_per_s']:.0f} |")
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
