"""The S0 manifestation recogniser: a multi-label CNN telling which manifestations (ground-glass
opacity, consolidation, pleural effusion) a CT slice shows.

Labels come from the segmentation masks: a slice shows a manifestation when the mask of that name
has at least `min_pixels` foreground pixels at the stored resolution of the TFRecords (so a few
stray pixels of annotation do not count). The model has one sigmoid unit per manifestation; each
unit's decision threshold is chosen on the validation split (Youden's J by default) and applied to
the test split. Training, resuming and evaluation are those of `classification.train`.
`recogniser_data` gives the data fields that make any classification run the recogniser (the S0
streams pipeline adds them to its row's run config); `recogniser_config` is a whole config tree:

    data:
      tfrecords: [data/tfrecords/medseg]    # CT slices with ggo / consolidation / effusion masks
      label_names: [ggo, consolidation, effusion]
      mask_label_min_pixels: 10
      image_size: 128
      channels: 1
    model: {task: multilabel, name: plain_cnn}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from classification.task import task_of
from classification.train import train_classifier
from common.config import DataConfig, ModelConfig, TaskConfig, replaced
from common.training_config import TrainingConfig
from data_prep.records import MANIFESTATIONS

DEFAULT_MIN_PIXELS = 10


def slice_manifestations(
    masks: Mapping[str, np.ndarray],
    names: Sequence[str] = MANIFESTATIONS,
    min_pixels: int = DEFAULT_MIN_PIXELS,
) -> tuple[str, ...]:
    """The manifestations whose (H, W) {0, 1} mask has >= min_pixels foreground pixels (absent masks: no)."""
    return tuple(name for name in names if name in masks and int(np.count_nonzero(masks[name])) >= min_pixels)


def recogniser_data(
    manifestations: Sequence[str] = MANIFESTATIONS, min_pixels: int = DEFAULT_MIN_PIXELS
) -> dict[str, Any]:
    """The config-tree changes (dotted keys, for `common.config.replaced`) that make a classification
    run the recogniser: multi-label targets, one per manifestation, from masks of at least `min_pixels`
    pixels."""
    return {
        "model.task": "multilabel",
        "data.label_names": list(manifestations),
        "data.label_map": {},
        "data.mask_label_min_pixels": min_pixels,
    }


def recogniser_config(
    tfrecords: str | Path | Sequence[str | Path],
    manifestations: Sequence[str] = MANIFESTATIONS,
    min_pixels: int = DEFAULT_MIN_PIXELS,
    model: ModelConfig | None = None,
    training: TrainingConfig | None = None,
    **data_options: Any,
) -> TaskConfig:
    """The recogniser's config tree; `data_options` are further `DataConfig` fields (image_size, ...)."""
    folders = [str(tfrecords)] if isinstance(tfrecords, str | Path) else [str(f) for f in tfrecords]
    config = TaskConfig(
        data=DataConfig(tfrecords=folders, **data_options),
        model=model or ModelConfig(name="plain_cnn"),
        training=training or TrainingConfig(),
    )
    return replaced(config, **recogniser_data(manifestations, min_pixels))


def train_recogniser(
    config: TaskConfig, run_dir: str | Path, strategy: tf.distribute.Strategy | None = None
) -> dict[str, Any]:
    """Trains and evaluates the recogniser (see `classification.train.train_classifier`); the report
    has per-manifestation metrics with bootstrap CIs, each at its validation-chosen threshold."""
    if config.data.mask_label_min_pixels is None:
        raise ValueError("the recogniser needs data.mask_label_min_pixels (targets from the masks)")
    task_of(config).check_mask_labels()  # refuses a task other than "multilabel"
    return train_classifier(config, run_dir, strategy)
