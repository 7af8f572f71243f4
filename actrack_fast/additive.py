"""ACTrack's trainable additive siamese conv net (spec section 7).

A shared stride-16 CNN embeds the search crop and every template crop, one feature vector per ViT token.
The central region of each template feature map (the target box, 1/factor of the crop) is correlated
depthwise with the search map; the response joins the search features through a 1x1 conv. The per-token
features, in the encoder's token order, reach each selected encoder block through a zero-initialised
Linear, so a fresh additive net leaves the frozen model's computation exactly unchanged.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from . import backend as backends
from .config import ModelConfig
from .correlation import xcorr_depthwise


class ConvBNReLU(nn.Sequential):
    """conv -> BatchNorm -> ReLU (children ``0``, ``1``, ``2``).

    BatchNorm rather than GroupNorm because at inference it folds into the conv: in eval mode without
    autograd the forward is one convolution with the folded weight and bias, computed on first use and
    again whenever a weight, a statistic, the dtype or the device changes (PyTorch's version counters).
    Backend ``conv_relu`` (:mod:`actrack_fast.backend`) ``"cuda"`` runs that convolution as cuDNN's fused
    conv + bias + ReLU (one kernel instead of three, the bias added before the output is rounded; a 1x1 conv as
    a cuBLASLt GEMM with the same epilogue; the stem's first, 3-channel stage as a Triton kernel, see
    ``ConvStem.forward_crops``), in the dtype autocast would run it, with the folded weight cast once;
    ``"reference"`` as ``F.conv2d`` + ReLU.
    """

    def __init__(self, cin: int, cout: int, kernel_size: int, stride: int) -> None:
        super().__init__(nn.Conv2d(cin, cout, kernel_size, stride=stride, padding=kernel_size // 2, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))
        self._folded: dict = {}  # dtype -> (version key, weight, bias)

    def inference_backend(self, x: torch.Tensor) -> Optional[str]:
        """The ``conv_relu`` backend a forward on x runs, or None where the plain modules run (training, autograd,
        a BatchNorm without running statistics)."""
        if self.training or torch.is_grad_enabled() or self[1].running_var is None:
            return None
        return backends.select("conv_relu", x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self[0]
        backend = self.inference_backend(x)
        if backend is None:
            return super().forward(x)
        if backend == "cuda":
            dtype = compute_dtype(x)
            weight, bias = self.folded(dtype)
            if conv.kernel_size == (1, 1) and conv.stride == (1, 1) and conv.groups == 1:
                return _pointwise_conv_relu(x.to(dtype), weight, bias)
            return torch.cudnn_convolution_relu(x.to(dtype), weight, bias, conv.stride, conv.padding, conv.dilation,
                                                conv.groups)
        weight, bias = self.folded()
        return F.relu(F.conv2d(x, weight, bias, conv.stride, conv.padding), inplace=True)

    def folded(self, dtype: Optional[torch.dtype] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The conv weight and bias with the eval-mode BatchNorm folded in (computed in fp32 or wider), in the conv
        weight's dtype or, if given, cast to ``dtype``."""
        conv, norm = self[0], self[1]
        dtype = dtype or conv.weight.dtype
        tensors = (conv.weight, norm.weight, norm.bias, norm.running_mean, norm.running_var)
        key = tuple((t.data_ptr(), t._version, t.dtype) for t in tensors) + (norm.eps,)
        cached = self._folded.get(dtype)
        if cached is None or cached[0] != key:
            wide = torch.promote_types(conv.weight.dtype, torch.float32)
            with torch.no_grad():
                scale = norm.weight.to(wide) * torch.rsqrt(norm.running_var.to(wide) + norm.eps)
                weight = (conv.weight.to(wide) * scale[:, None, None, None]).to(conv.weight.dtype).to(dtype)
                bias = (norm.bias.to(wide) - norm.running_mean.to(wide) * scale).to(conv.weight.dtype).to(dtype)
            # cuDNN runs 16-bit convolutions channels-last: a weight already in that layout is not converted
            # on every call.
            cached = self._folded[dtype] = (key, weight.contiguous(memory_format=torch.channels_last), bias)
        return cached[1], cached[2]


def _pointwise_conv_relu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """ReLU(1x1 conv(x) + bias) as one cuBLASLt GEMM over the pixels with bias + ReLU in its epilogue; returns a
    channels-last tensor, whose (B, H*W, C) token view needs no copy. cuDNN picked a generic 17 us kernel for the
    B256 fuse conv of one frame (benchmarks/NOTES.md, step version 8)."""
    n, channels, height, width = x.shape
    pixels = x.permute(0, 2, 3, 1).reshape(-1, channels)  # a view when x is channels-last
    out = torch._addmm_activation(bias, pixels, weight.reshape(weight.shape[0], channels).t())
    return out.view(n, height, width, -1).permute(0, 3, 1, 2)


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype a convolution of x computes in: autocast's where it is on for x's device, else x's."""
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype


def _triton_inference(stage: ConvBNReLU, x: torch.Tensor) -> bool:
    """Whether inference on x takes the fast path with Triton kernels: ``stage`` runs backend ``conv_relu`` =
    ``cuda`` on x (eval mode, no autograd) and Triton is installed."""
    return stage.inference_backend(x) == "cuda" and backends.triton_installed()


def _layer_norm_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype ``nn.LayerNorm`` returns for x: CUDA's autocast runs it in fp32, so fp32 for a 16-bit CUDA x
    under autocast (the CPU's leaves it alone); x's dtype otherwise."""
    if x.device.type == "cuda" and torch.is_autocast_enabled("cuda") and x.dtype in (torch.float16, torch.bfloat16):
        return torch.float32
    return x.dtype


def _cudnn_on_cuda(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_available() and torch.backends.cudnn.is_available()


# Measured on the H100 in bf16 (benchmarks/NOTES.md, step version 7): the fused kernel is as fast at one frame and
# 1.6x faster at 64 frames (B256 stem and fuse convolutions); fp32 was not measured, so ``auto`` leaves it alone.
def _fused_conv_pays(device: torch.device, x: Optional[torch.Tensor]) -> bool:
    return x is not None and compute_dtype(x) in (torch.float16, torch.bfloat16) and torch.backends.cudnn.enabled


backends.register("conv_relu", "cuda", _cudnn_on_cuda, "needs a CUDA GPU with cuDNN", auto=_fused_conv_pays)


class ConvStem(nn.Module):
    """Four stride-2 3x3 conv stages: (B, 3, S, S) -> (B, C, S/16, S/16)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        widths = [3, max(width // 4, 8), max(width // 2, 8), width, width]
        self.stages = nn.Sequential(*(ConvBNReLU(widths[i], widths[i + 1], 3, 2) for i in range(4)))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if image.is_cuda:  # cuDNN's convolutions run channels-last; converting once saves a conversion per stage
            image = image.contiguous(memory_format=torch.channels_last)
        return self.stages(image)

    def forward_crops(self, search: torch.Tensor, templates: torch.Tensor) -> torch.Tensor:
        """The stem over the search and every template crop of each frame in one pass (at inference only, where
        BatchNorm does not normalise by the batch): (B, 3, S, S), (B, T, 3, S, S) -> (B, 1 + T, C, S/16, S/16).

        With backend ``conv_relu`` = ``cuda`` and Triton installed, the first stage is ``kernels.stem_conv``,
        which reads both crop batches where they are; otherwise they are concatenated first.
        """
        B, T = templates.shape[:2]
        first = self.stages[0]
        if _triton_inference(first, search):
            from kernels.stem_conv import stem_conv_relu  # imported on first use: loads Triton

            weight, bias = first.folded(compute_dtype(search))
            maps = self.stages[1:](stem_conv_relu(search.contiguous(), templates.contiguous(), weight, bias))
        else:
            maps = self(torch.cat([search[:, None], templates], dim=1).flatten(0, 1))
        return maps.unflatten(0, (B, 1 + T))


def target_kernel_size(config: ModelConfig) -> int:
    """Side, in feature cells, of the template region that holds the target box."""
    grid = config.template_size // config.patch_size
    return max(1, min(grid, round(grid / config.template_factor)))


class AdditiveNet(nn.Module):
    """Per-token additive features and their zero-initialised injections into the encoder.

    ``forward(search, templates) -> (B, Nx + T*Nz, C_a)``; ``injections[str(l)]`` is the Linear
    (C_a -> dim) added before encoder block ``l``. With ``prompt_tokens = K > 0``, ``prompt_pos_embed``
    (K, hidden_dim) holds the decoder query positions of the previous-box prompt tokens.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        width = config.additive_dim
        self.kernel_size = target_kernel_size(config)
        self.stem = ConvStem(width)
        self.fuse = ConvBNReLU(2 * width, width, 1, 1)
        self.norm = nn.LayerNorm(width)
        self.injections = nn.ModuleDict({str(i): nn.Linear(width, config.embed_dim) for i in config.injected_blocks})
        for projection in self.injections.values():
            nn.init.zeros_(projection.weight)
            nn.init.zeros_(projection.bias)
        self.prompt_pos_embed: Optional[nn.Parameter] = None
        if config.prompt_tokens:
            self.prompt_pos_embed = nn.Parameter(torch.randn(config.prompt_tokens, config.hidden_dim) * 0.02)

    def target_kernels(self, template_maps: torch.Tensor) -> torch.Tensor:
        """Central k x k cells of template maps (..., C, h, w) -> (..., C, k, k)."""
        h, w = template_maps.shape[-2:]
        top, left = (h - self.kernel_size) // 2, (w - self.kernel_size) // 2
        return template_maps[..., top : top + self.kernel_size, left : left + self.kernel_size]

    def correlate(self, search_map: torch.Tensor, template_maps: torch.Tensor) -> torch.Tensor:
        """Mean over templates of the depthwise correlation: (B, C, H, W), (B, T, C, h, w) -> (B, C, H, W)."""
        B, T = template_maps.shape[:2]
        kernels = self.target_kernels(template_maps).flatten(0, 1)
        # The stem's maps are channels-last on CUDA; the correlation op takes contiguous planes.
        searches = search_map.repeat_interleave(T, dim=0).contiguous()
        response = xcorr_depthwise(searches, kernels.contiguous(), "same")
        return response.reshape(B, T, *response.shape[1:]).mean(dim=1)

    def forward(self, search: torch.Tensor, templates: torch.Tensor) -> torch.Tensor:
        """(B, 3, Ss, Ss), (B, T, 3, St, St) -> per-token features (B, Nx + T*Nz, C_a), LayerNorm's output (fp32
        under autocast). Where the stem's first stage is the Triton kernel (``ConvStem.forward_crops``), the
        LayerNorm is too, reading the search and template maps where they lie."""
        B, T = templates.shape[:2]
        # One stem pass for every crop of the frame; not in training, where BatchNorm's batch statistics
        # would then mix search and template crops.
        if not self.training and search.shape[-2:] == templates.shape[-2:]:
            maps = self.stem.forward_crops(search, templates)
            search_map, template_maps = maps[:, 0], maps[:, 1:]
        else:
            search_map = self.stem(search)
            template_maps = self.stem(templates.flatten(0, 1)).unflatten(0, (B, T))
        fused = self.fuse(torch.cat([search_map, self.correlate(search_map, template_maps)], dim=1))
        if _triton_inference(self.stem.stages[0], search):
            from kernels.layernorm import maps_layernorm  # imported on first use: loads Triton

            # One pass from the maps where they lie to the normalised tokens: no token copies, no cat.
            return maps_layernorm(fused[:, None], template_maps, self.norm.weight, self.norm.bias, self.norm.eps,
                                  _layer_norm_dtype(fused))
        search_tokens = fused.flatten(2).transpose(1, 2)
        template_tokens = template_maps.flatten(3).transpose(2, 3).flatten(1, 2)
        return self.norm(torch.cat([search_tokens, template_tokens], dim=1))
