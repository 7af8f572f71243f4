"""The tracker's template update at 64 targets: before (crop a template for every target, then keep it where due
with ``torch.where``) and now (``crop_normalized_into``: crop only where due, straight into the last slot), with 0,
1, 8 and all 64 updates due; B256 templates (256 px, factor 4), T = 2, in float32 and bfloat16; median of CUDA-graph
replays (10 calls per graph), us per call. Both must leave the same bits. Run on a GPU:
``python benchmarks/probe_template_update.py``.
"""
from __future__ import annotations

import torch

from actrack_fast import backend
from actrack_fast.cuda_graphs import graph_median_us
from actrack_fast.preprocessing import ImageLayout, crop_normalized, crop_normalized_into

TARGETS, SIZE, TEMPLATES, FACTOR = 64, 256, 2, 4.0


def main() -> None:
    torch.manual_seed(0)
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}\n")
    print("| dtype | due | crop all + where | crop into slot |\n|---|---|---|---|")
    pixels = torch.randint(0, 256, (720 * 1280, 3), dtype=torch.uint8, device="cuda")
    layout = ImageLayout.of([(720, 1280, 3)], [0] * TARGETS, "cuda")
    corners = torch.rand(TARGETS, 2, dtype=torch.float64, device="cuda") * torch.tensor([1100.0, 600.0], device="cuda")
    boxes = torch.cat([corners, 20 + 120 * torch.rand(TARGETS, 2, dtype=torch.float64, device="cuda")], 1)
    due = torch.zeros(TARGETS, dtype=torch.bool, device="cuda")
    for dtype in (torch.float32, torch.bfloat16):
        slots = torch.randn(TARGETS, TEMPLATES, 3, SIZE, SIZE, device="cuda").to(dtype)

        def crop_all_then_select():
            new = crop_normalized(pixels, layout, boxes, FACTOR, SIZE, dtype)
            torch.where(due[:, None, None, None], new, slots[:, -1], out=slots[:, -1])

        def crop_into_slot():
            crop_normalized_into(pixels, layout, boxes, FACTOR, SIZE, slots[:, -1], due)

        with backend.use_backend("cuda", ops=("crop",)):
            for count in (0, 1, 8, TARGETS):
                due.zero_()
                due[torch.randperm(TARGETS, device="cuda")[:count]] = True
                before, now = (graph_median_us(f, rounds=100, repeats=10) / 10
                               for f in (crop_all_then_select, crop_into_slot))
                start = slots.clone()
                crop_all_then_select()
                expected = slots.clone()
                slots.copy_(start)
                crop_into_slot()
                assert torch.equal(slots, expected), (dtype, count)
                print(f"| {str(dtype).removeprefix('torch.')} | {count} of {TARGETS} | {before:.1f} | {now:.1f} |")
    print("\nBoth left the same bits in every case.")


if __name__ == "__main__":
    main()
