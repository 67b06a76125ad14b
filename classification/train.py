"""Training a classifier from a YAML run config (`python -m classification train --config CFG.yaml`).

Config layout (every section but `data.tfrecords` and `run_dir` has defaults):

    run_dir: runs/ct_mobilenetv2
    data:        # classification.data.DataConfig
      tfrecords: data/tfrecords/ct-covid      # or a list of folders (multi-modal)
      task: binary                            # binary | multiclass | multilabel
      positive_label: COVID
      image_size: 128
      channels: 3
      batch_size: 16
      augment: {rotation_degrees: 10}         # tfrecords.augment.AugmentConfig fields
    model:       # classification.models.build_classifier options
      name: mobilenetv2
      weights: null                           # null | imagenet | /path/to/file.weights.h5
      dropout: 0.2
    training:    # common.training.TrainingConfig
      epochs: 5
      learning_rate: 0.001
      fine_tune_epochs: 0                     # > 0: two-stage transfer learning
      unfreeze_top_blocks: 2
    evaluation:
      criterion: youden                       # threshold rule on the validation split
      n_resamples: 1000

Two-stage transfer learning (keras.io transfer-learning guide): with `fine_tune_epochs > 0`, stage
"head" freezes the whole backbone and trains the head at `learning_rate`; stage "fine_tune" unfreezes
the top `unfreeze_top_blocks` backbone blocks and trains at `fine_tune_learning_rate`, continuing the
epoch count. With `fine_tune_epochs = 0` there is one stage with every layer trainable (training
from scratch). BatchNorm of a pretrained backbone runs in inference mode throughout (see
`classification.models`).

A run folder holds config.yaml, best.keras (the best epoch by `training.monitor`), history.csv,
TensorBoard logs, threshold.json and threshold_curve.png (binary and multi-label models: the
thresholds chosen on the validation split with best.keras at the end of training,
`classification.evaluate.select_threshold`), and eval/ (metrics.json, predictions.csv, plots) from
`evaluate_model` on the test split at those thresholds. Re-running on the same folder resumes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf
import yaml

from classification.data import DataConfig, load_split, steps_per_epoch
from classification.evaluate import evaluate_model, model_predict_fn, select_threshold
from classification.models import build_classifier, unfreeze_top_blocks
from common.atomic import atomic_write_text
from common.training import Stage, TrainingConfig, balanced_class_weight, fit, set_batchnorm_momentum

LOSSES = {
    "binary": "binary_crossentropy",
    "multiclass": "sparse_categorical_crossentropy",
    "multilabel": "binary_crossentropy",
}


@dataclass
class ModelConfig:
    """`build_classifier` options: registry name, weights, head dropout and backbone keyword options.

    batchnorm_momentum: overrides every BatchNormalization momentum (None: the model's own, 0.99 for
    Keras layers); 0.9 suits short from-scratch runs (see `common.training.set_batchnorm_momentum`).
    """

    name: str = "mobilenetv2"
    weights: str | None = None
    dropout: float = 0.2
    batchnorm_momentum: float | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class EvaluationConfig:
    """Threshold rule on the validation split and bootstrap settings for the test evaluation."""

    criterion: str = "youden"
    n_resamples: int = 1000
    seed: int = 0


@dataclass
class RunConfig:
    run_dir: str
    data: DataConfig
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunConfig:
        unknown = sorted(set(values) - {"run_dir", "data", "model", "training", "evaluation"})
        if unknown:
            raise ValueError(f"unknown config section(s) {unknown}")
        if "run_dir" not in values or "data" not in values:
            raise ValueError("a run config needs 'run_dir' and 'data'")
        return cls(
            run_dir=str(values["run_dir"]),
            data=_section(DataConfig, values["data"], "data"),
            model=_section(ModelConfig, values.get("model") or {}, "model"),
            training=TrainingConfig.from_dict(values.get("training") or {}),
            evaluation=_section(EvaluationConfig, values.get("evaluation") or {}, "evaluation"),
        )

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self.data, f.name) for f in dataclasses.fields(self.data)}
        return {
            "run_dir": self.run_dir,
            "data": data,
            "model": dataclasses.asdict(self.model),
            "training": dataclasses.asdict(self.training),
            "evaluation": dataclasses.asdict(self.evaluation),
        }


def _section(cls, values: dict[str, Any], name: str):
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} in section {name!r}; known: {sorted(known)}")
    return cls(**values)


def load_run_config(path: str | Path, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Reads a YAML run config; `overrides` maps dotted keys ("training.epochs") to values."""
    values = yaml.safe_load(Path(path).read_text()) or {}
    for dotted, value in (overrides or {}).items():
        *parents, leaf = dotted.split(".")
        target = values
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = value
    return RunConfig.from_dict(values)


def make_model_builder(config: RunConfig):
    """() -> the classifier of `config`, uncompiled (called inside the strategy scope by `fit`)."""
    data = config.data
    num_outputs = 1 if data.task == "binary" else len(data.class_names)
    shape = (data.image_size, data.image_size, data.channels)

    def build() -> keras.Model:
        model = build_classifier(
            config.model.name,
            shape,
            num_outputs,
            output=data.task,
            weights=config.model.weights,
            dropout=config.model.dropout,
            **config.model.options,
        )
        if config.model.batchnorm_momentum is not None:
            set_batchnorm_momentum(model, config.model.batchnorm_momentum)
        return model

    return build


def compile_classifier(task: str):
    """compile_fn(model, optimizer) for `common.training.fit`: the task's loss, accuracy and AUC."""

    def compile_fn(model: keras.Model, optimizer: keras.optimizers.Optimizer) -> None:
        if task == "binary":
            metrics = [keras.metrics.BinaryAccuracy(name="accuracy"), keras.metrics.AUC(name="auc")]
        elif task == "multiclass":
            metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
        else:
            metrics = [keras.metrics.AUC(multi_label=True, name="auc")]
        model.compile(optimizer=optimizer, loss=LOSSES[task], metrics=metrics)

    return compile_fn


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


def class_weight_for(config: RunConfig) -> dict[int, float] | None:
    """Keras class weights keyed by target value (binary: 1 = positive), or None."""
    if config.training.class_weight is None or config.data.balanced_sampling:
        return None
    if config.training.class_weight != "balanced":
        raise ValueError(f"class_weight {config.training.class_weight!r} must be 'balanced' or null")
    if config.data.task == "multilabel":
        raise ValueError("class_weight is not defined for multilabel targets; use balanced_sampling: false")
    counts = config.data.class_counts(config.data.splits["train"])
    if config.data.task == "binary":
        positive = counts[config.data.class_names.index(config.data.positive_label)]
        counts = [sum(counts) - positive, positive]
    return balanced_class_weight(counts)


def train_classifier(
    config: RunConfig, strategy: tf.distribute.Strategy | None = None, evaluate: bool = True
) -> dict[str, Any]:
    """Trains (or resumes) the run in `config.run_dir`, chooses the thresholds on validation
    (threshold.json), then evaluates best.keras on the test split.

    Returns {"run_dir", "epochs" (trained over the whole run), "history" (column -> values),
    "metrics" (the evaluation report, or None when `evaluate` is False)}.
    """
    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(config.to_dict(), sort_keys=False))
    data = config.data
    train_split, val_split = data.splits["train"], data.splits["val"]
    history = fit(
        make_model_builder(config),
        compile_classifier(data.task),
        load_split(data, train_split, training=True),
        load_split(data, val_split),
        config.training,
        run_dir,
        strategy,
        stages=training_stages(config.training),
        class_weight=class_weight_for(config),
        steps_per_epoch=steps_per_epoch(data, train_split) if data.balanced_sampling else None,
    )
    model = keras.models.load_model(run_dir / "best.keras")
    threshold = select_threshold(model_predict_fn(model), data, run_dir, config.evaluation.criterion)
    report = None
    if evaluate:
        report = evaluate_model(
            model,
            data,
            run_dir / "eval",
            threshold=threshold,
            n_resamples=config.evaluation.n_resamples,
            seed=config.evaluation.seed,
            run_dir=run_dir,
        )
    return {"run_dir": run_dir, "epochs": len(history.epoch), "history": history.history, "metrics": report}
