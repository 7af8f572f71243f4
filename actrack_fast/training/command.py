"""The ``actrack-fast train`` subcommand (also under ``torchrun --nproc_per_node N -m actrack_fast train``)."""
from __future__ import annotations

import argparse
import os

from .config import load_train_config
from .trainer import train


def run(args: argparse.Namespace) -> None:
    """Read the YAML run configuration, apply the command-line overrides, train, report the export."""
    overrides = {key: value for key, value in (("output_dir", args.output_dir), ("device", args.device),
                                               ("max_steps", args.max_steps)) if value is not None}
    if args.resume is not None:
        overrides["resume"] = None if args.resume == "none" else args.resume
    export = train(load_train_config(args.config, overrides))
    if os.environ.get("RANK", "0") == "0":
        print(f"trained model: {export}")


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``train`` on the CLI's subcommands."""
    p = commands.add_parser("train", help="train the additive net (SeqTrack recipe) from a YAML run config",
                            description="Train from a YAML run configuration (see actrack_fast.training.config). "
                                        "Checkpoints, metrics.jsonl and the resolved config.yaml go to output_dir; "
                                        "a run resumes from its last checkpoint unless --resume none.")
    p.add_argument("config", help="YAML run configuration")
    p.add_argument("--output-dir", help="override output_dir")
    p.add_argument("--resume", help="'auto' (default), 'none', or a checkpoint path")
    p.add_argument("--max-steps", type=int, help="stop after this many optimiser steps")
    p.add_argument("--device", help="override device (cpu, cuda, cuda:1, auto)")
    p.set_defaults(func=run)
    return p
