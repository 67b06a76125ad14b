"""The one runner: `python -m experiments run NAME` -> a new run folder with everything a table needs.

Order of work: choose the strategy (before any other TensorFlow op), prepare the data (phantoms or
real roots, split, cached TFRecords), then train and evaluate the row (a plain classification or
segmentation task, or a named composed pipeline), inside the strategy's scope.

A run folder holds: `experiment.yaml` (the resolved config), `run.json` (git commit, package versions, hardware,
strategy, split type and data scale, manifest checksums and split files, published keys, timing),
the training outputs (`best.keras`, `history.csv`, plots, `eval/metrics.json`, CSVs) and
`summary.json` (flat metrics with CIs). Only the chief writes it; other workers of a multi-worker run
train in `out/.cache/worker-<i>/<name>` (their checkpoints and backups, for resuming).
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import tensorflow as tf
import yaml

from common.mixed_precision import choose_precision
from experiments.config import ExperimentConfig, to_dict
from experiments.data import PreparedData, prepare_data
from experiments.distribute import is_chief, make_strategy, worker_index
from experiments.registry import get_experiment
from experiments.run_folder import git_commit, hardware, new_run_dir, package_versions, write_json
from experiments.tasks import Summary, run_classification, run_segmentation

HEADLINES = ("accuracy", "roc_auc", "dice_per_image", "dice_infnet_mean", "miou", "compute_saving")
# Composed pipelines by name: module in experiments.pipelines with `run(context, prepared) -> Summary`.
PIPELINES = ("nodule_transfer", "streams", "lung_then_classify", "uncertainty", "demo")


@dataclass
class RunContext:
    """What a task or pipeline needs besides its data: where to read and write, and the strategy."""

    config: ExperimentConfig
    data_dir: Path
    cache_dir: Path
    run_dir: Path
    strategy: tf.distribute.Strategy


def _run_dir(out_dir: Path, name: str, resume: bool, chief: bool) -> Path:
    """The chief's new (or resumed) run folder; other workers train in `out/.cache/worker-<i>/<name>`."""
    if not chief:
        scratch = out_dir / ".cache" / f"worker-{worker_index()}" / name
        scratch.mkdir(parents=True, exist_ok=True)
        return scratch
    if resume:
        latest = out_dir / name / "latest"
        if not latest.exists():
            raise FileNotFoundError(f"{latest}: no earlier run of {name} to resume")
        return latest.resolve()
    return new_run_dir(out_dir, name)


def _data_record(prepared: PreparedData) -> dict:
    return {
        "split_type": prepared.split_type,
        "data_scale": prepared.data_scale,
        "manifests": [
            {
                "directory": str(m.directory),
                "dataset": m.dataset,
                "split_file": m.split_file,
                "shards": {split: [s.sha256 for s in info.shards] for split, info in m.splits.items()},
                "counts": {split: info.count for split, info in m.splits.items()},
            }
            for m in prepared.manifests
        ],
    }


def run_task(context: RunContext, prepared: PreparedData) -> Summary:
    """Dispatches a row to its pipeline, or to the plain classification / segmentation task."""
    config = context.config
    if config.pipeline:
        if config.pipeline not in PIPELINES:
            raise ValueError(f"unknown pipeline {config.pipeline!r}; known: {', '.join(PIPELINES)}")
        module = importlib.import_module(f"experiments.pipelines.{config.pipeline}")
        return module.run(context, prepared)
    if config.model.task == "segmentation":
        return run_segmentation(config, prepared, context.run_dir, context.strategy)
    return run_classification(config, prepared, context.run_dir, context.strategy)


def run_experiment(
    name: str,
    data_dir: Path,
    out_dir: Path,
    overrides: list[str] = (),
    strategy: str | None = None,
    mixed_precision: str | None = None,
    resume: bool = False,
) -> Path:
    """Runs one named experiment and returns its run folder (the worker folder on non-chief workers)."""
    config = get_experiment(name, list(overrides))
    config.runtime.strategy = strategy or config.runtime.strategy
    config.runtime.precision = mixed_precision or config.runtime.precision
    config.training.seed = config.runtime.seed
    distribution = make_strategy(config.runtime.strategy)
    precision = choose_precision(config.runtime.precision)  # after the strategy: it lists the GPUs
    config.training.mixed_precision = None if precision.policy == "float32" else precision.policy
    chief = is_chief()
    out_dir, data_dir = Path(out_dir), Path(data_dir)
    run_dir = _run_dir(out_dir, config.name, resume, chief)
    cache_dir = out_dir / ".cache" / ("chief" if chief else f"worker-{worker_index()}")
    started = datetime.now(UTC).isoformat(timespec="seconds")
    record = {
        "name": config.name,
        "paper": config.paper,
        "row": config.row,
        "started": started,
        "published": config.evaluation.published,
        "git_commit": git_commit(),
        "versions": package_versions(),
        "hardware": hardware(type(distribution).__name__, distribution.num_replicas_in_sync),
        "jit_compile": "auto (resolves to False on CPU, where XLA is slower; see RUNTIME.md)",
        "precision": precision.as_record(),
        "global_batch_size": config.data.batch_size * distribution.num_replicas_in_sync,
    }
    (run_dir / "experiment.yaml").write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
    clock = time.perf_counter()
    prepared = prepare_data(config.data, data_dir, cache_dir, config.runtime.seed)
    record.update(_data_record(prepared))
    write_json(run_dir / "run.json", record)
    context = RunContext(config, data_dir, cache_dir, run_dir, distribution)
    summary = run_task(context, prepared)
    record["seconds"] = round(time.perf_counter() - clock, 1)
    record["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    if not chief:
        return run_dir
    write_json(run_dir / "run.json", record)
    write_json(run_dir / "summary.json", summary)
    print(one_line_summary(config, summary, record["seconds"], run_dir))
    return run_dir


def one_line_summary(config: ExperimentConfig, summary: Summary, seconds: float, run_dir: Path) -> str:
    """`name: metric value, ... in N s -> folder`, with the headline metrics (also `<part>_<metric>`)."""
    shown = [
        key for key in summary for headline in HEADLINES if key == headline or key.endswith(f"_{headline}")
    ]
    metrics = ", ".join(
        f"{key} {summary[key]['value']:.3f}" for key in shown if summary[key]["value"] is not None
    )
    return f"{config.name}: {metrics or 'no headline metric'} in {seconds:.0f} s -> {run_dir}"
