#!/usr/bin/env bash
# GPU suite for training (issue: training the additive net): the CUDA training tests, a short torchrun DDP
# run on two processes (one GPU each where two are visible, else both on one GPU through Gloo) with a
# resume, and the (a) additive-only vs (b) full fine-tuning benchmark at B256, batch 16, bf16.
# Results go to $OUT (default benchmarks/results). Needs no build: runs from the source tree.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
OUT="${OUT:-benchmarks/results}"
WORK="$(mktemp -d)"
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

python -m pytest -q -m cuda tests/test_training.py 2>&1 | tail -40 || true

python - "$WORK" <<'PY'
import sys, yaml
from actrack_fast.data import write_synthetic_got10k
work = sys.argv[1]
write_synthetic_got10k(f"{work}/data", num_sequences=4, num_frames=24, size=(320, 240), seed=0)
config = {"model": "B256", "trainable": "additive", "batch_size": 4, "epochs": 2, "log_every": 2,
          "output_dir": f"{work}/ddp", "device": "cuda",
          "data": {"datasets": [{"type": "got10k", "root": f"{work}/data"}], "samples_per_epoch": 32,
                   "num_workers": 2, "max_interval": 20}}
open(f"{work}/ddp.yaml", "w").write(yaml.safe_dump(config))
PY
NPROC=2
ddp() {  # the log keeps every rank's output; the summary below checks the outcome
  python -m torch.distributed.run --standalone --nproc_per_node "$NPROC" -m actrack_fast train "$WORK/ddp.yaml" \
    >>"$OUT/training_ddp.log" 2>&1 || echo "torchrun exited with $?"
}
ddp
sed -i 's/^epochs: 2$/epochs: 3/' "$WORK/ddp.yaml"  # resume for a third epoch: each rank restores its RNG
ddp
tr '\r' '\n' <"$OUT/training_ddp.log" | grep -v "it/s\]$" | tail -8 || true

python - "$WORK" "$OUT" "$NPROC" <<'PY' || echo "DDP check failed"
import datetime, json, sys, torch
work, out, nproc = sys.argv[1], sys.argv[2], int(sys.argv[3])
state = torch.load(f"{work}/ddp/checkpoints/last.pt", map_location="cpu", weights_only=False)
metrics = [json.loads(line) for line in open(f"{work}/ddp/metrics.jsonl")]
summary = {
    "run": "torchrun DDP, B256 additive-only, batch 4 per rank, 4 steps per epoch, 2 epochs then resumed for a 3rd",
    "device": torch.cuda.get_device_name(), "gpus_visible": torch.cuda.device_count(), "processes": nproc,
    "dist_backend": "nccl" if torch.cuda.device_count() >= nproc else "gloo",
    "torch": torch.__version__, "date": datetime.date.today().isoformat(),
    "checkpoint": {"epoch": state["epoch"], "step": state["step"], "rng_states": len(state["rng"]),
                   "trained_keys": len(state["model"])},
    "metrics": metrics,
}
json.dump(summary, open(f"{out}/training_ddp.json", "w"), indent=2)
print(json.dumps(summary["checkpoint"]))
assert state["epoch"] == 3 and state["step"] == 12 and len(state["rng"]) == nproc
PY

python benchmarks/bench_training.py --model B256 --batch 16 --steps 60 --warmup 10 --out "$OUT/training_b256.json"
