"""The classification tasks ("binary", "multiclass", "multilabel") of the `common.task.Task` protocol.

Two-stage transfer learning (keras.io transfer-learning guide): with `training.fine_tune_epochs > 0`,
stage "head" freezes the whole backbone and trains the head at `learning_rate`; stage "fine_tune"
unfreezes the top `unfreeze_top_blocks` backbone blocks and trains at `fine_tune_learning_rate`,
continuing the epoch count. With `fine_tune_epochs = 0` there is one stage with every layer trainable
(training from scratch). BatchNorm of a pretrained backbone runs in inference mode throughout (see
`classification.models`). Targets and inputs: `classification.data`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from classification.data import ClassificationInputs, load_split, steps_per_epoch
from classification.evaluate import evaluate_model, model_predict_fn, select_threshold
from classification.models import build_classifier, unfreeze_top_blocks
from common.bundle import write_bundle
from common.config import TaskConfig
from common.task import TrainingPlan
from common.training import Stage, balanced_class_weight, set_batchnorm_momentum
from common.training_config import TrainingConfig

LOSSES = {
    "binary": "binary_crossentropy",
    "multiclass": "sparse_categorical_crossentropy",
    "multilabel": "binary_crossentropy",
}


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


@dataclass(frozen=True)
class ClassificationTask:
    """name: "binary" (one sigmoid unit for the positive class), "multiclass" (softmax) or
    "multilabel" (one sigmoid per class)."""

    name: str

    def inputs(self, config: TaskConfig) -> ClassificationInputs:
        return ClassificationInputs(config)

    def build_model(self, config: TaskConfig) -> keras.Model:
        inputs = self.inputs(config)
        data, model_config = config.data, config.model
        model = build_classifier(
            model_config.name,
            (data.image_size, data.image_size, data.channels),
            1 if self.name == "binary" else len(inputs.class_names),
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

    def build_metrics(self) -> list[keras.metrics.Metric]:
        if self.name == "binary":
            return [keras.metrics.BinaryAccuracy(name="accuracy"), keras.metrics.AUC(name="auc")]
        if self.name == "multiclass":
            return [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
        return [keras.metrics.AUC(multi_label=True, name="auc")]

    def compile_model(self, model: keras.Model, optimizer: keras.optimizers.Optimizer, config: TaskConfig) -> None:
        model.compile(optimizer=optimizer, loss=LOSSES[self.name], metrics=self.build_metrics())

    def class_weight(self, config: TaskConfig) -> dict[int, float] | None:
        """Keras class weights keyed by target value (binary: 1 = positive), or None."""
        if config.training.class_weight is None or config.data.balanced_sampling:
            return None
        if config.training.class_weight != "balanced":
            raise ValueError(f"class_weight {config.training.class_weight!r} must be 'balanced' or null")
        if self.name == "multilabel":
            raise ValueError("class_weight is not defined for multilabel targets; use balanced_sampling: false")
        inputs = self.inputs(config)
        counts = inputs.class_counts(inputs.splits["train"])
        if self.name == "binary":
            positive = counts[inputs.class_names.index(inputs.positive_label)]
            counts = [sum(counts) - positive, positive]
        return balanced_class_weight(counts)

    def training_plan(self, config: TaskConfig) -> TrainingPlan:
        inputs = self.inputs(config)
        return TrainingPlan(
            stages=training_stages(config.training),
            class_weight=self.class_weight(config),
            steps_per_epoch=steps_per_epoch(inputs, inputs.splits["train"]) if inputs.balanced_sampling else None,
        )

    def has_validation(self, config: TaskConfig) -> bool:
        return True  # classifiers always select the model and the threshold on validation

    def choose_threshold(self, model: keras.Model, config: TaskConfig, run_dir: Path) -> Any:
        """Per-output thresholds on validation by `evaluation.criterion`, written to threshold.json (None
        for a softmax model: argmax needs none)."""
        return select_threshold(model_predict_fn(model), self.inputs(config), run_dir, config.evaluation.criterion)

    def write_bundle(self, model: keras.Model, best: Path, config: TaskConfig, threshold: Any) -> None:
        """`bundle.json` (`common.bundle`, kind "classifier"): the task, output and class names, the
        name of the negative class (binary) and the validation threshold; read by
        `classification.predict.run_info`."""
        inputs = self.inputs(config)
        fields = {
            "task": self.name,
            "output_names": inputs.output_names,
            "class_names": inputs.class_names,
            "negative_name": next((name for name in inputs.class_names if name != inputs.positive_label), "negative"),
        }
        choice = None if threshold is None else threshold.to_dict()
        write_bundle(best, tuple(model.input_shape[1:]), "classifier", choice, inputs.manifests[0], fields)

    def evaluate(self, model: keras.Model, config: TaskConfig, run_dir: Path, threshold: Any) -> dict[str, Any]:
        return evaluate_model(
            model,
            self.inputs(config),
            run_dir / "eval",
            threshold=threshold,
            n_resamples=config.evaluation.bootstrap_resamples,
            seed=config.runtime.seed,
            run_dir=run_dir,
        )


CLASSIFICATION_TASKS = {name: ClassificationTask(name) for name in LOSSES}
