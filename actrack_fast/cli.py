"""Command line: ``actrack-fast track``, ``actrack-fast generate-sequence``, ``actrack-fast bench``,
``actrack-fast demo``."""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
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


def generate_sequence(args: argparse.Namespace) -> None:
    """Write a synthetic sequence (a textured target moving over a natural image) with its ground truth."""
    from .data.synthetic import render_sequence, write_frame_folder
    from .video import format_box

    sequence = render_sequence(args.frames, (args.width, args.height), args.seed, clutter=args.clutter)
    write_frame_folder(args.folder, sequence)
    print(f"wrote {len(sequence.frames)} frames and groundtruth.txt to {args.folder}; "
          f"first box {format_box(sequence.boxes[0])}")


def load_tracking_model(weights: Optional[str], config: Optional[str], device: str, trusted: bool):
    """The model to track with and a one-line description of it."""
    from .checkpoint import load_checkpoint, load_seqtrack_checkpoint
    from .default_model import DESCRIPTION, default_model

    if weights is None:
        if config is not None:
            raise ValueError("--config needs --weights (the embedded default model has its own config)")
        return default_model(device), DESCRIPTION
    if not Path(weights).is_file():
        raise FileNotFoundError(f"no such checkpoint file: {weights}")
    if weights.endswith(".safetensors"):
        model = load_checkpoint(weights)
        if config is not None and config != model.config.name:
            raise ValueError(f"--config {config} does not match the checkpoint's config {model.config.name!r}")
        return model.eval().to(device), f"ACTrack checkpoint {weights} (config {model.config.name})"
    model = build_model(config or "B256")
    load_seqtrack_checkpoint(model, weights, trusted=trusted)
    return model.eval().to(device), f"SeqTrack checkpoint {weights} (config {model.config.name})"


def track(args: argparse.Namespace) -> None:
    """Track one target through a video file or a frame folder."""
    from tqdm import tqdm

    from .tracker import Tracker
    from .video import AnnotatedVideoWriter, FrameReader, format_box

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {args.device}: CUDA is not available on this machine (use --device cpu)")
    reader = FrameReader(args.source)
    model, description = load_tracking_model(args.weights, args.config, args.device, args.trust_checkpoint)
    tracker = Tracker(model, args.preset, dtype=args.dtype, window=False if args.no_window else None)
    print(f"model: {description}")

    results = open(args.results, "w") if args.results else None
    writer = AnnotatedVideoWriter(args.output, fps=reader.fps or 30.0) if args.output else None
    frame_times: list[float] = []
    start = time.perf_counter()
    try:
        with tqdm(total=reader.count, unit="frame", disable=args.quiet, file=sys.stderr) as progress:
            for index, frame in enumerate(reader):
                if args.max_frames and index >= args.max_frames:
                    break
                tick = time.perf_counter()
                if index == 0:
                    tracker.initialize(frame, args.box)
                    box, label = tracker.box, "init"
                else:
                    box, confidence = tracker.track(frame)
                    frame_times.append(time.perf_counter() - tick)
                    label = f"frame {index}  conf {confidence:.3f}"
                if results:
                    results.write(format_box(box) + "\n")
                if writer:
                    writer.write(frame, box, label)
                progress.update(1)
                if frame_times:
                    recent = frame_times[-30:]
                    progress.set_postfix(track_fps=f"{len(recent) / sum(recent):.1f}")
    finally:
        if results:
            results.close()
        if writer:
            writer.close()
    elapsed = time.perf_counter() - start
    frames = len(frame_times) + 1
    summary = f"tracked {frames} frames of {args.source} in {elapsed:.2f} s ({frames / elapsed:.1f} FPS end to end"
    if frame_times:
        median = statistics.median(frame_times)
        summary += f"; tracker median {1e3 * median:.2f} ms/frame, {1 / median:.1f} FPS"
    print(summary + f") on {args.device}, {args.dtype}")
    if results:
        print(f"boxes: {args.results}")
    if writer:
        print(f"annotated video: {args.output}")


def bench(args: argparse.Namespace) -> None:
    """Time components x backends x batches with :mod:`actrack_fast.benchmarking`; print one markdown table."""
    from . import benchmarking

    device = benchmarking.resolve_device(args.device)
    components = benchmarking.COMPONENTS if args.component == "all" else args.component
    backends = benchmarking.default_backends(device) if args.backend == "all" else args.backend
    rows, skipped = [], []
    for component in components:
        for backend_name in backends:
            for batch in args.batch:
                name = f"{component}/{backend_name}/{batch} targets"
                print(f"measuring {name}", file=sys.stderr, flush=True)
                try:
                    rows.append(benchmarking.measure(component, backend_name, args.config, batch, args.dtype, device,
                                                     args.compile_mode, runs=args.frames, warmup=args.warmup))
                except benchmarking.Unavailable as reason:
                    skipped.append(f"{name}: {reason}")
    if not rows:
        raise ValueError("nothing was measured: " + "; ".join(skipped))
    print(benchmarking.markdown_table(rows, skipped), end="")


def comma_list(choices: Sequence[str]):
    """argparse type: ``all`` or a comma list of ``choices``."""
    def parse(text: str):
        if text == "all":
            return text
        items = [item.strip() for item in text.split(",") if item.strip()]
        unknown = [item for item in items if item not in choices]
        if unknown or not items:
            raise argparse.ArgumentTypeError(f"expected 'all' or a comma list of {list(choices)}, got {text!r}")
        return items
    return parse


def batch_list(text: str) -> list[int]:
    try:
        batches = [int(item) for item in text.split(",")]
    except ValueError:
        batches = []
    if not batches or min(batches) < 1:
        raise argparse.ArgumentTypeError(f"expected target counts >= 1, comma-separated (e.g. 1,64), got {text!r}")
    return batches


def box_argument(text: str) -> tuple[float, float, float, float]:
    from .video import parse_box

    try:
        return parse_box(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def build_parser() -> argparse.ArgumentParser:
    from .batch_tracker import DTYPES
    from .presets import DATASETS

    parser = argparse.ArgumentParser(prog="actrack-fast", description="ACTrack visual object tracker")
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("track", help="track one target through a video file or a frame folder")
    p.add_argument("source", help="video file (mp4, avi, ...) or folder of frame images")
    p.add_argument("--box", required=True, type=box_argument, help="initial box x,y,w,h in the first frame")
    p.add_argument("--weights", help="ACTrack .safetensors or official SeqTrack checkpoint "
                                     "(default: the embedded default model)")
    p.add_argument("--config", choices=sorted(CONFIGS), help="model config of a SeqTrack checkpoint (default B256)")
    p.add_argument("--output", help="annotated video to write (.mp4, .avi, .mkv)")
    p.add_argument("--results", help="boxes file to write: one x,y,w,h line per frame")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    p.add_argument("--preset", default="default", type=str.upper, choices=DATASETS,
                   help="dataset whose SeqTrack template-update interval/threshold to use")
    p.add_argument("--no-window", action="store_true", help="turn the Hanning window off")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow pickled objects in a SeqTrack checkpoint (official files need it)")
    p.add_argument("--max-frames", type=int, default=0, help="stop after this many frames (0: all)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=track)

    p = commands.add_parser("generate-sequence", help="write a synthetic test sequence with ground truth")
    p.add_argument("folder")
    p.add_argument("--frames", type=int, default=48)
    p.add_argument("--height", type=int, default=240)
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--clutter", action="store_true",
                   help="add distractors, an occluder, camera pan, brightness drift and noise")
    p.set_defaults(func=generate_sequence)

    from .evaluation.command import add_parser as add_eval_parser

    add_eval_parser(commands)

    from .training.command import add_parser as add_train_parser

    add_train_parser(commands)

    from .benchmarking import BACKENDS, COMPILE_MODES, COMPONENTS

    p = commands.add_parser("bench", help="frames per second of the tracker and its parts, per backend",
                            description="Time each component (crop, additive, correlation, encoder, decoder, "
                                        "step = the tracker's whole per-frame step) with each backend and print "
                                        "one markdown table: median ms, frames/s, target-frames/s, speed-ups.")
    p.add_argument("--config", choices=sorted(CONFIGS), help="model config (default: B256 on CUDA, tiny on CPU)")
    p.add_argument("--batch", type=batch_list, default=[1], help="number(s) of targets, e.g. 1,64 (default 1)")
    p.add_argument("--dtype", choices=sorted(DTYPES),
                   help="dtype of the backends whose name states none (default: bfloat16 on CUDA, float32 on CPU)")
    p.add_argument("--backend", type=comma_list(tuple(BACKENDS)), default="all",
                   help=f"'all' (those that run on the device) or a comma list of {', '.join(BACKENDS)}")
    p.add_argument("--component", type=comma_list(COMPONENTS), default="all",
                   help=f"'all' or a comma list of {', '.join(COMPONENTS)}")
    p.add_argument("--frames", type=int, help="timed calls per case (default: 500 for the step and 100 for the "
                                              "other components on CUDA, 10 on CPU)")
    p.add_argument("--warmup", type=int, help="untimed calls first (default: 20 step / 10 others on CUDA, 2 on CPU)")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument("--compile-mode", default="default", choices=COMPILE_MODES,
                   help="torch.compile mode of backend 'compile' (max-autotune takes minutes per batch size)")
    p.set_defaults(func=bench)

    p = commands.add_parser("demo", help="forward the model on random crops and time it")
    p.add_argument("--config", default="tiny", choices=sorted(CONFIGS))
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=demo)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (ValueError, OSError) as error:
        parser.exit(1, f"actrack-fast {args.command}: error: {error}\n")


if __name__ == "__main__":
    main()
