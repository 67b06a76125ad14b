"""The segmentation task of the `common.task.Task` protocol.

Inputs: a TFRecord folder (`config.data.tfrecords[0]`, written by `python -m tfrecords write`) with the
masks `config.data.mask_names`, one sigmoid output channel each; with `model.multiclass`, a softmax over
background + the masks instead (the masks must not overlap; where they do, the first listed wins).
`data.steps_per_epoch`: None = one pass over the training split per epoch; N = N batches per epoch
from the repeated training split (more BatchNorm updates per epoch on small sets).

Beside `best.keras` the run folder gets `threshold.json`, `threshold_curve.png`, `pr_curve.png` (the
binarisation threshold chosen on the validation split maximising the `evaluation.threshold_average`
Dice; sigmoid models with a validation split only) and `bundle.json`, the model bundle
(`segmentation.bundle`): everything `predict` needs to replay the training data's preprocessing
(recipe, lung-model dependency) on a raw file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from common.config import TaskConfig
from common.task import TrainingPlan
from common.training import set_batchnorm_momentum
from segmentation.bundle import write_segmenter_bundle
from segmentation.evaluate import select_threshold
from segmentation.losses import get_loss
from segmentation.metrics import DiceCoefficient, IoUScore
from segmentation.models import build_segmenter
from tfrecords.augment import AugmentConfig
from tfrecords.manifest import load_manifest
from tfrecords.read_config import ReadConfig
from tfrecords.reader import make_dataset


def tfrecord_folder(config: TaskConfig) -> str:
    """The one TFRecord folder a segmenter reads."""
    if len(config.data.tfrecords) != 1:
        raise ValueError(f"data.tfrecords: a segmenter reads one TFRecord folder, got {config.data.tfrecords!r}")
    return str(config.data.tfrecords[0])


def build_model(config: TaskConfig) -> keras.Model:
    """The configured model from the `segmentation.models` registry: `model.name` the decoder,
    `model.encoder` the backbone ("plain" when unset), one output channel per `channel_names`;
    `model.batchnorm_momentum` (when set) replaces every BatchNormalization momentum."""
    data, model = config.data, config.model
    segmenter = build_segmenter(
        model.name,
        model.encoder or "plain",
        (data.image_size, data.image_size, data.channels),
        len(config.channel_names),
        weights=model.weights,
        **model.options,
    )
    if model.batchnorm_momentum is not None:  # else the encoders' and decoders' own (blocks.BN_MOMENTUM)
        set_batchnorm_momentum(segmenter, model.batchnorm_momentum)
    return segmenter


def compile_model(model: keras.Model, optimizer: keras.optimizers.Optimizer, config: TaskConfig) -> None:
    """Compiles with the configured loss and the Dice / IoU training metrics (threshold 0.5 or argmax)."""
    multiclass = config.model.multiclass
    metric_options = {"num_classes": len(config.channel_names), "multiclass": multiclass}
    loss_options = dict(config.model.loss_options)
    if config.model.loss in ("focal", "focal_dice"):
        loss_options.setdefault("multiclass", multiclass)
    model.compile(
        optimizer=optimizer,
        loss=get_loss(config.model.loss, config.model.class_weights, **loss_options),
        metrics=[DiceCoefficient(**metric_options), IoUScore(**metric_options)],
    )




def to_class_ids(masks: tf.Tensor) -> tf.Tensor:
    """(B, H, W, K) binary masks -> (B, H, W, 1) int32 class ids: 0 background, k + 1 for mask k
    (the first set mask wins where masks overlap)."""
    background = tf.fill(tf.concat([tf.shape(masks)[:-1], [1]], 0), 0.5)
    return tf.argmax(tf.concat([background, masks], axis=-1), axis=-1, output_type=tf.int32)[..., None]


def make_split_dataset(config: TaskConfig, split: str, training: bool) -> tf.data.Dataset:
    """Batches of (image, target) for `split`, targets as the loss expects them; shuffled and
    augmented when `training`, in a fixed order otherwise."""
    data = config.data
    augment = AugmentConfig(**data.augment) if training and data.augment else None
    read = ReadConfig(
        split,
        task="segmentation",
        batch_size=data.batch_size,
        image_size=data.image_size,
        augment=augment,
        shuffle=training,
        cache=data.cache,
        seed=config.runtime.seed,
        deterministic=config.runtime.deterministic or not training,
        channels=data.channels,
        mask_names=tuple(data.mask_names or ("infection",)),
        repeat=training and data.steps_per_epoch is not None,
    )
    dataset = make_dataset(tfrecord_folder(config), read)
    if config.model.multiclass:
        dataset = dataset.map(lambda image, masks: (image, to_class_ids(masks)))
    return dataset


class SegmentationTask:
    """The "segmentation" task: per-pixel sigmoid (one channel per mask) or softmax masks."""

    name = "segmentation"

    def build_model(self, config: TaskConfig) -> keras.Model:
        return build_model(config)

    def build_inputs(self, config: TaskConfig, split: str, training: bool) -> tf.data.Dataset:
        return make_split_dataset(config, split, training)

    def compile_model(self, model: keras.Model, optimizer: keras.optimizers.Optimizer, config: TaskConfig) -> None:
        compile_model(model, optimizer, config)

    def training_plan(self, config: TaskConfig) -> TrainingPlan:
        return TrainingPlan(steps_per_epoch=config.data.steps_per_epoch)

    def has_validation(self, config: TaskConfig) -> bool:
        return config.data.splits["val"] in load_manifest(tfrecord_folder(config)).splits

    def choose_threshold(self, model: keras.Model, config: TaskConfig, run_dir: Path) -> Any:
        """Per-mask thresholds on validation (None for a softmax model: argmax needs none)."""
        if config.model.multiclass:
            return None
        return select_threshold(
            model,
            tfrecord_folder(config),
            config.data.splits["val"],
            tuple(config.data.mask_names or ("infection",)),
            run_dir,
            config.data.batch_size,
            average=config.evaluation.threshold_average,
        )

    def write_bundle(self, model: keras.Model, best: Path, config: TaskConfig, threshold: Any) -> None:
        manifest = load_manifest(tfrecord_folder(config))
        write_segmenter_bundle(model, best, config.channel_names, config.model.multiclass, threshold, manifest)

    def evaluate(self, model: keras.Model, config: TaskConfig, run_dir: Path, threshold: Any) -> dict[str, Any]:
        """Scores the test split through the bundle just written (`segmentation.evaluate`)."""
        from segmentation.bundle import load_segmenter
        from segmentation.evaluate import evaluate_segmenter

        # The TFRecords are already preprocessed: the segmenter needs no raw-image spec here.
        return evaluate_segmenter(
            load_segmenter(run_dir / "best.keras", preprocess=""),
            tfrecord_folder(config),
            run_dir / "eval",
            batch_size=config.data.batch_size,
            seed=config.runtime.seed,
            n_resamples=config.evaluation.bootstrap_resamples,
        )


SEGMENTATION_TASK = SegmentationTask()
