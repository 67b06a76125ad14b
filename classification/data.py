"""Classification inputs from one or more TFRecord folders (written by `python -m tfrecords write`).

Several folders (e.g. a CT set and an X-ray set for the S0 multi-modal classifier) are mixed into one
stream; `label_map` renames each folder's labels onto the run's class names (e.g. "COVID-19" ->
"COVID", "Normal" -> "NonCOVID"). Targets are the task's (`classification.task`):
- "binary": float32 (B, 1), 1.0 for `positive_label`;
- "multiclass": int32 (B,) class index into `class_names`;
- "multilabel": float32 (B, K) multi-hot over `class_names` (or over mask presence,
  `mask_label_min_pixels`).
Images are float32 (B, H, W, channels) in [0, 1]: the classifiers scale inside the model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import tensorflow as tf

from common.config import TaskConfig
from tfrecords.augment import AugmentConfig
from tfrecords.manifest import Manifest, load_manifest
from tfrecords.read_config import ReadConfig
from tfrecords.reader import META_FIELDS, make_dataset

if TYPE_CHECKING:
    from classification.task import ClassificationTask


class ClassificationInputs:
    """A classifier run's inputs, resolved from its config tree: the TFRecord folders' manifests, the
    run's class names and positive class, and the `data` settings that shape the streams.

    Built from `config.data` (tfrecords, label_names -> class_names, label_map, positive_label,
    image_size, channels, batch_size, augment, cache, balanced_sampling, mask_label_min_pixels,
    splits) and `config.runtime` (seed, deterministic) for `task`, the task object of
    `config.model.task` (make them with `classification.task.task_of(config).inputs(config)`).
    class_names default to the first folder's manifest labels; positive_label ("binary") to the
    first class.
    """

    def __init__(self, config: TaskConfig, task: ClassificationTask) -> None:
        data, self.task = config.data, task
        if not data.tfrecords:
            raise ValueError("data.tfrecords: a classifier needs at least one TFRecord folder")
        self.folders = [data.tfrecords] if isinstance(data.tfrecords, str | Path) else list(data.tfrecords)
        self.manifests = [load_manifest(folder) for folder in self.folders]
        self.class_names = list(data.label_names) or list(self.manifests[0].label_names)
        self.label_map = dict(data.label_map)
        self.positive_label = task.positive_label(self.class_names, data.positive_label)
        self.image_size, self.channels, self.batch_size = data.image_size, data.channels, data.batch_size
        self.augment = data.augment or None
        self.cache, self.balanced_sampling = data.cache, data.balanced_sampling
        self.mask_label_min_pixels = data.mask_label_min_pixels
        self.splits = dict(data.splits)
        self.seed, self.deterministic = config.runtime.seed, config.runtime.deterministic
        if self.mask_label_min_pixels is not None:
            self._check_mask_labels()
            return
        for manifest in self.manifests:
            self.class_indices(manifest)  # fails early on an unmapped label

    def _check_mask_labels(self) -> None:
        self.task.check_mask_labels()
        if self.mask_label_min_pixels < 1:
            raise ValueError(f"mask_label_min_pixels must be >= 1, got {self.mask_label_min_pixels}")
        for manifest in self.manifests:
            missing = sorted(set(self.class_names) - set(manifest.mask_names))
            if missing:
                raise ValueError(
                    f"{manifest.directory}: no mask(s) {missing} for mask-derived labels; masks: {list(manifest.mask_names)}"
                )

    @property
    def output_names(self) -> list[str]:
        """One name per model output unit: the positive class for binary, else every class."""
        return self.task.output_names(self.class_names, self.positive_label)

    def class_indices(self, manifest: Manifest) -> list[int]:
        """For each manifest label (in manifest order), the index of its class in `class_names`."""
        indices = []
        for label in manifest.label_names:
            name = self.label_map.get(label, label)
            if name not in self.class_names:
                raise ValueError(
                    f"{manifest.directory}: label {label!r} maps to no class of {self.class_names}; add it to label_map"
                )
            indices.append(self.class_names.index(name))
        return indices

    def class_counts(self, split: str) -> list[int]:
        """Records per class (in `class_names` order) of one split over all folders."""
        counts = [0] * len(self.class_names)
        for manifest in self.manifests:
            for label, index in zip(manifest.label_names, self.class_indices(manifest), strict=True):
                counts[index] += manifest.split(split).class_counts.get(label, 0)
        return counts


def load_split(
    config: ClassificationInputs, split: str, training: bool = False, with_meta: bool = False
) -> tf.data.Dataset:
    """Batches of (image, target) or (image, target, meta) for one split of every folder.

    training: shuffle, augment (when configured) and, with `balanced_sampling`, repeat forever with
    classes drawn equally often (pass steps_per_epoch to fit). Otherwise a deterministic single pass.
    """
    streams, sizes = [], []
    from_masks = config.mask_label_min_pixels is not None
    for manifest in config.manifests:
        read = ReadConfig(
            split,
            task="segmentation" if from_masks else config.task.record_task,
            batch_size=config.batch_size,
            image_size=None if from_masks else config.image_size,  # masks are counted as stored
            augment=AugmentConfig(**config.augment) if training and config.augment else None,
            shuffle=training,
            cache=config.cache,
            seed=config.seed,
            deterministic=config.deterministic or not training,
            channels=config.channels,
            mask_names=config.class_names if from_masks else None,
            with_meta=True,
        )
        stream = make_dataset(manifest, read)
        if config.cache:
            _complete_cache(stream)
        mapper = _mask_label_mapper(config) if from_masks else _target_mapper(config, manifest)
        streams.append(stream.unbatch().map(mapper))
        sizes.append(manifest.split(split).count)
    if training and config.balanced_sampling:
        dataset = _balanced(streams, config)
    elif len(streams) == 1:
        dataset = streams[0]
    elif training:
        weights = [size / sum(sizes) for size in sizes]
        dataset = tf.data.Dataset.sample_from_datasets(streams, weights, seed=config.seed)
    else:
        dataset = streams[0]
        for stream in streams[1:]:
            dataset = dataset.concatenate(stream)
    if not with_meta:
        dataset = dataset.map(lambda image, target, meta: (image, target))
    dataset = dataset.batch(config.batch_size)
    if not (training and config.balanced_sampling):  # tells Keras the epoch length
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(steps_per_epoch(config, split)))
    dataset = dataset.prefetch(tf.data.AUTOTUNE)
    return dataset.with_options(_options(deterministic=config.deterministic or not training))


def _complete_cache(stream: tf.data.Dataset) -> None:
    """Fills the in-memory cache of `make_dataset` with `cache=True` with one full pass over `stream`.

    Under a tf.distribute strategy, Keras reads one batch of every dataset at the start of fit,
    evaluate and predict (`_maybe_symbolic_build`) and drops that iterator. A memory cache is shared
    by every iterator of its dataset, and while it is incomplete a dropped part-way iterator can
    leave it holding part of a pass (TensorFlow 2.21 logs "The calling iterator did not fully read
    the dataset being cached"): the next pass then yields fewer batches. Measured on the COVID-QU-Ex
    val split (180 images, 12 batches): 2-4 batches in about 1 of 15 tries, which `assert_cardinality`
    turns into "Input dataset was expected to contain 12 elements but contained only 5 elements".
    Once a pass has completed the cache, every iterator only reads it. Costs one pass of the
    pipeline (with augmentation for training streams); the decoding it does is not repeated later.
    """
    stream.reduce(np.int64(0), _count_element)


def _count_element(count: tf.Tensor, _element) -> tf.Tensor:
    return count + 1


def steps_per_epoch(config: ClassificationInputs, split: str) -> int:
    """Batches in one pass over `split` of every folder (for the endless balanced stream)."""
    total = sum(manifest.split(split).count for manifest in config.manifests)
    return max(1, -(-total // config.batch_size))


def _target_mapper(config: ClassificationInputs, manifest: Manifest):
    """(image, source target, meta) -> (image, run target, meta): the task's target, see the module
    docstring."""
    to_class = tf.constant(config.class_indices(manifest), tf.int32)

    def remap(image: tf.Tensor, target: tf.Tensor, meta: dict[str, tf.Tensor]):
        return image, config.task.target(target, to_class, config), meta

    return remap


def _mask_label_mapper(config: ClassificationInputs):
    """(image, masks (H, W, K), meta) -> (image resized to image_size, (K,) float32 presence, meta)."""
    size = (config.image_size, config.image_size)

    def to_labels(image: tf.Tensor, masks: tf.Tensor, meta: dict[str, tf.Tensor]):
        present = tf.reduce_sum(masks, axis=(0, 1)) >= float(config.mask_label_min_pixels)
        return tf.image.resize(image, size, method="bilinear"), tf.cast(present, tf.float32), meta

    return to_labels


def _balanced(streams: list[tf.data.Dataset], config: ClassificationInputs) -> tf.data.Dataset:
    """An endless stream drawing each of the task's K target values with probability 1 / K."""
    task = config.task
    num_values = task.sampling_classes(len(config.class_names))
    mixed = streams[0]
    for stream in streams[1:]:
        mixed = mixed.concatenate(stream)
    per_class = [
        mixed.filter(lambda image, target, meta, k=k: tf.equal(task.sampling_class(target), k)).repeat()
        for k in range(num_values)
    ]
    return tf.data.Dataset.sample_from_datasets(per_class, seed=config.seed)


def _options(deterministic: bool) -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = deterministic
    options.autotune.enabled = not deterministic
    return options


def meta_frame(batches_meta: Sequence[Mapping[str, np.ndarray]]) -> pd.DataFrame:
    """Concatenates per-batch meta dicts (bytes arrays) into a DataFrame of str columns META_FIELDS."""
    columns = {
        name: [value.decode() for batch in batches_meta for value in np.asarray(batch[name]).ravel()]
        for name in META_FIELDS
    }
    return pd.DataFrame(columns)
