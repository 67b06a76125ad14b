from __future__ import annotations

import keras
import numpy as np
import pytest

from segmentation.models.blocks import conv_bn_relu, segmentation_head, separable_conv_bn


def test_stride2_convolutions_are_aligned_to_even_pixels():
    # An impulse at input pixel (4, 6) must land on output pixel (2, 3) for a stride-2 3x3 conv
    # with every weight 1: the padding is symmetric, unlike Keras 'same' on even sizes.
    inputs = keras.Input((8, 8, 1))
    outputs = conv_bn_relu(inputs, 1, 3, "probe", strides=2, activation=False)
    model = keras.Model(inputs, outputs)
    model.get_layer("probe_conv").set_weights([np.ones((3, 3, 1, 1), "float32")])
    image = np.zeros((1, 8, 8, 1), "float32")
    image[0, 4, 6, 0] = 1.0
    response = model.predict(image, verbose=0)[0, :, :, 0]
    assert response.shape == (4, 4)
    assert np.argwhere(np.abs(response) > 0.5).tolist() == [[2, 3]]


def test_separable_conv_has_bn_after_depthwise_and_dilation():
    inputs = keras.Input((16, 16, 4))
    outputs = separable_conv_bn(inputs, 8, "sep", dilation=2)
    model = keras.Model(inputs, outputs)
    names = [layer.name for layer in model.layers]
    assert names[1:] == [
        "sep_depthwise",
        "sep_depthwise_bn",
        "sep_depthwise_relu",
        "sep_pointwise_conv",
        "sep_pointwise_bn",
        "sep_pointwise_relu",
    ]
    assert model.get_layer("sep_depthwise").dilation_rate == (2, 2)
    # depthwise 3*3*4 + BN 4*4 + pointwise 4*8 + BN 4*8
    assert model.count_params() == 36 + 16 + 32 + 32


@pytest.mark.parametrize(("num_classes", "activation"), [(1, "sigmoid"), (3, "softmax")])
def test_segmentation_head_activation_is_float32(num_classes, activation):
    inputs = keras.Input((4, 4, 2))
    outputs = segmentation_head(inputs, num_classes, upsampling=2)
    model = keras.Model(inputs, outputs)
    assert model.output_shape == (None, 8, 8, num_classes)
    assert model.layers[-1].name == f"head_{activation}"
    assert model.layers[-1].dtype_policy.compute_dtype == "float32"


def test_segmentation_head_rejects_zero_classes():
    with pytest.raises(ValueError, match="num_classes must be >= 1, got 0"):
        segmentation_head(keras.Input((4, 4, 2)), 0)
