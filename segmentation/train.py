"""Training a segmentation model (`python -m segmentation train --config CFG.yaml --data DIR --run-dir DIR`).

The config is the `common.config.TaskConfig` tree; the task (model, inputs, losses, threshold, bundle)
is `segmentation.task.SegmentationTask`, trained by `common.task.train_task`. A run folder ends up
holding `config.yaml`, `best.keras` (the best epoch by `training.monitor`), `history.csv`,
`training_curves.png`, `tensorboard/`, the validation threshold files and `bundle.json`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import keras
import tensorflow as tf

from common.config import TaskConfig
from common.task import train_task
from segmentation.task import SEGMENTATION_TASK


def train_segmenter(
    config: TaskConfig,
    run_dir: str | Path,
    strategy: tf.distribute.Strategy | None = None,
    model_builder: Callable[[], keras.Model] | None = None,
    extra_callbacks: Sequence[keras.callbacks.Callback] = (),
) -> Path:
    """Trains `config` in `run_dir` (resuming what is there), chooses the threshold on validation,
    writes the bundle and returns the path of `best.keras` (the test split is scored by the caller:
    `segmentation.evaluate`, or the whole-volume evaluation).

    model_builder replaces the registry model (e.g. a tiny model in tests, a pretrained initialisation).
    """
    return train_task(
        SEGMENTATION_TASK,
        config,
        run_dir,
        strategy,
        evaluate=False,
        model_builder=model_builder,
        extra_callbacks=extra_callbacks,
    ).best
