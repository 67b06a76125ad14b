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

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import keras
import tensorflow as tf
import yaml

from common.atomic import atomic_write_text
from common.config import to_dict
from common.mixed_precision import PrecisionChoice, choose_precision
from common.shard_checks import verify_shards
from experiments.config import ExperimentConfig
from experiments.cross_validation import run_cross_validation
from experiments.data import PreparedData, data_record, data_scale, prepare_data
from experiments.distribute import is_chief, make_strategy, worker_index
from experiments.pipelines import (  # noqa: F401 -- importing a pipeline module registers it
    demo,
    lung_then_classify,
    nodule_transfer,
    pipeline_run,
    streams,
    uncertainty,
)
from experiments.reproduce import config_hash
from experiments.run_folder import git_commit, hardware, package_versions, write_json
from experiments.run_start import RunStart, start_run
from experiments.tables import HEADLINES, initialisation
from experiments.tasks import Summary, run_plain_row


@dataclass
class RunContext:
    """What a task or pipeline needs besides its data: where to read and write, the strategy, and
    `run_task` (`run_task` below), with which a composed pipeline runs its parts."""

    config: ExperimentConfig
    data_dir: Path
    cache_dir: Path
    run_dir: Path
    strategy: tf.distribute.Strategy
    run_task: Callable[[RunContext, PreparedData], Summary]


def _worker_dir(out_dir: Path, name: str) -> Path:
    """A non-chief worker's folder `out/.cache/worker-<i>/<name>` (its checkpoints and backups)."""
    scratch = out_dir / ".cache" / f"worker-{worker_index()}" / name
    scratch.mkdir(parents=True, exist_ok=True)
    return scratch


def run_task(context: RunContext, prepared: PreparedData) -> Summary:
    """Dispatches a row to its registered pipeline, or to the plain classification / segmentation task."""
    config = context.config
    if config.pipeline:
        return pipeline_run(config.pipeline)(context, prepared)
    return run_plain_row(config, prepared, context.run_dir, context.strategy)


def run_experiment(
    name: str,
    data_dir: Path,
    out_dir: Path,
    overrides: list[str] = (),
    strategy: str | None = None,
    mixed_precision: str | None = None,
    resume: bool = False,
    scale: str = "full",
    verify: bool = True,
) -> Path:
    """Runs one named experiment (its `scale` variant) and returns its run folder (the worker folder
    on non-chief workers).

    The config is checked and the inputs found before anything is written (`experiments.run_start`);
    a new run writes into a hidden pending folder that is published (renamed, `latest` pointed at
    it) once its data are prepared and, with `verify`, every shard matches its manifest SHA-256. A
    run that fails before that leaves nothing. `resume` continues the latest run from its own
    experiment.yaml (see `run_start.resumed_config` for the `--set`s allowed then).
    """
    out_dir, data_dir = Path(out_dir), Path(data_dir)
    chief = is_chief()
    start = start_run(name, out_dir, data_dir, list(overrides), scale, resume, folder=chief)
    try:
        return _run_started(start, name, out_dir, data_dir, list(overrides), strategy, mixed_precision, verify)
    finally:
        start.discard()  # a no-op once published


def apply_precision(config: ExperimentConfig) -> PrecisionChoice:
    """Resolves `config.runtime.precision` ("auto": by this machine) into the policy every model of the
    run trains under (`common.task.train_task` resolves it the same way); returns the choice."""
    return choose_precision(config.runtime.precision)


def _run_started(
    start: RunStart,
    name: str,
    out_dir: Path,
    data_dir: Path,
    overrides: list[str],
    strategy: str | None,
    mixed_precision: str | None,
    verify: bool,
) -> Path:
    config = start.config
    resolved = to_dict(config)  # as the row's YAML, scale and --sets give it, before the machine's choices
    config.runtime.strategy = strategy or config.runtime.strategy
    config.runtime.precision = mixed_precision or config.runtime.precision
    if config.runtime.deterministic:
        make_deterministic(config.runtime.seed)
    distribution = make_strategy(config.runtime.strategy)
    precision = apply_precision(config)  # after the strategy: it lists the GPUs
    chief = is_chief()
    run_dir = start.folder if chief else _worker_dir(out_dir, config.name)
    cache_dir = out_dir / ".cache" / ("chief" if chief else f"worker-{worker_index()}")
    record = {
        "name": config.name,
        "paper": config.paper,
        "row": config.row,
        "scale": config.scale,
        "command": "python -m experiments run "
        + " ".join([name, f"--scale {config.scale}", *(f"--set '{o}'" for o in overrides)]),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "config_hash": config_hash(resolved),
        "initialisation": initialisation(resolved),
        "pretrained": initialisation(resolved) != "random",
        "published": config.evaluation.published,
        "git_commit": git_commit(),
        "versions": package_versions(),
        "hardware": hardware(type(distribution).__name__, distribution.num_replicas_in_sync),
        "jit_compile": "auto (resolves to False on CPU, where XLA is slower; see RUNTIME.md)",
        "precision": precision.as_record(),
        "global_batch_size": config.data.batch_size * distribution.num_replicas_in_sync,
    }
    if start.resumed:
        record = _resumed_record(run_dir, record, start.resume_changes)
    clock, cpu_clock = time.perf_counter(), time.process_time()
    prepared = None
    if config.data.folds:  # each fold prepares its own data and records it in its folder
        record["split_type"] = f"{config.data.folds}-fold cross-validation by case ({config.data.cv_protocol})"
        record["data_scale"] = data_scale(config.data, data_dir, cache_dir, config.runtime.seed)
    else:
        prepared = prepare_data(config.data, data_dir, cache_dir, config.runtime.seed)
        record.update(data_record(prepared))
        if verify:
            print(verify_shards(prepared.manifests))
    run_dir = start.publish() if chief else run_dir
    atomic_write_text(run_dir / "experiment.yaml", yaml.safe_dump(to_dict(config), sort_keys=False))
    write_json(run_dir / "run.json", record)
    context = RunContext(config, data_dir, cache_dir, run_dir, distribution, run_task)
    summary = run_cross_validation(context) if prepared is None else run_task(context, prepared)
    record["seconds"] = round(time.perf_counter() - clock, 1)
    record["cpu_seconds"] = round(time.process_time() - cpu_clock, 1)  # all threads of this process
    record["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    if not chief:
        return run_dir
    write_json(run_dir / "run.json", record)
    write_json(run_dir / "summary.json", summary)
    print(one_line_summary(config, summary, record["seconds"], run_dir))
    return run_dir


def make_deterministic(seed: int) -> None:
    """Same command, same numbers (one machine): seeds Python, NumPy and TensorFlow and turns on
    TensorFlow's op determinism (ops without a deterministic kernel then raise). The input pipelines
    get `deterministic=True` from the task configs (`runtime.deterministic`)."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def _resumed_record(run_dir: Path, record: dict, changes: dict) -> dict:
    """The run's first record (its start time and data) with this resume appended under "resumes"."""
    path = run_dir / "run.json"
    first = json.loads(path.read_text()) if path.is_file() else {}
    resumes = [*first.get("resumes", []), {"at": record["started"], "changes": changes}]
    return {**record, "started": first.get("started", record["started"]), "resumes": resumes}


def one_line_summary(config: ExperimentConfig, summary: Summary, seconds: float, run_dir: Path) -> str:
    """`name: metric value, ... in N s -> folder`, with the headline metrics (also `<part>_<metric>`)."""
    shown = [
        key for key in summary for headline in HEADLINES if key == headline or key.endswith(f"_{headline}")
    ]
    metrics = ", ".join(
        f"{key} {summary[key]['value']:.3f}" for key in shown if summary[key]["value"] is not None
    )
    return f"{config.name}: {metrics or 'no headline metric'} in {seconds:.0f} s -> {run_dir}"
