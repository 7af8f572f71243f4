"""The fast tracking step (B256 bf16, ``BatchTracker`` with its CUDA graph) with this version's encoder changes
switched off and on in one process, so machine-to-machine variance cancels: ``base`` (every token through the
last block, the position embedding added by passes of its own), ``search_only`` (the last block on the search
tokens only), ``search_only+fold`` (and the position table in the first block's fused sum). Median of the graph
replay alone, us. Run on a GPU: ``python benchmarks/probe_step_variants.py [targets ...]`` (default 1 64).
"""
from __future__ import annotations

import sys

import torch

from actrack_fast import BatchTracker, fast_encoder
from actrack_fast.benchmarking import benchmark_model, benchmark_video, frame_size, start_boxes
from actrack_fast.config import get_config
from actrack_fast.cuda_graphs import median_us
from actrack_fast.encoder import VisionTransformer
from actrack_fast.model import ACTrack

_ENCODE, _PATCH_TOKENS, _POSITION_TABLE = ACTrack.encode, VisionTransformer.patch_tokens, fast_encoder.position_table
VARIANTS = {"base": (False, False), "search_only": (True, False), "search_only+fold": (True, True)}


def _switch(search_only: bool, fold: bool) -> None:
    def every_token(self, search, templates, additive=True, check_finite=True, search_only=False):
        return _ENCODE(self, search, templates, additive, check_finite, False)

    def with_positions(self, search, templates, fused=False):
        return self.add_positions(_PATCH_TOKENS(self, search, templates, fused))

    ACTrack.encode = _ENCODE if search_only else every_token
    VisionTransformer.patch_tokens = _PATCH_TOKENS if fold else with_positions
    fast_encoder.position_table = _POSITION_TABLE if fold else (lambda encoder, templates: None)


def main(batches: list[int], repeats: int = 2) -> None:
    config, device = get_config("B256"), torch.device("cuda")
    model = benchmark_model(config, device, torch.bfloat16)
    frames, first = benchmark_video(config, device)
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, B256 bf16, graph replay, median us\n")
    print("| repeat | targets | variant | replay | target-frames/s |\n|---|---|---|---|---|")
    try:
        for repeat in range(repeats):
            for batch in batches:
                for name, switches in VARIANTS.items():
                    _switch(*switches)
                    tracker = BatchTracker(model, cuda_graph=True)
                    for box in start_boxes(first, batch, frame_size(config)):
                        tracker.add(frames[0], box)
                    for i in range(20):  # captures the graph
                        tracker.step(frames[1 + i % (len(frames) - 1)])
                    replay = median_us(tracker._graph._graph.replay, 300 if batch == 1 else 100)
                    print(f"| {repeat} | {batch} | {name} | {replay:.1f} | {batch * 1e6 / replay:.1f} |", flush=True)
                    del tracker
                    torch.cuda.empty_cache()
    finally:
        _switch(True, True)


if __name__ == "__main__":
    main([int(arg) for arg in sys.argv[1:]] or [1, 64])
