"""SeqTrack's training sampler: template and search frames from one sequence within a maximum interval.

Every sample is drawn from its own generator seeded by ``(seed, epoch, index)``, so a sample does not
depend on the number of data-loader workers or ranks, a resumed run sees exactly the batches it would
have seen, and ranks that take disjoint indices draw disjoint samples.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from torch.utils.data import Dataset

from .datasets import SequenceDataset
from .processing import SeqTrackProcessing

# Growth of the sampling window when no visible frame is found, and the attempts before giving up.
GAP_STEP = 5
MAX_ATTEMPTS = 100


def _visible_between(visible_ids: np.ndarray, low: int, high: int) -> np.ndarray:
    """Visible frame ids in [low, high)."""
    return visible_ids[(visible_ids >= low) & (visible_ids < high)]


def sample_frame_ids(rng: np.random.Generator, visible: np.ndarray, num_templates: int,
                     max_interval: int) -> Optional[tuple[list[int], int]]:
    """SeqTrack's ``causal`` frame sampling on a visibility mask (N,) bool.

    A base frame is drawn among visible frames ``[T - 1, N - 1)``; the other ``T - 1`` templates among
    visible frames in ``[base - max_interval, base)`` (with replacement); the search frame among visible
    frames in ``(base, base + max_interval)``. The window grows by 5 frames when one is empty.
    Returns ``(template_ids, search_id)`` with ``template_ids[0]`` the base, or None if nothing fits.
    """
    visible_ids = np.flatnonzero(visible)
    bases = _visible_between(visible_ids, num_templates - 1, len(visible) - 1)
    if len(bases) == 0:
        return None
    gap = max_interval
    for _ in range(MAX_ATTEMPTS):
        base = int(rng.choice(bases))
        earlier = _visible_between(visible_ids, base - gap, base)
        later = _visible_between(visible_ids, base + 1, base + gap)
        if (num_templates == 1 or len(earlier)) and len(later):
            previous = rng.choice(earlier, num_templates - 1).tolist() if num_templates > 1 else []
            return [base, *map(int, previous)], int(rng.choice(later))
        gap += GAP_STEP
    return None


class TrackingSampler(Dataset):
    """A map-style dataset of ``samples_per_epoch`` processed samples drawn from ``datasets``.

    Args:
        datasets: readers to draw from; ``weights`` their relative probabilities (default: equal).
        processing: turns frames and boxes into tensors (:class:`SeqTrackProcessing`).
        max_interval: SeqTrack's ``MAX_SAMPLE_INTERVAL`` (400).
        seed: base seed; :meth:`set_epoch` selects the epoch's samples.
    """

    def __init__(self, datasets: Sequence[SequenceDataset], processing: SeqTrackProcessing, samples_per_epoch: int,
                 max_interval: int = 400, weights: Optional[Sequence[float]] = None, seed: int = 0) -> None:
        if not datasets:
            raise ValueError("datasets must hold at least one dataset")
        weights = [1.0] * len(datasets) if weights is None else [float(w) for w in weights]
        if len(weights) != len(datasets) or min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(f"weights must be {len(datasets)} non-negative numbers with a positive sum, got {weights}")
        if samples_per_epoch < 1:
            raise ValueError(f"samples_per_epoch must be >= 1, got {samples_per_epoch}")
        if max_interval < 1:
            raise ValueError(f"max_interval must be >= 1, got {max_interval}")
        self.datasets = list(datasets)
        self.probabilities = np.asarray(weights) / sum(weights)
        self.processing = processing
        self.samples_per_epoch = samples_per_epoch
        self.max_interval = max_interval
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose samples ``__getitem__`` returns (set before creating the loader iterator)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.samples_per_epoch

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        num_templates = self.processing.config.num_templates
        for _ in range(MAX_ATTEMPTS):
            dataset = self.datasets[rng.choice(len(self.datasets), p=self.probabilities)]
            sequence = int(rng.integers(len(dataset)))
            info = dataset.sequence_info(sequence)
            visible = info.visible & info.valid
            if dataset.is_video:
                # SeqTrack's "enough visible frames" rule (without its 20-frame minimum length).
                if visible.sum() <= 2 * (num_templates + 1):
                    continue
                ids = sample_frame_ids(rng, visible, num_templates, self.max_interval)
                if ids is None:
                    continue
                template_ids, search_id = ids
            else:
                if not visible.all():
                    continue
                template_ids, search_id = [0] * num_templates, 0
            frames = {i: dataset.load_frame(sequence, i) for i in {*template_ids, search_id}}
            sample = self.processing(rng, [frames[i] for i in template_ids], info.boxes[template_ids],
                                     frames[search_id], info.boxes[search_id])
            if sample is not None:
                return sample
        raise RuntimeError(f"no valid training sample after {MAX_ATTEMPTS} attempts (index {index}); "
                           "do the datasets hold sequences with enough visible frames?")

