#!/usr/bin/env bash
# Everything the Triton encoder block needs from a GPU, in one call: GPU tests, then the benchmark and a
# kernel profile. Run from the repository root; results go to $OUT (default benchmarks/results).
# Each stage has a time limit so that a slow stage still leaves the others' results behind.
# Optional: TESTS (a pytest -k expression), ACTRACK_BENCH_CONFIGS (B256,L256), ACTRACK_BENCH_PATHS
# (reference,compiled,triton): max-autotune compilation takes ~100 s per config and batch on the H100.
set -uo pipefail
OUT=${OUT:-benchmarks/results}
mkdir -p "$OUT"
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
export ACTRACK_ACCURACY_LOG=$OUT/encoder_accuracy.jsonl ACTRACK_BENCH_RESULTS=$OUT
TEST_LIMIT=${TEST_LIMIT:-200}
BENCH_LIMIT=${BENCH_LIMIT:-330}

python3 -c "import torch, triton; print(torch.__version__, triton.__version__, torch.cuda.get_device_name())"
rm -f "$ACTRACK_ACCURACY_LOG"
timeout "$TEST_LIMIT" python3 -m pytest -q -p no:cacheprovider tests/test_encoder_triton.py ${TESTS:+-k "$TESTS"} 2>&1 \
    | tee "$OUT/encoder_tests.log" | tail -25
timeout "$BENCH_LIMIT" python3 -m pytest -q -p no:cacheprovider benchmarks/test_bench_encoder.py \
    --benchmark-json="$OUT/encoder_pytest_benchmark.json" --benchmark-columns=median,iqr,rounds 2>&1 \
    | tee "$OUT/encoder_bench.log" | tail -20
cat "$OUT"/encoder_bench_*.md 2>/dev/null
