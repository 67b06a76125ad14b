"""S0 nodule-to-COVID transfer: DeepLabv3+ pretrained on lung nodules, fine-tuned on COVID-19 GGO.

El-Bana et al. initialise their COVID-19 infection DeepLabv3+ (aligned Xception-65) from a model trained
to segment pulmonary nodules. The rows `s0_deeplabv3plus_{nodule,imagenet,scratch}_transfer_ggo` differ
only in `pipeline_options.init`:
- "nodule": pretrain the same architecture on `pipeline_options.pretrain` ({dataset: lidc | msd_patches,
  root, epochs, mask_names, split, preprocess}; LIDC-layout phantoms when `data.phantom`), cached in
  `cache_dir/pretrain-<fingerprint>/best.keras` so the rows share it (the epoch of lowest validation
  loss by default, `PretrainOptions.monitor`; `transfer.json` records the epoch and the pretraining's
  per-epoch validation Dice, the summary `pretrain_best_val_dice`), then copy every layer whose name
  and shapes match (`transfer_weights`; the head keeps its fresh initialisation when the class count
  differs) and write the `TransferReport` to `run_dir/transfer.json`;
- "imagenet": `model.weights=imagenet` (fails fast, with the remedies, when the weights cannot be had:
  offline, or for our own aligned Xception-65, which has no ImageNet weights);
- "scratch": random initialisation.
Then train on the COVID data, choose the threshold on validation and evaluate on test.
`data.steps_per_epoch` (optional, for pretraining and fine-tuning) draws that many batches
per epoch from the repeated training split, so that BatchNorm statistics keep up on tiny sets.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
import tensorflow as tf

from common.atomic import atomic_path
from common.bootstrap import ci_entry
from common.config import TaskConfig
from common.task import train_task
from common.training import read_history
from experiments.config import ExperimentConfig
from experiments.data import PreparedData, dataset_root, prepare_source
from experiments.pipelines import register_pipeline
from experiments.pipelines.options import pipeline_options
from experiments.pipelines.pretrain_args import PRETRAIN_DATASETS
from experiments.pipelines.transfer import TransferReport, transfer_weights
from experiments.run_folder import write_json
from experiments.tasks import Summary, summarize_segmentation, task_config
from segmentation.task import SEGMENTATION_TASK, build_model
from segmentation.train import train_segmenter

if TYPE_CHECKING:  # the runner imports the pipelines
    from experiments.runner import RunContext

PRETRAIN_DONE = "pretrain.json"  # written last: a pretraining folder without it is incomplete
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[3] / "shared" / "data"  # as `python -m experiments`


def pretrain_options(config: ExperimentConfig) -> dict[str, Any]:
    """The row's `pipeline_options.pretrain` (`options.PretrainOptions`) with the dataset's defaults
    filled in: its root, mask and preprocessing (`PRETRAIN_DATASETS`)."""
    options = pipeline_options(config).pretrain
    root, mask_names, preprocess = PRETRAIN_DATASETS[options.dataset]
    return {
        "dataset": options.dataset,
        "root": options.root or root,
        "epochs": options.epochs,
        "mask_names": list(options.mask_names or mask_names),
        "split": options.split,
        "preprocess": preprocess if options.preprocess is None else options.preprocess,
        "monitor": options.monitor,
    }


def _fingerprint(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]


def pretrain_nodule(
    config: ExperimentConfig,
    data_dir: Path,
    cache_dir: Path,
    strategy: tf.distribute.Strategy | None = None,
) -> Path:
    """Trains `config.model` from scratch on the nodule (or tumour) masks of `pipeline_options.pretrain`
    at `config.data.image_size` and returns its checkpoint, `cache_dir/pretrain-<fingerprint>/best.keras`.

    The fingerprint covers the pretraining data, model, input and training settings; a folder that
    finished before (it holds `pretrain.json`) is reused as it is.
    """
    options = pretrain_options(config)
    seed = config.runtime.seed
    root = dataset_root(options["dataset"], options["root"], data_dir, cache_dir, config.data.phantom, seed)
    data = dataclasses.replace(
        config.data,
        dataset=options["dataset"],
        root=str(root),
        extra=[],
        split=options["split"],
        split_file=None,
        preprocess=options["preprocess"],
        mask_names=options["mask_names"],
        label_names=[],
        label_map={},
    )
    manifest, _ = prepare_source(options["dataset"], root, data, cache_dir, seed)
    monitor = options["monitor"]
    training = dataclasses.replace(
        config.training,
        epochs=options["epochs"],
        monitor=monitor,
        mode="min" if monitor == "val_loss" else "max",
    )
    pretrain_config = dataclasses.replace(config, data=data, training=training)
    key = _fingerprint(
        {
            "options": options,
            "tfrecords": manifest.directory.name,
            "model": dataclasses.asdict(config.model) | {"weights": None, "multiclass": False},
            "data": [data.image_size, data.channels, data.batch_size, data.augment],
            "training": dataclasses.asdict(training),
            "seed": seed,
            "steps_per_epoch": config.data.steps_per_epoch,
        }
    )
    run_dir = cache_dir / f"pretrain-{key}"
    if (run_dir / PRETRAIN_DONE).is_file():
        return run_dir / "best.keras"
    replicas = strategy.num_replicas_in_sync if strategy is not None else 1
    run = task_config(
        pretrain_config,
        [str(manifest.directory)],
        replicas,
        **{"data.mask_names": list(options["mask_names"]), "model.multiclass": False, "model.weights": None},
    )
    best = train_segmenter(run, run_dir, strategy)
    outcome = pretraining_outcome(run_dir, monitor, training.mode)
    write_json(run_dir / PRETRAIN_DONE, {"options": options, "tfrecords": str(manifest.directory), **outcome})
    return best


def pretraining_outcome(run_dir: Path, monitor: str, mode: str) -> dict[str, Any]:
    """What the pretraining in `run_dir` hands on, from its `history.csv`: the 1-based epoch whose
    checkpoint is `best.keras` (the first best by `monitor`, "min" or "max" by `mode`, as the checkpoint
    callback keeps it), the
    per-epoch validation Dice and loss (None where undefined, e.g. no nodule pixel in validation) and
    the best validation Dice (None when none is defined)."""
    history = read_history(run_dir)
    if np.isnan(history.get(monitor, [np.nan])).all():  # no validation split: train_task monitors training
        monitor = monitor.removeprefix("val_")
    values = np.asarray(history[monitor])
    chosen = int(np.nanargmin(values) if mode == "min" else np.nanargmax(values))
    dice, loss = ([_defined(v) for v in history.get(name, [])] for name in ("val_dice", "val_loss"))
    defined = [v for v in dice if v is not None]
    return {
        "monitor": monitor,
        "chosen_epoch": chosen + 1,
        "val_dice": dice,
        "val_loss": loss,
        "best_val_dice": max(defined) if defined else None,
    }


def _defined(value: float) -> float | None:
    return None if np.isnan(value) else round(float(value), 4)


def transferred_model(run: TaskConfig, checkpoint: str | Path) -> tuple[keras.Model, TransferReport]:
    """The model of `run`, freshly built, with every layer of `checkpoint` that matches by name and shape."""
    model = build_model(run)
    return model, transfer_weights(checkpoint, model)


@register_pipeline("nodule_transfer")
def run(context: RunContext, prepared: PreparedData) -> Summary:
    """Trains and evaluates one transfer row (see the module docstring); returns its summary, with
    `transfer_loaded_layers` and `transfer_loaded_parameters` (0 unless init is "nodule")."""
    config = context.config
    init = pipeline_options(config).init
    manifest = prepared.manifests[0]
    replicas = context.strategy.num_replicas_in_sync
    weights = "imagenet" if init == "imagenet" else None
    run_config = task_config(config, [str(manifest.directory)], replicas, **{"model.weights": weights})
    reports: list[TransferReport] = []
    builder = None
    pretraining: dict[str, Any] = {}
    if init == "nodule":
        checkpoint = pretrain_nodule(config, context.data_dir, context.cache_dir, context.strategy)
        pretraining = json.loads((Path(checkpoint).parent / PRETRAIN_DONE).read_text())
        if pretraining["best_val_dice"] == 0.0:
            print(
                "warning: the nodule pretraining found no nodule pixel on its validation patients at any "
                f"epoch (val Dice 0); the transferred checkpoint is epoch {pretraining['chosen_epoch']} by "
                f"{pretraining['monitor']}"
            )

        def builder() -> keras.Model:
            model, report = transferred_model(run_config, checkpoint)
            reports.append(report)
            return model

    metrics = train_task(
        SEGMENTATION_TASK, run_config, context.run_dir, context.strategy, model_builder=builder
    ).report
    report = reports[-1] if reports else TransferReport()
    write_json(
        context.run_dir / "transfer.json",
        {
            "init": init,
            "checkpoint": str(checkpoint) if init == "nodule" else None,
            "pretraining": pretraining,
            **report.as_dict(),
        },
    )
    if reports:
        print(report.summary())
    summary = summarize_segmentation(metrics)
    for name, value in (
        ("transfer_loaded_layers", len(report.loaded)),
        ("transfer_loaded_parameters", report.loaded_parameters),
    ):
        summary[name] = ci_entry(value)
    if pretraining:
        summary["pretrain_best_val_dice"] = ci_entry(pretraining["best_val_dice"])
        summary["pretrain_chosen_epoch"] = ci_entry(pretraining["chosen_epoch"])
    return summary


def pretrain_command(args: argparse.Namespace) -> int:
    """Handles `pretrain-nodule`: pretrains (or reuses the cached run) and copies best.keras to --out."""
    from experiments.registry import get_experiment

    config = get_experiment(args.config, list(args.overrides))
    pretrain = dict(config.pipeline_options.get("pretrain") or {})
    dataset = "lidc" if args.dataset == "phantom" else args.dataset
    if dataset != pretrain.get("dataset", "lidc"):
        pretrain = {key: pretrain[key] for key in ("epochs",) if key in pretrain}
    pretrain["dataset"] = dataset
    pretrain.update({key: value for key, value in (("root", args.root), ("epochs", args.epochs)) if value})
    config.pipeline_options["pretrain"] = pretrain
    config.data.phantom = config.data.phantom or args.dataset == "phantom"
    data_dir = args.data_dir or Path(os.environ.get("COVID_DATA_DIR", DEFAULT_DATA_DIR))
    out = args.out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    checkpoint = pretrain_nodule(config, data_dir, args.cache_dir or out.parent / ".cache")
    with atomic_path(out) as temporary:
        shutil.copyfile(checkpoint, temporary)
    print(f"nodule pretraining ({pretrain_options(config)['dataset']}): {out}")
    return 0
