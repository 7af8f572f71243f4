"""Training cost of the paper's setting against full fine-tuning, measured on one GPU.

(a) ``additive``: frozen encoder and decoder, only the additive net trains;
(b) ``full``: every parameter trains, the encoder at 0.1x the learning rate (SeqTrack's recipe).
Both run the trainer's own ``train_step`` (bf16 autocast, clipping, fused AdamW) on the same random batch
of normalised crops and tokens. (a) runs twice: with the frozen encoder weights kept in fp32 (autocast
casts them every step) and stored in bf16 (the trainer's default; bit-identical results). ``--backends``
adds runs with other encoder-block backends (``auto``: the fused Triton block, whose backward recomputes
the block).
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


def measure(model: str, trainable: str, block_backend: str, frozen_bf16: bool, batch: int, steps: int,
            warmup: int) -> dict:
    """One configuration: peak memory and step times over ``steps`` steps after ``warmup``."""
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as output:
        trainer = Trainer(TrainConfig(model=model, trainable=trainable, batch_size=batch, device="cuda",
                                      output_dir=output, resume=None, encoder_backend=block_backend,
                                      frozen_bf16=frozen_bf16))
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
            "model": model, "trainable": trainable, "frozen_weights_bf16": bool(trainer.frozen_masters),
            "encoder_block_backend": backend.select("encoder_block", trainer.device, block_backend),
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
    parser.add_argument("--backends", default="reference", help="encoder-block backends to run (reference,auto)")
    parser.add_argument("--out", help="JSON file for the results")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("this benchmark needs a CUDA GPU")
    runs, comparisons = [], []
    for block_backend in args.backends.split(","):
        variants = {"additive_fp32_weights": ("additive", False), "additive": ("additive", True), "full": ("full", True)}
        done = {}
        for label, (trainable, frozen_bf16) in variants.items():
            try:
                done[label] = measure(args.model, trainable, block_backend, frozen_bf16, args.batch, args.steps,
                                      args.warmup)
            except Exception as error:  # record and go on: one failing path must not hide the others
                done[label] = {"trainable": trainable, "error": f"{type(error).__name__}: {error}"}
            done[label].update(variant=label, requested_backend=block_backend)
            runs.append(done[label])
            print(json.dumps(done[label]), flush=True)
        full = done["full"]
        for label in ("additive_fp32_weights", "additive"):
            if "error" not in done[label] and "error" not in full:
                comparisons.append({
                    "a": label, "b": "full", "encoder_block_backend": full["encoder_block_backend"],
                    "memory_ratio_a_over_b": done[label]["peak_memory_bytes"] / full["peak_memory_bytes"],
                    "step_time_ratio_a_over_b": done[label]["step_ms_median"] / full["step_ms_median"],
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
