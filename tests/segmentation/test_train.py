"""Training on synthetic disks with a tiny model: run-folder files, strategy scope, config loading."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from common.config import ConfigError, TaskConfig, from_dict, load_task_config, to_dict
from segmentation.task import to_class_ids
from segmentation.thresholds import ThresholdChoice
from segmentation.train import train_segmenter
from tests.segmentation.seg_helpers import SIZE, tiny_model, write_disks


def config_for(data, mask_names=("infection",), model=None, **data_options) -> TaskConfig:
    return from_dict(
        TaskConfig,
        {
            "data": {"tfrecords": [str(data)], "mask_names": list(mask_names), "image_size": SIZE, "batch_size": 4,
                     **data_options},
            "model": {"task": "segmentation", **(model or {})},
            "training": {"epochs": 2, "learning_rate": 0.05, "tensorboard": False, "verbose": 0},
            "runtime": {"deterministic": True, "precision": "float32"},
        },
    )


@pytest.fixture(scope="module")
def disks(tmp_path_factory):
    return write_disks(tmp_path_factory.mktemp("disks"))


def test_train_writes_the_run_folder_inside_the_given_strategy(tmp_path, disks):
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    seen = []

    def builder():
        seen.append(tf.distribute.get_strategy())
        return tiny_model()

    config = config_for(disks)
    best = train_segmenter(config, tmp_path / "run", strategy=strategy, model_builder=builder)
    run = tmp_path / "run"
    assert seen == [strategy]
    assert best == run / "best.keras"
    for name in (
        "history.csv",
        "config.yaml",
        "bundle.json",
        "threshold.json",
        "training_curves.png",
        "threshold_curve.png",
    ):
        assert (run / name).is_file(), name
    history = (run / "history.csv").read_text().splitlines()
    assert history[0].split(",")[:2] == ["epoch", "dice"] and len(history) == 3
    assert {"val_dice", "val_iou", "val_loss"} <= set(history[0].split(","))
    saved = load_task_config(run / "config.yaml")
    assert saved.data.mask_names == ["infection"] and saved.model.multiclass is False
    bundle = json.loads((run / "bundle.json").read_text())
    assert bundle["channel_names"] == ["infection"] and bundle["preprocess"] == ""
    choice = ThresholdChoice.load(run / "threshold.json")
    assert choice.split == "val" and len(choice.thresholds) == 1
    model = keras.saving.load_model(best)
    assert model.output_shape == (None, SIZE, SIZE, 1)


def test_multiclass_training_uses_class_ids(tmp_path, disks):
    config = config_for(
        disks, ["ggo", "consolidation"], model={"multiclass": True, "loss": "cce_dice"}, steps_per_epoch=3
    )
    config.training.epochs = 1
    assert config.channel_names == ("background", "ggo", "consolidation")
    batches = []
    counter = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: batches.append(batch))
    train_segmenter(
        config, tmp_path / "run", model_builder=lambda: tiny_model(3, "softmax"), extra_callbacks=[counter]
    )
    assert (tmp_path / "run" / "best.keras").is_file()
    assert batches == [0, 1, 2]  # steps_per_epoch=3 on the repeated split of 2 batches
    assert not (tmp_path / "run" / "threshold.json").exists()  # argmax: no threshold to choose


def test_to_class_ids_first_mask_wins():
    masks = tf.constant([[[[0, 0], [1, 0], [0, 1], [1, 1]]]], tf.float32)  # (1, 1, 4, 2)
    np.testing.assert_array_equal(to_class_ids(masks).numpy()[0, 0, :, 0], [0, 1, 2, 1])


def test_load_config_yaml_with_overrides_and_unknown_keys(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("data:\n  mask_names: [lung]\ntraining:\n  epochs: 2\n  monitor: val_dice\n")
    config = load_task_config(path, ["data.image_size=64"])
    assert (config.data.mask_names, config.data.image_size, config.training.epochs) == (["lung"], 64, 2)
    assert config.training.monitor == "val_dice"
    assert load_task_config(path) == from_dict(TaskConfig, to_dict(load_task_config(path)))  # round trip
    path.write_text("data:\n  imagesize: 3\n")
    with pytest.raises(ConfigError, match=r"config.data: unknown key\(s\) imagesize; allowed: .*image_size"):
        load_task_config(path)


def test_batchnorm_momentum_replaces_the_encoders_own():
    """The encoders' BatchNormalization layers are reset to `blocks.BN_MOMENTUM` (0.9; keras.applications'
    MobileNetV2 builds 0.999); `model.batchnorm_momentum` must reach every one of them."""
    from common.training import nested_layers
    from segmentation.task import build_model

    def momenta(momentum):
        config = from_dict(
            TaskConfig,
            {
                "data": {"image_size": 64, "channels": 1, "mask_names": ["ggo"]},
                "model": {"task": "segmentation", "name": "deeplabv3plus", "encoder": "mobilenetv2",
                          "weights": None, "batchnorm_momentum": momentum},
            },
        )  # fmt: skip
        layers = nested_layers(build_model(config))
        return {layer.momentum for layer in layers if isinstance(layer, keras.layers.BatchNormalization)}

    assert momenta(None) == {0.9}
    assert momenta(0.5) == {0.5}
