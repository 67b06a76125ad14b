"""Training a classifier (`python -m classification train --config CFG.yaml --run-dir DIR`).

The config is the `common.config.TaskConfig` tree (sections data, model, training, evaluation,
runtime), e.g.

    data:
      tfrecords: [data/tfrecords/ct-covid]     # several folders mix (multi-modal)
      positive_label: COVID
      image_size: 128
      channels: 3
      batch_size: 16
      augment: {rotation_degrees: 10}          # tfrecords.augment.AugmentConfig fields
    model: {task: binary, name: mobilenetv2, weights: null, dropout: 0.2}
    training: {epochs: 5, learning_rate: 0.001, fine_tune_epochs: 0}
    evaluation: {criterion: youden, bootstrap_resamples: 1000}

A run folder holds config.yaml, best.keras (the best epoch by `training.monitor`), history.csv,
TensorBoard logs, and eval/ (metrics.json, predictions.csv, plots) from `evaluate_model` on the test
split with the threshold chosen on validation. Re-running on the same folder resumes. The stages and
targets are `classification.task`'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tensorflow as tf

from classification.task import task_of
from common.config import TaskConfig
from common.task import train_task


def train_classifier(
    config: TaskConfig, run_dir: str | Path, strategy: tf.distribute.Strategy | None = None, evaluate: bool = True
) -> dict[str, Any]:
    """Trains (or resumes) `config` in `run_dir`, then evaluates best.keras on the test split.

    Returns {"run_dir", "epochs" (trained over the whole run), "history" (column -> values),
    "metrics" (the evaluation report, or None when `evaluate` is False)}.
    """
    result = train_task(task_of(config), config, run_dir, strategy, evaluate=evaluate)
    return {"run_dir": result.run_dir, "epochs": result.epochs, "history": result.history, "metrics": result.report}
