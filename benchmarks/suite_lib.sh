# Shared by the GPU suite scripts (source it): `step` runs a stage and keeps the first failing status in
# $status, so every stage runs and the script can `exit $status`; `environment` prints what a result file
# must name: date, device, driver, Python/torch/CUDA/Triton and nvcc versions; `build_extension LOG` compiles the
# C++/CUDA extension in place (CUDA required), its output to LOG, and prints how long it took.
status=0
step() {  # step NAME COMMAND...
  echo "== $1"
  shift
  "$@" || { rc=$?; echo "!! $1 failed with status $rc"; [ "$status" -ne 0 ] || status=$rc; }
}

environment() {
  date -u +"%Y-%m-%dT%H:%M:%SZ"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import sys, torch, triton; print('python', sys.version.split()[0], '| torch', torch.__version__, \
'| cuda', torch.version.cuda, '| triton', triton.__version__)"
  nvcc --version | tail -n 2
}

build_extension() {  # build_extension LOG
  local begin=$SECONDS
  FORCE_CUDA=1 MAX_JOBS=${MAX_JOBS:-16} python3 -m pip install --no-build-isolation --no-deps -e . \
    > "$1" 2>&1 || { tail -n 40 "$1"; return 1; }
  echo "build: $((SECONDS - begin)) s"
}
