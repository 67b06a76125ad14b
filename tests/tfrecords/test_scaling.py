from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tfrecords.scaling import scale_input, scaling_mode


def test_families_map_to_keras_modes() -> None:
    assert [scaling_mode(name) for name in ("resnet50", "densenet", "xception", "efficientnet", None)] == [
        "caffe",
        "torch",
        "tf",
        "raw",
        None,
    ]
    assert scaling_mode("torch") == "torch"
    with pytest.raises(ValueError, match="unknown input_scaling 'vit'; known: caffe, torch, tf, raw, none, vgg16"):
        scaling_mode("vit")


def test_hand_computed_values() -> None:
    pixel = tf.constant([[[0.0, 0.5, 1.0]]])  # RGB in [0, 1] -> 0, 127.5, 255
    np.testing.assert_allclose(scale_input(pixel, "tf"), [[[-1.0, 0.0, 1.0]]], atol=1e-6)
    np.testing.assert_allclose(scale_input(pixel, "raw"), [[[0.0, 127.5, 255.0]]])
    # caffe: RGB -> BGR (255, 127.5, 0), minus the ImageNet BGR mean (103.939, 116.779, 123.68).
    np.testing.assert_allclose(scale_input(pixel, "caffe"), [[[151.061, 10.721, -123.68]]], atol=1e-3)
    # torch: ((x / 255) - mean) / std with mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225).
    expected = [[[-0.485 / 0.229, (0.5 - 0.456) / 0.224, (1.0 - 0.406) / 0.225]]]
    np.testing.assert_allclose(scale_input(pixel, "torch"), expected, atol=1e-5)
    np.testing.assert_array_equal(scale_input(pixel, None), pixel)
