"""Command line: ``actrack-fast demo``."""
from __future__ import annotations

import argparse
import time
from typing import Optional, Sequence

import torch

from .config import CONFIGS
from .model import build_model, parameter_counts


def demo(args: argparse.Namespace) -> None:
    """Forward the model on random normalised crops, print the decoded tokens and the timing."""
    torch.manual_seed(args.seed)
    model = build_model(args.config).eval().to(args.device)
    cfg = model.config
    search = torch.randn(args.batch, 3, cfg.search_size, cfg.search_size, device=args.device)
    templates = torch.randn(args.batch, cfg.num_templates, 3, cfg.template_size, cfg.template_size,
                            device=args.device)
    counts = parameter_counts(model)
    print(f"config {cfg.name}: {counts['total']:,} parameters, {counts['trainable']:,} trainable (additive net)")
    model.generate(search, templates)  # warm-up
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        result = model.generate(search, templates)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    times.sort()
    for i in range(args.batch):
        tokens = ", ".join(str(t) for t in result.tokens[i].tolist())
        print(f"sample {i}: tokens [{tokens}]  confidence {result.confidence[i].item():.4f}")
    print(f"median frame time {1e3 * times[len(times) // 2]:.2f} ms over {args.repeats} runs "
          f"(batch {args.batch}, {args.device}, reference backend)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="actrack-fast", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("demo", help="forward the model on random crops and time it")
    p.add_argument("--config", default="tiny", choices=sorted(CONFIGS))
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=demo)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
