"""Sweep of decode launch configurations: each one's warm time and whether its tokens equal the fp32 reference's.

    python benchmarks/probe_decode_configs.py --batches 16 64 --configs "" "dot_chunk=64" "dot_chunk=128,logit_rows=64"

A configuration is a comma-separated list of ``LaunchConfig`` overrides of :func:`kernels.decode.default_launch_config`
("" = the default), and ``persistent=0`` or ``1`` for one launch per phase or one in all (default: by batch).
B256 decoder, K = 0, window on. Every (batch, configuration) kernel is compiled
first in parallel worker processes (Triton's on-disk cache then serves the timing run), then timed one after
another: warm = median of ROUNDS replays of a graph of INNER back-to-back decodes, / INNER (as
benchmarks/test_bench_decode.py). Prints a markdown table (us; "DIFFER" where a token differs from the reference).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields, replace

import torch
import triton

from actrack_fast.cuda_graphs import capture_graph, median_us
from kernels import decode as kernels
from tests.test_decode_triton import make_parts

INNER = 10
ROUNDS = 20
COMPILE_WORKERS = 8


def parse_overrides(text: str) -> dict:
    """``"dot_chunk=64,cross=absorbed"`` -> {"dot_chunk": 64, "cross": "absorbed"}, names checked."""
    names = {f.name for f in fields(kernels.LaunchConfig)} | {"persistent"}
    overrides = {}
    for item in filter(None, text.split(",")):
        name, _, value = item.partition("=")
        if name not in names:
            raise SystemExit(f"unknown LaunchConfig field {name!r}; fields: {sorted(names)}")
        overrides[name] = value if name == "cross" else int(value)
    return overrides


def run_case(batch: int, overrides: dict, timed: bool) -> tuple[bool, float, float]:
    """(tokens equal to the reference, max relative probability error, warm us or nan)."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.manual_seed(0)
    parts = make_parts("B256", 0, "cuda")
    memory = torch.randn(batch, parts.memory_tokens, 256, device="cuda")
    prefix = parts.prefix(batch, "cuda")
    shape, weights = parts.packed()
    overrides = dict(overrides)
    persistent = overrides.pop("persistent", None)
    persistent = None if persistent is None else bool(persistent)
    config = replace(kernels.default_launch_config(batch, prefix.shape[1], memory.device, persistent), **overrides)
    workspace = kernels.DecodeWorkspace(shape, batch, memory.shape[1], prefix.shape[1], config, memory.device)
    embeddings = parts.decoder.embedding.word_embeddings.weight.detach()

    def step():
        return kernels.decode(weights, shape, embeddings, parts.query_pos, memory, parts.memory_pos, prefix,
                              parts.window, persistent=persistent, workspace=workspace, config=config)

    tokens, probs = step()
    with torch.no_grad():
        expected = parts.reference(memory, prefix, True)
    same = torch.equal(tokens, expected.tokens)
    error = float(((probs - expected.probs).abs() / expected.probs).max())
    warm = float("nan")
    if timed:
        graph = capture_graph(step, INNER, warmup=2)
        warm = median_us(graph.replay, ROUNDS) / INNER
    if workspace.sync[2].item() != 0:
        raise RuntimeError("a grid barrier gave up waiting")
    return same, error, warm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--configs", nargs="+", default=[""])
    parser.add_argument("--compile-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    cases = [(batch, text) for text in args.configs for batch in args.batches]
    if args.compile_only:
        for batch, text in cases:
            run_case(batch, parse_overrides(text), timed=False)
        return
    for _, text in cases:
        parse_overrides(text)  # fail on a bad name before compiling anything

    def compile_one(case):
        batch, text = case
        command = [sys.executable, __file__, "--compile-only", "--batches", str(batch), "--configs", text]
        return subprocess.run(command, capture_output=True, text=True)

    with ThreadPoolExecutor(COMPILE_WORKERS) as pool:
        for (batch, text), done in zip(cases, pool.map(compile_one, cases)):
            if done.returncode != 0:
                print(f"compile B={batch} {text!r} failed:\n{done.stderr[-2000:]}", flush=True)

    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}; B256 decoder, "
          f"K = 0, window on; warm us = median of {ROUNDS} replays of a graph of {INNER} decodes, / {INNER}\n")
    print("| configuration | " + " | ".join(f"B = {b}" for b in args.batches) + " |")
    print("|---|" + "--:|" * len(args.batches))
    for text in args.configs:
        cells = []
        for batch in args.batches:
            try:
                same, error, warm = run_case(batch, parse_overrides(text), timed=True)
                cells.append(f"{warm:.1f}" + ("" if same else " DIFFER") + f" ({error:.1e})")
            except Exception as exc:  # a configuration that fails to compile or run is reported, not fatal
                cells.append(f"error: {type(exc).__name__}")
        print(f"| {text or 'default'} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
