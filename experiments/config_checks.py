"""Range checks of an `ExperimentConfig`, run when a config is loaded (before any run folder or import
of TensorFlow): the dataclasses check types, these check values. Each failure is a `ConfigError`
naming the key, the allowed values and the value found."""

from __future__ import annotations

from typing import Any

from common.config import STRATEGIES, TASKS, ConfigError
from common.training_config import LR_SCHEDULES
from experiments.config import ExperimentConfig
from experiments.pipelines import check_pipeline_name
from experiments.pipelines.options import pipeline_options

SPLITS = ("publisher", "patient", "file")
MIN_IMAGE_SIZE = 8  # the smallest input the pyramid models downsample without a zero-sized map


def _at_least(where: str, value: float | None, low: float, optional: bool = False) -> None:
    if value is None and optional:
        return
    if value is None or value < low:
        raise ConfigError(f"{where}: must be at least {low:g}, got {value!r}")


def _one_of(where: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ConfigError(f"{where}: must be one of {', '.join(map(str, allowed))}; got {value!r}")


def _fraction(where: str, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ConfigError(f"{where}: must be in [0, 1), got {value!r}")


def check_config(config: ExperimentConfig) -> ExperimentConfig:
    """Raises `ConfigError` for the first out-of-range value; returns the config unchanged."""
    data, model, training, evaluation = config.data, config.model, config.training, config.evaluation
    for key in ("paper", "row"):
        if not getattr(config, key):
            raise ConfigError(f"{key}: a results-table row needs its {key} (the seed id S0..S4 or ours, and its label)")
    _at_least("data.image_size", data.image_size, MIN_IMAGE_SIZE)
    _one_of("data.channels", data.channels, (1, 3))
    _at_least("data.batch_size", data.batch_size, 1)
    _at_least("data.steps_per_epoch", data.steps_per_epoch, 1, optional=True)
    _one_of("data.split", data.split, SPLITS)
    if data.split == "file" and not data.split_file:
        raise ConfigError("data.split_file: must name a split CSV when data.split is 'file'")
    _fraction("data.val_fraction", data.val_fraction)
    _fraction("data.test_fraction", data.test_fraction)
    if data.val_fraction + data.test_fraction >= 1.0:
        raise ConfigError(
            f"data.val_fraction + data.test_fraction: must be below 1 (nothing left to train on), "
            f"got {data.val_fraction} + {data.test_fraction}"
        )
    for index, source in enumerate(data.extra):
        if set(source) != {"dataset", "root"}:
            raise ConfigError(f"data.extra[{index}]: needs exactly dataset and root, got {sorted(source)}")
    _one_of("model.task", model.task, TASKS)
    if config.pipeline:
        check_pipeline_name(config.pipeline)
    pipeline_options(config)  # typed and checked: unknown keys and values name themselves
    _at_least("training.epochs", training.epochs, 1)
    _at_least("training.fine_tune_epochs", training.fine_tune_epochs, 0)
    _at_least("training.unfreeze_top_blocks", training.unfreeze_top_blocks, 0)
    _at_least("training.early_stopping_patience", training.early_stopping_patience, 0, optional=True)
    for key in ("learning_rate", "fine_tune_learning_rate"):
        if not getattr(training, key) > 0:
            raise ConfigError(f"training.{key}: must be above 0, got {getattr(training, key)!r}")
    _one_of("training.lr_schedule", training.lr_schedule, LR_SCHEDULES)
    _one_of("training.mode", training.mode, ("min", "max"))
    _one_of("training.verbose", training.verbose, (0, 1, 2))
    _at_least("evaluation.bootstrap_resamples", evaluation.bootstrap_resamples, 0)
    _one_of("evaluation.threshold_average", evaluation.threshold_average, ("per_image", "pooled", "per_case"))
    _one_of("runtime.strategy", config.runtime.strategy, STRATEGIES)
    _at_least("runtime.seed", config.runtime.seed, 0)
    return config
