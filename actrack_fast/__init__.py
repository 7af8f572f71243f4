"""actrack_fast: a fast implementation of the ACTrack visual object tracker.

ACTrack = a frozen SeqTrack-compatible ViT encoder + a trainable additive siamese conv net injected
through zero-initialised projections + SeqTrack's autoregressive coordinate decoder.
"""
from . import backend
from .checkpoint import (
    CheckpointError,
    init_encoder_from_vit,
    load_checkpoint,
    load_into,
    load_seqtrack_checkpoint,
    save_checkpoint,
)
from .config import CONFIGS, ModelConfig, get_config
from .correlation import xcorr_depthwise
from .decoding import DecodeResult, decode_cached, decode_recompute
from .model import ACTrack, build_model, parameter_counts

__version__ = "0.1.0"

__all__ = [
    "ACTrack", "CONFIGS", "CheckpointError", "DecodeResult", "ModelConfig", "backend", "build_model",
    "decode_cached", "decode_recompute", "get_config", "init_encoder_from_vit", "load_checkpoint",
    "load_into", "load_seqtrack_checkpoint", "parameter_counts", "save_checkpoint", "xcorr_depthwise",
]
