#!/usr/bin/env bash
# The whole GPU suite in one call: environment, extension build, every test (the CUDA-marked ones run here),
# then the per-part benchmark suites named as arguments (xcorr tracker encoder decode training, each
# benchmarks/gpu_suite_<part>.sh). TESTS narrows the tests (default: tests). Results go to $OUT (default
# benchmarks/results/gpu_suite). On the H100 all of tests/ took more than 9 minutes with 4 workers: split
# it over calls with TESTS when a call is limited to 10 minutes.
# Every step runs even if an earlier one fails; the exit status is that of the first failure.
set -uo pipefail
OUT=${OUT:-benchmarks/results/gpu_suite}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
source "$(dirname "$0")/suite_lib.sh"

environment > "$OUT/environment.txt" 2>&1
cat "$OUT/environment.txt"

step build build_extension "$OUT/build.log"

# Worker processes: a test that crashes the interpreter is reported and the others still run. One line per
# test as it finishes (-v), so a run stopped at the call's time limit still shows every result so far.
tests() {
  python3 -m pytest -v -p no:cacheprovider -n 8 -rfE --durations=25 ${TESTS:-tests} > "$OUT/tests.txt" 2>&1
  local rc=$?
  grep -E "FAILED|ERROR|passed|failed" "$OUT/tests.txt" | tail -n 40
  return $rc
}
step tests tests

for part in "$@"; do
  step "$part" env OUT="$OUT/$part" bash "benchmarks/gpu_suite_$part.sh"
done
[ "$status" -ne 0 ] || rm -f "$OUT/build.log"
exit $status
