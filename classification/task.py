"""The classification tasks of the `common.task.Task` protocol, one class each.

- `BinaryTask` ("binary"): one sigmoid unit, P(`positive_label`); target float32 (1,); positive
  where the probability >= the validation threshold.
- `MulticlassTask` ("multiclass"): one softmax unit per class; target int32 () class index; the
  argmax decides, no threshold.
- `MultilabelTask` ("multilabel"): one sigmoid unit per class; target float32 (K,) multi-hot;
  class k present where its probability >= its own validation threshold.

Each class owns what differs between the tasks: the output units, the loss and training metrics, how
source labels become targets (`classification.data`), balanced sampling and class weights, how
probabilities become decisions, the metrics of a report and the columns of predictions.csv
(`classification.evaluate`), the columns predict writes (`classification.predict`) and which cases
count as correct for coverage-accuracy (`classification.uncertainty`). Their base
`ClassificationTask` implements the protocol methods they share. `CLASSIFICATION_TASKS` holds the one
object of each `model.task` name; `task_of(config)` is the lookup callers use.

Probabilities are float64 (N, K), K = the model's output units; thresholds one per output unit.

Two-stage transfer learning (keras.io transfer-learning guide): with `training.fine_tune_epochs > 0`,
stage "head" freezes the whole backbone and trains the head at `learning_rate`; stage "fine_tune"
unfreezes the top `unfreeze_top_blocks` backbone blocks and trains at `fine_tune_learning_rate`,
continuing the epoch count. With `fine_tune_epochs = 0` there is one stage with every layer trainable
(training from scratch). BatchNorm of a pretrained backbone runs in inference mode throughout (see
`classification.models`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import keras
import numpy as np
import tensorflow as tf

from classification import metrics as m
from classification.data import ClassificationInputs, load_split, steps_per_epoch
from classification.evaluate import (
    GROUP_COLUMNS,
    Predictions,
    evaluate_model,
    json_ready,
    metrics_with_cis,
    model_predict_fn,
    select_threshold,
)
from classification.models import build_classifier, unfreeze_top_blocks
from common import plots
from common.bundle import write_bundle
from common.config import TaskConfig
from common.task import TrainingPlan
from common.thresholds import ThresholdChoice
from common.training import Stage, balanced_class_weight, set_batchnorm_momentum
from common.training_config import TrainingConfig

Columns = dict[str, np.ndarray]


def training_stages(config: TrainingConfig) -> list[Stage]:
    """One trainable stage, or "head" (backbone frozen) then "fine_tune" (top blocks unfrozen)."""
    if config.fine_tune_epochs <= 0:
        return [Stage("train", config.epochs, config.learning_rate)]
    if config.unfreeze_top_blocks <= 0:
        raise ValueError("fine_tune_epochs > 0 needs unfreeze_top_blocks >= 1")
    return [
        Stage("head", config.epochs, config.learning_rate, lambda model: unfreeze_top_blocks(model, 0)),
        Stage(
            "fine_tune",
            config.fine_tune_epochs,
            config.fine_tune_learning_rate,
            lambda model: unfreeze_top_blocks(model, config.unfreeze_top_blocks),
        ),
    ]


def at_thresholds(probabilities: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """(N, K) float probabilities, K thresholds -> (N, K) bool: output k positive where >= thresholds[k]."""
    return probabilities >= np.asarray(thresholds, dtype=np.float64)


def negative_name(class_names: Sequence[str], positive: str | None, default: str = "negative") -> str:
    """The first class that is not `positive` (binary: the other class)."""
    return next((name for name in class_names if name != positive), default)


class ClassificationTask(ABC):
    """What the three tasks share: the `common.task.Task` protocol methods and the defaults the
    subclasses keep or override."""

    name: ClassVar[str]
    loss: ClassVar[str]
    record_task: ClassVar[str] = "classification"  # the `tfrecords.reader` layout of the source labels
    uses_threshold: ClassVar[bool] = True  # decisions at thresholds chosen on validation (else argmax)

    # The model and its training.

    def output_units(self, class_names: Sequence[str]) -> int:
        """Units of the model's output layer: one per class."""
        return len(class_names)

    @abstractmethod
    def build_metrics(self) -> list[keras.metrics.Metric]:
        """The training metrics; their names ("accuracy", "auc") are what `training.monitor` names."""

    def target_counts(self, inputs: ClassificationInputs) -> list[int]:
        """Training records per target value (the keys of the class weights): per class."""
        return inputs.class_counts(inputs.splits["train"])

    # Targets (`classification.data`).

    def positive_label(self, class_names: Sequence[str], configured: str | None) -> str | None:
        """The class a binary model outputs; the other tasks keep `data.positive_label` as configured."""
        return configured

    def check_mask_labels(self) -> None:
        """Raises unless the task takes targets from mask presence (`data.mask_label_min_pixels`)."""
        raise ValueError("mask_label_min_pixels derives multi-label targets; set task: multilabel")

    def output_names(self, class_names: Sequence[str], positive_label: str | None) -> list[str]:
        """One name per output unit: every class."""
        return list(class_names)

    @abstractmethod
    def target(self, source: tf.Tensor, to_class: tf.Tensor, inputs: ClassificationInputs) -> tf.Tensor:
        """One record's run target from its source target (int32 () label index, or float32 (L,)
        multi-hot for `record_task` "multilabel") and `to_class` (int32 (L,): each manifest label's
        index into `inputs.class_names`)."""

    def sampling_classes(self, num_classes: int) -> int:
        """How many target values balanced sampling draws equally often: one per class."""
        return num_classes

    def sampling_class(self, target: tf.Tensor) -> tf.Tensor:
        """int32 () target value of one record, for balanced sampling: the class index."""
        return target

    # Decisions and reports (`classification.evaluate`).

    def evaluation_targets(self, targets: np.ndarray) -> np.ndarray:
        """Stacked batch targets -> `Predictions.targets`, int64 of the same shape."""
        return targets.astype(np.int64)

    def check_threshold(self, predictions: Predictions, threshold: ThresholdChoice | None) -> None:
        """Raises unless `threshold` has one threshold per output and was chosen on another split."""
        if threshold is None:
            raise ValueError(f"{self.name} predictions need a threshold chosen on validation data")
        if len(threshold.thresholds) != len(predictions.output_names):
            raise ValueError(
                f"{len(threshold.thresholds)} thresholds for {len(predictions.output_names)} outputs"
            )
        threshold.check_applicable_to(predictions.split)

    def plot_threshold_choice(  # noqa: B027 (a hook: only binary plots its choice)
        self, out_dir: Path, validation: Predictions, choice: ThresholdChoice
    ) -> None:
        """Plots of the validation threshold choice into `out_dir` (none by default)."""

    @abstractmethod
    def summary(
        self, predictions: Predictions, threshold: ThresholdChoice | None, n_resamples: int, seed: int
    ) -> dict[str, Any]:
        """The report section of one subset: metrics as `common.bootstrap.ci_entry` dicts, plus counts."""

    @abstractmethod
    def frame_columns(self, predictions: Predictions, threshold: ThresholdChoice | None) -> Columns:
        """predictions.csv's label, probability and decision columns, (N,) each."""

    def confusion(
        self, predictions: Predictions, threshold: ThresholdChoice | None, report: dict[str, Any]
    ) -> tuple[np.ndarray, list[str]] | None:
        """(confusion matrix (C, C) int, rows true / columns predicted, its C class labels); None:
        the task has none."""
        return None

    def indicators(self, predictions: Predictions) -> np.ndarray:
        """(N, K) {0, 1}: per output unit, whether its class is present."""
        return predictions.targets

    def curves(self, predictions: Predictions) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """ROC / PR curve inputs, name -> ((N,) {0, 1} labels, (N,) scores): one per output unit."""
        indicators = self.indicators(predictions)
        return {
            name: (indicators[:, k], predictions.probabilities[:, k])
            for k, name in enumerate(predictions.output_names)
        }

    # Prediction on one's own images (`classification.predict`) and uncertainty.

    def unnamed_outputs(self, units: int) -> list[str]:
        """Output names for a model without a bundle."""
        return [f"output_{k}" for k in range(units)]

    @abstractmethod
    def prediction_columns(
        self, probabilities: np.ndarray, names: Sequence[str], thresholds: Sequence[float], negative: str
    ) -> Columns:
        """predict's probability and decision columns for (N, K) probabilities and K output `names`;
        `thresholds`: one per output (argmax tasks ignore them); `negative`: the name a binary
        decision below the threshold gets."""

    def correct(self, predictions: Predictions, threshold: ThresholdChoice | None) -> np.ndarray:
        """(N,) bool: the decision equals the label (for coverage-accuracy)."""
        raise ValueError("coverage-accuracy is defined for binary and multiclass predictions")

    # The `common.task.Task` protocol.

    def inputs(self, config: TaskConfig) -> ClassificationInputs:
        return ClassificationInputs(config, self)

    def build_model(self, config: TaskConfig) -> keras.Model:
        inputs = self.inputs(config)
        data, model_config = config.data, config.model
        model = build_classifier(
            model_config.name,
            (data.image_size, data.image_size, data.channels),
            self.output_units(inputs.class_names),
            output=self.name,
            weights=model_config.weights,
            dropout=model_config.dropout,
            **model_config.options,
        )
        if model_config.batchnorm_momentum is not None:
            set_batchnorm_momentum(model, model_config.batchnorm_momentum)
        return model

    def build_inputs(self, config: TaskConfig, split: str, training: bool) -> tf.data.Dataset:
        return load_split(self.inputs(config), split, training=training)

    def compile_model(
        self, model: keras.Model, optimizer: keras.optimizers.Optimizer, config: TaskConfig
    ) -> None:
        model.compile(optimizer=optimizer, loss=self.loss, metrics=self.build_metrics())

    def class_weight(self, config: TaskConfig) -> dict[int, float] | None:
        """Keras class weights keyed by target value (binary: 1 = positive), or None."""
        if config.training.class_weight is None or config.data.balanced_sampling:
            return None
        if config.training.class_weight != "balanced":
            raise ValueError(f"class_weight {config.training.class_weight!r} must be 'balanced' or null")
        return balanced_class_weight(self.target_counts(self.inputs(config)))

    def training_plan(self, config: TaskConfig) -> TrainingPlan:
        inputs = self.inputs(config)
        return TrainingPlan(
            stages=training_stages(config.training),
            class_weight=self.class_weight(config),
            steps_per_epoch=steps_per_epoch(inputs, inputs.splits["train"])
            if inputs.balanced_sampling
            else None,
        )

    def has_validation(self, config: TaskConfig) -> bool:
        return True  # classifiers always select the model and the threshold on validation

    def choose_threshold(
        self, model: keras.Model, config: TaskConfig, run_dir: Path
    ) -> ThresholdChoice | None:
        """Per-output thresholds on validation by `evaluation.criterion`, written to threshold.json (None
        for argmax decisions)."""
        return select_threshold(
            model_predict_fn(model), self.inputs(config), run_dir, config.evaluation.criterion
        )

    def write_bundle(self, model: keras.Model, best: Path, config: TaskConfig, threshold: Any) -> None:
        """`bundle.json` (`common.bundle`, kind "classifier"): the task, output and class names, the
        name of the negative class (binary) and the validation threshold; read by
        `classification.predict.run_info`."""
        inputs = self.inputs(config)
        fields = {
            "task": self.name,
            "output_names": inputs.output_names,
            "class_names": inputs.class_names,
            "negative_name": negative_name(inputs.class_names, inputs.positive_label),
        }
        choice = None if threshold is None else threshold.to_dict()
        write_bundle(best, tuple(model.input_shape[1:]), "classifier", choice, inputs.manifests[0], fields)

    def evaluate(
        self, model: keras.Model, config: TaskConfig, run_dir: Path, threshold: Any
    ) -> dict[str, Any]:
        return evaluate_model(
            model,
            self.inputs(config),
            run_dir / "eval",
            threshold=threshold,
            n_resamples=config.evaluation.bootstrap_resamples,
            seed=config.runtime.seed,
            run_dir=run_dir,
        )


class BinaryTask(ClassificationTask):
    """Two classes, one sigmoid unit: P(`positive_label`); targets {0, 1} (1 = positive)."""

    name = "binary"
    loss = "binary_crossentropy"

    def output_units(self, class_names: Sequence[str]) -> int:
        return 1

    def build_metrics(self) -> list[keras.metrics.Metric]:
        return [keras.metrics.BinaryAccuracy(name="accuracy"), keras.metrics.AUC(name="auc")]

    def target_counts(self, inputs: ClassificationInputs) -> list[int]:
        """[negative, positive] training records."""
        counts = super().target_counts(inputs)
        positive = counts[inputs.class_names.index(inputs.positive_label)]
        return [sum(counts) - positive, positive]

    def positive_label(self, class_names: Sequence[str], configured: str | None) -> str:
        """`configured`, by default the first class; ValueError unless there are two classes and it
        is one of them."""
        if len(class_names) != 2:
            raise ValueError(f"binary task needs 2 class names, got {list(class_names)}")
        positive = configured or class_names[0]
        if positive not in class_names:
            raise ValueError(f"positive_label {positive!r} is not in {list(class_names)}")
        return positive

    def output_names(self, class_names: Sequence[str], positive_label: str | None) -> list[str]:
        return [positive_label]

    def target(self, source: tf.Tensor, to_class: tf.Tensor, inputs: ClassificationInputs) -> tf.Tensor:
        """float32 (1,): 1.0 for the positive class."""
        positive = inputs.class_names.index(inputs.positive_label)
        return tf.cast(tf.equal(tf.gather(to_class, source), positive), tf.float32)[None]

    def sampling_classes(self, num_classes: int) -> int:
        return 2

    def sampling_class(self, target: tf.Tensor) -> tf.Tensor:
        return tf.cast(target[0], tf.int32)

    def evaluation_targets(self, targets: np.ndarray) -> np.ndarray:
        """(N,) int64 {0, 1}."""
        return targets.reshape(-1).astype(np.int64)

    def plot_threshold_choice(self, out_dir: Path, validation: Predictions, choice: ThresholdChoice) -> None:
        """threshold_curve.png: sensitivity, specificity and F1 on the validation predictions at
        thresholds 0, 0.01, ..., 1, the chosen threshold marked."""
        thresholds = np.linspace(0, 1, 101)
        rows = [
            m.counts_metrics(*m.binary_counts(validation.targets, validation.probabilities[:, 0], t))
            for t in thresholds
        ]
        values = {name: [row[name] for row in rows] for name in ("sensitivity", "specificity", "f1")}
        plots.plot_threshold_curve(
            thresholds,
            values,
            out_dir / "threshold_curve.png",
            chosen=choice.thresholds[0],
            title=f"Validation ({validation.split}) metrics",
        )

    def summary(
        self, predictions: Predictions, threshold: ThresholdChoice | None, n_resamples: int, seed: int
    ) -> dict[str, Any]:
        """`classification.metrics.BINARY_METRICS` at the threshold, and the counts tp, fp, tn, fn, n."""
        cut, positive_scores = threshold.thresholds[0], predictions.probabilities[:, 0]

        def metric_fn(labels, scores):
            values = m.binary_metrics(labels, scores, cut)
            return {name: values[name] for name in m.BINARY_METRICS}

        summary = metrics_with_cis(metric_fn, predictions, positive_scores, n_resamples, seed)
        counts = m.binary_metrics(predictions.targets, positive_scores, cut)
        summary["counts"] = {name: counts[name] for name in ("tp", "fp", "tn", "fn", "n")}
        return summary

    def _names(self, predictions: Predictions) -> tuple[str, str]:
        """(positive, negative) class names."""
        positive = predictions.output_names[0]
        return positive, negative_name(predictions.class_names, positive)

    def frame_columns(self, predictions: Predictions, threshold: ThresholdChoice | None) -> Columns:
        """label, probability, predicted (class names)."""
        positive, negative = self._names(predictions)
        label = np.where(predictions.targets == 1, positive, negative)
        columns = self.prediction_columns(
            predictions.probabilities, [positive], threshold.thresholds, negative
        )
        return {"label": label, **columns}

    def confusion(
        self, predictions: Predictions, threshold: ThresholdChoice | None, report: dict[str, Any]
    ) -> tuple[np.ndarray, list[str]]:
        """Positive first."""
        predicted = at_thresholds(predictions.probabilities, threshold.thresholds)[:, 0]
        matrix = m.confusion_matrix(1 - predictions.targets, 1 - predicted, 2)
        return matrix, list(self._names(predictions))

    def curves(self, predictions: Predictions) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """ "all", then one per modality and per source where there are several."""
        subsets = {"all": predictions}
        for column in GROUP_COLUMNS.values():
            subsets.update(predictions.groups(column))
        return {name: (subset.targets, subset.probabilities[:, 0]) for name, subset in subsets.items()}

    def unnamed_outputs(self, units: int) -> list[str]:
        return ["positive"]

    def prediction_columns(
        self, probabilities: np.ndarray, names: Sequence[str], thresholds: Sequence[float], negative: str
    ) -> Columns:
        """probability (of `names[0]`), predicted (`names[0]` at or above the threshold, else `negative`)."""
        predicted = np.where(at_thresholds(probabilities, thresholds)[:, 0], names[0], negative)
        return {"probability": probabilities[:, 0], "predicted": predicted}

    def correct(self, predictions: Predictions, threshold: ThresholdChoice | None) -> np.ndarray:
        return at_thresholds(predictions.probabilities, threshold.thresholds)[:, 0] == (
            predictions.targets == 1
        )


class MulticlassTask(ClassificationTask):
    """K classes, softmax: one class per image; targets class indices; the argmax decides."""

    name = "multiclass"
    loss = "sparse_categorical_crossentropy"
    uses_threshold = False

    def build_metrics(self) -> list[keras.metrics.Metric]:
        return [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]

    def target(self, source: tf.Tensor, to_class: tf.Tensor, inputs: ClassificationInputs) -> tf.Tensor:
        """int32 (): the class index."""
        return tf.gather(to_class, source)

    def check_threshold(self, predictions: Predictions, threshold: ThresholdChoice | None) -> None:
        if threshold is not None:
            raise ValueError("multiclass predictions use the argmax; pass threshold=None")

    def summary(
        self, predictions: Predictions, threshold: ThresholdChoice | None, n_resamples: int, seed: int
    ) -> dict[str, Any]:
        """Accuracy and the macro one-vs-rest metrics with CIs, per_class values, the confusion matrix, n."""
        names, targets, probabilities = (
            predictions.class_names,
            predictions.targets,
            predictions.probabilities,
        )

        def metric_fn(labels, scores):
            values = m.multiclass_metrics(labels, scores, names)
            return {name: value for name, value in values.items() if isinstance(value, float)}

        summary = metrics_with_cis(metric_fn, predictions, probabilities, n_resamples, seed)
        full = m.multiclass_metrics(targets, probabilities, names)
        summary["per_class"] = json_ready(full["per_class"])
        summary["confusion_matrix"] = full["confusion_matrix"]
        summary["n"] = int(len(targets))
        return summary

    def frame_columns(self, predictions: Predictions, threshold: ThresholdChoice | None) -> Columns:
        """label, probability_<class> per class, predicted (the argmax class)."""
        label = np.asarray(predictions.class_names)[predictions.targets]
        columns = self.prediction_columns(
            predictions.probabilities, predictions.class_names, thresholds=(), negative=""
        )
        return {"label": label, **columns}

    def confusion(
        self, predictions: Predictions, threshold: ThresholdChoice | None, report: dict[str, Any]
    ) -> tuple[np.ndarray, list[str]]:
        """The report's overall matrix over `class_names`."""
        return np.asarray(report["overall"]["confusion_matrix"]), predictions.class_names

    def indicators(self, predictions: Predictions) -> np.ndarray:
        return np.eye(len(predictions.class_names), dtype=np.int64)[predictions.targets]

    def prediction_columns(
        self, probabilities: np.ndarray, names: Sequence[str], thresholds: Sequence[float], negative: str
    ) -> Columns:
        """probability_<name> per class, predicted (the argmax name); no thresholds."""
        columns = {f"probability_{name}": probabilities[:, k] for k, name in enumerate(names)}
        return {**columns, "predicted": np.asarray(names)[probabilities.argmax(axis=1)]}

    def correct(self, predictions: Predictions, threshold: ThresholdChoice | None) -> np.ndarray:
        return predictions.probabilities.argmax(axis=1) == predictions.targets


class MultilabelTask(ClassificationTask):
    """K classes, one sigmoid each: any number of classes per image; targets (K,) multi-hot."""

    name = "multilabel"
    loss = "binary_crossentropy"
    record_task = "multilabel"

    def build_metrics(self) -> list[keras.metrics.Metric]:
        return [keras.metrics.AUC(multi_label=True, name="auc")]

    def target_counts(self, inputs: ClassificationInputs) -> list[int]:
        raise ValueError("class_weight is not defined for multilabel targets; use balanced_sampling: false")

    def check_mask_labels(self) -> None:
        """Mask presence gives multi-hot targets."""

    def target(self, source: tf.Tensor, to_class: tf.Tensor, inputs: ClassificationInputs) -> tf.Tensor:
        """float32 (K,): 1.0 for each class some present source label maps to."""
        hot = source[:, None] * tf.one_hot(to_class, len(inputs.class_names), dtype=tf.float32)
        return tf.minimum(tf.reduce_sum(hot, axis=0), 1.0)

    def sampling_classes(self, num_classes: int) -> int:
        raise ValueError("balanced_sampling needs one class per image; it is not defined for multilabel")

    def summary(
        self, predictions: Predictions, threshold: ThresholdChoice | None, n_resamples: int, seed: int
    ) -> dict[str, Any]:
        """per_class: `BINARY_METRICS` of each class at its threshold; macro: their means; n."""
        names, thresholds = predictions.output_names, threshold.thresholds

        def metric_fn(labels, scores):
            """Per-class metrics at each class's threshold ("class/metric") and their macro means."""
            values = {}
            for k, name in enumerate(names):
                per_class = m.binary_metrics(labels[:, k], scores[:, k], thresholds[k])
                values.update({f"{name}/{metric}": per_class[metric] for metric in m.BINARY_METRICS})
            for metric in m.BINARY_METRICS:
                values[f"macro/{metric}"] = m.nanmean([values[f"{name}/{metric}"] for name in names])
            return values

        flat = metrics_with_cis(metric_fn, predictions, predictions.probabilities, n_resamples, seed)
        per_class = {
            name: {metric: flat[f"{name}/{metric}"] for metric in m.BINARY_METRICS} for name in names
        }
        macro = {metric: flat[f"macro/{metric}"] for metric in m.BINARY_METRICS}
        return {"per_class": per_class, "macro": macro, "n": int(len(predictions.targets))}

    def frame_columns(self, predictions: Predictions, threshold: ThresholdChoice | None) -> Columns:
        """label_<class>, probability_<class>, predicted_<class> (0/1) for each class in turn."""
        predicted = at_thresholds(predictions.probabilities, threshold.thresholds).astype(int)
        columns = {}
        for k, name in enumerate(predictions.output_names):
            columns[f"label_{name}"] = predictions.targets[:, k]
            columns[f"probability_{name}"] = predictions.probabilities[:, k]
            columns[f"predicted_{name}"] = predicted[:, k]
        return columns

    def prediction_columns(
        self, probabilities: np.ndarray, names: Sequence[str], thresholds: Sequence[float], negative: str
    ) -> Columns:
        """probability_<name> and predicted_<name> (0/1 at its threshold) for each output in turn."""
        predicted = at_thresholds(probabilities, thresholds).astype(int)
        columns = {}
        for k, name in enumerate(names):
            columns[f"probability_{name}"] = probabilities[:, k]
            columns[f"predicted_{name}"] = predicted[:, k]
        return columns


CLASSIFICATION_TASKS: dict[str, ClassificationTask] = {
    task.name: task for task in (BinaryTask(), MulticlassTask(), MultilabelTask())
}


def task_of(config: TaskConfig) -> ClassificationTask:
    """The task object of `config.model.task`; ValueError naming the known tasks."""
    task = CLASSIFICATION_TASKS.get(config.model.task)
    if task is None:
        raise ValueError(f"model.task {config.model.task!r} is not one of {sorted(CLASSIFICATION_TASKS)}")
    return task
