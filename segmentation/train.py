"""Training a segmentation model on a TFRecord directory (`python -m segmentation train`).

A run folder (`run_dir`) ends up holding:
- `best.keras`: the best epoch by `training.monitor` (the shared callbacks of `common.callbacks`),
- `history.csv`, `training_curves.png`, `tensorboard/`,
- `config.json`: the full configuration, the data manifest's preprocessing spec (so `predict` can
  repeat it) and the precision / XLA choices,
- `threshold.json`, `threshold_curve.png`, `pr_curve.png`: the binarisation threshold chosen on the
  validation split with `best.keras` (sigmoid models with a validation split only),
- `bundle.json`: the model bundle (`segmentation.bundle`): everything `predict` needs to replay the
  training data's preprocessing (recipe, lung-model dependency) on a raw file.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf
import yaml

from common.plots import plot_training_curves
from common.training import TrainingConfig, fit, read_history
from data_prep.errors import DataError
from segmentation.bundle import write_bundle
from segmentation.evaluate import select_threshold
from segmentation.losses import get_loss
from segmentation.metrics import DiceCoefficient, IoUScore
from segmentation.models import build_segmenter
from tfrecords.augment import AugmentConfig
from tfrecords.manifest import load_manifest
from tfrecords.read_config import ReadConfig
from tfrecords.reader import make_dataset


@dataclass
class SegmentationConfig:
    """One segmentation run.

    data: a TFRecord directory written by `python -m tfrecords write` (or its manifest.json).
    mask_names: the masks to predict, one output channel each (sigmoid). With `multiclass`, the model
        has a softmax over background + the masks instead (the masks must not overlap; where they do,
        the first listed wins).
    decoder / encoder / encoder_weights / model_options: passed to `segmentation.models.build_segmenter`.
    image_size: model input in pixels (square); channels: 1 (grayscale) or 3 (repeated gray).
    loss / loss_options / class_weights: see `segmentation.losses.get_loss`.
    augment: None (off) or `tfrecords.augment.AugmentConfig` fields, e.g. {"rotation_degrees": 10}.
    deterministic: fixed input order and tf.data autotuning off for training data too (reproducible
        runs and tests; evaluation data is always read in a fixed order).
    threshold_average: the Dice the validation threshold maximises: "per_image", "pooled" or "per_case".
    steps_per_epoch: None = one pass over the training split per epoch; N = N batches per epoch from
        the repeated training split (more steps per epoch on small sets, e.g. so that BatchNorm's
        moving statistics keep up before each validation).
    """

    data: str
    run_dir: str
    mask_names: tuple[str, ...] = ("infection",)
    multiclass: bool = False
    decoder: str = "unet"
    encoder: str = "plain"
    encoder_weights: str | None = None
    model_options: dict[str, Any] = field(default_factory=dict)
    image_size: int = 128
    channels: int = 1
    batch_size: int = 8
    loss: str = "bce_dice"
    loss_options: dict[str, Any] = field(default_factory=dict)
    class_weights: list[float] | None = None
    augment: dict[str, Any] | None = field(default_factory=dict)
    train_split: str = "train"
    val_split: str = "val"
    cache: bool = True
    deterministic: bool = False
    threshold_average: str = "per_image"
    steps_per_epoch: int | None = None
    training: TrainingConfig = field(default_factory=TrainingConfig)

    @property
    def num_outputs(self) -> int:
        """Output channels: one per mask, plus background for a softmax model."""
        return len(self.mask_names) + (1 if self.multiclass else 0)

    @property
    def channel_names(self) -> tuple[str, ...]:
        return (("background",) if self.multiclass else ()) + tuple(self.mask_names)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> SegmentationConfig:
        """From a mapping (a YAML/JSON file); the "training" section is a `TrainingConfig`."""
        values = dict(values)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown segmentation option(s) {unknown}; known: {sorted(known)}")
        missing = [name for name in ("data", "run_dir") if not values.get(name)]
        if missing:
            raise ValueError(f"segmentation config needs {' and '.join(missing)}")
        training = values.pop("training", {}) or {}
        if not isinstance(training, TrainingConfig):
            training = TrainingConfig.from_dict(training)
        if "mask_names" in values:
            values["mask_names"] = tuple(values["mask_names"])
        return cls(**values, training=training)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_config(path: str | Path, overrides: Mapping[str, Any] | None = None) -> SegmentationConfig:
    """Reads a YAML or JSON config file; `overrides` (e.g. from command-line flags) replace its keys."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "no such config file")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise DataError(path, f"not valid YAML/JSON ({error})") from error
    if not isinstance(values, dict):
        raise ValueError(f"{path}: a config file must hold a mapping, got {type(values).__name__}")
    return SegmentationConfig.from_dict({**values, **(overrides or {})})


def build_model(config: SegmentationConfig) -> keras.Model:
    """The configured model from the `segmentation.models` registry."""
    input_shape = (config.image_size, config.image_size, config.channels)
    return build_segmenter(
        config.decoder,
        config.encoder,
        input_shape,
        config.num_outputs,
        weights=config.encoder_weights,
        **config.model_options,
    )


def compile_model(
    model: keras.Model, optimizer: keras.optimizers.Optimizer, config: SegmentationConfig
) -> None:
    """Compiles with the configured loss and the Dice / IoU training metrics (threshold 0.5 or argmax)."""
    metric_options = {"num_classes": config.num_outputs, "multiclass": config.multiclass}
    loss_options = dict(config.loss_options)
    if config.loss in ("focal", "focal_dice"):
        loss_options.setdefault("multiclass", config.multiclass)
    model.compile(
        optimizer=optimizer,
        loss=get_loss(config.loss, config.class_weights, **loss_options),
        metrics=[DiceCoefficient(**metric_options), IoUScore(**metric_options)],
    )


def to_class_ids(masks: tf.Tensor) -> tf.Tensor:
    """(B, H, W, K) binary masks -> (B, H, W, 1) int32 class ids: 0 background, k + 1 for mask k
    (the first set mask wins where masks overlap)."""
    background = tf.fill(tf.concat([tf.shape(masks)[:-1], [1]], 0), 0.5)
    return tf.argmax(tf.concat([background, masks], axis=-1), axis=-1, output_type=tf.int32)[..., None]


def make_split_dataset(config: SegmentationConfig, split: str, training: bool) -> tf.data.Dataset:
    """Batches of (image, target) for `split`, targets as the loss expects them; shuffled and
    augmented when `training`, in a fixed order otherwise."""
    augment = None
    if training and config.augment is not None:
        augment = AugmentConfig(**config.augment)
    read = ReadConfig(
        split,
        task="segmentation",
        batch_size=config.batch_size,
        image_size=config.image_size,
        augment=augment,
        shuffle=training,
        cache=config.cache,
        seed=config.training.seed,
        deterministic=config.deterministic or not training,
        channels=config.channels,
        mask_names=config.mask_names,
        repeat=training and config.steps_per_epoch is not None,
    )
    dataset = make_dataset(config.data, read)
    if config.multiclass:
        dataset = dataset.map(lambda image, masks: (image, to_class_ids(masks)))
    return dataset


def _write_json(path: Path, values: Mapping[str, Any]) -> Path:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(values, indent=2, default=str))
    os.replace(temporary, path)
    return path


def train_segmenter(
    config: SegmentationConfig,
    strategy: tf.distribute.Strategy | None = None,
    model_builder: Callable[[], keras.Model] | None = None,
    extra_callbacks: Sequence[keras.callbacks.Callback] = (),
) -> Path:
    """Trains `config` in `config.run_dir` (resuming what is there) and returns the path of `best.keras`.

    The model is built and compiled inside `strategy.scope()` (default: the current strategy) by
    `common.training.fit`. model_builder replaces the registry model (e.g. a tiny model in tests).
    Afterwards the threshold is chosen on the validation split (see `segmentation.evaluate`).
    """
    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    manifest = load_manifest(config.data)
    has_val = config.val_split in manifest.splits
    _write_json(
        run_dir / "config.json",
        {
            **config.to_dict(),
            "preprocess": manifest.preprocess.get("spec", ""),
            "channel_names": list(config.channel_names),
            "jit_compile": "auto (False on CPU; XLA is slower there, see RUNTIME.md)",
        },
    )
    train_ds = make_split_dataset(config, config.train_split, training=True)
    val_ds = make_split_dataset(config, config.val_split, training=False) if has_val else None
    training = config.training
    if not has_val and training.monitor.startswith("val_"):
        training = dataclasses.replace(training, monitor=training.monitor[4:])
    fit(
        model_builder or (lambda: build_model(config)),
        lambda model, optimizer: compile_model(model, optimizer, config),
        train_ds,
        val_ds,
        training,
        run_dir,
        strategy,
        steps_per_epoch=config.steps_per_epoch,
        extra_callbacks=extra_callbacks,
    )
    history = read_history(run_dir)
    if history:
        plot_training_curves(history, run_dir / "training_curves.png")
    best = run_dir / "best.keras"
    choice = None
    if has_val and not config.multiclass:
        model = keras.saving.load_model(best)
        choice = select_threshold(
            model,
            config.data,
            config.val_split,
            config.mask_names,
            run_dir,
            config.batch_size,
            average=config.threshold_average,
        )
    write_bundle(
        best,
        config.channel_names,
        config.multiclass,
        choice,
        manifest.preprocess.get("spec", ""),
        manifest.preprocess.get("recipe"),
        {"dataset": manifest.dataset, "tfrecords": str(manifest.directory), "split_file": manifest.split_file},
    )
    return best
