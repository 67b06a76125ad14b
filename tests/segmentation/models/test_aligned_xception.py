from __future__ import annotations

import keras
import numpy as np
import pytest

from segmentation.models.aligned_xception import aligned_xception65_features


def _separable(in_channels: int, out_channels: int) -> int:
    """Trainable scalars of depthwise 3x3 + BN(scale, offset) + pointwise 1x1 + BN."""
    return 9 * in_channels + 2 * in_channels + in_channels * out_channels + 2 * out_channels


def _block(in_channels: int, depths: tuple[int, int, int], projection: bool) -> int:
    channels = (in_channels, *depths)
    total = sum(_separable(channels[i], channels[i + 1]) for i in range(3))
    return total + (in_channels * depths[-1] + 2 * depths[-1] if projection else 0)


def _reference_xception65_trainable() -> int:
    """Hand count of DeepLab's xception_65 without logits (research/deeplab/core/xception.py)."""
    stem = (3 * 3 * 3 * 32 + 2 * 32) + (3 * 3 * 32 * 64 + 2 * 64)
    entry = _block(64, (128,) * 3, True) + _block(128, (256,) * 3, True) + _block(256, (728,) * 3, True)
    middle = 16 * _block(728, (728,) * 3, False)
    exit_flow = _block(728, (728, 1024, 1024), True) + _block(1024, (1536, 1536, 2048), False)
    return stem + entry + middle + exit_flow


def _trainable(model: keras.Model) -> int:
    return int(sum(np.prod(weight.shape) for weight in model.trainable_weights))


def _xception(output_stride: int, size: int = 64) -> keras.Model:
    inputs = keras.Input((size, size, 3))
    return keras.Model(inputs, aligned_xception65_features(inputs, output_stride))


def test_parameter_count_matches_deeplab_reference_and_timm():
    model = _xception(16)
    assert _reference_xception65_trainable() == 37_867_312
    assert _trainable(model) == 37_867_312
    # timm's port of the DeepLab checkpoint (xception65.tf_in1k): 39.9 M with a 2048 x 1000 + 1000 head.
    assert abs(_trainable(model) + 2048 * 1000 + 1000 - 39.9e6) <= 0.05e6
    assert model.count_params() - _trainable(model) == 185_200  # BN moving mean and variance


def test_structure_has_16_middle_blocks_and_atrous_exit_at_output_stride_16():
    model = _xception(16)
    names = {layer.name for layer in model.layers}
    assert {f"middle_block{i}_add" for i in range(1, 17)} <= names
    assert "middle_block17_add" not in names
    assert model.get_layer("entry_block3_sepconv3_depthwise").strides == (2, 2)
    assert model.get_layer("exit_block1_sepconv3_depthwise").strides == (1, 1)
    assert model.get_layer("exit_block1_sepconv3_depthwise").dilation_rate == (1, 1)
    assert model.get_layer("exit_block2_sepconv1_depthwise").dilation_rate == (2, 2)


def test_output_stride_8_dilates_middle_and_exit_flows():
    model = _xception(8)
    assert model.get_layer("entry_block3_sepconv3_depthwise").strides == (1, 1)
    assert model.get_layer("middle_block1_sepconv1_depthwise").dilation_rate == (2, 2)
    assert model.get_layer("exit_block1_sepconv3_depthwise").dilation_rate == (2, 2)
    assert model.get_layer("exit_block2_sepconv3_depthwise").dilation_rate == (4, 4)


def test_rejects_unsupported_output_stride():
    with pytest.raises(ValueError, match=r"output_stride must be one of \(8, 16, 32\), got 4"):
        _xception(4)
