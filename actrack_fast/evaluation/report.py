"""Success and precision plots (PNG) comparing trackers, a markdown table and a JSON dump of the scores.

Figures are drawn on matplotlib's Agg canvas through :class:`matplotlib.figure.Figure`, never pyplot, so
nothing needs a display and no global backend state changes.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence, Union

import numpy as np

from ..metrics import NORM_PRECISION_THRESHOLDS, PRECISION_THRESHOLDS, SUCCESS_THRESHOLDS, Summary

PathLike = Union[str, os.PathLike]


def _plot(summaries: Sequence[Summary], path: PathLike, x: np.ndarray, curve: str, score: str, xlabel: str,
          ylabel: str, title: str) -> Path:
    from matplotlib.figure import Figure  # optional dependency: only plotting needs it

    if not summaries:
        raise ValueError("summaries is empty: nothing to plot")
    figure = Figure(figsize=(5.5, 4.5), dpi=120)
    axes = figure.subplots()
    for summary in sorted(summaries, key=lambda s: getattr(s, score), reverse=True):
        axes.plot(x, getattr(summary, curve), linewidth=2,
                  label=f"{summary.name} [{100 * getattr(summary, score):.1f}]")
    axes.set(xlabel=xlabel, ylabel=ylabel, title=title, xlim=(x[0], x[-1]), ylim=(0, 1.02))
    axes.grid(True, linestyle=":")
    axes.legend(loc="lower left" if curve == "success_curve" else "lower right", fontsize=8)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path


def plot_success(summaries: Sequence[Summary], path: PathLike, title: str = "Success plot of OPE") -> Path:
    """Success curves (overlap threshold 0..1), legend ranked by AUC."""
    return _plot(summaries, path, SUCCESS_THRESHOLDS, "success_curve", "auc", "Overlap threshold",
                 "Success rate", title)


def plot_precision(summaries: Sequence[Summary], path: PathLike, title: str = "Precision plot of OPE") -> Path:
    """Precision curves (centre error 0..50 px), legend ranked by precision at 20 px."""
    return _plot(summaries, path, PRECISION_THRESHOLDS, "precision_curve", "precision",
                 "Location error threshold [pixels]", "Precision", title)


def plot_norm_precision(summaries: Sequence[Summary], path: PathLike,
                        title: str = "Normalized precision plot of OPE") -> Path:
    """Normalised precision curves (normalised centre error 0..0.5)."""
    return _plot(summaries, path, NORM_PRECISION_THRESHOLDS, "norm_precision_curve", "norm_precision",
                 "Normalized location error threshold", "Normalized precision", title)


COLUMNS = (("AUC", "auc"), ("Precision", "precision"), ("Norm. precision", "norm_precision"), ("AO", "ao"),
           ("SR0.5", "sr50"), ("SR0.75", "sr75"))


def markdown_table(summaries: Sequence[Summary]) -> str:
    """One row per tracker: the scores in percent, FPS and the number of sequences."""
    header = ["Tracker", *(name for name, _ in COLUMNS), "FPS", "Sequences"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for s in summaries:
        fps = "-" if s.fps is None else f"{s.fps:.1f}"
        cells = [s.name, *(f"{100 * getattr(s, key):.1f}" for _, key in COLUMNS), fps, str(s.sequences)]
        lines.append("| " + " | ".join(cells) + " |")
    conventions = sorted({s.convention for s in summaries})
    lines.append("")
    lines.append(f"Scores in percent, {', '.join(conventions)} convention (see actrack_fast.metrics).")
    return "\n".join(lines) + "\n"


def write_report(summaries: Sequence[Summary], directory: PathLike, title: str = "OPE") -> dict[str, Path]:
    """``metrics.json``, ``results.md``, ``success.png``, ``precision.png`` and ``norm_precision.png``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"json": directory / "metrics.json", "table": directory / "results.md"}
    paths["json"].write_text(json.dumps([s.to_dict() for s in summaries], indent=2))
    paths["table"].write_text(f"## {title}\n\n" + markdown_table(summaries))
    paths["success"] = plot_success(summaries, directory / "success.png", f"Success plot: {title}")
    paths["precision"] = plot_precision(summaries, directory / "precision.png", f"Precision plot: {title}")
    paths["norm_precision"] = plot_norm_precision(summaries, directory / "norm_precision.png",
                                                  f"Normalized precision plot: {title}")
    return paths
