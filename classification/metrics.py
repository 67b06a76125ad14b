"""Classification metrics, with the definitions stated.

The curves, their areas and the confusion matrix are scikit-learn's (`roc_curve`, `roc_auc_score`,
`precision_recall_curve`, `average_precision_score`, `confusion_matrix`). Our own code here does
only what scikit-learn does not: NaN for an area or rate whose class is missing (scikit-learn raises,
warns or returns 0), the NaN-for-0/0 ratios from the four counts, the threshold rule and its sweep
(`binary_counts`, `threshold_sweep`; the choice itself, validation data only and ties to the lowest
threshold, is `common.thresholds`'), and the one-vs-rest multi-class summary with its "macro" rule.
Bootstrap intervals (whole patients resampled) live in `common.bootstrap`.

Conventions
- Binary: `labels` in {0, 1} (any nonzero value is positive), `scores` = P(positive) in [0, 1]; a
  case is predicted positive when score >= threshold.
- precision = TP / (TP + FP); recall = sensitivity = TP / (TP + FN); specificity = TN / (TN + FP);
  F1 = 2 TP / (2 TP + FP + FN); accuracy = (TP + TN) / N. A ratio whose denominator is 0 is NaN
  (written as null in JSON), never silently 0.
- ROC-AUC: trapezoidal area under the ROC curve with tied scores grouped (equal to the Mann-Whitney
  probability that a random positive scores above a random negative, ties counting 1/2). NaN when
  only one class is present.
- PR-AUC: average precision, sum over distinct thresholds of (R_k - R_{k-1}) * P_k (the step-wise
  area, without interpolation). NaN when there are no positives.
- Multi-class: argmax prediction; per-class metrics one-vs-rest; "macro" = unweighted mean over the
  classes whose value is defined.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from sklearn import metrics as sk
from sklearn.exceptions import UndefinedMetricWarning

BINARY_METRICS = ("accuracy", "precision", "recall", "sensitivity", "specificity", "f1", "roc_auc", "pr_auc")


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator > 0 else float("nan")


def _binary_inputs(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N,) int8 labels (nonzero -> 1) and (N,) float64 scores; ValueError when the lengths differ."""
    labels = (np.asarray(labels).ravel() != 0).astype(np.int8)
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if labels.shape != scores.shape:
        raise ValueError(f"labels have {labels.size} entries, scores {scores.size}")
    return labels, scores


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds): scikit-learn's curve with a point at every distinct score
    (drop_intermediate=False), starting at (0, 0) with threshold +inf, thresholds descending.
    The rate of a missing class is NaN throughout (scikit-learn's value, here without its warning)."""
    labels, scores = _binary_inputs(labels, scores)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        return sk.roc_curve(labels, scores, pos_label=1, drop_intermediate=False)


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """scikit-learn's `roc_auc_score` (trapezoidal, ties grouped); NaN with a single class, where
    scikit-learn raises."""
    labels, scores = _binary_inputs(labels, scores)
    if np.unique(labels).size < 2:
        return float("nan")
    return float(sk.roc_auc_score(labels, scores))


def pr_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(recall, precision, thresholds) at each distinct score, thresholds descending: scikit-learn's
    `precision_recall_curve` reversed and without its closing (recall 0, precision 1) point. Recall
    is NaN without positives (scikit-learn sets it to 1 and warns)."""
    labels, scores = _binary_inputs(labels, scores)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "No positive class found", UserWarning)
        precision, recall, thresholds = sk.precision_recall_curve(labels, scores, pos_label=1)
    recall = recall[-2::-1] if labels.any() else np.full(len(thresholds), np.nan)
    return recall, precision[-2::-1], thresholds[::-1]


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """PR-AUC as scikit-learn's `average_precision_score`, sum_k (R_k - R_{k-1}) P_k with R_0 = 0;
    NaN without positives, where scikit-learn returns 0 and warns."""
    labels, scores = _binary_inputs(labels, scores)
    if not labels.any():
        return float("nan")
    return float(sk.average_precision_score(labels, scores, pos_label=1))


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """(K, K) int64 counts from scikit-learn's `confusion_matrix`; rows are true classes, columns
    predicted classes. All zeros for no cases (scikit-learn raises); a class id outside [0, K)
    raises ValueError (scikit-learn would leave it out)."""
    labels = np.asarray(labels, dtype=np.int64).ravel()
    predictions = np.asarray(predictions, dtype=np.int64).ravel()
    for name, values in (("labels", labels), ("predictions", predictions)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(
                f"{name} must be class ids in [0, {num_classes}); got {values.min()}..{values.max()}"
            )
    if labels.size == 0:
        return np.zeros((num_classes, num_classes), dtype=np.int64)
    return sk.confusion_matrix(labels, predictions, labels=np.arange(num_classes)).astype(np.int64)


def counts_metrics(tp: float, fp: float, tn: float, fn: float) -> dict[str, float]:
    """Threshold metrics from the four counts (definitions in the module docstring)."""
    recall = _ratio(tp, tp + fn)
    return {
        "accuracy": _ratio(tp + tn, tp + fp + tn + fn),
        "precision": _ratio(tp, tp + fp),
        "recall": recall,
        "sensitivity": recall,
        "specificity": _ratio(tn, tn + fp),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
    }


def binary_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    """All of BINARY_METRICS plus the counts tp/fp/tn/fn/n for one threshold."""
    labels = np.asarray(labels).astype(bool).ravel()
    tp, fp, tn, fn = binary_counts(labels, scores, threshold)
    return {
        **counts_metrics(tp, fp, tn, fn),
        "roc_auc": roc_auc(labels, scores),
        "pr_auc": average_precision(labels, scores),
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "n": int(labels.size),
    }


def multiclass_metrics(
    labels: np.ndarray, probabilities: np.ndarray, class_names: Sequence[str]
) -> dict[str, object]:
    """Accuracy, macro metrics and per-class one-vs-rest metrics for (N, K) class probabilities.

    Returns {"accuracy", "macro_precision", "macro_recall", "macro_specificity", "macro_f1",
    "macro_roc_auc", "macro_pr_auc", "per_class": {name: {...}}, "confusion_matrix": K x K list}.
    """
    labels = np.asarray(labels, dtype=np.int64).ravel()
    probabilities = np.asarray(probabilities, dtype=np.float64)
    num_classes = len(class_names)
    if probabilities.shape != (labels.size, num_classes):
        raise ValueError(
            f"probabilities have shape {probabilities.shape}, expected ({labels.size}, {num_classes})"
        )
    matrix = confusion_matrix(labels, probabilities.argmax(axis=1), num_classes)
    per_class = {}
    for k, name in enumerate(class_names):
        tp = matrix[k, k]
        fp = matrix[:, k].sum() - tp
        fn = matrix[k, :].sum() - tp
        tn = matrix.sum() - tp - fp - fn
        one_vs_rest = labels == k
        per_class[name] = {
            **counts_metrics(tp, fp, tn, fn),
            "roc_auc": roc_auc(one_vs_rest, probabilities[:, k]),
            "pr_auc": average_precision(one_vs_rest, probabilities[:, k]),
            "support": int(one_vs_rest.sum()),
        }
    summary: dict[str, object] = {"accuracy": _ratio(np.trace(matrix), matrix.sum())}
    for metric in ("precision", "recall", "specificity", "f1", "roc_auc", "pr_auc"):
        summary[f"macro_{metric}"] = nanmean([per_class[name][metric] for name in class_names])
    summary["per_class"] = per_class
    summary["confusion_matrix"] = matrix.tolist()
    return summary


def nanmean(values: Sequence[float]) -> float:
    """Mean of the finite values; NaN when there are none (the "macro" rule)."""
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


THRESHOLD_CRITERIA = ("youden", "f1", "accuracy")


def threshold_sweep(
    labels: np.ndarray, scores: np.ndarray, criterion: str = "youden"
) -> tuple[np.ndarray, np.ndarray]:
    """(candidates, values): the candidate thresholds of one binary output and `criterion` at each
    (youden = sensitivity + specificity - 1, f1, accuracy; NaN where undefined), both (T,) float64.

    Candidates are midpoints between consecutive distinct scores plus one above the highest and the
    lowest score itself, descending; no scores give no candidates. Which candidate wins (and the
    validation-only rule) is `common.thresholds.choose_threshold`'s.
    """
    if criterion not in THRESHOLD_CRITERIA:
        raise ValueError(f"criterion {criterion!r} is not one of {THRESHOLD_CRITERIA}")
    labels = np.asarray(labels).astype(bool).ravel()
    distinct = np.unique(np.asarray(scores, dtype=np.float64).ravel())[::-1]
    if distinct.size == 0:
        return np.empty(0), np.empty(0)
    candidates = np.r_[distinct[0] + 1e-6, (distinct[:-1] + distinct[1:]) / 2, distinct[-1]]
    values = np.array([_criterion_value(binary_counts(labels, scores, t), criterion) for t in candidates])
    return candidates, values


def binary_counts(labels: np.ndarray, scores: np.ndarray, threshold: float) -> tuple[int, int, int, int]:
    """(TP, FP, TN, FN) when predicting positive for score >= threshold (our threshold rule).

    Counted with NumPy rather than with scikit-learn's `confusion_matrix`, which gives the same
    counts (pinned by a test) but took ~20x longer here, and `threshold_sweep` calls this once per
    candidate threshold."""
    labels = np.asarray(labels).astype(bool).ravel()
    predicted = np.asarray(scores).ravel() >= threshold
    return (
        int(np.sum(predicted & labels)),
        int(np.sum(predicted & ~labels)),
        int(np.sum(~predicted & ~labels)),
        int(np.sum(~predicted & labels)),
    )


def _criterion_value(counts: tuple[int, int, int, int], criterion: str) -> float:
    metrics = counts_metrics(*counts)
    if criterion == "youden":
        return metrics["sensitivity"] + metrics["specificity"] - 1
    return metrics[criterion]
