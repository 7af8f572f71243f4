"""The ``actrack-fast eval`` subcommand."""
from __future__ import annotations

import argparse

import torch

from ..config import CONFIGS
from ..metrics import CONVENTIONS
from .datasets import LOADERS
from .report import markdown_table
from .runner import evaluate


def run(args: argparse.Namespace) -> None:
    """Evaluate, then print what was tracked, the table and where the files are."""
    from ..cli import load_tracking_model  # the same model loading as ``track``

    model, description = load_tracking_model(args.weights, args.config, args.device, args.trust_checkpoint)
    print(f"model: {description}")
    outcome = evaluate(args.dataset, args.root, args.out, model, split=args.split, batch=args.batch,
                       dtype=args.dtype, convention=args.convention, compare=args.compare, name=args.name)
    print(f"tracked {len(outcome.tracked)} sequence(s), skipped {len(outcome.skipped)} already finished; "
          f"results in {args.out}")
    if outcome.submission is not None:
        print(f"submission archive: {outcome.submission}")
    if outcome.summaries:
        print(markdown_table(outcome.summaries), end="")
        print(f"report: {', '.join(str(p) for p in outcome.report.values())}")
    else:
        print("no ground truth beyond the first frames (a test split): upload the archive to score it")


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``eval`` on the CLI's subcommands."""
    p = commands.add_parser("eval", help="one-pass evaluation on a benchmark: results, submission archive, report",
                            description="Initialise on the first annotated frame, track the rest, write the "
                                        "benchmark's result files and score them. Finished sequences are skipped.")
    p.add_argument("--dataset", required=True, choices=sorted(LOADERS), help="layout of --root")
    p.add_argument("--root", required=True, help="dataset root folder")
    p.add_argument("--split", default=None,
                   help="lasot: test|all; got10k: val|test; trackingnet: TEST|TRAIN_k (default: the test/val split)")
    p.add_argument("--weights", default=None, help="ACTrack .safetensors or official SeqTrack checkpoint "
                                                   "(default: the embedded default model)")
    p.add_argument("--config", default=None, choices=sorted(CONFIGS),
                   help="model config of a SeqTrack checkpoint (default B256)")
    p.add_argument("--out", default="results/actrack", help="the tracker's result folder")
    p.add_argument("--batch", type=int, default=1, help="sequences tracked at once through BatchTracker")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"])
    p.add_argument("--convention", default="got10k", choices=sorted(CONVENTIONS),
                   help="scoring rules (see actrack_fast.metrics)")
    p.add_argument("--compare", nargs="*", default=[], metavar="DIR",
                   help="other trackers' result folders to score and plot alongside")
    p.add_argument("--name", default=None, help="tracker name in the table and plots (default: --out's name)")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow pickled objects in a SeqTrack checkpoint (official files need it)")
    p.set_defaults(func=run)
    return p
