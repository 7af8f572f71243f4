#!/usr/bin/env bash
# GPU suite of the correlation extension (csrc/): build it, run its tests (CPU and CUDA), a compute-sanitizer
# memcheck of a small run, and the benchmark. Run from the repository root on a machine with a GPU, nvcc and
# torch; results go to $OUT (default benchmarks/results/xcorr). Every step runs even if an earlier one fails;
# the exit status is that of the first failure.
set -uo pipefail
OUT=${OUT:-benchmarks/results/xcorr}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
source "$(dirname "$0")/suite_lib.sh"

environment > "$OUT/xcorr_env.txt" 2>&1
cat "$OUT/xcorr_env.txt"

build() {
  build_extension "$OUT/xcorr_build.log" | tee -a "$OUT/xcorr_env.txt"
}
step build build

# Two pytest-xdist workers: a test that crashes the interpreter is reported and the others still run.
tests() {
  python3 -m pytest -q -p no:cacheprovider -n 2 -rfE tests/test_xcorr.py 2>&1 | tee "$OUT/xcorr_tests.txt"
}
step tests tests

# A small run of every kernel path: grouped whole planes, a partial last block, tiled planes, every dtype.
memcheck() {
  local sanitizer script
  script=$(mktemp --suffix=.py)
  sanitizer=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer | head -n 1)
  cat > "$script" <<'PY'
import torch
from actrack_fast import xcorr_op
for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
    for B, C, H, W, h, w, padding in ((3, 5, 16, 16, 4, 4, "same"), (2, 3, 40, 37, 5, 6, "same"),
                                      (4, 3, 9, 8, 3, 3, "valid")):
        s = torch.randn(B, C, H, W, device="cuda", dtype=dtype, requires_grad=True)
        k = torch.randn(B, C, h, w, device="cuda", dtype=dtype, requires_grad=True)
        xcorr_op.xcorr_depthwise(s, k, padding).square().sum().backward()
torch.cuda.synchronize()
print("memcheck run finished")
PY
  "$sanitizer" --tool memcheck --error-exitcode 9 python3 "$script" > "$OUT/xcorr_memcheck.txt" 2>&1
  local rc=$?
  tail -n 4 "$OUT/xcorr_memcheck.txt"
  return $rc
}
step memcheck memcheck

benchmark() {
  python3 -m pytest -q -p no:cacheprovider benchmarks/test_bench_xcorr.py --benchmark-json="$OUT/xcorr_bench.json" \
    --benchmark-columns=median,iqr,rounds > "$OUT/xcorr_bench.txt" 2>&1
  local rc=$?
  tail -n 3 "$OUT/xcorr_bench.txt"
  return $rc
}
step benchmark benchmark

# Ratios of the CUDA-event medians, reference / extension, from the same run.
step summary python3 - "$OUT/xcorr_bench.json" "$OUT/xcorr_summary.md" <<'EOF'
import json, sys
runs = json.load(open(sys.argv[1]))
times = {}
for bench in runs["benchmarks"]:
    info = bench["extra_info"]
    times[(info["direction"], info["dtype"], info["launch"], info["batch"], info["impl"])] = info["cuda_event_median_us"]
info = runs["benchmarks"][0]["extra_info"]
lines = [f"# xcorr_depthwise on {info['device']} (torch {info['torch']}), {runs['datetime']}", "",
         "Median per-call time from CUDA events; speed-up = reference / extension, same run.", "",
         "| direction | dtype | launch | B | reference (us) | extension (us) | speed-up |", "|---|---|---|---|---|---|---|"]
for (direction, dtype, launch, batch, impl), ours in sorted(times.items()):
    if impl == "cuda":
        ref = times[(direction, dtype, launch, batch, "reference")]
        lines.append(f"| {direction} | {dtype} | {launch} | {batch} | {ref:.2f} | {ours:.2f} | {ref / ours:.2f}x |")
open(sys.argv[2], "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
[ "$status" -ne 0 ] || rm -f "$OUT/xcorr_build.log"
exit $status
