"""Benchmark evaluation: dataset readers, the one-pass runner, result files and submission archives, reports.

``actrack-fast eval --dataset got10k --root GOT10K --split val --out results/actrack`` runs it from the
command line; :func:`evaluate` does the same from Python. Metrics live in :mod:`actrack_fast.metrics`.
"""
from .datasets import EvalDataset, EvalSequence, load_dataset
from .report import markdown_table, plot_norm_precision, plot_precision, plot_success, write_report
from .results import read_sequence, write_got10k_zip, write_sequence, write_trackingnet_zip
from .runner import EvaluationOutcome, evaluate, score_results, track_dataset

__all__ = [
    "EvalDataset", "EvalSequence", "EvaluationOutcome", "evaluate", "load_dataset",
    "markdown_table", "plot_norm_precision", "plot_precision", "plot_success", "read_sequence",
    "score_results", "track_dataset", "write_got10k_zip", "write_report", "write_sequence",
    "write_trackingnet_zip",
]
