"""Evaluation and training plots (matplotlib, Agg backend). Every function takes precomputed curves,
writes one PNG atomically (`common.atomic.atomic_path`) and returns its path."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from common.atomic import atomic_path  # noqa: E402

Curve = tuple[Sequence[float], Sequence[float]]


def save_figure(figure: plt.Figure, path: str | Path) -> Path:
    """Writes `figure` as PNG to `path` atomically and closes it."""
    path = Path(path)
    try:
        with atomic_path(path, suffix=".png") as temporary:
            figure.savefig(temporary, format="png", dpi=120, bbox_inches="tight")
    finally:
        plt.close(figure)
    return path


def plot_curves(
    curves: Mapping[str, Curve],
    path: str | Path,
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    diagonal: bool = False,
    limits: tuple[float, float] | None = (0.0, 1.0),
) -> Path:
    """Line plot of named (x, y) curves; `diagonal` adds the y = x chance line."""
    figure, axes = plt.subplots(figsize=(5, 5))
    for name, (x, y) in curves.items():
        axes.plot(x, y, label=name)
    if diagonal:
        axes.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
    if limits is not None:
        axes.set_xlim(*limits)
        axes.set_ylim(limits[0], limits[1] + 0.02)
    axes.set(xlabel=xlabel, ylabel=ylabel, title=title)
    axes.grid(alpha=0.3)
    if curves:
        axes.legend(loc="best", fontsize="small")
    return save_figure(figure, path)


def plot_roc(curves: Mapping[str, Curve], path: str | Path, title: str = "ROC") -> Path:
    """ROC curves: name (put the AUC in it) -> (false-positive rate, true-positive rate)."""
    return plot_curves(
        curves, path, xlabel="1 - specificity (FPR)", ylabel="sensitivity (TPR)", title=title, diagonal=True
    )


def plot_pr(curves: Mapping[str, Curve], path: str | Path, title: str = "Precision-recall") -> Path:
    """Precision-recall curves: name -> (recall, precision)."""
    return plot_curves(curves, path, xlabel="recall (sensitivity)", ylabel="precision", title=title)


def plot_threshold_curve(
    thresholds: Sequence[float],
    values: Mapping[str, Sequence[float]],
    path: str | Path,
    *,
    chosen: float | None = None,
    title: str = "Metric against threshold",
) -> Path:
    """Metric(s) against the decision threshold; `chosen` draws a vertical line at the threshold used."""
    figure, axes = plt.subplots(figsize=(6, 4))
    for name, ys in values.items():
        axes.plot(thresholds, ys, label=name)
    if chosen is not None:
        axes.axvline(chosen, linestyle="--", color="black", linewidth=1, label=f"chosen {chosen:.3f}")
    axes.set(xlabel="threshold", ylabel="value", title=title, xlim=(0, 1))
    axes.grid(alpha=0.3)
    axes.legend(loc="best", fontsize="small")
    return save_figure(figure, path)


def plot_confusion_matrix(
    matrix: np.ndarray, class_names: Sequence[str], path: str | Path, title: str = "Confusion matrix"
) -> Path:
    """Confusion matrix (rows: true class, columns: predicted class) with counts in the cells."""
    matrix = np.asarray(matrix)
    size = 1.2 + 0.9 * len(class_names)
    figure, axes = plt.subplots(figsize=(size + 1, size))
    image = axes.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axes, fraction=0.046)
    ticks = np.arange(len(class_names))
    axes.set_xticks(ticks, class_names, rotation=45, ha="right")
    axes.set_yticks(ticks, class_names)
    axes.set(xlabel="predicted", ylabel="true", title=title)
    threshold = matrix.max() / 2 if matrix.size else 0
    for (row, column), count in np.ndenumerate(matrix):
        color = "white" if count > threshold else "black"
        axes.text(column, row, f"{count:g}", ha="center", va="center", color=color)
    return save_figure(figure, path)


def plot_training_curves(history: Mapping[str, Sequence[float]], path: str | Path) -> Path:
    """One panel per metric from a history (e.g. `common.training.read_history(run_dir)`): training
    and `val_` curves against epoch. An "epoch" column, when present, is used as the x axis."""
    epochs = history.get("epoch")
    names = sorted(k for k in history if k != "epoch" and not k.startswith("val_") and k != "learning_rate")
    names += ["learning_rate"] if "learning_rate" in history else []
    columns = max(len(names), 1)
    figure, axes_row = plt.subplots(1, columns, figsize=(4 * columns, 3.5), squeeze=False)
    for axes, name in zip(axes_row[0], names, strict=False):
        x = epochs if epochs is not None else range(len(history[name]))
        axes.plot(x, history[name], label="train" if name != "learning_rate" else name)
        if f"val_{name}" in history:
            axes.plot(x, history[f"val_{name}"], label="validation")
        axes.set(xlabel="epoch", title=name)
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small")
    return save_figure(figure, path)
