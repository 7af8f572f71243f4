"""The additive net's convolutions (B256: stem 3 -> 24 -> 48 -> 96 -> 96, stride 2, then the 1x1 fuse 192 -> 96) as
the fast path runs them at inference, bf16 channels-last: conv + bias + ReLU as PyTorch launches them (cuDNN's
convolution, then a bias add and a ReLU of their own) against cuDNN's fused conv-bias-ReLU
(``torch.cudnn_convolution_relu``), per call inside a CUDA graph, and the largest difference between the two.
Run on a GPU: ``python benchmarks/probe_stem_convs.py [frames ...]`` (default 1 64; 3 crops per frame).
"""
from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

from actrack_fast.cuda_graphs import graph_median_us

# (in channels, out channels, kernel, stride, input side) of B256's additive net.
CONVS = ((3, 24, 3, 2, 256), (24, 48, 3, 2, 128), (48, 96, 3, 2, 64), (96, 96, 3, 2, 32), (192, 96, 1, 1, 16))


def main(frames: list[int]) -> None:
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}, "
          f"bf16 channels-last, us per call\n")
    print("| crops | conv | conv + bias + ReLU | cudnn_convolution_relu | max abs difference |\n|---|---|---|---|---|")
    generator = torch.Generator(device="cuda").manual_seed(0)
    for crops in (3 * f for f in frames):
        for cin, cout, kernel, stride, side in CONVS:
            x = torch.randn(crops, cin, side, side, device="cuda", generator=generator, dtype=torch.bfloat16)
            x = x.contiguous(memory_format=torch.channels_last)
            w = (torch.randn(cout, cin, kernel, kernel, device="cuda", generator=generator) / (cin * kernel ** 2) ** 0.5)
            w = w.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
            b = torch.randn(cout, device="cuda", generator=generator, dtype=torch.bfloat16)
            padding = kernel // 2

            def unfused():
                return F.relu(F.conv2d(x, w, b, stride, padding), inplace=True)

            def fused():
                return torch.cudnn_convolution_relu(x, w, b, (stride, stride), (padding, padding), (1, 1), 1)

            difference = (unfused().float() - fused().float()).abs().max().item()
            print(f"| {crops} | {cin}->{cout} k{kernel} s{stride} at {side} | {graph_median_us(unfused, 50):.1f} | "
                  f"{graph_median_us(fused, 50):.1f} | {difference:.3g} |", flush=True)


if __name__ == "__main__":
    main([int(arg) for arg in sys.argv[1:]] or [1, 64])
