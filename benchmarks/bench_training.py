"""Training cost of the paper's setting against full fine-tuning, measured on one GPU.

(a) ``additive``: frozen encoder and decoder, only the additive net trains;
(b) ``full``: every parameter trains, the encoder at 0.1x the learning rate (SeqTrack's recipe).
Both run the trainer's own ``train_step`` (bf16 autocast, clipping, fused AdamW) on the same random batch
of normalised crops and tokens, with the reference encoder blocks and with the backend's default (the
Triton block on CUDA, whose backward recomputes the block: activation checkpointing for free).
Reports peak ``torch.cuda.max_memory_allocated`` over the timed steps (weights, gradients, optimiser
state and activations) and the median step time from CUDA events after warm-up.

Usage: ``python benchmarks/bench_training.py --out benchmarks/results/training_b256.json``
"""
from __future__ import annotations

import argparse
import datetime
import gc
import json
import platform
import statistics
import tempfile

import torch

from actrack_fast import backend
from actrack_fast.model import parameter_counts
from actrack_fast.training import TrainConfig, Trainer


def random_batch(config, batch: int, device: torch.device) -> dict:
    """Normalised crops ~ N(0, 1) and random box tokens in the teacher-forcing layout."""
    tokens = torch.randint(0, config.bins, (batch, 4), device=device)
    start = torch.full((batch, 1), config.start_token, device=device)
    end = torch.full((batch, 1), config.end_token, device=device)
    return {
        "search": torch.randn(batch, 3, config.search_size, config.search_size, device=device),
        "templates": torch.randn(batch, config.num_templates, 3, config.template_size, config.template_size,
                                 device=device),
        "sequence": torch.cat([start, tokens], 1),
        "target": torch.cat([tokens, end], 1),
    }


def measure(model: str, trainable: str, block_backend: str, batch: int, steps: int, warmup: int) -> dict:
    """One configuration: peak memory and step times over ``steps`` steps after ``warmup``."""
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as output, backend.use_backend(block_backend, ("encoder_block",)):
        trainer = Trainer(TrainConfig(model=model, trainable=trainable, batch_size=batch, device="cuda",
                                      output_dir=output, resume=None))
        data = random_batch(trainer.model.config, batch, trainer.device)
        static = torch.cuda.memory_allocated()
        losses = [float(trainer.train_step(data)["loss"]) for _ in range(warmup)]
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(steps)]
        for start, end in events:
            start.record()
            result = trainer.train_step(data)
            end.record()
        torch.cuda.synchronize()
        times = [start.elapsed_time(end) for start, end in events]
        counts = parameter_counts(trainer.model)
        record = {
            "model": model, "trainable": trainable, "encoder_block_backend": backend.select("encoder_block", trainer.device),
            "batch": batch, "steps": steps, "warmup": warmup,
            "peak_memory_bytes": torch.cuda.max_memory_allocated(), "static_memory_bytes": static,
            "step_ms_median": statistics.median(times), "step_ms_min": min(times), "step_ms_max": max(times),
            "trainable_parameters": counts["trainable"], "total_parameters": counts["total"],
            "first_loss": losses[0], "last_loss": float(result["loss"]),
        }
        del trainer, data, result
    gc.collect()
    torch.cuda.empty_cache()
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="B256")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--backends", default="reference,auto", help="encoder-block backends to run")
    parser.add_argument("--out", help="JSON file for the results")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("this benchmark needs a CUDA GPU")
    runs, comparisons = [], []
    for block_backend in args.backends.split(","):
        pair = {}
        for trainable in ("additive", "full"):
            try:
                pair[trainable] = measure(args.model, trainable, block_backend, args.batch, args.steps, args.warmup)
            except Exception as error:  # record and go on: one failing path must not hide the others
                pair[trainable] = {"trainable": trainable, "error": f"{type(error).__name__}: {error}"}
            pair[trainable]["requested_backend"] = block_backend
            runs.append(pair[trainable])
            print(json.dumps(pair[trainable]), flush=True)
        a, b = pair["additive"], pair["full"]
        if "error" not in a and "error" not in b:
            comparisons.append({
                "requested_backend": block_backend, "encoder_block_backend": a["encoder_block_backend"],
                "memory_ratio_a_over_b": a["peak_memory_bytes"] / b["peak_memory_bytes"],
                "step_time_ratio_a_over_b": a["step_ms_median"] / b["step_ms_median"],
            })
            print(json.dumps(comparisons[-1]), flush=True)
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    result = {
        "benchmark": "training step, (a) additive net only vs (b) full fine-tuning (encoder lr x0.1)",
        "device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton_version,
        "python": platform.python_version(), "date": datetime.date.today().isoformat(),
        "dtype": "bf16 autocast", "runs": runs, "comparisons": comparisons,
    }
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(result, handle, indent=2)


if __name__ == "__main__":
    main()
