"""The callback set every training run uses (classification and segmentation alike).

Files written under `run_dir`:
- `best.keras`: the whole model at the best epoch by `monitor` (ModelCheckpoint, save_best_only).
- `history.csv`: one row per epoch, appended across resumed runs and training stages (CSVLogger).
- `backup/<name>/epoch-<N>/`: the state after N epochs (weights + `state.json`), written by
  `AtomicBackup` into a temporary folder and renamed into place, so a kill at any moment leaves the
  previous state whole; the newest two are kept and resuming falls back to the older one when the
  newer cannot be loaded. `common.training.fit` deletes the folder once the stage is marked done.
- `tensorboard/`: TensorBoard scalars.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import warnings
from pathlib import Path

import h5py
import keras

from common.atomic import atomic_path
from common.training_config import LR_SCHEDULES


class CosineSchedule:
    """Epoch-wise cosine decay: lr(e) = lr0 * 0.5 * (1 + cos(pi * (e - first_epoch) / num_epochs)).

    Epoch indices count over the whole run (a second stage starts at `first_epoch` > 0), so the
    schedule is a pure function of the epoch index and survives a resume from backup.
    """

    def __init__(self, learning_rate: float, first_epoch: int, num_epochs: int) -> None:
        self.learning_rate = learning_rate
        self.first_epoch = first_epoch
        self.num_epochs = max(num_epochs, 1)

    def __call__(self, epoch: int, current_lr: float | None = None) -> float:
        progress = min(max(epoch - self.first_epoch, 0) / self.num_epochs, 1.0)
        return float(self.learning_rate * 0.5 * (1.0 + math.cos(math.pi * progress)))


def make_callbacks(
    run_dir: str | Path,
    monitor: str = "val_loss",
    mode: str = "min",
    *,
    early_stopping_patience: int | None = 10,
    lr_schedule: str = "constant",
    learning_rate: float = 1e-3,
    first_epoch: int = 0,
    num_epochs: int = 1,
    plateau_patience: int = 3,
    plateau_factor: float = 0.1,
    best_value: float | None = None,
    backup_name: str = "train",
    tensorboard: bool = True,
) -> list[keras.callbacks.Callback]:
    """Returns [AtomicModelCheckpoint, EarlyStopping, LR schedule, TerminateOnNaN, TensorBoard, CSVLogger,
    AtomicBackup], leaving out EarlyStopping when `early_stopping_patience` is None, the
    LR callback for "constant" and TensorBoard when `tensorboard` is False or the `tensorboard`
    package is not installed (a warning says so).

    run_dir: the run folder (created). monitor/mode: the logged quantity that picks the best epoch
    ("val_loss"/"min", "val_auc"/"max", ...). lr_schedule: "constant", "cosine" (epoch-wise, from
    `learning_rate` over `num_epochs` epochs starting at `first_epoch`) or "plateau"
    (ReduceLROnPlateau on `monitor`). best_value: the best `monitor` value seen so far in this run
    (from an earlier stage or before a resume), so `best.keras` is only replaced by a better epoch.
    backup_name: one AtomicBackup folder per training stage. EarlyStopping's patience counter
    is not part of the backup; it starts again after a resume.
    """
    if lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule {lr_schedule!r} is not one of {LR_SCHEDULES}")
    if mode not in ("min", "max"):
        raise ValueError(f"mode {mode!r} must be 'min' or 'max'")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    callbacks: list[keras.callbacks.Callback] = [
        AtomicModelCheckpoint(
            str(run_dir / "best.keras"),
            monitor=monitor,
            mode=mode,
            save_best_only=True,
            initial_value_threshold=best_value,
        )
    ]
    if early_stopping_patience is not None:
        callbacks.append(
            keras.callbacks.EarlyStopping(monitor=monitor, mode=mode, patience=early_stopping_patience)
        )
    if lr_schedule == "cosine":
        callbacks.append(
            keras.callbacks.LearningRateScheduler(CosineSchedule(learning_rate, first_epoch, num_epochs))
        )
    elif lr_schedule == "plateau":
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor=monitor, mode=mode, factor=plateau_factor, patience=plateau_patience
            )
        )
    callbacks.append(keras.callbacks.TerminateOnNaN())
    if tensorboard and tensorboard_available():
        callbacks.append(
            keras.callbacks.TensorBoard(str(run_dir / "tensorboard"), write_graph=False, profile_batch=0)
        )
    # The history row is written before the backup, so an interruption between the two leaves a row
    # that `common.training` drops on resume, never a missing one.
    callbacks.append(keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=True))
    callbacks.append(AtomicBackup(backup_dir(run_dir, backup_name)))
    return callbacks


class AtomicModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """ModelCheckpoint that writes `best.keras` to a temporary file and renames it into place, so a
    kill during the save leaves the previous best model whole."""

    def _save_model(self, epoch, batch, logs):  # noqa: ANN001 (Keras' signature)
        final = Path(self.filepath)
        temporary = final.with_name(f".{final.stem}.tmp{final.suffix}")
        self.filepath = str(temporary)
        try:
            super()._save_model(epoch, batch, logs)
        finally:
            self.filepath = str(final)
        if temporary.exists():
            os.replace(temporary, final)


BACKUP_STATE = "state.json"
BACKUP_WEIGHTS = "model.weights.h5"
BACKUPS_KEPT = 2


class AtomicBackup(keras.callbacks.Callback):
    """End-of-epoch backup for resuming an interrupted `fit` (in place of Keras' BackupAndRestore,
    which rewrites one weights file in place: a kill during that write lost the run).

    After epoch e (0-based) the model weights and {"epoch": e + 1} go to `folder/epoch-<e+1>/`, written
    to a hidden temporary folder first and renamed (`common.atomic.atomic_path`). On train begin the
    newest readable state is restored (weights, and the epoch `fit` continues from); an unreadable one
    (`readable_states`) is set aside as `broken-epoch-<N>` with a warning and the one before it is used.
    """

    def __init__(self, folder: str | Path) -> None:
        super().__init__()
        self.folder = Path(folder)

    def states(self) -> list[Path]:
        """Complete states, newest first."""
        if not self.folder.is_dir():
            return []
        found = [p for p in self.folder.glob("epoch-*") if (p / BACKUP_STATE).is_file()]
        return sorted(found, key=lambda p: int(p.name.removeprefix("epoch-")), reverse=True)

    def readable_states(self) -> list[tuple[Path, int]]:
        """(state folder, epochs done) of the complete states whose files read back, newest first;
        unreadable ones are renamed `broken-epoch-<N>` (kept for a post-mortem) with a warning."""
        readable = []
        for state in self.states():
            try:
                epoch = int(json.loads((state / BACKUP_STATE).read_text())["epoch"])
                with h5py.File(state / BACKUP_WEIGHTS, "r") as weights:
                    weights.visititems(lambda _, item: item[()] if isinstance(item, h5py.Dataset) else None)
            except (OSError, ValueError, KeyError) as error:
                warnings.warn(f"{state}: backup unreadable ({error}); using the one before", stacklevel=2)
                os.replace(state, state.with_name(f"broken-{state.name}"))
                continue
            readable.append((state, epoch))
        return readable

    def on_train_begin(self, logs=None):  # noqa: ANN001
        readable = self.readable_states()
        if readable:
            state, epoch = readable[0]
            optimizer = self.model.optimizer
            if optimizer is not None and not optimizer.built:  # its moments are part of the state
                optimizer.build(self.model.trainable_variables)
            self.model.load_weights(str(state / BACKUP_WEIGHTS))
            self.model._initial_epoch = epoch  # how Keras' own BackupAndRestore tells `fit` where to go on

    def on_epoch_end(self, epoch, logs=None):  # noqa: ANN001
        done = epoch + 1
        final = self.folder / f"epoch-{done}"
        with atomic_path(final) as temporary:
            temporary.mkdir()
            self.model.save_weights(str(temporary / BACKUP_WEIGHTS))
            (temporary / BACKUP_STATE).write_text(json.dumps({"epoch": done}))
            shutil.rmtree(final, ignore_errors=True)  # a state of an epoch trained again after a fallback
        for old in self.states()[BACKUPS_KEPT:]:
            shutil.rmtree(old, ignore_errors=True)


def resume_epoch(folder: str | Path) -> int | None:
    """The epoch an `AtomicBackup` in `folder` resumes from (its newest readable state), or None."""
    readable = AtomicBackup(folder).readable_states()
    return readable[0][1] if readable else None


def tensorboard_available() -> bool:
    """Whether the `tensorboard` package (needed by the TensorBoard callback) is installed; warns if not."""
    if importlib.util.find_spec("tensorboard") is not None:
        return True
    warnings.warn("tensorboard is not installed; training runs without TensorBoard logs", stacklevel=3)
    return False


def backup_dir(run_dir: str | Path, backup_name: str) -> Path:
    """The `AtomicBackup` folder of one training stage."""
    return Path(run_dir) / "backup" / backup_name
