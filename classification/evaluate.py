"""Evaluation of a classifier on one split: metrics with bootstrap 95% CIs, overall and per modality
and per source collection, plots, `metrics.json` and per-image `predictions.csv`.

The decision thresholds of a binary (or multi-label) model are chosen on the VALIDATION split by
`select_threshold` (`common.thresholds`: validation splits only, ties to the lowest threshold),
written as threshold.json, and then applied to the test split; training does this at its end, in
the run folder, as segmentation training does. `evaluate_predictions` refuses a threshold chosen on
the split it evaluates. Multi-class models predict the argmax and take no threshold.

What differs between the tasks (which metrics a summary has, the decision columns, the confusion
matrix, the curves) is the task object's (`classification.task`, `Predictions.task`).

Steps (as nnU-Net's / MONAI's evaluation): `predictions_frame` (compute: the per-image decisions),
`evaluate_predictions` (aggregate: metrics with CIs as {"value", "low", "high"}), `write_evaluation`
(write: metrics.json, predictions.csv and plots, each file all-or-nothing); `evaluate_model` runs
them on a model. Bootstrap: percentile intervals over 1,000 resamples by default, resampling whole
patients where a record has a patient id (records without one count as their own group).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
import pandas as pd

from classification import metrics as m
from classification.data import ClassificationInputs, load_split, meta_frame
from common import plots
from common.atomic import atomic_write_text
from common.bootstrap import bootstrap_cis, ci_entry
from common.thresholds import (
    THRESHOLD_FILE,
    ThresholdChoice,
    check_validation_data,
    check_validation_split,
    choose_threshold,
)
from common.training import read_history

if TYPE_CHECKING:
    from classification.task import ClassificationTask

GROUP_COLUMNS = {"by_modality": "modality", "by_source": "source"}
DEFINITIONS = {
    "threshold_rule": "positive when probability >= threshold",
    "precision": "TP / (TP + FP)",
    "recall": "sensitivity = TP / (TP + FN)",
    "specificity": "TN / (TN + FP)",
    "f1": "2 TP / (2 TP + FP + FN)",
    "roc_auc": "trapezoidal area under the ROC curve, tied scores grouped (Mann-Whitney, ties 1/2)",
    "pr_auc": "average precision: sum_k (R_k - R_(k-1)) P_k over distinct thresholds",
    "macro": "unweighted mean over classes of the one-vs-rest metric (classes where it is defined)",
    "undefined": "a ratio with a zero denominator is null",
    "ci": "95% percentile bootstrap, whole patients resampled where patient ids exist",
}


@dataclass
class Predictions:
    """Per-image model outputs on one split.

    task: the `classification.task` object of the model.
    probabilities: (N, K) float64; K = 1 for binary (P(positive)), else one column per class.
    targets: int64, binary (N,) {0, 1}; multiclass (N,) class index; multilabel (N, K) {0, 1}.
    meta: DataFrame with columns key, patient_id, modality, source, path (str, "" = unknown).
    extra: further per-image arrays with N rows (e.g. uncertainty), written to predictions.csv.
    """

    split: str
    task: ClassificationTask
    output_names: list[str]
    class_names: list[str]
    probabilities: np.ndarray
    targets: np.ndarray
    meta: pd.DataFrame
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    def subset(self, rows: np.ndarray) -> Predictions:
        """The predictions of the selected rows (boolean mask or indices)."""
        rows = np.flatnonzero(rows) if np.asarray(rows).dtype == bool else np.asarray(rows)
        return Predictions(
            self.split,
            self.task,
            self.output_names,
            self.class_names,
            self.probabilities[rows],
            self.targets[rows],
            self.meta.iloc[rows].reset_index(drop=True),
            {name: values[rows] for name, values in self.extra.items()},
        )

    def groups(self, column: str) -> dict[str, Predictions]:
        """The subset of each known value of a meta column, sorted by value; {} unless there are several."""
        values = sorted(value for value in self.meta[column].unique() if value)
        if len(values) < 2:
            return {}
        return {value: self.subset((self.meta[column] == value).to_numpy()) for value in values}

    @property
    def bootstrap_groups(self) -> np.ndarray:
        """Patient id where known, else the record key (its own group)."""
        patients = self.meta["patient_id"].to_numpy(dtype=object)
        keys = ("key:" + self.meta["key"]).to_numpy(dtype=object)
        return np.where(patients != "", patients, keys)


PredictFn = Callable[[np.ndarray], Mapping[str, np.ndarray]]


def model_predict_fn(model: keras.Model) -> PredictFn:
    """images (B, H, W, C) -> {"probability": (B, K)} from one deterministic forward pass."""
    return lambda images: {"probability": np.asarray(model.predict_on_batch(images), dtype=np.float64)}


def collect_predictions(predict_fn: PredictFn, config: ClassificationInputs, split: str) -> Predictions:
    """Runs `predict_fn` over one split (deterministic order) and gathers outputs, targets and meta.

    predict_fn returns "probability" (B, K) and optionally further (B, ...) arrays kept in `extra`.
    """
    outputs: dict[str, list[np.ndarray]] = {}
    targets, metas = [], []
    for images, batch_targets, meta in load_split(config, split, with_meta=True).as_numpy_iterator():
        for name, values in predict_fn(images).items():
            outputs.setdefault(name, []).append(np.asarray(values))
        targets.append(batch_targets)
        metas.append(meta)
    if not targets:
        raise ValueError(f"split {split!r} has no records")
    stacked = {name: np.concatenate(values) for name, values in outputs.items()}
    target_array = config.task.evaluation_targets(np.concatenate(targets))
    return Predictions(
        split=split,
        task=config.task,
        output_names=config.output_names,
        class_names=list(config.class_names),
        probabilities=stacked.pop("probability").reshape(len(target_array), -1),
        targets=target_array,
        meta=meta_frame(metas),
        extra=stacked,
    )


def choose_thresholds(validation: Predictions, criterion: str = "youden") -> ThresholdChoice | None:
    """The decision thresholds from validation predictions: one for binary, one per class for
    multi-label (`classification.metrics.threshold_sweep` per output, `common.thresholds` rules),
    None for argmax decisions (multi-class). A non-validation split raises ThresholdSplitError, no
    predictions NoValidationDataError."""
    if not validation.task.uses_threshold:
        return None
    check_validation_split(validation.split)
    check_validation_data(validation.split, len(validation.targets))
    targets = validation.targets.reshape(len(validation.targets), -1)
    sweeps = [
        m.threshold_sweep(targets[:, k], validation.probabilities[:, k], criterion)
        for k in range(validation.probabilities.shape[1])
    ]
    return choose_threshold(
        [candidates for candidates, _ in sweeps],
        [values for _, values in sweeps],
        validation.split,
        criterion,
    )


def select_threshold(
    predict_fn: PredictFn, config: ClassificationInputs, out_dir: str | Path, criterion: str = "youden"
) -> ThresholdChoice | None:
    """Chooses the thresholds on the VALIDATION split (`config.splits["val"]`) and writes
    threshold.json and the task's plots of the choice (binary: threshold_curve.png) into `out_dir`;
    None (nothing written) for argmax decisions."""
    if not config.task.uses_threshold:
        return None
    validation = collect_predictions(predict_fn, config, config.splits["val"])
    choice = choose_thresholds(validation, criterion)
    out_dir = Path(out_dir)
    choice.save(out_dir / THRESHOLD_FILE)
    validation.task.plot_threshold_choice(out_dir, validation, choice)
    return choice


def evaluate_predictions(
    predictions: Predictions,
    threshold: ThresholdChoice | None,
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """The metrics report of one split: "overall", then "by_modality"/"by_source" when the records
    come from more than one modality/source. Each metric is {"value", "low", "high"}
    (`common.bootstrap.ci_entry`; undefined values are null); which metrics, the task's summary.

    threshold: one threshold per output (binary, multilabel) or None (multiclass). A threshold
    chosen on `predictions.split` raises ThresholdSplitError.
    """
    task = predictions.task
    task.check_threshold(predictions, threshold)
    report: dict[str, Any] = {
        "split": predictions.split,
        "task": task.name,
        "n": len(predictions.targets),
        "class_names": predictions.class_names,
        "output_names": predictions.output_names,
        "threshold": None if threshold is None else threshold.summary(),
        "bootstrap": {"n_resamples": n_resamples, "confidence": 0.95, "seed": seed},
        "definitions": DEFINITIONS,
        "overall": task.summary(predictions, threshold, n_resamples, seed),
    }
    for section, column in GROUP_COLUMNS.items():
        groups = predictions.groups(column)
        if groups:
            report[section] = {
                value: task.summary(subset, threshold, n_resamples, seed) for value, subset in groups.items()
            }
    return report


def metrics_with_cis(
    metric_fn: Callable[[np.ndarray, np.ndarray], Mapping[str, float]],
    predictions: Predictions,
    scores: np.ndarray,
    n_resamples: int,
    seed: int,
) -> dict[str, Any]:
    """metric_fn(targets, scores) -> {name: value} on `predictions.targets` and `scores` (N rows),
    each as {"value", "low", "high"} with whole patients resampled (`bootstrap_groups`)."""
    intervals = bootstrap_cis(
        metric_fn,
        predictions.targets,
        scores,
        n_resamples=n_resamples,
        seed=seed,
        groups=predictions.bootstrap_groups,
    )
    return {name: ci_entry(point, low, high) for name, (point, low, high) in intervals.items()}


def json_ready(value: Any) -> Any:
    """NaN -> None (JSON null), recursively; NumPy scalars -> Python."""
    if isinstance(value, Mapping):
        return {key: json_ready(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def predictions_frame(predictions: Predictions, threshold: ThresholdChoice | None) -> pd.DataFrame:
    """Compute: one row per image, file, key, patient, modality, source, the task's label,
    probability and decision column(s) (probability >= threshold, or the argmax), and any extra
    (N,) arrays."""
    frame = pd.DataFrame(
        {
            "file": predictions.meta["path"],
            "key": predictions.meta["key"],
            "patient": predictions.meta["patient_id"],
            "modality": predictions.meta["modality"],
            "source": predictions.meta["source"],
        }
    )
    for name, values in predictions.task.frame_columns(predictions, threshold).items():
        frame[name] = values
    for name, values in predictions.extra.items():
        if values.ndim == 1:
            frame[name] = values
    return frame


def write_evaluation(
    out_dir: str | Path,
    report: Mapping[str, Any],
    predictions: Predictions,
    threshold: ThresholdChoice | None,
    run_dir: str | Path | None = None,
) -> Path:
    """Write: metrics.json, predictions.csv and the plots (roc.png, pr.png, confusion_matrix.png
    where the task has one, training_curves.png from `run_dir/history.csv`) into out_dir, each file
    all-or-nothing."""
    out_dir = Path(out_dir)
    atomic_write_text(
        out_dir / "metrics.json", json.dumps(json_ready(dict(report)), indent=2, allow_nan=False)
    )
    atomic_write_text(
        out_dir / "predictions.csv", predictions_frame(predictions, threshold).to_csv(index=False)
    )
    _plot_curves(out_dir, predictions)
    confusion = predictions.task.confusion(predictions, threshold, report)
    if confusion is not None:
        plots.plot_confusion_matrix(*confusion, out_dir / "confusion_matrix.png")
    history = read_history(run_dir) if run_dir is not None else {}
    if history:
        plots.plot_training_curves(history, out_dir / "training_curves.png")
    return out_dir


def _plot_curves(out_dir: Path, predictions: Predictions) -> None:
    """ROC and PR curves of the task's curve sets (binary: overall and per modality/source group;
    otherwise one per class). Sets with a single label value have no curve and are left out."""
    roc, pr = {}, {}
    for name, (labels, scores) in predictions.task.curves(predictions).items():
        if len(np.unique(labels)) < 2:  # a curve needs both classes
            continue
        fpr, tpr, _ = m.roc_curve(labels, scores)
        recall, precision, _ = m.pr_curve(labels, scores)
        roc[f"{name} (AUC {m.roc_auc(labels, scores):.3f})"] = (fpr, tpr)
        pr[f"{name} (AP {m.average_precision(labels, scores):.3f})"] = (recall, precision)
    plots.plot_roc(roc, out_dir / "roc.png")
    plots.plot_pr(pr, out_dir / "pr.png")


def evaluate_model(
    model: keras.Model,
    config: ClassificationInputs,
    out_dir: str | Path,
    *,
    threshold: ThresholdChoice | None = None,
    criterion: str = "youden",
    n_resamples: int = 1000,
    seed: int = 0,
    run_dir: str | Path | None = None,
    predict_fn: PredictFn | None = None,
    extra_sections: Callable[[Predictions, Any], Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Evaluates the test split at `threshold` (the one training chose on validation); without one,
    first chooses it on the validation split by `criterion` (`select_threshold`, written into
    `out_dir`). Writes everything to `out_dir` and returns the report.

    predict_fn: replaces the plain forward pass (e.g. MC dropout or an ensemble).
    extra_sections(test_predictions, threshold): further top-level report sections (e.g. uncertainty).
    """
    predict_fn = predict_fn or model_predict_fn(model)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if threshold is None:
        threshold = select_threshold(predict_fn, config, out_dir, criterion)
    test = collect_predictions(predict_fn, config, config.splits["test"])
    report = evaluate_predictions(test, threshold, n_resamples, seed)
    if extra_sections is not None:
        report.update(extra_sections(test, threshold))
    write_evaluation(out_dir, report, test, threshold, run_dir)
    return report
