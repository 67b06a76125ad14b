"""The threshold sweep of sigmoid segmentation outputs on VALIDATION predictions.

`choose_mask_thresholds` sweeps a grid of thresholds per mask channel and hands the sweep to
`common.thresholds.choose_threshold`, which holds the rules shared with classification (validation
splits only, ties to the lowest threshold, one error when there is no validation data) and the
`ThresholdChoice` record written as threshold.json.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from common.plots import plot_pr, plot_threshold_curve
from common.thresholds import ThresholdChoice, check_validation_data, check_validation_split, choose_threshold
from segmentation.metrics import Average, confusion_counts, per_channel_score

DEFAULT_GRID = tuple(float(t) for t in np.round(np.linspace(0.01, 0.99, 99), 2))  # 0.01 steps


def threshold_curve(
    probs: np.ndarray,
    masks: np.ndarray,
    grid: Sequence[float] = DEFAULT_GRID,
    metric: str = "dice",
    average: Average = "per_image",
    case_ids: np.ndarray | None = None,
) -> np.ndarray:
    """Metric per channel at each threshold: (len(grid), C).

    probs: (N, H, W, C) float probabilities; masks: (N, H, W, C) binary truth.
    """
    truth = np.asarray(masks).astype(bool)
    rows = []
    for threshold in grid:
        counts = confusion_counts(np.asarray(probs) >= threshold, truth)
        rows.append(per_channel_score(counts, metric, average, case_ids))
    return np.asarray(rows)


def choose_mask_thresholds(
    probs: np.ndarray,
    masks: np.ndarray,
    split: str,
    criterion: str = "dice",
    average: Average = "per_image",
    grid: Sequence[float] = DEFAULT_GRID,
    case_ids: np.ndarray | None = None,
) -> ThresholdChoice:
    """The threshold per channel on `grid` that maximises `criterion` (a `segmentation.metrics`
    score, averaged as `average`) on VALIDATION predictions; the sweep is kept in the choice.

    probs: (N, H, W, C) float; masks: (N, H, W, C) binary truth; split: where they come from. A
    non-validation split raises `ThresholdSplitError` before any computation, no images
    `NoValidationDataError`.
    """
    check_validation_split(split)
    check_validation_data(split, len(probs))
    scores = threshold_curve(probs, masks, grid, criterion, average, case_ids)
    return choose_threshold(
        [np.asarray(grid)] * scores.shape[1], list(scores.T), split, criterion, average, keep_sweep=True
    )


def precision_recall_curve(
    probs: np.ndarray, masks: np.ndarray, grid: Sequence[float] = DEFAULT_GRID
) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-level precision and recall from counts pooled over all pixels, per threshold and channel:
    two arrays (len(grid), C); precision is NaN where nothing is predicted."""
    truth = np.asarray(masks).astype(bool)
    precision, recall = [], []
    for threshold in grid:
        counts = confusion_counts(np.asarray(probs) >= threshold, truth)
        precision.append(per_channel_score(counts, "precision", "pooled"))
        recall.append(per_channel_score(counts, "recall", "pooled"))
    return np.asarray(precision), np.asarray(recall)


def plot_choice(
    choice: ThresholdChoice,
    probs: np.ndarray,
    masks: np.ndarray,
    out_dir: str | Path,
    channel_names: Sequence[str],
) -> list[Path]:
    """Writes threshold_curve.png (the sweep of every channel; the first channel's chosen threshold
    marked) and pr_curve.png (pixel-level
    precision-recall on the same validation predictions). Returns the paths."""
    out_dir = Path(out_dir)
    curves = {f"{name} {choice.criterion}": choice.curves[c] for c, name in enumerate(channel_names)}
    written = [
        plot_threshold_curve(
            choice.grid,
            curves,
            out_dir / "threshold_curve.png",
            chosen=choice.thresholds[0],
            title=f"{choice.criterion} ({choice.average}) against threshold, split {choice.split}",
        )
    ]
    precision, recall = precision_recall_curve(probs, masks, choice.grid)
    pr = {name: (recall[:, c], precision[:, c]) for c, name in enumerate(channel_names)}
    written.append(
        plot_pr(pr, out_dir / "pr_curve.png", title=f"Pixel precision-recall, split {choice.split}")
    )
    return written
