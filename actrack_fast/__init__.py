"""actrack_fast: a fast implementation of the ACTrack visual object tracker.

ACTrack = a frozen SeqTrack-compatible ViT encoder + a trainable additive siamese conv net injected
through zero-initialised projections + SeqTrack's autoregressive coordinate decoder.
"""
from . import backend
from .adapters import GOT10kTracker, run_vot_short_term
from .batch_tracker import BatchTracker, TrackResult
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
from .default_model import default_model
from .model import ACTrack, build_model, parameter_counts
from .preprocessing import crop_and_resize, normalize_crops
from .presets import TrackerSettings
from .tracker import Tracker

__version__ = "0.1.0"

__all__ = [
    "ACTrack", "CONFIGS", "CheckpointError", "DecodeResult", "ModelConfig", "backend", "build_model",
    "decode_cached", "decode_recompute", "get_config", "init_encoder_from_vit", "load_checkpoint",
    "load_into", "load_seqtrack_checkpoint", "parameter_counts", "save_checkpoint", "xcorr_depthwise",
    "BatchTracker", "GOT10kTracker", "TrackResult", "Tracker", "TrackerSettings", "crop_and_resize",
    "default_model", "normalize_crops", "run_vot_short_term",
]
