import keras
import numpy as np
import pytest
from keras import layers

from experiments.pipelines.transfer import TransferError, transfer_weights


def segmenter(num_classes: int, seed: int, prefix: str = "") -> keras.Model:
    keras.utils.set_random_seed(seed)
    backbone = keras.Sequential(
        [
            keras.Input((16, 16, 1)),
            layers.Conv2D(4, 3, padding="same", name=f"{prefix}stem"),
            layers.BatchNormalization(name=f"{prefix}stem_bn"),
        ],
        name="backbone",
    )
    inputs = keras.Input((16, 16, 1))
    x = layers.Conv2D(8, 3, padding="same", name=f"{prefix}aspp")(backbone(inputs))
    outputs = layers.Conv2D(num_classes, 1, name="head")(x)
    return keras.Model(inputs, outputs)


def test_transfer_loads_the_pretrained_tensors_and_reinitialises_a_head_of_another_size(tmp_path):
    source = segmenter(num_classes=1, seed=1)
    source.save(tmp_path / "nodule.keras")
    target = segmenter(num_classes=3, seed=2)
    fresh_head = [w.copy() for w in target.get_layer("head").get_weights()]

    report = transfer_weights(tmp_path / "nodule.keras", target)

    assert sorted(report.loaded) == ["aspp", "stem", "stem_bn"]
    assert report.reshaped == ["head"]
    assert report.skipped == []
    for name in ("stem", "stem_bn"):
        for before, after in zip(
            source.get_layer("backbone").get_layer(name).get_weights(),
            target.get_layer("backbone").get_layer(name).get_weights(),
            strict=True,
        ):
            np.testing.assert_array_equal(before, after)
    for before, after in zip(
        source.get_layer("aspp").get_weights(), target.get_layer("aspp").get_weights(), strict=True
    ):
        np.testing.assert_array_equal(before, after)
    for fresh, after in zip(fresh_head, target.get_layer("head").get_weights(), strict=True):
        np.testing.assert_array_equal(fresh, after)
    assert report.loaded_parameters == (3 * 3 * 1 * 4 + 4) + 4 * 4 + (3 * 3 * 4 * 8 + 8)


def test_transfer_fails_loudly_when_nothing_matches():
    with pytest.raises(TransferError, match="no layer of .* matches"):
        transfer_weights(
            segmenter(1, seed=1, prefix="a_"), segmenter(1, seed=1, prefix="b_").get_layer("backbone")
        )
