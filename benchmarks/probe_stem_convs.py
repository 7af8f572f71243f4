"""The additive net's convolutions (B256: stem 3 -> 24 -> 48 -> 96 -> 96, stride 2, then the 1x1 fuse 192 -> 96) as
the fast path runs them at inference, bf16 channels-last: conv + bias + ReLU as PyTorch launches them (cuDNN's
convolution, then a bias add and a ReLU of their own) against cuDNN's fused conv-bias-ReLU
(``torch.cudnn_convolution_relu``) and, for the 3x3 stride-2 stages, the Triton implicit GEMM
(``kernels.stem_conv``), per call inside a CUDA graph, and the largest difference to the unfused result.
Run on a GPU: ``python benchmarks/probe_stem_convs.py [frames ...]`` (default 1 64; 3 crops per frame).
"""
from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

from actrack_fast.cuda_graphs import graph_median_us
from kernels.stem_conv import conv3x3s2_relu

# (in channels, out channels, kernel, stride, input side) of B256's additive net.
CONVS = ((3, 24, 3, 2, 256), (24, 48, 3, 2, 128), (48, 96, 3, 2, 64), (96, 96, 3, 2, 32), (192, 96, 1, 1, 16))


def main(frames: list[int]) -> None:
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}, "
          f"bf16 channels-last, us per call\n")
    print("| crops | conv | conv + bias + ReLU | cudnn_convolution_relu | Triton | max abs difference cuDNN fused / "
          "Triton |\n|---|---|---|---|---|---|")
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

            def triton():
                return conv3x3s2_relu(x, w, b)

            candidates = [fused] + ([triton] if kernel == 3 and stride == 2 else [])
            differences = [(unfused().float() - run().float()).abs().max().item() for run in candidates]
            times = [f"{graph_median_us(run, 50):.1f}" for run in candidates] + ["-"] * (2 - len(candidates))
            print(f"| {crops} | {cin}->{cout} k{kernel} s{stride} at {side} | {graph_median_us(unfused, 50):.1f} | "
                  f"{' | '.join(times)} | {' / '.join(f'{d:.3g}' for d in differences)} |", flush=True)


if __name__ == "__main__":
    main([int(arg) for arg in sys.argv[1:]] or [1, 64])
