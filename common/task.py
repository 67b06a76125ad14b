"""The Task protocol and the one trainer every classification and segmentation run goes through.

In the style of Model Garden's `official/vision/tasks` and keras-hub's `Task`: a task object knows how
to build its model, its inputs, its losses and metrics, how to choose its decision threshold on the
validation split and how to evaluate the test split. `classification.task` implements it for the
"binary", "multiclass" and "multilabel" tasks, `segmentation.task` for "segmentation".
`train_task` is the one driver: config -> trained run folder -> threshold -> model bundle -> evaluation.

A run folder holds `config.yaml` (the `common.config.TaskConfig` tree as it ran), `best.keras`,
`history.csv`, `threshold.json` (chosen on validation), `bundle.json` (`common.bundle`: everything
inference needs, read back by `classification.predict` and `segmentation.bundle.load_segmenter`) and
`eval/` (the test evaluation).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import keras
import tensorflow as tf
import yaml

from common.atomic import atomic_write_text
from common.config import TaskConfig, to_dict
from common.mixed_precision import choose_precision
from common.plots import plot_training_curves
from common.training import Stage, fit

CONFIG_FILE = "config.yaml"


@dataclass
class TrainingPlan:
    """What `fit` needs beyond the model: stages, class weights and the epoch length (None: one pass)."""

    stages: list[Stage] | None = None
    class_weight: dict[int, float] | None = None
    steps_per_epoch: int | None = None


@dataclass
class TrainResult:
    """A finished run: its folder, best model file, epochs trained (whole run), history columns,
    the validation threshold choice (None where the task has none) and the test report (None when
    not evaluated)."""

    run_dir: Path
    best: Path
    epochs: int
    history: dict[str, list[float]]
    threshold: Any
    report: dict[str, Any] | None


class Task(Protocol):
    """One task family. `config` is the run's whole tree; `split` a manifest split name."""

    name: str

    def build_model(self, config: TaskConfig) -> keras.Model:
        """The uncompiled model (called inside the strategy scope under the run's precision)."""

    def build_inputs(self, config: TaskConfig, split: str, training: bool) -> tf.data.Dataset:
        """Batches of (image, target): shuffled and augmented when `training`, else in a fixed order."""

    def compile_model(self, model: keras.Model, optimizer: keras.optimizers.Optimizer, config: TaskConfig) -> None:
        """Compiles with the task's losses and training metrics."""

    def training_plan(self, config: TaskConfig) -> TrainingPlan:
        """Stages, class weights and steps per epoch of this run."""

    def has_validation(self, config: TaskConfig) -> bool:
        """Whether the inputs have a validation split (model selection and the threshold need one)."""

    def choose_threshold(self, model: keras.Model, config: TaskConfig, run_dir: Path) -> Any:
        """The decision threshold(s) chosen on the validation split, written to the run folder."""

    def write_bundle(self, model: keras.Model, best: Path, config: TaskConfig, threshold: Any) -> None:
        """Writes what inference needs beside `best`: its `bundle.json` (`common.bundle`)."""

    def evaluate(self, model: keras.Model, config: TaskConfig, run_dir: Path, threshold: Any) -> dict[str, Any]:
        """Scores the test split at `threshold`, writes `run_dir/eval/`, returns the report."""


def write_run_config(config: TaskConfig, run_dir: Path) -> Path:
    """`run_dir/config.yaml`: the tree as the run uses it."""
    return atomic_write_text(run_dir / CONFIG_FILE, yaml.safe_dump(to_dict(config), sort_keys=False))


def train_task(
    task: Task,
    config: TaskConfig,
    run_dir: str | Path,
    strategy: tf.distribute.Strategy | None = None,
    *,
    evaluate: bool = True,
    model_builder: Callable[[], keras.Model] | None = None,
    extra_callbacks: Sequence[keras.callbacks.Callback] = (),
) -> TrainResult:
    """Trains (or resumes) `config` in `run_dir`, chooses the threshold on validation, writes the model
    bundle and, with `evaluate`, scores the test split with `best.keras`.

    model_builder replaces the task's model (e.g. a pretrained initialisation); extra_callbacks are
    added to the shared ones of `common.callbacks`. Without a validation split the monitored metric
    falls back to the training one ("val_loss" -> "loss") and no threshold is chosen.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_run_config(config, run_dir)
    has_val = task.has_validation(config)
    training = config.training
    if not has_val and training.monitor.startswith("val_"):
        training = dataclasses.replace(training, monitor=training.monitor[4:])
    plan = task.training_plan(config)
    splits = config.data.splits
    history = fit(
        model_builder or (lambda: task.build_model(config)),
        lambda model, optimizer: task.compile_model(model, optimizer, config),
        task.build_inputs(config, splits["train"], training=True),
        task.build_inputs(config, splits["val"], training=False) if has_val else None,
        training,
        run_dir,
        strategy,
        seed=config.runtime.seed,
        precision=choose_precision(config.runtime.precision).policy,
        stages=plan.stages,
        class_weight=plan.class_weight,
        steps_per_epoch=plan.steps_per_epoch,
        extra_callbacks=extra_callbacks,
    )
    if history.history:  # the whole run, as `fit` read it back from history.csv
        plot_training_curves({"epoch": history.epoch, **history.history}, run_dir / "training_curves.png")
    best = run_dir / "best.keras"
    model = keras.saving.load_model(best)
    threshold = task.choose_threshold(model, config, run_dir) if has_val else None
    task.write_bundle(model, best, config, threshold)
    report = task.evaluate(model, config, run_dir, threshold) if evaluate else None
    return TrainResult(run_dir, best, len(history.epoch), history.history, threshold, report)
