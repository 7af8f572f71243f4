#!/usr/bin/env bash
# FPS suite on a GPU (issue 7): build the extension if needed (the fast path's correlation), run
# benchmarks/test_fps.py (B256, 1 and 64 targets, every component x backend) with --benchmark-json, and turn the
# results into one markdown table. Run from anywhere; results go to $OUT (default benchmarks/results/fps):
#   fps.json          pytest-benchmark JSON (each row in extra_info)
#   fps_rows.jsonl    the same rows, appended as each case finishes (survives a run stopped at its time limit)
#   fps_table.md      the table (python benchmarks/fps_table.py $OUT/fps.json --readme README.md puts it in the README)
#   fps_bench.txt     pytest's output; environment.txt: device and versions
# Budget on an H100 (~8 min in all): the full step in fp32 eager at 64 targets is the slowest measurement
# (~1 min for 500 frames), torch.compile of one block ~0.5-1 min per batch size in the "default" mode.
# Optional: ACTRACK_FPS_BACKENDS (default all: reference-eager-fp32,reference-bf16-graph,compile,fast),
# ACTRACK_FPS_COMPONENTS (step,crop,additive,correlation,encoder,decoder), ACTRACK_FPS_BATCHES (1,64),
# ACTRACK_FPS_CONFIG (B256), ACTRACK_FPS_COMPILE_MODE (default; max-autotune-no-cudagraphs takes minutes per
# batch size), FPS_LIMIT (seconds for the pytest stage, default 390), SKIP_BUILD=1.
# Every stage runs even if an earlier one fails; the exit status is that of the first failure.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results/fps}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
export ACTRACK_FPS_ROWS="$OUT/fps_rows.jsonl"
unset ACTRACK_BACKEND  # the suite chooses the backends itself
source benchmarks/suite_lib.sh

environment > "$OUT/environment.txt" 2>&1
cat "$OUT/environment.txt"

build() {
  if [ "${SKIP_BUILD:-0}" = 1 ] || python3 -c "from actrack_fast import _C; assert _C.with_cuda" 2>/dev/null; then
    echo "extension already built with CUDA (or SKIP_BUILD=1)"
    return 0
  fi
  build_extension "$OUT/build.log" | tee -a "$OUT/environment.txt"
}
step build build

# One line per case as it finishes (-v), so a stopped run still names its results.
fps() {
  rm -f "$ACTRACK_FPS_ROWS" "$OUT/fps.json"
  local begin=$SECONDS
  timeout "${FPS_LIMIT:-390}" python3 -m pytest -v -p no:cacheprovider -rs benchmarks/test_fps.py \
    --benchmark-json="$OUT/fps.json" --benchmark-columns=median,iqr,rounds --benchmark-sort=name \
    > "$OUT/fps_bench.txt" 2>&1
  local rc=$?
  grep -E "PASSED|FAILED|ERROR|SKIPPED|passed|failed" "$OUT/fps_bench.txt" | tail -n 60
  echo "fps suite: $((SECONDS - begin)) s, status $rc"
  return $rc
}
step fps fps

# The table from the pytest-benchmark JSON, or from the rows file when pytest was stopped before writing it.
table() {
  local source="$OUT/fps.json"
  [ -s "$source" ] || source="$ACTRACK_FPS_ROWS"
  python3 benchmarks/fps_table.py "$source" --output "$OUT/fps_table.md"
}
step table table
exit $status
