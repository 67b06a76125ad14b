"""Training configuration and a resumable, multi-stage `fit` shared by classification and segmentation.

A run lives in one folder (`run_dir`). Besides the files of `common.callbacks.make_callbacks`, each
finished stage leaves `stages/<name>.json` (the epoch count reached) and `stages/<name>.weights.h5`;
calling `fit` again on the same folder skips finished stages and resumes an interrupted one from its
newest readable `AtomicBackup` state, so the run ends with the same epoch count as an uninterrupted
one, each epoch in history.csv once, whenever the process was killed.
"""

from __future__ import annotations

import contextlib
import csv
import json
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from common.atomic import atomic_path, atomic_write_json
from common.callbacks import backup_dir, make_callbacks, resume_epoch
from common.mixed_precision import precision_policy
from common.training_config import TrainingConfig

ModelBuilder = Callable[[], keras.Model]
CompileFn = Callable[[keras.Model, keras.optimizers.Optimizer], None]


@dataclass(frozen=True)
class Stage:
    """One `model.fit` call of a run: `prepare(model)` (e.g. freeze or unfreeze layers) runs before
    the model is compiled with a fresh optimizer at `learning_rate`."""

    name: str
    epochs: int
    learning_rate: float
    prepare: Callable[[keras.Model], None] | None = None


def make_optimizer(name: str, learning_rate: float) -> keras.optimizers.Optimizer:
    """A Keras optimizer by name ("adam", "adamw", "sgd", "rmsprop", ...) with a float learning rate
    (a float, not a schedule object, so LR callbacks can set it)."""
    return keras.optimizers.get({"class_name": name, "config": {"learning_rate": learning_rate}})


def balanced_class_weight(class_counts: Sequence[int]) -> dict[int, float]:
    """Class weights n / (K * n_c) for K classes with counts n_c (n = sum); absent classes get 0."""
    counts = np.asarray(class_counts, dtype=np.float64)
    total, num_classes = counts.sum(), len(counts)
    return {c: (float(total / (num_classes * n)) if n > 0 else 0.0) for c, n in enumerate(counts)}


def nested_layers(model: keras.Model) -> Iterator[keras.layers.Layer]:
    """Every layer of `model`, descending into nested models (e.g. a "backbone"), in order."""
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from nested_layers(layer)


def set_batchnorm_momentum(model: keras.Model, momentum: float) -> int:
    """Sets the moving-statistics momentum of every BatchNormalization layer; returns how many.

    Short from-scratch runs need it: the moving variance starts at 1 and approaches the batch
    variance only as 1 - momentum^steps, so with Keras' default 0.99 and a few hundred steps an
    inference-mode model can normalise by a variance 100x too large (seen on the CXR subset: val AUC
    0.62 with moving statistics, 0.87 with batch statistics). 0.9 converges within ~50 steps.
    """
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"batchnorm momentum must be in [0, 1), got {momentum}")
    layers = [layer for layer in nested_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in layers:
        layer.momentum = momentum
    return len(layers)


def read_history(run_dir: str | Path) -> dict[str, list[float]]:
    """The per-epoch log of a run (`history.csv`) as column -> values (NaN where a cell is "NA");
    {} when there is none."""
    path = Path(run_dir) / "history.csv"
    if not path.is_file():
        return {}
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    columns = rows[0].keys() if rows else []
    return {column: [_to_float(row[column]) for row in rows] for column in columns}


def _to_float(text: str) -> float:
    """A CSVLogger cell as float; "NA" (a value missing in that epoch) becomes NaN."""
    return float("nan") if text in ("", "NA") else float(text)


def fit(
    model_builder: ModelBuilder,
    compile_fn: CompileFn,
    train_ds: tf.data.Dataset,
    val_ds: tf.data.Dataset | None,
    config: TrainingConfig,
    run_dir: str | Path,
    strategy: tf.distribute.Strategy | None = None,
    *,
    seed: int = 0,
    precision: str | None = None,
    stages: Sequence[Stage] | None = None,
    class_weight: Mapping[int, float] | None = None,
    steps_per_epoch: int | None = None,
    extra_callbacks: Sequence[keras.callbacks.Callback] = (),
) -> keras.callbacks.History:
    """Builds, compiles and trains a model in `run_dir`, resuming whatever the folder already holds.

    model_builder() runs inside `strategy.scope()` under the `precision` policy (None: float32),
    after every random seed is set from `seed`;
    compile_fn(model, optimizer) runs inside the scope before each stage. `stages` defaults to one
    stage of `config.epochs` at `config.learning_rate`. Epochs are numbered over the whole run, so
    stage 2 continues the epoch count of stage 1 (after any early stop).

    Returns a History whose `history`/`epoch` cover the whole run (read from history.csv, including
    epochs trained before a resume) and whose `model` holds the last epoch's weights; the best epoch
    by `config.monitor` is in `run_dir/best.keras`.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    strategy = strategy or tf.distribute.get_strategy()
    stages = list(stages or [Stage("train", config.epochs, config.learning_rate)])
    keras.utils.set_random_seed(seed)
    with precision_policy(precision), strategy.scope():
        model = model_builder()

    first_epoch, finished_weights = 0, None
    for stage in stages:
        marker = _stage_dir(run_dir) / f"{stage.name}.json"
        if marker.is_file():
            done = json.loads(marker.read_text())
            planned = done.get("epochs_planned", stage.epochs)
            if planned != stage.epochs:
                raise ValueError(
                    f"{marker}: stage {stage.name!r} finished with {planned} epochs planned; a resumed run "
                    f"cannot change it to {stage.epochs} (start a new run)"
                )
            first_epoch = done["epochs_done"]
            finished_weights = _stage_dir(run_dir) / f"{stage.name}.weights.h5"
            continue
        if finished_weights is not None:
            model.load_weights(str(finished_weights))
            finished_weights = None
        with strategy.scope():
            if stage.prepare is not None:
                stage.prepare(model)
            compile_fn(model, make_optimizer(config.optimizer, stage.learning_rate))
        _drop_unbacked_rows(run_dir, stage.name, first_epoch)
        callbacks = make_callbacks(
            run_dir,
            config.monitor,
            config.mode,
            early_stopping_patience=config.early_stopping_patience,
            lr_schedule=config.lr_schedule,
            learning_rate=stage.learning_rate,
            first_epoch=first_epoch,
            num_epochs=stage.epochs,
            best_value=_best_logged(run_dir, config.monitor, config.mode),
            backup_name=stage.name,
            tensorboard=config.tensorboard,
        )
        history = model.fit(
            train_ds,
            validation_data=val_ds,
            epochs=first_epoch + stage.epochs,
            initial_epoch=first_epoch,
            callbacks=[*callbacks, *extra_callbacks],
            class_weight=dict(class_weight) if class_weight else None,
            steps_per_epoch=steps_per_epoch,
            shuffle=False,  # datasets arrive shuffled (or not) from the input pipeline
            verbose=config.verbose,
        )
        first_epoch = history.epoch[-1] + 1 if history.epoch else first_epoch + stage.epochs
        _mark_stage_done(run_dir, stage, model, first_epoch)
        shutil.rmtree(backup_dir(run_dir, stage.name), ignore_errors=True)  # after the marker: never lost
    with contextlib.suppress(OSError):  # `backup/` once empty: every stage is done
        backup_dir(run_dir, stages[-1].name).parent.rmdir()
    if finished_weights is not None:
        model.load_weights(str(finished_weights))
    return _whole_run_history(run_dir, model)


def _stage_dir(run_dir: Path) -> Path:
    return run_dir / "stages"


def _mark_stage_done(run_dir: Path, stage: Stage, model: keras.Model, epochs_done: int) -> None:
    """Saves the stage's final weights, then its marker, each written to a temporary file first."""
    folder = _stage_dir(run_dir)
    name = stage.name
    with atomic_path(folder / f"{name}.weights.h5", suffix=".weights.h5") as temporary:
        model.save_weights(str(temporary))
    atomic_write_json(folder / f"{name}.json", {"epochs_done": epochs_done, "epochs_planned": stage.epochs})


def _drop_unbacked_rows(run_dir: Path, stage_name: str, first_epoch: int) -> None:
    """Keeps only history.csv rows of epochs the resumed stage will not train again (and drops a
    row cut short by a kill)."""
    backed = resume_epoch(backup_dir(run_dir, stage_name))
    resume_from = first_epoch if backed is None else backed
    path = run_dir / "history.csv"
    if not path.is_file():
        return
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        fieldnames, rows = reader.fieldnames, list(reader)
    kept = [row for row in rows if None not in row.values() and _epoch(row) < resume_from]
    if len(kept) == len(rows):
        return
    with atomic_path(path) as temporary, temporary.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fieldnames)
        writer.writeheader()
        writer.writerows(kept)


def _epoch(row: dict[str, str]) -> int:
    """A history row's epoch index; a cell cut short by a kill counts as not trained (a large index)."""
    try:
        return int(row["epoch"])
    except ValueError:
        return 1 << 30


def _best_logged(run_dir: Path, monitor: str, mode: str) -> float | None:
    values = read_history(run_dir).get(monitor, [])
    if not values:
        return None
    return float(np.nanmin(values) if mode == "min" else np.nanmax(values))


def _whole_run_history(run_dir: Path, model: keras.Model) -> keras.callbacks.History:
    logged = read_history(run_dir)
    history = keras.callbacks.History()
    history.epoch = [int(epoch) for epoch in logged.pop("epoch", [])]
    history.history = logged
    history.set_model(model)
    return history
