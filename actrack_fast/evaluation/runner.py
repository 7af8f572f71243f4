"""One-pass evaluation (OPE): initialise on the first annotated frame, track the rest, write, score, report.

Sequences whose result file exists are skipped, so an interrupted run resumes where it stopped. With
``batch > 1`` several sequences are tracked at once through one :class:`~actrack_fast.BatchTracker` (one
encoder and one decoder call per step); a finished sequence's slot goes to the next pending one. A frame's
recorded time is the tracker call's wall time (image decoding excluded, as in the GOT-10k toolkit) divided
by the number of sequences in that call, so FPS is the throughput per target.
"""
from __future__ import annotations

import os
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch
from tqdm import tqdm

from ..batch_tracker import BatchTracker
from ..data.datasets import read_image
from ..metrics import Summary, evaluate_sequence, summarize
from ..model import ACTrack
from .datasets import EvalDataset, EvalSequence, load_dataset
from .report import write_report
from .results import is_finished, read_sequence, write_got10k_zip, write_sequence, write_trackingnet_zip

PathLike = Union[str, os.PathLike]


@dataclass
class _Run:
    """A sequence being tracked: the next frame to track and what has been recorded so far."""

    sequence: EvalSequence
    next_frame: int
    boxes: np.ndarray
    times: np.ndarray

    @property
    def done(self) -> bool:
        return self.next_frame >= len(self.sequence.frames)


def _start(tracker: BatchTracker, sequence: EvalSequence) -> _Run:
    first = sequence.init_frame
    boxes = np.zeros((len(sequence.frames), 4))  # frames before the first annotated one: no prediction
    times = np.zeros(len(sequence.frames))
    image = read_image(sequence.frames[first])
    start = time.perf_counter()
    tracker.add(image, sequence.gt[first].tolist(), target_id=sequence.name)
    times[first] = time.perf_counter() - start
    boxes[first] = sequence.gt[first]
    return _Run(sequence, first + 1, boxes, times)


def track_dataset(model: ACTrack, dataset: EvalDataset, out: PathLike, *, batch: int = 1,
                  dtype: Union[str, torch.dtype, None] = None, progress: bool = True,
                  **settings: Any) -> list[str]:
    """Track every unfinished sequence of ``dataset`` and write its results under ``out``.

    Args:
        batch: how many sequences to track at once in one :class:`BatchTracker`.
        dtype: the tracker's autocast dtype (``None``: float32).
        **settings: tracker setting overrides (``update_interval``, ``update_threshold``, ``window``...).
    Returns:
        the names of the sequences tracked by this call (finished ones are skipped).
    """
    if not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive integer, got {batch!r}")
    fmt = dataset.result_format
    pending = deque(s for s in dataset.sequences if not is_finished(out, s.name, fmt))
    tracked = [s.name for s in pending]
    tracker = BatchTracker(model, dataset.preset, dtype=dtype, **settings)
    active: dict[str, _Run] = {}

    def finish(run: _Run) -> None:
        tracker.remove(run.sequence.name)
        write_sequence(out, run.sequence.name, run.boxes, run.times, fmt)

    total = sum(len(s.frames) - s.init_frame for s in pending)
    with tqdm(total=total, unit="frame", desc=f"{dataset.name} OPE", disable=not progress) as bar:
        while pending or active:
            while pending and len(active) < batch:
                run = _start(tracker, pending.popleft())
                bar.update(1)
                if run.done:
                    finish(run)
                else:
                    active[run.sequence.name] = run
            if not active:
                continue
            frames = {name: read_image(run.sequence.frames[run.next_frame]) for name, run in active.items()}
            start = time.perf_counter()
            results = tracker.track(frames)
            elapsed = (time.perf_counter() - start) / len(results)
            for name, result in results.items():
                run = active[name]
                run.boxes[run.next_frame] = result.box
                run.times[run.next_frame] = elapsed
                run.next_frame += 1
            bar.update(len(results))
            bar.set_postfix(fps=f"{1 / max(elapsed, 1e-9):.1f}", refresh=False)
            for name in [name for name, run in active.items() if run.done]:
                finish(active.pop(name))
    return tracked


def score_results(dataset: EvalDataset, result_dir: PathLike, name: Optional[str] = None,
                  convention: str = "got10k") -> Summary:
    """Score a result folder (this package's or another tracker's) on every annotated sequence."""
    scores, frames, seconds = [], 0, 0.0
    for sequence in dataset.sequences:
        if not sequence.has_ground_truth:
            continue
        boxes, times = read_sequence(result_dir, sequence.name)
        if len(boxes) != len(sequence.frames):
            raise ValueError(f"{result_dir}: sequence {sequence.name!r} has {len(boxes)} boxes for "
                             f"{len(sequence.frames)} frames")
        scores.append(evaluate_sequence(boxes, sequence.gt, sequence.visible, convention=convention,
                                        absent=dataset.absent, image_size=sequence.image_size,
                                        name=sequence.name))
        if times is not None:
            tracked = times[sequence.init_frame + 1:]
            frames, seconds = frames + len(tracked), seconds + float(tracked.sum())
    if not scores:
        raise ValueError(f"no {dataset.name} sequence has ground truth beyond its first frame: nothing to score")
    fps = frames / seconds if seconds > 0 else None
    return summarize(scores, convention, name=name or Path(result_dir).name, fps=fps)


@dataclass
class EvaluationOutcome:
    """What :func:`evaluate` did: sequences tracked now and skipped, scores, report and submission files."""

    tracked: list[str]
    skipped: list[str]
    summaries: list[Summary] = field(default_factory=list)
    report: dict[str, Path] = field(default_factory=dict)
    submission: Optional[Path] = None


def evaluate(dataset: str, root: PathLike, out: PathLike, model: ACTrack, *, split: Optional[str] = None,
             batch: int = 1, dtype: Union[str, torch.dtype, None] = None, convention: str = "got10k",
             compare: Sequence[PathLike] = (), name: Optional[str] = None, progress: bool = True,
             **settings: Any) -> EvaluationOutcome:
    """One-pass evaluation of ``model`` on a dataset, end to end.

    Tracks the unfinished sequences into ``out`` (see :mod:`.results` for the layouts), writes the
    submission archive for GOT-10k and TrackingNet, and, where the ground truth allows, scores ``out``
    and every ``compare`` folder and writes ``out/report/`` (plots, ``results.md``, ``metrics.json``).

    Args:
        dataset: layout of ``root`` (``otb``, ``lasot``, ``got10k``, ``trackingnet``, ``folder``).
        name: the tracker's name in the table and plots (default: ``out``'s folder name).
        **settings: tracker setting overrides (see :func:`track_dataset`).
    """
    data = load_dataset(dataset, root, split)
    out = Path(out)
    tracked = track_dataset(model, data, out, batch=batch, dtype=dtype, progress=progress, **settings)
    outcome = EvaluationOutcome(tracked, [s.name for s in data.sequences if s.name not in tracked])
    names = [s.name for s in data.sequences]
    if data.result_format == "got10k":
        outcome.submission = write_got10k_zip(out, names, out / f"{out.name}_got10k.zip")
    elif data.result_format == "trackingnet":
        outcome.submission = write_trackingnet_zip(out, names, out / f"{out.name}_trackingnet.zip")
    if any(s.has_ground_truth for s in data.sequences):
        outcome.summaries = [score_results(data, out, name, convention),
                             *(score_results(data, folder, None, convention) for folder in compare)]
        outcome.report = write_report(outcome.summaries, out / "report", f"{data.name}, {convention} convention")
    return outcome
