"""S4: segment the lungs of chest X-rays, then classify the original image, the lungs only, or the image
without its lungs (`pipeline: lung_then_classify`).

Rows `s4_<classifier>_<variant>`; `pipeline_options`:
- `variant`: "original", "segmented_lung" (outside the predicted lungs set to 0) or "without_lung"
  (the predicted lungs set to 0);
- `lung_segmenter`: {name (decoder, "fpn"), encoder ("densenet121"), epochs, weights (default: the
  row's `model.weights`), options (builder keyword options)}.

Steps:
1. The lung segmenter is trained on the row's TFRecords' `lung` masks (threshold chosen on val) and
   evaluated on test, once: it is cached under `cache_dir/lung_segmenter-<fingerprint>`, so the nine
   rows share it.
2. Every record of every split is segmented with it, and the three variants are written as TFRecord
   folders (same splits, shards, keys, labels and patient ids; masks as they were) under
   `cache_dir/lung_variants-<fingerprint>/<variant>`, also once. The variants use the PREDICTED masks,
   as a user's new images would: a classifier that does well "without lungs" looks at a shortcut.
3. The row's classifier is trained and evaluated on its variant in `run_dir`; the summary adds the
   segmenter's test Dice (`lung_dice`, per image) and `variants.png` shows one test image per class in
   the three variants.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from classification.train import train_classifier
from common.config import ModelConfig, to_dict
from common.model_input import model_input
from common.plots import plt, save_figure
from common.task import train_task
from common.training_config import TrainingConfig
from experiments.config import ExperimentConfig
from experiments.data import PreparedData
from experiments.pipelines import register_pipeline
from experiments.pipelines.options import ROW_WEIGHTS, VARIANTS, LungSegmenterOptions, pipeline_options
from experiments.run_folder import write_json
from experiments.tasks import (
    Summary,
    summarize_classification,
    summarize_segmentation,
    task_config,
)
from segmentation.predict import Segmenter, load_segmenter, predicted_masks
from segmentation.task import SEGMENTATION_TASK
from tfrecords.manifest import MANIFEST_NAME, Manifest, load_manifest, sha256_file
from tfrecords.reader import read_examples
from tfrecords.writer import DecodedExample, rewrite_images

if TYPE_CHECKING:  # the runner imports the pipelines
    from experiments.runner import RunContext

DONE = "done.json"
# The row's training settings the lung segmenter shares; the rest (the classifier's monitor, class
# weights, fine-tuning stages) keep their defaults.
SHARED_TRAINING_FIELDS = (
    "learning_rate",
    "optimizer",
    "lr_schedule",
    "early_stopping_patience",
    "tensorboard",
    "verbose",
)
# The data settings that shape the lung segmenter's training (its cache key); the classifier's own
# (label names, balanced sampling, ...) do not.
SEGMENTER_DATA_FIELDS = ("image_size", "channels", "batch_size", "augment", "steps_per_epoch", "cache")


def make_variants(image: np.ndarray, lung_mask: np.ndarray) -> dict[str, np.ndarray]:
    """The three inputs of one image: (H, W) uint8/uint16 image, (H, W) {0, 1} lung mask -> name ->
    (H, W) array of the image's dtype: original, segmented_lung = image * mask, without_lung =
    image * (1 - mask)."""
    if lung_mask.shape != image.shape[:2]:
        raise ValueError(f"lung mask has shape {lung_mask.shape}, image has {image.shape[:2]}")
    if not np.isin(lung_mask, (0, 1)).all():
        raise ValueError("the lung mask must hold only 0 and 1")
    mask = lung_mask.astype(image.dtype)
    return {"original": image, "segmented_lung": image * mask, "without_lung": image * (1 - mask)}


def _fingerprint(payload: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _data_fingerprint(manifest: Manifest) -> list[str]:
    return [shard.sha256 for split in sorted(manifest.splits) for shard in manifest.split(split).shards]


def train_lung_segmenter(
    config: ExperimentConfig,
    manifest: Manifest,
    cache_dir: Path,
    strategy,
    options: LungSegmenterOptions,
) -> tuple[Path, dict[str, Any]]:
    """Trains (once; cached by a fingerprint of data, model and training settings) the lung segmenter
    and evaluates it on test. Returns (best.keras path, the test metrics.json)."""
    replicas = strategy.num_replicas_in_sync
    shared = {name: getattr(config.training, name) for name in SHARED_TRAINING_FIELDS}
    training = TrainingConfig(epochs=options.epochs, **shared)  # monitor val_loss, one stage
    seg_config = task_config(
        config,
        [str(manifest.directory)],
        replicas,
        **{
            "data.mask_names": ["lung"],
            "model": ModelConfig(
                task="segmentation",
                name=options.name,
                encoder=options.encoder,
                weights=config.model.weights if options.weights == ROW_WEIGHTS else options.weights,
                loss="bce_dice",
                options=dict(options.options),
            ),
            "training": training,
        },
    )
    settings = {
        "model": to_dict(seg_config.model),
        "training": to_dict(seg_config.training),
        "data": {key: value for key, value in to_dict(seg_config.data).items() if key in SEGMENTER_DATA_FIELDS},
        "seed": seg_config.runtime.seed,
        "precision": seg_config.runtime.precision,
        "threshold_average": seg_config.evaluation.threshold_average,
    }
    key = _fingerprint({"data": _data_fingerprint(manifest), "settings": settings})
    run_dir = cache_dir / f"lung_segmenter-{key}"
    best = run_dir / "best.keras"
    if (run_dir / DONE).is_file():
        return best, json.loads((run_dir / "eval" / "metrics.json").read_text())
    metrics = train_task(SEGMENTATION_TASK, seg_config, run_dir, strategy).report
    write_json(run_dir / DONE, {"tfrecords": str(manifest.directory), "settings": settings})
    return best, metrics


def lung_masks(segmenter: Segmenter, images: list[np.ndarray]) -> np.ndarray:
    """Stored images (each (H, W) of one size) -> (N, H, W) uint8 predicted lung masks. Inputs are
    prepared as `tfrecords.reader.make_dataset` does (`common.model_input.model_input`)."""
    inputs = np.stack([model_input(image, segmenter.input_size, segmenter.channels) for image in images])
    return predicted_masks(segmenter, inputs, images[0].shape[:2])


def write_variants(manifest: Manifest, segmenter_path: Path, cache_dir: Path) -> dict[str, Path]:
    """The three variant TFRecord folders of `manifest` from the predicted lung masks (cached)."""
    key = _fingerprint({"data": _data_fingerprint(manifest), "segmenter": sha256_file(segmenter_path)})
    out_dir = cache_dir / f"lung_variants-{key}"
    if not all((out_dir / name / MANIFEST_NAME).is_file() for name in VARIANTS):
        segmenter = load_segmenter(segmenter_path)

        def transform(batch: list[DecodedExample]) -> dict[str, list[np.ndarray]]:
            masks = lung_masks(segmenter, [example["image"] for example in batch])
            variants = [
                make_variants(example["image"], mask) for example, mask in zip(batch, masks, strict=True)
            ]
            return {name: [variant[name] for variant in variants] for name in VARIANTS}

        note = {"lung_segmenter": str(segmenter_path), "lung_threshold": list(segmenter.threshold.thresholds)}
        rewrite_images(manifest, out_dir, VARIANTS, transform, note)
    return {name: out_dir / name for name in VARIANTS}


def plot_variants(folders: Mapping[str, Path], out_path: Path, split: str = "test") -> Path:
    """`variants.png`: one image per class (rows, the first of each in `split`) in each variant (columns)."""
    first: dict[str, dict[str, np.ndarray]] = {}
    for name, folder in folders.items():
        for example in read_examples(load_manifest(folder), split):
            label = "+".join(example["labels"]) or "unlabelled"
            first.setdefault(label, {}).setdefault(name, example["image"])
    labels = sorted(first)
    figure, axes = plt.subplots(
        len(labels), len(folders), figsize=(2.4 * len(folders), 2.4 * len(labels)), squeeze=False
    )
    for row, label in enumerate(labels):
        for column, name in enumerate(folders):
            axis = axes[row][column]
            axis.imshow(first[label][name], cmap="gray")
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(name.replace("_", " "))
            if column == 0:
                axis.set_ylabel(label)
    figure.tight_layout()
    return save_figure(figure, out_path)


@register_pipeline("lung_then_classify")
def run(context: RunContext, prepared: PreparedData) -> Summary:
    """One S4 row: the cached lung segmenter and variants, then the classifier on the row's variant."""
    config = context.config
    options = pipeline_options(config)
    variant = options.variant
    manifest = prepared.manifests[0]
    segmenter_path, seg_metrics = train_lung_segmenter(
        config, manifest, context.cache_dir, context.strategy, options.lung_segmenter
    )
    folders = write_variants(manifest, segmenter_path, context.cache_dir)
    plot_variants(folders, context.run_dir / "variants.png")
    replicas = context.strategy.num_replicas_in_sync
    run_config = task_config(config, [str(folders[variant])], replicas)
    result = train_classifier(run_config, context.run_dir, context.strategy)
    summary = summarize_classification(result["metrics"])
    lung = summarize_segmentation(seg_metrics)
    summary["lung_dice"] = lung["dice_lung"]
    summary["lung_dice_pooled"] = lung["dice_lung_pooled"]
    write_json(
        context.run_dir / "lung_segmenter.json",
        {
            "model": str(segmenter_path),
            "variant": variant,
            "variant_tfrecords": str(folders[variant]),
            "threshold": seg_metrics.get("threshold"),
            "lung_dice": lung["dice_lung"],
        },
    )
    return summary
