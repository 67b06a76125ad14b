"""Runs survive a kill at any moment: SIGKILL around epoch boundaries, then resume, until done.

A child process trains a tiny model on SYNTHETIC arrays with `common.training.fit` and prints a line
when the last batch of an epoch ends; the parent kills it (SIGKILL) a chosen delay after that line
(validation, best.keras, history.csv and the backup are written in that window), then starts it
again on the same folder. The last start runs to the end. Every run must end with the configured
epoch count, each epoch once in history.csv, a loadable best.keras, and no backup left.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import h5py
import pytest

from tests.conftest import REPO_ROOT

EPOCHS = 6
STEPS = 4
CHILD = f"""
import sys
import keras
import numpy as np
import tensorflow as tf
from common.training import TrainingConfig, fit

class Marker(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if batch == {STEPS} - 1:
            print("epoch-boundary", flush=True)

rng = np.random.default_rng(0)
x = rng.normal(size=(64, 8)).astype("float32")  # SYNTHETIC
y = (x[:, :1] > 0).astype("float32")
train = tf.data.Dataset.from_tensor_slices((x, y)).batch(16).repeat()
val = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)

def build():
    return keras.Sequential([keras.Input((8,)), keras.layers.Dense(256, activation="relu"), keras.layers.Dense(1)])

def compile_model(model, optimizer):
    model.compile(optimizer=optimizer, loss=keras.losses.BinaryCrossentropy(from_logits=True))

config = TrainingConfig(epochs={EPOCHS}, tensorboard=False, verbose=0, early_stopping_patience=None)
history = fit(build, compile_model, train, val, config, sys.argv[1], steps_per_epoch={STEPS},
              extra_callbacks=[Marker()])
print("done", history.epoch, flush=True)
"""


def _train_until_killed(run_dir: Path, boundary: int | None, delay_s: float) -> str:
    """Runs the child; kills it `delay_s` after its `boundary`-th epoch-boundary line (None: no kill)."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(run_dir)], stdout=subprocess.PIPE, text=True, env=env
    )
    seen = 0
    for line in child.stdout:
        if line.startswith("epoch-boundary"):
            seen += 1
            if seen == boundary:
                time.sleep(delay_s)
                child.send_signal(signal.SIGKILL)
                break
        if line.startswith("done"):
            child.wait(timeout=120)
            return line
    child.wait(timeout=120)
    return ""


def _epochs_logged(run_dir: Path) -> list[int]:
    with (run_dir / "history.csv").open(newline="") as handle:
        return [int(row["epoch"]) for row in csv.DictReader(handle)]


def _kill_and_resume(run_dir: Path, kills: list[tuple[int, float]]) -> None:
    for boundary, delay_s in kills:
        _train_until_killed(run_dir, boundary, delay_s)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        last = _train_until_killed(run_dir, None, 0.0)
    assert last == f"done {list(range(EPOCHS))}\n", (last, kills)
    assert _epochs_logged(run_dir) == list(range(EPOCHS)), kills
    assert json.loads((run_dir / "stages" / "train.json").read_text())["epochs_done"] == EPOCHS
    assert not (run_dir / "backup" / "train").exists()
    with h5py.File(run_dir / "stages" / "train.weights.h5", "r"):
        pass
    import keras

    keras.saving.load_model(run_dir / "best.keras")


def test_kills_around_epoch_boundaries_then_resume(tmp_path):
    """Short variant: three kills (each resume is killed again) at 0, 30 and 120 ms past a boundary."""
    _kill_and_resume(tmp_path / "run", [(1, 0.0), (2, 0.03), (1, 0.12)])


@pytest.mark.slow
@pytest.mark.parametrize("delays_ms", [(0, 5, 10, 20), (40, 60, 80, 100), (150, 200, 300, 500)])
def test_many_kill_points(tmp_path, delays_ms):
    _kill_and_resume(tmp_path / "run", [(1, ms / 1000) for ms in delays_ms])


def test_a_corrupt_newest_backup_falls_back_to_the_previous_one(tmp_path):
    """Interrupted after epoch 3 with the epoch-3 state damaged: resume from epoch 2, retrain 2 and 3 once."""
    run_dir = tmp_path / "run"
    _train_until_killed(run_dir, 4, 0.0)  # the boundary line of epoch index 3 (its state not yet written)
    backup = run_dir / "backup" / "train"
    states = sorted(backup.glob("epoch-*"))
    assert [p.name for p in states] == ["epoch-2", "epoch-3"]
    (backup / "epoch-3" / "model.weights.h5").write_bytes(b"\x89HDF\r\n garbage")
    with pytest.warns(UserWarning, match="backup unreadable"):
        from common.callbacks import resume_epoch

        assert resume_epoch(backup) == 2
    assert (backup / "broken-epoch-3").is_dir()
    _kill_and_resume(run_dir, [])
