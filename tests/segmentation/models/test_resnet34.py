from __future__ import annotations

import keras
import numpy as np

from segmentation.models.resnet34 import resnet34_features


def test_parameter_count_matches_torchvision_resnet34_without_classifier():
    inputs = keras.Input((64, 64, 3))
    model = keras.Model(inputs, resnet34_features(inputs))
    trainable = int(sum(np.prod(weight.shape) for weight in model.trainable_weights))
    # torchvision resnet34: 21,797,672 parameters including the 512 x 1000 + 1000 classifier.
    assert trainable == 21_797_672 - 513_000
    assert [shape[1:] for shape in model.output_shape] == [
        (32, 32, 64),
        (16, 16, 64),
        (8, 8, 128),
        (4, 4, 256),
        (2, 2, 512),
    ]
