"""Segmentation metrics with explicit definitions (NumPy, for evaluation) and Keras metrics for training.

Mask representations accepted by every NumPy metric (`pred` and `truth` must use the same one)
- a label map: integer array (N, H, W) or (N, D, H, W) with class ids; class 0 is background. The
  channels scored are classes 1..K-1, where K = `num_classes` (default: max id + 1, at least 2).
- a channel stack: binary array (N, ..., C), one channel per foreground mask (masks may overlap).
With `include_background=True` a background channel is scored as well: class 0 of a label map, or
"no channel set" for a channel stack. Otherwise background is excluded.

Definitions, from the confusion counts TP, FP, FN, TN of one channel
- Dice = 2 TP / (2 TP + FP + FN); IoU = TP / (TP + FP + FN).
  Empty rule: when TP + FP + FN = 0 (empty prediction on empty truth) both are 1; an empty truth with a
  non-empty prediction gives 0 (TP = 0, FP > 0).
- precision = TP / (TP + FP), recall (sensitivity) = TP / (TP + FN), specificity = TN / (TN + FP);
  each is NaN (undefined) when its denominator is 0, and NaN values are left out of means.
- Averages (`average=`): "per_image" = mean over images of the per-image value; "pooled" = one value
  from the counts summed over all pixels of the set; "per_case" = counts summed over the slices of each
  case (`case_ids`, e.g. a CT volume), value per case, mean over cases. Multi-channel results are then
  the unweighted mean over the scored channels.
- Surface metrics (`hausdorff95`, `normalized_surface_dice`, one 2-D or 3-D mask pair): DeepMind's
  `surface-distance` definitions, computed by that package (surface-area-weighted surfels).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import keras
import numpy as np
import surface_distance
from keras import ops

from segmentation.losses import PACKAGE, align_targets

Average = Literal["per_image", "pooled", "per_case"]
AVERAGES = ("per_image", "pooled", "per_case")
MANIFESTATION_CLASSES = {1: "ggo", 2: "consolidation", 3: "effusion"}


def class_channels(
    labels: np.ndarray, num_classes: int | None = None, include_background: bool = False
) -> np.ndarray:
    """Integer label map (N, ...) -> bool (N, ..., C): classes 1..K-1, plus class 0 first if included."""
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise TypeError(f"label maps must be integer arrays, got {labels.dtype}; pass binary stacks as bool")
    if num_classes is None:
        num_classes = max(int(labels.max(initial=0)) + 1, 2)
    first = 0 if include_background else 1
    return np.stack([labels == k for k in range(first, num_classes)], axis=-1)


def _as_channels(masks: np.ndarray, num_classes: int | None, include_background: bool) -> np.ndarray:
    """Either representation -> bool (N, ..., C); see the module docstring."""
    masks = np.asarray(masks)
    if masks.dtype == bool or masks.dtype.kind == "f":
        if masks.ndim < 4:
            raise ValueError(
                f"channel stacks must be (N, H, W, C) or (N, D, H, W, C), got shape {masks.shape}"
            )
        if masks.dtype.kind == "f" and not np.isin(masks, (0.0, 1.0)).all():
            raise ValueError("float masks must hold only 0 and 1; binarise probabilities first")
        stack = masks.astype(bool)
        if include_background:
            stack = np.concatenate([~stack.any(axis=-1, keepdims=True), stack], axis=-1)
        return stack
    return class_channels(masks, num_classes, include_background)


@dataclass(frozen=True)
class Counts:
    """Confusion counts per image and channel, each int64 (N, C)."""

    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    tn: np.ndarray

    def pooled(self) -> Counts:
        """Counts summed over all images, (1, C)."""
        return Counts(*(value.sum(axis=0, keepdims=True) for value in self._values()))

    def by_case(self, case_ids: np.ndarray) -> tuple[np.ndarray, Counts]:
        """Counts summed per case: (sorted unique case ids, Counts with one row per case)."""
        cases, index = np.unique(np.asarray(case_ids), return_inverse=True)
        summed = []
        for value in self._values():
            out = np.zeros((len(cases), value.shape[1]), np.int64)
            np.add.at(out, index, value)
            summed.append(out)
        return cases, Counts(*summed)

    def channel(self, index: int) -> Counts:
        """The counts of one channel, (N, 1)."""
        return Counts(*(value[:, index : index + 1] for value in self._values()))

    def _values(self) -> tuple[np.ndarray, ...]:
        return self.tp, self.fp, self.fn, self.tn


def confusion_counts(
    pred: np.ndarray, truth: np.ndarray, num_classes: int | None = None, include_background: bool = False
) -> Counts:
    """Confusion counts of `pred` against `truth` per image and scored channel."""
    pred_ch = _as_channels(pred, num_classes, include_background)
    truth_ch = _as_channels(truth, num_classes, include_background)
    if pred_ch.shape != truth_ch.shape:
        raise ValueError(f"prediction channels {pred_ch.shape} and truth channels {truth_ch.shape} differ")
    axes = tuple(range(1, pred_ch.ndim - 1))
    tp = np.sum(pred_ch & truth_ch, axis=axes, dtype=np.int64)
    fp = np.sum(pred_ch & ~truth_ch, axis=axes, dtype=np.int64)
    fn = np.sum(~pred_ch & truth_ch, axis=axes, dtype=np.int64)
    tn = np.sum(~pred_ch & ~truth_ch, axis=axes, dtype=np.int64)
    return Counts(tp, fp, fn, tn)


def _ratio(numerator: np.ndarray, denominator: np.ndarray, empty_value: float) -> np.ndarray:
    numerator, denominator = np.asarray(numerator, float), np.asarray(denominator, float)
    out = np.full(np.broadcast(numerator, denominator).shape, empty_value)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def dice_from_counts(counts: Counts) -> np.ndarray:
    """2 TP / (2 TP + FP + FN); 1 where TP + FP + FN = 0. Shape of the counts."""
    return _ratio(2 * counts.tp, 2 * counts.tp + counts.fp + counts.fn, 1.0)


def iou_from_counts(counts: Counts) -> np.ndarray:
    """TP / (TP + FP + FN); 1 where TP + FP + FN = 0."""
    return _ratio(counts.tp, counts.tp + counts.fp + counts.fn, 1.0)


def precision_from_counts(counts: Counts) -> np.ndarray:
    """TP / (TP + FP); NaN where nothing is predicted."""
    return _ratio(counts.tp, counts.tp + counts.fp, np.nan)


def recall_from_counts(counts: Counts) -> np.ndarray:
    """TP / (TP + FN) (sensitivity); NaN where the truth is empty."""
    return _ratio(counts.tp, counts.tp + counts.fn, np.nan)


def specificity_from_counts(counts: Counts) -> np.ndarray:
    """TN / (TN + FP); NaN where the truth has no negative pixel."""
    return _ratio(counts.tn, counts.tn + counts.fp, np.nan)


SCORES = {
    "dice": dice_from_counts,
    "iou": iou_from_counts,
    "precision": precision_from_counts,
    "recall": recall_from_counts,
    "specificity": specificity_from_counts,
}


def per_channel_score(
    counts: Counts, score: str, average: Average = "per_image", case_ids: np.ndarray | None = None
) -> np.ndarray:
    """One value per channel (C,) of `score` ("dice", "iou", "precision", "recall", "specificity")."""
    if score not in SCORES:
        raise ValueError(f"unknown score {score!r}; known: {', '.join(SCORES)}")
    if average == "pooled":
        counts = counts.pooled()
    elif average == "per_case":
        if case_ids is None:
            raise ValueError('average="per_case" needs case_ids (one per image)')
        counts = counts.by_case(case_ids)[1]
    elif average != "per_image":
        raise ValueError(f"unknown average {average!r}; known: {', '.join(AVERAGES)}")
    return nanmean(SCORES[score](counts), axis=0)


def nanmean(values: np.ndarray, axis: int | None = None) -> np.ndarray:
    """Mean over the defined (non-NaN) values; NaN, without a warning, where none is defined."""
    values = np.asarray(values, float)
    defined = ~np.isnan(values)
    total = np.where(defined, values, 0.0).sum(axis=axis)
    number = defined.sum(axis=axis)
    return np.where(number > 0, total / np.maximum(number, 1), np.nan)


def _score(score: str):
    def metric(
        pred: np.ndarray,
        truth: np.ndarray,
        average: Average = "per_image",
        case_ids: np.ndarray | None = None,
        num_classes: int | None = None,
        include_background: bool = False,
    ) -> float:
        counts = confusion_counts(pred, truth, num_classes, include_background)
        return float(nanmean(per_channel_score(counts, score, average, case_ids)))

    metric.__name__ = score
    metric.__doc__ = (
        f"{score} of `pred` against `truth` averaged as `average` (see the module docstring), "
        "then the mean over the scored channels."
    )
    return metric


dice = _score("dice")
iou = _score("iou")
precision = _score("precision")
recall = _score("recall")
specificity = _score("specificity")


def mean_iou(pred_labels: np.ndarray, truth_labels: np.ndarray, num_classes: int) -> float:
    """mIoU as in semantic-segmentation benchmarks: IoU per class from counts pooled over all pixels of
    the set, background included, then the mean over the `num_classes` classes."""
    counts = confusion_counts(pred_labels, truth_labels, num_classes, include_background=True)
    return float(np.mean(per_channel_score(counts, "iou", "pooled")))


def per_class_dice(
    pred_labels: np.ndarray,
    truth_labels: np.ndarray,
    class_names: dict[int, str] | None = None,
    average: Average = "per_image",
    case_ids: np.ndarray | None = None,
) -> dict[str, float]:
    """Dice per named class of label maps, e.g. {1: "ggo", 2: "consolidation", 3: "effusion"} (default)."""
    class_names = class_names or MANIFESTATION_CLASSES
    num_classes = max(class_names) + 1
    counts = confusion_counts(pred_labels, truth_labels, num_classes)
    values = per_channel_score(counts, "dice", average, case_ids)
    return {class_names[k]: float(values[k - 1]) for k in sorted(class_names)}


def _surfels(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float] | None) -> dict[str, np.ndarray]:
    """`surface_distance.compute_surface_distances` of two non-empty bool masks (2-D or 3-D).

    spacing: mm per array axis (default 1 per axis, i.e. pixels). Returns the package's dict: distances
    (mm) from each surfel of one mask to the other's surface, sorted, with each surfel's length / area.
    The package (0.1) imports from the deprecated `scipy.ndimage.filters` / `.morphology` namespaces
    (SciPy < 2, pinned in requirements.txt); that warning is silenced here and nowhere else.
    """
    if pred.shape != truth.shape or pred.ndim not in (2, 3):
        raise ValueError(
            f"surface metrics need two 2-D or 3-D masks of one shape, got {pred.shape}, {truth.shape}"
        )
    spacing = (1.0,) * pred.ndim if spacing is None else tuple(float(value) for value in spacing)
    if len(spacing) != pred.ndim:
        raise ValueError(f"spacing {spacing} must give one value per axis of a {pred.ndim}-D mask")
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", "Please import .* from the `scipy.ndimage` namespace", DeprecationWarning
        )
        return surface_distance.compute_surface_distances(truth, pred, spacing)


def hausdorff95(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float] | None = None) -> float:
    """Robust (95th-percentile) Hausdorff distance of two masks (H, W) or (D, H, W), DeepMind's definition.

    `surface_distance.compute_robust_hausdorff(..., 95)`: surfels sit on the voxel-corner grid (marching
    squares / cubes on 2^d neighbourhoods), each weighted by its contour length / surface area in mm;
    per direction, the distance at which the area-weighted cumulative share of surfels reaches 95%;
    the result is the larger of the two directions. mm with `spacing` (mm per axis), else pixels.
    Empty rule: NaN (undefined) when either mask is empty; evaluation reports how many such images there are.
    Decision: the reference package is called directly (it runs on NumPy 2 for non-empty masks; empty
    masks never reach it, where it would use the removed `np.Inf`).
    """
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    if not pred.any() or not truth.any():
        return float("nan")
    return float(surface_distance.compute_robust_hausdorff(_surfels(pred, truth, spacing), 95))


def normalized_surface_dice(
    pred: np.ndarray, truth: np.ndarray, tolerance_mm: float, spacing: Sequence[float] | None = None
) -> float:
    """Normalised surface Dice (Nikolov et al. 2021) at `tolerance_mm`, DeepMind's definition.

    `surface_distance.compute_surface_dice_at_tolerance`: (area of pred surfels within the tolerance of
    the truth surface + area of truth surfels within it of the pred surface) / (total pred + truth
    surfel area); surfels and their areas as in `hausdorff95`. Masks (H, W) or (D, H, W); distances in
    mm with `spacing` (mm per axis), else pixels. Empty rule: both masks empty 1; exactly one empty 0.
    """
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    if not pred.any() and not truth.any():
        return 1.0
    if not pred.any() or not truth.any():
        return 0.0
    return float(
        surface_distance.compute_surface_dice_at_tolerance(_surfels(pred, truth, spacing), tolerance_mm)
    )


INFNET_THRESHOLDS = np.linspace(0.0, 1.0, 256)


def infnet_dice_curve(probs: np.ndarray, truth: np.ndarray, normalize: bool = True) -> np.ndarray:
    """Inf-Net / PraNet-style Dice curve: (256,) mean over images of the per-image Dice at each threshold.

    probs, truth: (N, H, W) (one channel). Thresholds t = 0, 1/255, ..., 1 (`INFNET_THRESHOLDS`);
    prediction = probs >= t. With `normalize`, each image's probabilities are first min-max scaled to
    [0, 1] as in Inf-Net's test script. Dice follows this module's empty rule.
    """
    probs = np.asarray(probs, np.float64).reshape(len(probs), -1)
    truth = np.asarray(truth, bool).reshape(len(truth), -1)
    if normalize:
        low, high = probs.min(axis=1, keepdims=True), probs.max(axis=1, keepdims=True)
        probs = (probs - low) / (high - low + 1e-8)
    steps = len(INFNET_THRESHOLDS)
    # Index of the highest threshold <= p; then p >= t_i exactly when i <= index (-1: below all).
    index = np.searchsorted(INFNET_THRESHOLDS, probs, side="right") - 1
    flat = (index + 1 + (steps + 1) * np.arange(len(probs))[:, None]).ravel()

    def at_or_above(weights: np.ndarray) -> np.ndarray:
        """(N, steps): per image, the weighted number of pixels with p >= t_i."""
        hist = np.bincount(flat, weights.ravel().astype(np.float64), minlength=len(probs) * (steps + 1))
        hist = hist.reshape(len(probs), steps + 1)[:, 1:]
        return np.cumsum(hist[:, ::-1], axis=1)[:, ::-1]

    true_pos = at_or_above(truth)
    false_pos = at_or_above(~truth)
    false_neg = truth.sum(axis=1, keepdims=True) - true_pos
    counts = Counts(true_pos, false_pos, false_neg, np.zeros_like(true_pos))
    return dice_from_counts(counts).mean(axis=0)


def infnet_mean_dice(probs: np.ndarray, truth: np.ndarray, normalize: bool = True) -> float:
    """Inf-Net's "mean Dice": the mean over the 256 thresholds of `infnet_dice_curve`. Not Dice at 0.5."""
    return float(infnet_dice_curve(probs, truth, normalize).mean())


def max_dice(probs: np.ndarray, truth: np.ndarray, normalize: bool = True) -> float:
    """Inf-Net's "max Dice": the maximum over the 256 thresholds of `infnet_dice_curve` (an oracle
    threshold chosen on the evaluated set itself; report it only next to a validation-chosen one)."""
    return float(infnet_dice_curve(probs, truth, normalize).max())


class _OverlapMetric(keras.metrics.Metric):
    """Pooled TP/FP/FN over all pixels seen in the epoch, per channel, then the mean over channels.

    Sigmoid outputs (`multiclass=False`, `num_classes` channels): prediction = prob >= `threshold`,
    every channel scored. Softmax outputs (`multiclass=True`, `num_classes` classes): prediction =
    argmax, channel 0 (background) excluded.
    Targets as in `segmentation.losses` (binary / one-hot, or integer class ids).
    """

    def __init__(
        self,
        num_classes: int = 1,
        threshold: float = 0.5,
        multiclass: bool = False,
        name: str | None = None,
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        self.num_classes, self.threshold, self.multiclass = (
            int(num_classes),
            float(threshold),
            bool(multiclass),
        )
        channels = (self.num_classes - 1) if multiclass else self.num_classes
        self.true_pos = self.add_variable((channels,), "zeros", name="true_pos")
        self.false_pos = self.add_variable((channels,), "zeros", name="false_pos")
        self.false_neg = self.add_variable((channels,), "zeros", name="false_neg")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_pred = ops.convert_to_tensor(y_pred, "float32")
        y_true = align_targets(ops.convert_to_tensor(y_true), y_pred)
        if self.multiclass:
            pred = ops.one_hot(ops.argmax(y_pred, axis=-1), y_pred.shape[-1])[..., 1:]
            y_true = y_true[..., 1:]
        else:
            pred = ops.cast(y_pred >= self.threshold, "float32")
        axes = tuple(range(len(pred.shape) - 1))
        self.true_pos.assign_add(ops.sum(pred * y_true, axis=axes))
        self.false_pos.assign_add(ops.sum(pred * (1.0 - y_true), axis=axes))
        self.false_neg.assign_add(ops.sum((1.0 - pred) * y_true, axis=axes))

    def reset_state(self):
        for variable in (self.true_pos, self.false_pos, self.false_neg):
            variable.assign(ops.zeros_like(variable))

    def get_config(self):
        options = {
            "num_classes": self.num_classes,
            "threshold": self.threshold,
            "multiclass": self.multiclass,
        }
        return {**super().get_config(), **options}


@keras.saving.register_keras_serializable(package=PACKAGE)
class DiceCoefficient(_OverlapMetric):
    """Dice = 2 TP / (2 TP + FP + FN) pooled over the epoch's pixels; 1 while nothing is positive."""

    def __init__(
        self,
        num_classes: int = 1,
        threshold: float = 0.5,
        multiclass: bool = False,
        name: str = "dice",
        **kwargs,
    ):
        super().__init__(num_classes, threshold, multiclass, name=name, **kwargs)

    def result(self):
        denominator = 2.0 * self.true_pos + self.false_pos + self.false_neg
        value = ops.where(denominator > 0, 2.0 * self.true_pos / ops.maximum(denominator, 1.0), 1.0)
        return ops.mean(value)


@keras.saving.register_keras_serializable(package=PACKAGE)
class IoUScore(_OverlapMetric):
    """IoU = TP / (TP + FP + FN) pooled over the epoch's pixels; 1 while nothing is positive."""

    def __init__(
        self,
        num_classes: int = 1,
        threshold: float = 0.5,
        multiclass: bool = False,
        name: str = "iou",
        **kwargs,
    ):
        super().__init__(num_classes, threshold, multiclass, name=name, **kwargs)

    def result(self):
        denominator = self.true_pos + self.false_pos + self.false_neg
        value = ops.where(denominator > 0, self.true_pos / ops.maximum(denominator, 1.0), 1.0)
        return ops.mean(value)
