"""Choosing the binarisation threshold of sigmoid outputs on VALIDATION predictions only.

A `ThresholdChoice` records where its thresholds came from. It can only be made from a validation
split (`VALIDATION_SPLITS`) or be an explicit fixed value (`ThresholdChoice.fixed(0.5)`, split
"fixed"); constructing one from any other split name raises `ThresholdSplitError`, so a threshold
picked on test data cannot reach the evaluation silently.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from common.plots import plot_pr, plot_threshold_curve
from segmentation.metrics import Average, confusion_counts, per_channel_score

VALIDATION_SPLITS = ("val", "validation", "valid", "tune", "dev")
FIXED = "fixed"
DEFAULT_GRID = tuple(float(t) for t in np.round(np.linspace(0.01, 0.99, 99), 2))  # 0.01 steps


class ThresholdSplitError(ValueError):
    """A threshold was to be chosen on, or applied from, a split that is not a validation split."""


def _check_split(split: str) -> str:
    if split.lower() not in VALIDATION_SPLITS and split != FIXED:
        raise ThresholdSplitError(
            f"thresholds may only be chosen on a validation split ({', '.join(VALIDATION_SPLITS)}), "
            f"not on {split!r}"
        )
    return split


@dataclass(frozen=True)
class ThresholdChoice:
    """Per-channel thresholds and their provenance.

    thresholds: one per output channel. split: the validation split they were chosen on, or "fixed".
    metric / average: what was maximised (e.g. "dice", "per_image"). grid / scores: the sweep,
    scores[c][i] = metric of channel c at grid[i] (empty for fixed choices).
    """

    thresholds: tuple[float, ...]
    split: str
    metric: str = "dice"
    average: str = "per_image"
    grid: tuple[float, ...] = ()
    scores: tuple[tuple[float, ...], ...] = ()

    def __post_init__(self) -> None:
        _check_split(self.split)

    @classmethod
    def fixed(cls, threshold: float = 0.5, num_channels: int = 1) -> ThresholdChoice:
        """A fixed, data-independent threshold (e.g. 0.5) for every channel."""
        return cls(thresholds=(float(threshold),) * num_channels, split=FIXED, metric="none", average="none")

    def binarize(self, probs: np.ndarray) -> np.ndarray:
        """probs (N, H, W, C) float -> bool (N, H, W, C) with channel c at thresholds[c] (prob >= t)."""
        probs = np.asarray(probs)
        if probs.shape[-1] != len(self.thresholds):
            raise ValueError(f"{probs.shape[-1]} channels but {len(self.thresholds)} thresholds")
        return probs >= np.asarray(self.thresholds, probs.dtype)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> ThresholdChoice:
        return cls(
            thresholds=tuple(values["thresholds"]),
            split=values["split"],
            metric=values.get("metric", "dice"),
            average=values.get("average", "per_image"),
            grid=tuple(values.get("grid", ())),
            scores=tuple(tuple(row) for row in values.get("scores", ())),
        )

    def save(self, path: str | Path) -> Path:
        """Writes the choice as JSON atomically."""
        path = Path(path)
        temporary = path.with_name(f".{path.name}.tmp")
        temporary.write_text(json.dumps(self.to_dict(), indent=2))
        os.replace(temporary, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> ThresholdChoice:
        return cls.from_dict(json.loads(Path(path).read_text()))


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


def choose_threshold(
    probs: np.ndarray,
    masks: np.ndarray,
    split: str,
    metric: str = "dice",
    average: Average = "per_image",
    grid: Sequence[float] = DEFAULT_GRID,
    case_ids: np.ndarray | None = None,
) -> ThresholdChoice:
    """The threshold per channel that maximises `metric` on VALIDATION predictions (ties: lowest).

    split: the name of the split `probs` come from; anything other than a validation split raises
    `ThresholdSplitError` before any computation.
    """
    _check_split(split)
    if split == FIXED:
        raise ThresholdSplitError('"fixed" is not a data split; use ThresholdChoice.fixed()')
    scores = threshold_curve(probs, masks, grid, metric, average, case_ids)
    best = np.nanargmax(scores, axis=0)
    return ThresholdChoice(
        thresholds=tuple(float(grid[i]) for i in best),
        split=split,
        metric=metric,
        average=average,
        grid=tuple(float(t) for t in grid),
        scores=tuple(tuple(float(v) for v in scores[:, c]) for c in range(scores.shape[1])),
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
    curves = {f"{name} {choice.metric}": choice.scores[c] for c, name in enumerate(channel_names)}
    written = [
        plot_threshold_curve(
            choice.grid,
            curves,
            out_dir / "threshold_curve.png",
            chosen=choice.thresholds[0],
            title=f"{choice.metric} ({choice.average}) against threshold, split {choice.split}",
        )
    ]
    precision, recall = precision_recall_curve(probs, masks, choice.grid)
    pr = {name: (recall[:, c], precision[:, c]) for c, name in enumerate(channel_names)}
    written.append(
        plot_pr(pr, out_dir / "pr_curve.png", title=f"Pixel precision-recall, split {choice.split}")
    )
    return written
