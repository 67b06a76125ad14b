from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from segmentation.models.encoders import available_levels, build_encoder, list_encoders

HEAVY_ENCODERS = {"efficientnetb5", "efficientnetb6", "efficientnetb7", "inceptionresnetv2"}
SIZE = 64


def _encoder_cases():
    for name in list_encoders():
        marks = [pytest.mark.slow] if name in HEAVY_ENCODERS else []
        yield pytest.param(name, marks=marks, id=name)


def test_list_encoders_names_every_seed_backbone():
    assert list_encoders() == sorted(
        ["densenet121", "inceptionresnetv2", "inceptionv3", "mobilenetv2", "plain", "resnet101", "resnet34"]
        + ["resnet50", "resnet50v2", "vgg16", "vgg19", "xception65"]
        + [f"efficientnetb{i}" for i in range(8)]
    )


@pytest.mark.parametrize("name", _encoder_cases())
def test_pyramid_feature_k_has_size_input_over_2_to_the_k(name):
    encoder = build_encoder(name, (SIZE, 2 * SIZE, 1))
    levels = available_levels(name)
    assert levels == ((0, 1, 2, 3, 4) if name == "plain" else (1, 2, 3, 4, 5))
    sizes = [tuple(shape[1:3]) for shape in encoder.output_shape]
    assert sizes == [(SIZE // 2**k, 2 * SIZE // 2**k) for k in levels]
    assert encoder.name == "encoder"


@pytest.mark.parametrize(
    ("output_stride", "strides"), [(32, (2, 4, 8, 16, 32)), (16, (2, 4, 8, 16, 16)), (8, (2, 4, 8, 8, 8))]
)
def test_xception65_feature_strides_stop_at_the_output_stride(output_stride, strides):
    encoder = build_encoder("xception65", (SIZE, SIZE, 3), output_stride=output_stride)
    assert [shape[1] for shape in encoder.output_shape] == [SIZE // s for s in strides]
    assert [shape[-1] for shape in encoder.output_shape] == [128, 256, 728, 1024, 2048]


def test_levels_select_outputs_and_prune_deeper_layers():
    full = build_encoder("resnet34", (SIZE, SIZE, 3))
    shallow = build_encoder("resnet34", (SIZE, SIZE, 3), levels=(3, 2))
    assert [shape[1] for shape in shallow.output_shape] == [SIZE // 8, SIZE // 4]
    assert not any(layer.name.startswith("conv4") for layer in shallow.layers)
    assert shallow.count_params() < full.count_params()


def test_plain_encoder_filters_set_depth_and_channels():
    encoder = build_encoder("plain", (32, 32, 1), filters=(4, 8, 16))
    assert [shape[1:] for shape in encoder.output_shape] == [(32, 32, 4), (16, 16, 8), (8, 8, 16)]


def test_grayscale_input_with_random_weights_has_one_input_channel():
    encoder = build_encoder("resnet50", (SIZE, SIZE, 1))
    assert encoder.get_layer("conv1_conv").kernel.shape == (7, 7, 1, 64)
    assert "gray_to_rgb" not in [layer.name for layer in encoder.layers]


def test_grayscale_input_with_pretrained_weights_repeats_channel(tmp_path):
    # A weights file stands in for the ImageNet download: same loading path, no network.
    donor = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(SIZE, SIZE, 3))
    path = tmp_path / "mobilenetv2.weights.h5"
    donor.save_weights(path)
    encoder = build_encoder("mobilenetv2", (SIZE, SIZE, 1), weights=path)
    assert encoder.layers[1].name == "gray_to_rgb"
    np.testing.assert_array_equal(
        encoder.get_layer("Conv1").kernel.numpy(), donor.get_layer("Conv1").kernel.numpy()
    )
    image = np.random.default_rng(0).random((1, SIZE, SIZE, 1), dtype=np.float32)
    deepest = encoder(image, training=False)[-1].numpy()
    expected = donor(np.repeat(image, 3, -1) * 2 - 1, training=False).numpy()  # "tf" scaling: [-1, 1]
    np.testing.assert_allclose(deepest, expected, atol=1e-4)


def test_own_encoder_weights_file_round_trip_keeps_grayscale(tmp_path):
    source = build_encoder("resnet34", (SIZE, SIZE, 1))
    path = tmp_path / "resnet34.weights.h5"
    source.save_weights(path)
    loaded = build_encoder("resnet34", (SIZE, SIZE, 1), weights=path, levels=(5,))
    assert "gray_to_rgb" not in [layer.name for layer in loaded.layers]
    image = np.random.default_rng(0).random((1, SIZE, SIZE, 1), dtype=np.float32)
    np.testing.assert_allclose(loaded(image).numpy(), source(image)[-1].numpy(), atol=1e-6)


def test_own_encoder_refuses_imagenet():
    with pytest.raises(ValueError, match="resnet34: no ImageNet weights exist for this encoder"):
        build_encoder("resnet34", (SIZE, SIZE, 3), weights="imagenet")


def test_missing_weights_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.weights.h5: weights file not found"):
        build_encoder("plain", (SIZE, SIZE, 1), weights=tmp_path / "nope.weights.h5")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "resnet18"}, "unknown encoder 'resnet18'; choose one of"),
        ({"input_shape": (48, 64, 3)}, "vgg16: input size 48x64 must be divisible by 32"),
        ({"input_shape": (64, 64)}, r"vgg16: input_shape must be \(H, W, C\) with positive integers"),
        ({"filters": (8, 16)}, r"vgg16: unexpected encoder options \['filters'\]"),
        (
            {"levels": (0, 1)},
            r"vgg16: levels \(0, 1\) requested, but this encoder offers levels \(1, 2, 3, 4, 5\)",
        ),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, message):
    arguments = {"name": "vgg16", "input_shape": (SIZE, SIZE, 3), **kwargs}
    with pytest.raises(ValueError, match=message):
        build_encoder(**arguments)


def _receptive_field_centre(encoder, level_index: int, pixel: int, size: int) -> tuple[float, float]:
    """Centre of the input pixels that influence feature pixel (pixel, pixel) of one output."""
    rng = np.random.default_rng(0)
    influence = np.zeros((size, size))
    for _ in range(3):  # several random inputs, so no input pixel has a zero gradient by chance
        image = tf.constant(rng.random((1, size, size, 3), dtype=np.float32))
        with tf.GradientTape() as tape:
            tape.watch(image)
            feature = encoder(image)[level_index]
            value = tf.reduce_sum(feature[0, pixel, pixel, :])
        influence += np.abs(tape.gradient(value, image).numpy()[0]).sum(-1)
    rows, cols = np.nonzero(influence.sum(1))[0], np.nonzero(influence.sum(0))[0]
    return (rows[0] + rows[-1]) / 2, (cols[0] + cols[-1]) / 2


@pytest.mark.parametrize(
    "name",
    ["inceptionv3", "xception65", "resnet34", pytest.param("inceptionresnetv2", marks=pytest.mark.slow)],
)
def test_feature_pixel_j_is_centred_on_input_pixel_stride_times_j(name):
    size = 96
    encoder = build_encoder(name, (size, size, 3), levels=(1, 2))
    for index, stride in enumerate((2, 4)):
        pixel = size // 2 // stride
        assert _receptive_field_centre(encoder, index, pixel, size) == (stride * pixel, stride * pixel)


def test_every_batch_norm_uses_momentum_0_9_after_reload(tmp_path):
    encoder = build_encoder("mobilenetv2", (SIZE, SIZE, 3))  # backbone layers are set after construction
    path = tmp_path / "encoder.keras"
    encoder.save(path)
    reloaded = keras.saving.load_model(path)
    momenta = {
        layer.momentum for layer in reloaded.layers if isinstance(layer, keras.layers.BatchNormalization)
    }
    assert momenta == {0.9}
