"""Plain classification and segmentation rows: an `ExperimentConfig` turned into the `classification`
and `segmentation` run configs, trained inside the strategy, evaluated, and summarised.

The summary (`summary.json` of a run) is flat: metric name -> {"value", "low", "high"} (95% bootstrap
CI, `common.bootstrap.ci_entry`, the shape every evaluation report uses). Classification: accuracy, precision, recall, specificity, f1, roc_auc, pr_auc, and the same with
a `_<modality>` / `_<source>` suffix for subgroups. Segmentation: `<score>_<per_image|pooled|per_case>`
for dice/iou/precision/recall/specificity of the first mask (plus `dice_<mask>` etc. for every mask),
`precision` / `recall` (pooled), `dice_infnet_mean`, `max_dice` and `miou` where defined.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tensorflow as tf

from classification.data import DataConfig as ClassificationData
from classification.train import EvaluationConfig, ModelConfig, RunConfig, train_classifier
from common.bootstrap import ci_entry
from experiments.config import ExperimentConfig
from experiments.data import PreparedData
from segmentation.evaluate import evaluate_segmenter
from segmentation.predict import load_segmenter
from segmentation.train import SegmentationConfig, train_segmenter

Summary = dict[str, dict[str, float | None]]


def classification_config(
    config: ExperimentConfig, tfrecords: list[str], run_dir: Path, replicas: int = 1, **data_overrides: Any
) -> RunConfig:
    """The `classification.train.RunConfig` of a row (global batch = per-replica batch x replicas)."""
    data = config.data
    values = {
        "tfrecords": tfrecords,
        "task": config.model.task,
        "class_names": data.label_names or None,
        "label_map": data.label_map,
        "image_size": data.image_size,
        "channels": data.channels,
        "batch_size": data.batch_size * replicas,
        "augment": data.augment or None,
        "seed": config.runtime.seed,
        "deterministic": config.runtime.deterministic,
    }
    values.update(data_overrides)
    return RunConfig(
        run_dir=str(run_dir),
        data=ClassificationData(**values),
        model=ModelConfig(
            name=config.model.name, weights=config.model.weights, options=dict(config.model.options)
        ),
        training=config.training,
        evaluation=EvaluationConfig(
            n_resamples=config.evaluation.bootstrap_resamples, seed=config.runtime.seed
        ),
    )


def summarize_classification(report: dict[str, Any]) -> Summary:
    """Flat summary of a `classification.evaluate` report (binary and multi-label)."""
    summary: Summary = {}

    def add(section: dict[str, Any], suffix: str = "") -> None:
        metrics = section.get("macro", section)
        for name, value in metrics.items():
            if isinstance(value, dict) and "value" in value:
                summary[f"{name}{suffix}"] = ci_entry(value["value"], value["low"], value["high"])
            elif isinstance(value, float | int) and not isinstance(value, bool):
                summary[f"{name}{suffix}"] = ci_entry(value)
        for class_name, per_class in section.get("per_class", {}).items():
            for name, value in per_class.items():
                if isinstance(value, dict) and "value" in value:
                    summary[f"{name}_{class_name}{suffix}"] = ci_entry(
                        value["value"], value["low"], value["high"]
                    )

    add(report["overall"])
    for section in ("by_modality", "by_source"):
        for group, values in report.get(section, {}).items():
            add(values, f"_{group}")
    return summary


def segmentation_config(
    config: ExperimentConfig, tfrecords: str, run_dir: Path, replicas: int = 1, **overrides: Any
) -> SegmentationConfig:
    """The `segmentation.train.SegmentationConfig` of a row."""
    data, model = config.data, config.model
    values = {
        "data": tfrecords,
        "run_dir": str(run_dir),
        "mask_names": tuple(data.mask_names or ("infection",)),
        "multiclass": model.multiclass,
        "decoder": model.name,
        "encoder": model.encoder or "plain",
        "encoder_weights": model.weights,
        "model_options": dict(model.options),
        "image_size": data.image_size,
        "channels": data.channels,
        "batch_size": data.batch_size * replicas,
        "loss": model.loss,
        "steps_per_epoch": data.steps_per_epoch,
        "augment": data.augment or None,
        "training": config.training,
        "deterministic": config.runtime.deterministic,
        "threshold_average": config.evaluation.threshold_average,
    }
    values.update(overrides)
    return SegmentationConfig(**values)


def summarize_segmentation(metrics: dict[str, Any]) -> Summary:
    """Flat summary of a `segmentation.evaluate` metrics.json."""
    summary: Summary = {}
    for index, (mask, scores) in enumerate(metrics["masks"].items()):
        for score, views in scores.items():
            if not isinstance(views, dict) or "per_image" not in views:
                continue
            for view, value in views.items():
                if isinstance(value, dict) and "value" in value:
                    entry = ci_entry(value["value"], value["low"], value["high"])
                    summary[f"{score}_{mask}_{view}"] = entry
                    if view == "per_image":
                        summary[f"{score}_{mask}"] = entry
                    if index == 0:
                        summary[f"{score}_{view}"] = entry
                        if view == "pooled" and score in ("precision", "recall", "specificity"):
                            summary[score] = entry
        if index == 0:
            for key, name in (("infnet_mean_dice", "dice_infnet_mean"), ("max_dice", "max_dice")):
                if scores.get(key) is not None:
                    summary[name] = ci_entry(scores[key])
    if metrics.get("miou") is not None:
        miou = metrics["miou"]
        summary["miou"] = ci_entry(miou["value"] if isinstance(miou, dict) else miou)
    return summary


def run_classification(
    config: ExperimentConfig, prepared: PreparedData, run_dir: Path, strategy: tf.distribute.Strategy
) -> Summary:
    """Trains and evaluates one classification row; returns its summary."""
    folders = [str(manifest.directory) for manifest in prepared.manifests]
    run = classification_config(config, folders, run_dir, strategy.num_replicas_in_sync)
    result = train_classifier(run, strategy)
    return summarize_classification(result["metrics"])


def run_segmentation(
    config: ExperimentConfig, prepared: PreparedData, run_dir: Path, strategy: tf.distribute.Strategy
) -> Summary:
    """Trains, chooses the threshold on validation, evaluates on test; returns the summary."""
    manifest = prepared.manifests[0]
    run = segmentation_config(config, str(manifest.directory), run_dir, strategy.num_replicas_in_sync)
    best = train_segmenter(run, strategy)
    # The TFRecords are already preprocessed: the segmenter needs no raw-image spec here.
    metrics = evaluate_segmenter(
        load_segmenter(best, preprocess=""),
        manifest.directory,
        run_dir / "eval",
        batch_size=run.batch_size,
        seed=config.runtime.seed,
    )
    return summarize_segmentation(metrics)
