"""The callback set every training run uses (classification and segmentation alike).

Files written under `run_dir`:
- `best.keras`: the whole model at the best epoch by `monitor` (ModelCheckpoint, save_best_only).
- `history.csv`: one row per epoch, appended across resumed runs and training stages (CSVLogger).
- `backup/<name>/`: BackupAndRestore state (weights + epoch); deleted when the `fit` call finishes.
- `tensorboard/`: TensorBoard scalars.
"""

from __future__ import annotations

import importlib.util
import math
import warnings
from pathlib import Path

import keras

LR_SCHEDULES = ("constant", "cosine", "plateau")


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
    """Returns [ModelCheckpoint, EarlyStopping, LR schedule, TerminateOnNaN, TensorBoard, CSVLogger,
    BackupAndRestore], leaving out EarlyStopping when `early_stopping_patience` is None, the
    LR callback for "constant" and TensorBoard when `tensorboard` is False or the `tensorboard`
    package is not installed (a warning says so).

    run_dir: the run folder (created). monitor/mode: the logged quantity that picks the best epoch
    ("val_loss"/"min", "val_auc"/"max", ...). lr_schedule: "constant", "cosine" (epoch-wise, from
    `learning_rate` over `num_epochs` epochs starting at `first_epoch`) or "plateau"
    (ReduceLROnPlateau on `monitor`). best_value: the best `monitor` value seen so far in this run
    (from an earlier stage or before a resume), so `best.keras` is only replaced by a better epoch.
    backup_name: one BackupAndRestore folder per training stage. EarlyStopping's patience counter
    is not part of the backup; it starts again after a resume.
    """
    if lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule {lr_schedule!r} is not one of {LR_SCHEDULES}")
    if mode not in ("min", "max"):
        raise ValueError(f"mode {mode!r} must be 'min' or 'max'")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    callbacks: list[keras.callbacks.Callback] = [
        keras.callbacks.ModelCheckpoint(
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
    callbacks.append(keras.callbacks.BackupAndRestore(str(backup_dir(run_dir, backup_name))))
    return callbacks


def tensorboard_available() -> bool:
    """Whether the `tensorboard` package (needed by the TensorBoard callback) is installed; warns if not."""
    if importlib.util.find_spec("tensorboard") is not None:
        return True
    warnings.warn("tensorboard is not installed; training runs without TensorBoard logs", stacklevel=3)
    return False


def backup_dir(run_dir: str | Path, backup_name: str) -> Path:
    """The BackupAndRestore folder of one training stage."""
    return Path(run_dir) / "backup" / backup_name
