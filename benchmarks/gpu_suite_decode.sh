#!/usr/bin/env bash
# Everything the Triton decode needs from a GPU, in one call: compile + smoke-check every kernel variant in
# parallel (this also fills Triton's cache for the later stages), the GPU tests, then the benchmark.
# Run from the repository root; results go to $OUT (default benchmarks/results). Each stage has a time
# limit so that a slow stage still leaves the others' results behind. Optional: TESTS (a pytest -k
# expression), BENCH (a pytest -k expression for the benchmark).
set -uo pipefail
OUT=${OUT:-benchmarks/results}
mkdir -p "$OUT"
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 DECODE_BENCH_OUT=$OUT

python3 -c "import torch, triton; print(torch.__version__, triton.__version__, torch.cuda.get_device_name())"

# Variants: rows per unit (1: B = 1, 8: B = 1 with 4 prompt tokens, 16: batches) x cross-attention form.
SMOKE=$(mktemp --suffix=.py)
cat > "$SMOKE" <<'EOF'
import sys, time, torch
from dataclasses import replace
from kernels import decode as kernels
from tests.test_decode_triton import make_parts
batch, prompt, cross = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
torch.backends.cuda.matmul.allow_tf32 = False
parts = make_parts("B256", prompt, "cuda")
memory = torch.randn(batch, parts.memory_tokens, 256, device="cuda")
prefix = parts.prefix(batch, "cuda")
shape, weights = parts.packed()
for persistent in (True, False):
    config = replace(kernels.default_launch_config(batch, prompt + 1, memory.device, persistent), cross=cross)
    start = time.time()
    tokens, probs = kernels.decode(weights, shape, parts.decoder.embedding.word_embeddings.weight.detach(),
                                   parts.query_pos, memory, parts.memory_pos, prefix, parts.window,
                                   persistent=persistent, config=config)
    torch.cuda.synchronize()
    with torch.no_grad():
        expected = parts.reference(memory, prefix, True)
    same = torch.equal(tokens, expected.tokens)
    error = float(((probs - expected.probs).abs() / expected.probs).max())
    print(f"smoke rows={config.rows} cross={cross} persistent={persistent}: first call {time.time() - start:.1f}s "
          f"tokens {'equal' if same else 'DIFFER'} max rel prob err {error:.2e}", flush=True)
EOF
start=$(date +%s)
for variant in "1 0 cached" "1 0 absorbed" "1 4 cached" "1 4 absorbed" "64 0 cached" "64 0 absorbed"; do
    # shellcheck disable=SC2086
    timeout "${SMOKE_LIMIT:-150}" python3 "$SMOKE" $variant > "$SMOKE.${variant// /_}.log" 2>&1 &
done
wait
cat "$SMOKE".*.log > "$OUT/decode_smoke.log"
grep -E "smoke|Error|error" "$OUT/decode_smoke.log" | head -40
echo "compile + smoke: $(( $(date +%s) - start )) s"

timeout "${TEST_LIMIT:-200}" python3 -m pytest -q -p no:cacheprovider -m cuda tests/test_decode_triton.py \
    ${TESTS:+-k "$TESTS"} 2>&1 | tee "$OUT/decode_tests.log" | tail -25
timeout "${BENCH_LIMIT:-240}" python3 -m pytest -q -s -p no:cacheprovider benchmarks/test_bench_decode.py \
    ${BENCH:+-k "$BENCH"} --benchmark-json="$OUT/decode_pytest_benchmark.json" --benchmark-columns=median,iqr,rounds \
    2>&1 | tee "$OUT/decode_bench.log" | grep -E "^\||passed|failed|Error" | tail -40

# Where a decode's time goes: Nsight Compute on the first step's phases (one launch per phase) at NCU_BATCHES
# (default 1 and 64): per-phase timing sections, then warp-stall sampling by instruction
# (benchmarks/ncu_stall_summary.py).
if [ "${NCU:-1}" = 1 ] && command -v ncu >/dev/null; then
    cat > "$SMOKE.ncu.py" <<'EOF'
import sys, torch
from benchmarks.test_bench_decode import make_step
from tests.test_decode_triton import make_parts
batch = int(sys.argv[1])
parts = make_parts("B256", 0, "cuda")
memory = torch.randn(batch, parts.memory_tokens, 256, device="cuda")
step, _ = make_step("triton-phases", parts, memory, parts.prefix(batch, "cuda"))
for _ in range(2):
    step()
torch.cuda.synchronize()
EOF
    for batch in ${NCU_BATCHES:-1 64}; do
        # 33 phase launches per decode (the memory projection is its own kernel, not _decode_kernel): skip the
        # first decode, profile the second one's step 0.
        timeout "${NCU_LIMIT:-120}" ncu --kernel-name _decode_kernel --launch-skip 33 --launch-count 8 \
            --section SpeedOfLight --section WarpStateStats --section SchedulerStats --section SourceCounters \
            --import-source no -o "$SMOKE.b$batch" python3 "$SMOKE.ncu.py" "$batch" > "$OUT/decode_ncu_b$batch.log" 2>&1
        ncu -i "$SMOKE.b$batch.ncu-rep" --page details >> "$OUT/decode_ncu_b$batch.log" 2>&1
        ncu -i "$SMOKE.b$batch.ncu-rep" --page source --csv --print-source sass > "$SMOKE.b$batch.csv" 2>&1 &&
            python3 benchmarks/ncu_stall_summary.py "$SMOKE.b$batch.csv" > "$OUT/decode_stalls_b$batch.txt"
        grep -E "Duration|Memory Throughput|stalled|Warp Cycles Per Issued|No Eligible" "$OUT/decode_ncu_b$batch.log" \
            | head -30
    done
fi
