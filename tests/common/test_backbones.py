"""The backbone registry: one scaling mode per keras.applications family, and pyramid outputs at
strides 2..32 with the channels keras.applications builds."""

from __future__ import annotations

import keras
import pytest

from common.backbones import BACKBONES, PYRAMID_KEYS, scaling_modes_by_name
from common.layers import SCALING_MODES


def test_every_family_has_one_known_scaling_mode():
    for backbone in BACKBONES.values():
        assert backbone.scaling in SCALING_MODES
        assert scaling_modes_by_name()[backbone.family] == backbone.scaling
    modes = scaling_modes_by_name()
    assert [modes[name] for name in ("resnet", "resnet_v2", "densenet", "densenet121", "efficientnet")] == [
        "caffe", "tf", "torch", "torch", "raw",
    ]  # fmt: skip
    assert [BACKBONES[name].family for name in ("resnet101", "inceptionv3", "efficientnetb7")] == [
        "resnet",
        "inception_v3",
        "efficientnet",
    ]


def test_mobilenetv2_pyramid_outputs_are_at_strides_2_to_32():
    backbone = BACKBONES["mobilenetv2"]
    model = backbone.build(None, input_shape=(64, 64, 3))
    pyramid = backbone.pyramid_outputs(model)
    assert tuple(pyramid) == PYRAMID_KEYS == ("P1", "P2", "P3", "P4", "P5")
    assert [tuple(p.shape[1:]) for p in pyramid.values()] == [
        (32, 32, 96), (16, 16, 144), (8, 8, 192), (4, 4, 576), (2, 2, 1280),
    ]  # fmt: skip
    keras.Model(model.input, list(pyramid.values()))  # the outputs are of this model's graph


def test_inception_pyramid_taps_the_inputs_of_its_max_poolings():
    backbone = BACKBONES["inceptionv3"]
    model = backbone.build(None, input_shape=(299, 299, 3))
    pyramid = backbone.pyramid_outputs(model)
    pools = [layer for layer in model.layers if isinstance(layer, keras.layers.MaxPooling2D)]
    assert pyramid["P1"] is pools[0].input and pyramid["P2"] is pools[1].input
    # 'valid' convolutions: smaller than 299 / 2^k
    assert [p.shape[1] for p in pyramid.values()] == [147, 71, 35, 17, 8]
    assert backbone.valid_convolutions


def test_a_backbone_without_a_pyramid_says_so():
    backbone = BACKBONES["xception"]
    with pytest.raises(ValueError, match="Xception: no pyramid outputs are defined"):
        backbone.pyramid_outputs(backbone.build(None, input_shape=(71, 71, 3)))
