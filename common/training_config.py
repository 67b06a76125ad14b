"""`TrainingConfig`: the hyper-parameters of one training run (no TensorFlow import, so configs load fast)."""

from __future__ import annotations

from dataclasses import dataclass

LR_SCHEDULES = ("constant", "cosine", "plateau")


@dataclass
class TrainingConfig:
    """Hyper-parameters of one training run.

    epochs / learning_rate: the first (or only) stage. fine_tune_epochs / fine_tune_learning_rate /
    unfreeze_top_blocks: the second stage of two-stage transfer learning (0 epochs: no second stage).
    lr_schedule: "constant", "cosine" (epoch-wise, per stage) or "plateau" (ReduceLROnPlateau).
    monitor / mode: the logged metric that picks `best.keras` and drives early stopping and plateau.
    verbose: Keras `fit` verbosity: 1 progress bars (default), 2 one line per epoch (logs), 0 silent.
    class_weight: "balanced" (weights n / (K * n_c)) or None.
    The seed and the precision policy are the run's (`common.config.RuntimeConfig`).
    """

    epochs: int = 10
    learning_rate: float = 1e-3
    optimizer: str = "adam"
    lr_schedule: str = "constant"
    early_stopping_patience: int | None = 10
    monitor: str = "val_loss"
    mode: str = "min"
    fine_tune_epochs: int = 0
    fine_tune_learning_rate: float = 1e-5
    unfreeze_top_blocks: int = 0
    class_weight: str | None = None
    tensorboard: bool = True
    verbose: int = 1
