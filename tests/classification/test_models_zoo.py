"""Every registered classifier: builds at its smallest input, groups its backbone into the documented
fine-tuning blocks, trains one step and reloads from `.keras` with identical predictions.

Heavy models are marked slow (run them with `-m slow`); NASNetLarge and EfficientNetB7 train only there.
"""

from functools import cache

import keras
import numpy as np
import pytest

from classification.models import (
    backbone_blocks,
    base_model,
    build_classifier,
    list_classifiers,
    smallest_input_size,
)

HEAVY = {"resnet101", "inceptionresnetv2", "nasnetlarge", *(f"efficientnetb{k}" for k in range(1, 8))}
TRAINED_BY_DEFAULT = {"plain_cnn", "vgg19_bn", "mobilenetv2"}

# Backbone parameters for RGB input (weights=None, include_top=False), as keras.applications builds them.
BACKBONE_PARAMETERS = {
    "vgg16": 14_714_688, "vgg19": 20_024_384, "resnet50": 23_587_712, "resnet101": 42_658_176,
    "resnet50v2": 23_564_800, "inceptionv3": 21_802_784, "inceptionresnetv2": 54_336_736,
    "xception": 20_861_480, "densenet121": 7_037_504, "mobilenetv2": 2_257_984, "nasnetlarge": 84_916_818,
    "efficientnetb0": 4_049_571, "efficientnetb1": 6_575_239, "efficientnetb2": 7_768_569,
    "efficientnetb3": 10_783_535, "efficientnetb4": 17_673_823, "efficientnetb5": 28_513_527,
    "efficientnetb6": 40_960_143, "efficientnetb7": 64_097_687, "vgg19_bn": 20_046_400, "plain_cnn": 389_856,
}  # fmt: skip


def numbered(prefix: str, first: int, last: int) -> list[str]:
    return [f"{prefix}{k}" for k in range(first, last + 1)]


STAGES = numbered("conv", 1, 5)
EFFICIENTNET = ["stem", *numbered("block", 1, 7), "top"]
BLOCKS = {
    "vgg16": numbered("block", 1, 5),
    "vgg19": numbered("block", 1, 5),
    "vgg19_bn": numbered("block", 1, 5),
    "plain_cnn": numbered("block", 1, 4),
    "resnet50": STAGES,
    "resnet101": STAGES,
    "resnet50v2": STAGES,
    "densenet121": STAGES,
    "inceptionv3": numbered("mixed", 0, 10),
    "inceptionresnetv2": [
        "mixed_5b",
        *numbered("block35_", 1, 10),
        "mixed_6a",
        *numbered("block17_", 1, 20),
        "mixed_7a",
        *numbered("block8_", 1, 10),
        "conv_7b",
    ],  # fmt: skip
    "xception": numbered("block", 1, 14),
    "mobilenetv2": ["stem", *numbered("block_", 1, 16), "top"],
    "nasnetlarge": [
        "cell_stem_1",
        "cell_stem_2",
        *numbered("cell_", 0, 5),
        "cell_reduce_6",
        *numbered("cell_", 7, 12),
        "cell_reduce_12",
        *numbered("cell_", 13, 18),
    ],  # fmt: skip
    **{f"efficientnetb{k}": EFFICIENTNET for k in range(8)},
}


def marked(names, heavy):
    return [pytest.param(name, marks=pytest.mark.slow) if name in heavy else name for name in names]


@cache
def rgb_classifier(name: str) -> keras.Model:
    """The named classifier at its smallest input, RGB, weights=None; built once per test session."""
    size = smallest_input_size(name)
    return build_classifier(name, (size, size, 3), 1)


@pytest.mark.parametrize("name", marked(list_classifiers(), HEAVY))
def test_builds_at_its_smallest_input_with_the_documented_blocks(name):
    model = rgb_classifier(name)
    backbone = base_model(model)
    assert model.output_shape == (None, 1)
    assert backbone.count_params() == BACKBONE_PARAMETERS[name]
    blocks = backbone_blocks(model)
    assert [block.name for block in blocks] == BLOCKS[name]
    grouped = [layer.name for block in blocks for layer in block.layers]
    inner = [layer.name for layer in backbone.layers if not isinstance(layer, keras.layers.InputLayer)]
    assert sorted(grouped) == sorted(inner)  # every layer in exactly one block


def block_of(model: keras.Model, layer_name: str) -> str:
    return next(
        block.name for block in backbone_blocks(model) for layer in block.layers if layer.name == layer_name
    )


def weights_in(model: keras.Model, block_name: str) -> int:
    """The number of weight tensors (kernels, biases, BN statistics) in one block."""
    block = next(block for block in backbone_blocks(model) if block.name == block_name)
    return sum(len(layer.weights) for layer in block.layers)


def test_block_boundaries_of_resnet_densenet_and_inception():
    resnet = rgb_classifier("resnet50")
    assert block_of(resnet, "pool1_pool") == "conv1" and block_of(resnet, "conv5_block3_out") == "conv5"
    densenet = rgb_classifier("densenet121")
    assert block_of(densenet, "pool4_conv") == "conv4" and block_of(densenet, "relu") == "conv5"
    inception = rgb_classifier("inceptionv3")
    assert block_of(inception, "mixed9_1") == "mixed10"
    # the stem's 5 and mixed0's 7 conv + BN(scale=False) pairs: 12 x (1 kernel + 3 BN weights)
    assert weights_in(inception, "mixed0") == 48


def test_xception_shortcut_belongs_to_its_block():
    model = rgb_classifier("xception")
    # block2: 2 separable convs (2 kernels each) + 2 BN (4 each) + shortcut conv (1) + its BN (4)
    assert weights_in(model, "block2") == 17


@pytest.mark.parametrize("name", marked(list_classifiers(), set(list_classifiers()) - TRAINED_BY_DEFAULT))
def test_trains_one_step_and_reloads_with_identical_predictions(name, tmp_path):
    size = smallest_input_size(name)
    model = build_classifier(name, (size, size, 1), 1)
    images = np.random.default_rng(0).random((2, size, size, 1)).astype("float32")
    labels = np.array([[0.0], [1.0]], "float32")
    kernel_before = keras.ops.convert_to_numpy(model.get_layer("logits").kernel)
    # one eager step: tracing a graph for a single step of a deep network costs far more than the step
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="binary_crossentropy", run_eagerly=True)
    loss = model.train_on_batch(images, labels)
    assert np.isfinite(loss)
    assert not np.array_equal(kernel_before, keras.ops.convert_to_numpy(model.get_layer("logits").kernel))
    path = tmp_path / f"{name}.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    assert reloaded.name == name
    np.testing.assert_allclose(reloaded(images, training=False), model(images, training=False), atol=1e-6)
