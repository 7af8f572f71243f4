"""The ACTrack model: frozen SeqTrack encoder and decoder plus the trainable additive net.

Parameter names follow SeqTrack at the top level (``encoder``, ``bottleneck``, ``pos_embed``,
``decoder``, ``vocab_embed``) so official checkpoints load as they are; everything ACTrack adds lives
under ``additive``.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import nn

from . import backend, fast_decoder
from .additive import AdditiveNet
from .config import ModelConfig, get_config
from .decoder import MLP, SeqTrackDecoder, sinusoid_table
from .decoding import DecodeResult, boxes_to_tokens, decode_cached, decode_recompute
from .encoder import Encoder
from .validation import check_crops, check_tensor

FROZEN_PREFIXES = ("encoder.", "bottleneck.", "pos_embed", "decoder.", "vocab_embed.")
DECODER_PREFIXES = ("bottleneck.", "pos_embed", "decoder.", "vocab_embed.")
DECODE_METHODS = {"cached": decode_cached, "recompute": decode_recompute}


def hanning_window(bins: int, device: Optional[torch.device] = None) -> torch.Tensor:
    """``numpy.hanning(bins)`` as an fp32 tensor (SeqTrack's window over the coordinate bins)."""
    return torch.from_numpy(np.hanning(bins)).float().to(device)


class ACTrack(nn.Module):
    """ACTrack = frozen ViT encoder + additive siamese conv net + autoregressive coordinate decoder.

    Inputs are normalised crops: ``search`` (B, 3, Ss, Ss) and ``templates`` (B, T, 3, St, St).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.bottleneck = nn.Linear(config.embed_dim, config.hidden_dim)
        # Fixed sinusoid memory positions, stored as a parameter because SeqTrack checkpoints hold it.
        self.pos_embed = nn.Parameter(sinusoid_table(config.num_search_tokens, config.hidden_dim)[None])
        self.decoder = SeqTrackDecoder(config)
        self.vocab_embed = MLP(config.hidden_dim, config.hidden_dim, config.vocab_size, 3)
        self.additive = AdditiveNet(config)
        self.register_buffer("window", hanning_window(config.bins), persistent=False)
        self.freeze()

    # --- forward pieces -------------------------------------------------------------------------
    def encode(self, search: torch.Tensor, templates: torch.Tensor, additive: bool = True,
               check_finite: bool = True, search_only: bool = False) -> torch.Tensor:
        """Encoder output (B, Nx + T*Nz, dim), or only the search tokens' (B, Nx, dim) with ``search_only`` (what
        the decoder reads; the last block then skips the template tokens' queries, proj and MLP);
        ``additive=False`` runs plain SeqTrack.

        ``check_finite=False`` skips the NaN/inf scan of the crops (a device-to-host sync), for callers
        that made the crops themselves, such as the trackers.
        """
        check_crops(self.config, search, templates, finite=check_finite)
        if not additive:
            return self.encoder(search, templates, search_only=search_only)
        features = self.additive(search, templates)
        return self.encoder(search, templates, features, self.additive.injections, search_only)

    def memory(self, encoded: torch.Tensor) -> torch.Tensor:
        """Decoder memory from the search tokens (FEATURE_TYPE 'x') of an encoder output (B, N, dim), all tokens or
        only the search tokens (``encode(..., search_only=True)``) -> (B, Nx, d)."""
        return self.bottleneck(encoded[:, : self.config.num_search_tokens])

    def query_pos(self) -> torch.Tensor:
        """Decoder query positions (K + 5, d): prompt positions, then SeqTrack's five."""
        positions = self.decoder.embedding.position_embeddings.weight
        if self.additive.prompt_pos_embed is None:
            return positions
        return torch.cat([self.additive.prompt_pos_embed, positions], dim=0)

    def prefix(self, batch: int, device: torch.device, prompt_boxes: Optional[torch.Tensor] = None,
               check_finite: bool = True) -> torch.Tensor:
        """Decoder input prefix (B, K + 1): K prompt tokens of the previous box, then ``start``.

        ``prompt_boxes``: (B, 4) previous box (cx, cy, w, h) as fractions of the current search crop,
        required when ``config.prompt_tokens > 0``; ``check_finite=False`` skips their NaN scan (a sync).
        """
        K = self.config.prompt_tokens
        start = torch.full((batch, 1), self.config.start_token, dtype=torch.long, device=device)
        if K == 0:
            if prompt_boxes is not None:
                raise ValueError("prompt_boxes given but config.prompt_tokens is 0")
            return start
        if prompt_boxes is None:
            raise ValueError(f"prompt_boxes (B, 4) is required when config.prompt_tokens={K}")
        check_tensor("prompt_boxes", prompt_boxes, (batch, 4), finite=check_finite)
        return torch.cat([boxes_to_tokens(prompt_boxes, self.config.bins).to(device), start], dim=1)

    def forward(self, search: torch.Tensor, templates: torch.Tensor, sequence: torch.Tensor) -> torch.Tensor:
        """Teacher-forcing logits (B, L, vocab) for the input ``sequence`` (B, L), L <= K + 5."""
        limit = self.config.prompt_tokens + 5
        check_tensor("sequence", sequence, (search.shape[0], None), floating=False)
        if sequence.shape[1] > limit:
            raise ValueError(f"sequence must have at most {limit} tokens, got {sequence.shape[1]}")
        memory = self.memory(self.encode(search, templates, search_only=True))
        hidden = self.decoder(sequence, memory, self.pos_embed, self.query_pos()[: sequence.shape[1]])
        return self.vocab_embed(hidden)

    @torch.no_grad()
    def generate(self, search: torch.Tensor, templates: torch.Tensor, prompt_boxes: Optional[torch.Tensor] = None,
                 window: Optional[bool] = None, method: str = "cached", additive: bool = True,
                 check_finite: bool = True) -> DecodeResult:
        """Encode one frame per sample and decode its box.

        Args:
            window: apply the Hanning window to the centre steps (default: ``config.use_window``).
            method: ``'cached'`` (KV cache) or ``'recompute'`` (SeqTrack's loop).
            additive: ``False`` runs plain SeqTrack (the injections skipped).
            check_finite: scan the crops and prompt boxes for NaN/inf (see :meth:`encode`).
        """
        if method not in DECODE_METHODS:
            raise ValueError(f"method must be one of {sorted(DECODE_METHODS)}, got {method!r}")
        memory = self.memory(self.encode(search, templates, additive, check_finite, search_only=True))
        prefix = self.prefix(search.shape[0], search.device, prompt_boxes, check_finite)
        return self.decode(memory, prefix, window, method)

    def decode(self, memory: torch.Tensor, prefix: torch.Tensor, window: Optional[bool] = None,
               method: str = "cached") -> DecodeResult:
        """Decode boxes from the memory (B, Nx, d) and prefix (B, K + 1); ``'cached'`` runs the backend selected
        for op ``"decoder"`` (Triton on CUDA) unless gradients are wanted."""
        use_window = self.config.use_window if window is None else window
        decode_fn = DECODE_METHODS[method]
        if (method == "cached" and not (torch.is_grad_enabled() and memory.requires_grad)
                and backend.select("decoder", memory.device) == "triton"):
            decode_fn = fast_decoder.decode
        return decode_fn(self.decoder, self.vocab_embed, memory, self.pos_embed, prefix, self.query_pos(),
                         self.config.bins, self.window if use_window else None)

    def _apply(self, fn, recurse: bool = True):
        # The window multiplies fp32 probabilities; letting model.to(bf16) round it would move argmaxes.
        super()._apply(fn, recurse)
        if self.window.dtype != torch.float32:
            self.window = hanning_window(self.config.bins, self.window.device)
        return self

    # --- training helpers -----------------------------------------------------------------------
    def freeze(self, train_decoder: bool = False) -> None:
        """Freeze the SeqTrack part (the decoder too unless ``train_decoder``); the additive net trains."""
        trainable = DECODER_PREFIXES if train_decoder else ()
        for name, param in self.named_parameters():
            frozen = name.startswith(FROZEN_PREFIXES) and not name.startswith(trainable)
            param.requires_grad_(not frozen)

    def train(self, mode: bool = True) -> "ACTrack":
        """Frozen modules stay in eval mode (no dropout) so training never changes what they compute."""
        super().train(mode)
        for name, module in self.named_children():
            if name != "additive" and not any(p.requires_grad for p in module.parameters(recurse=True)):
                module.eval()
        return self


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """Trainable and frozen parameter counts: ``{'trainable': n, 'frozen': m, 'total': n + m}``."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"trainable": trainable, "frozen": total - trainable, "total": total}


def build_model(config: ModelConfig | str, **overrides) -> ACTrack:
    """An ACTrack model for a config object or a named config (``'B256'``, ``'tiny'``, ...)."""
    if isinstance(config, str):
        config = get_config(config, **overrides)
    elif overrides:
        config = config.replace(**overrides)
    return ACTrack(config)
