"""Training and evaluation data: dataset readers, the synthetic sequence generator, sampling, processing."""
from .datasets import CocoSequences, Got10k, Lasot, SequenceDataset, SequenceInfo, TrackingNet, build_dataset
from .processing import JitterSettings, SeqTrackProcessing
from .sampler import TrackingSampler, sample_frame_ids
from .synthetic import (
    SyntheticSequence,
    render_sequence,
    write_frame_folder,
    write_synthetic_coco,
    write_synthetic_got10k,
    write_synthetic_lasot,
    write_synthetic_trackingnet,
)

__all__ = [
    "CocoSequences", "Got10k", "JitterSettings", "Lasot", "SeqTrackProcessing", "SequenceDataset", "SequenceInfo",
    "SyntheticSequence", "TrackingNet", "TrackingSampler", "build_dataset", "render_sequence", "sample_frame_ids",
    "write_frame_folder", "write_synthetic_coco", "write_synthetic_got10k", "write_synthetic_lasot",
    "write_synthetic_trackingnet",
]
