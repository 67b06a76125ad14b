"""Plain classification and segmentation rows: a row's config tree, with its TFRecords filled in, trained
by `common.task.train_task` with the row's task inside the strategy, evaluated, and summarised.

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

from classification.task import CLASSIFICATION_TASKS
from common.bootstrap import ci_entry
from common.config import TaskConfig, replaced
from common.task import train_task
from experiments.config import ExperimentConfig
from experiments.data import PreparedData
from segmentation.task import SEGMENTATION_TASK

Summary = dict[str, dict[str, float | None]]


def task_config(config: TaskConfig, tfrecords: list[str], replicas: int = 1, **changes: Any) -> TaskConfig:
    """The tree a row trains with: its TFRecord folders filled in, the global batch (per-replica batch x
    replicas), and dotted-key `changes` (e.g. **{"data.mask_names": ["lung"]}) applied."""
    return replaced(
        config,
        **{"data.tfrecords": list(tfrecords), "data.batch_size": config.data.batch_size * replicas, **changes},
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


# The task of each `model.task` and how its test report becomes the row's summary.
TASKS = {**CLASSIFICATION_TASKS, SEGMENTATION_TASK.name: SEGMENTATION_TASK}
SUMMARIES = {
    **dict.fromkeys(CLASSIFICATION_TASKS, summarize_classification),
    SEGMENTATION_TASK.name: summarize_segmentation,
}


def run_plain_row(
    config: ExperimentConfig, prepared: PreparedData, run_dir: Path, strategy: tf.distribute.Strategy
) -> Summary:
    """Trains a row's model with its task (`common.task.train_task`: validation threshold, bundle, test
    evaluation) on the prepared TFRecords; returns the row's summary."""
    folders = [str(manifest.directory) for manifest in prepared.manifests]
    run = task_config(config, folders, strategy.num_replicas_in_sync)
    report = train_task(TASKS[config.model.task], run, run_dir, strategy).report
    return SUMMARIES[config.model.task](report)
