import math

import keras
import pytest

from common.callbacks import CosineSchedule, make_callbacks


def test_full_callback_set_in_order(tmp_path, monkeypatch):
    monkeypatch.setattr("common.callbacks.tensorboard_available", lambda: True)
    callbacks = make_callbacks(tmp_path / "run", "val_auc", "max", lr_schedule="plateau")
    assert [type(c).__name__ for c in callbacks] == [
        "AtomicModelCheckpoint",
        "EarlyStopping",
        "ReduceLROnPlateau",
        "TerminateOnNaN",
        "TensorBoard",
        "CSVLogger",
        "AtomicBackup",
    ]
    assert callbacks[0].filepath == str(tmp_path / "run" / "best.keras")
    assert callbacks[-1].folder == tmp_path / "run" / "backup" / "train"


def test_optional_callbacks_left_out(tmp_path):
    callbacks = make_callbacks(tmp_path, early_stopping_patience=None, tensorboard=False, best_value=0.3)
    assert [type(c).__name__ for c in callbacks] == [
        "AtomicModelCheckpoint",
        "TerminateOnNaN",
        "CSVLogger",
        "AtomicBackup",
    ]
    assert callbacks[0].best == 0.3


def test_cosine_schedule_hand_values(tmp_path):
    schedule = CosineSchedule(1.0, first_epoch=2, num_epochs=4)
    assert [schedule(e) for e in (0, 2, 3, 4, 6, 9)] == pytest.approx(
        [1.0, 1.0, 0.5 * (1 + math.cos(math.pi / 4)), 0.5, 0.0, 0.0]
    )
    callbacks = make_callbacks(tmp_path, lr_schedule="cosine", learning_rate=0.1, num_epochs=2)
    scheduler = next(c for c in callbacks if isinstance(c, keras.callbacks.LearningRateScheduler))
    assert scheduler.schedule(1) == pytest.approx(0.05)


def test_bad_options_raise(tmp_path):
    with pytest.raises(ValueError, match="lr_schedule 'step' is not one of"):
        make_callbacks(tmp_path, lr_schedule="step")
    with pytest.raises(ValueError, match="mode 'best' must be 'min' or 'max'"):
        make_callbacks(tmp_path, mode="best")


def test_tensorboard_left_out_with_a_warning_when_not_installed(tmp_path, monkeypatch):
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.warns(UserWarning, match="tensorboard is not installed"):
        callbacks = make_callbacks(tmp_path)
    assert "TensorBoard" not in [type(c).__name__ for c in callbacks]
