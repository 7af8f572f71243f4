#!/usr/bin/env bash
# GPU suite for the tracker (issue 3): the CUDA tests of the tracker modules (device crop against OpenCV,
# batch equality on the GPU, 10,000 frames without device-memory growth), then the per-frame latency
# benchmark of Tracker (B = 1) and BatchTracker (N = 32) around B256 with random weights, reference backend.
# Run from anywhere; results go to $OUT (default benchmarks/results). Needs no build: runs from the source tree.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 ACTRACK_BACKEND=reference
OUT="${OUT:-benchmarks/results}"
export ACTRACK_BENCH_RESULTS="$OUT"
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, cv2; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'opencv', cv2.__version__)"

timeout "${TEST_LIMIT:-150}" python3 -m pytest -q -p no:cacheprovider -m cuda --durations=5 \
    tests/test_preprocessing.py tests/test_tracker.py tests/test_tracker_batch.py 2>&1 | tee "$OUT/tracker_gpu_tests.log"
timeout "${BENCH_LIMIT:-200}" python3 -m pytest -q -p no:cacheprovider benchmarks/test_bench_tracker.py \
    --benchmark-json="$OUT/tracker_pytest_benchmark.json" --benchmark-columns=median,iqr,rounds 2>&1 \
    | tee "$OUT/tracker_bench.log" | tail -5
cat "$OUT/tracker_latency.md" 2>/dev/null
