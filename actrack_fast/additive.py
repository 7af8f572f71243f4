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
from torch import nn

from .config import ModelConfig
from .correlation import xcorr_depthwise


def conv_bn_relu(cin: int, cout: int, kernel_size: int, stride: int) -> nn.Sequential:
    # BatchNorm rather than GroupNorm: at inference it folds into the conv weights.
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel_size, stride=stride, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class ConvStem(nn.Module):
    """Four stride-2 3x3 conv stages: (B, 3, S, S) -> (B, C, S/16, S/16)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        widths = [3, max(width // 4, 8), max(width // 2, 8), width, width]
        self.stages = nn.Sequential(*(conv_bn_relu(widths[i], widths[i + 1], 3, 2) for i in range(4)))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.stages(image)


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
        self.fuse = conv_bn_relu(2 * width, width, 1, 1)
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
        response = xcorr_depthwise(search_map.repeat_interleave(T, dim=0), kernels.contiguous(), "same")
        return response.reshape(B, T, *response.shape[1:]).mean(dim=1)

    def forward(self, search: torch.Tensor, templates: torch.Tensor) -> torch.Tensor:
        """(B, 3, Ss, Ss), (B, T, 3, St, St) -> per-token features (B, Nx + T*Nz, C_a)."""
        B, T = templates.shape[:2]
        search_map = self.stem(search)
        template_maps = self.stem(templates.flatten(0, 1))
        template_maps = template_maps.reshape(B, T, *template_maps.shape[1:])
        fused = self.fuse(torch.cat([search_map, self.correlate(search_map, template_maps)], dim=1))
        search_tokens = fused.flatten(2).transpose(1, 2)
        template_tokens = template_maps.flatten(3).transpose(2, 3).flatten(1, 2)
        return self.norm(torch.cat([search_tokens, template_tokens], dim=1))
