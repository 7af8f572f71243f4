"""Training and evaluation data: dataset readers, the synthetic sequence generator, sampling, processing."""
from .synthetic import (
    SyntheticSequence,
    render_sequence,
    write_synthetic_coco,
    write_synthetic_got10k,
    write_synthetic_lasot,
    write_synthetic_trackingnet,
)

__all__ = [
    "SyntheticSequence", "render_sequence", "write_synthetic_coco", "write_synthetic_got10k",
    "write_synthetic_lasot", "write_synthetic_trackingnet",
]
