"""Training on synthetic disks with a tiny model: run-folder files, strategy scope, config loading."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from segmentation.thresholds import ThresholdChoice
from segmentation.train import SegmentationConfig, load_config, to_class_ids, train_segmenter
from tests.segmentation.seg_helpers import SIZE, tiny_model, write_disks


def config_for(tmp_path, data, **overrides) -> SegmentationConfig:
    values = {
        "data": str(data),
        "run_dir": str(tmp_path / "run"),
        "image_size": SIZE,
        "batch_size": 4,
        "augment": None,
        "deterministic": True,
        "training": {"epochs": 2, "learning_rate": 0.05, "tensorboard": False, "verbose": 0},
        **overrides,
    }
    return SegmentationConfig.from_dict(values)


@pytest.fixture(scope="module")
def disks(tmp_path_factory):
    return write_disks(tmp_path_factory.mktemp("disks"))


def test_train_writes_the_run_folder_inside_the_given_strategy(tmp_path, disks):
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    seen = []

    def builder():
        seen.append(tf.distribute.get_strategy())
        return tiny_model()

    config = config_for(tmp_path, disks)
    best = train_segmenter(config, strategy=strategy, model_builder=builder)
    run = tmp_path / "run"
    assert seen == [strategy]
    assert best == run / "best.keras"
    for name in (
        "history.csv",
        "config.json",
        "threshold.json",
        "training_curves.png",
        "threshold_curve.png",
    ):
        assert (run / name).is_file(), name
    history = (run / "history.csv").read_text().splitlines()
    assert history[0].split(",")[:2] == ["epoch", "dice"] and len(history) == 3
    assert {"val_dice", "val_iou", "val_loss"} <= set(history[0].split(","))
    saved = json.loads((run / "config.json").read_text())
    assert saved["mask_names"] == ["infection"] and saved["preprocess"] == "" and saved["multiclass"] is False
    choice = ThresholdChoice.load(run / "threshold.json")
    assert choice.split == "val" and len(choice.thresholds) == 1
    model = keras.saving.load_model(best)
    assert model.output_shape == (None, SIZE, SIZE, 1)


def test_multiclass_training_uses_class_ids(tmp_path, disks):
    config = config_for(
        tmp_path,
        disks,
        mask_names=["ggo", "consolidation"],
        multiclass=True,
        loss="cce_dice",
        steps_per_epoch=3,
    )
    config.training.epochs = 1
    assert config.num_outputs == 3 and config.channel_names == ("background", "ggo", "consolidation")
    batches = []
    counter = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: batches.append(batch))
    train_segmenter(config, model_builder=lambda: tiny_model(3, "softmax"), extra_callbacks=[counter])
    assert (tmp_path / "run" / "best.keras").is_file()
    assert batches == [0, 1, 2]  # steps_per_epoch=3 on the repeated split of 2 batches
    assert not (tmp_path / "run" / "threshold.json").exists()  # argmax: no threshold to choose


def test_to_class_ids_first_mask_wins():
    masks = tf.constant([[[[0, 0], [1, 0], [0, 1], [1, 1]]]], tf.float32)  # (1, 1, 4, 2)
    np.testing.assert_array_equal(to_class_ids(masks).numpy()[0, 0, :, 0], [0, 1, 2, 1])


def test_load_config_yaml_with_overrides_and_unknown_keys(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(
        "data: /d\nrun_dir: /r\nmask_names: [lung]\ntraining:\n  epochs: 2\n  monitor: val_dice\n"
    )
    config = load_config(path, {"image_size": 64})
    assert (config.mask_names, config.image_size, config.training.epochs) == (("lung",), 64, 2)
    assert config.training.monitor == "val_dice"
    path.write_text("data: /d\nrun_dir: /r\nimagesize: 3\n")
    with pytest.raises(ValueError, match=r"unknown segmentation option\(s\) \['imagesize'\]"):
        load_config(path)
