from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from segmentation.models import build_segmenter, list_segmenters
from segmentation.models.pspnet import input_size_multiple

LIGHT_ENCODER = "mobilenetv2"
# A tiny plain encoder with levels 0..5 (strides 1..32): every decoder builds on it in well under a second.
TINY = {"encoder_kwargs": {"filters": (4, 8, 8, 8, 8, 8)}}


def _batch(size: int, channels: int, num_classes: int):
    rng = np.random.default_rng(0)
    images = rng.random((2, size, size, channels), dtype=np.float32)
    labels = rng.integers(0, max(2, num_classes), (2, size, size))
    if num_classes == 1:
        return images, labels[..., None].astype("float32")
    return images, np.eye(num_classes, dtype="float32")[labels]


def _loss(model: keras.Model) -> keras.losses.Loss:
    if model.output_shape[-1] == 1:
        return keras.losses.BinaryCrossentropy()
    return keras.losses.CategoricalCrossentropy()


def _train_one_step(model: keras.Model, images, masks) -> float:
    loss = _loss(model)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=loss, run_eagerly=True)  # no tracing: faster here
    return float(model.train_on_batch(images, masks))


def _check_every_weight_is_connected_to_the_loss(model: keras.Model, images, masks) -> None:
    """Every trainable weight gets a gradient (None means it is not on the path to the output).

    Checked structurally, not by weight changes or non-zero gradients: dead ReLUs in tiny layers,
    EfficientNet's stochastic depth and BN scales before another BN (gradients near 1e-10) can leave
    a connected weight unchanged after one step.
    """
    with tf.GradientTape() as tape:
        loss = _loss(model)(masks, model(images, training=True))
    gradients = tape.gradient(loss, model.trainable_weights)
    unconnected = [w.path for w, g in zip(model.trainable_weights, gradients, strict=True) if g is None]
    assert unconnected == []


def _check_train_and_reload(model: keras.Model, size: int, channels: int, num_classes: int, tmp_path):
    images, masks = _batch(size, channels, num_classes)
    assert model.output_shape == (None, size, size, num_classes)
    head_before = model.get_layer("head_logits").kernel.numpy().copy()
    assert np.isfinite(_train_one_step(model, images, masks))
    assert not np.array_equal(head_before, model.get_layer("head_logits").kernel.numpy())
    _check_every_weight_is_connected_to_the_loss(model, images, masks)
    predictions = model(images, training=False).numpy()
    assert predictions.dtype == np.float32
    assert predictions.min() >= 0.0 and predictions.max() <= 1.0
    if num_classes > 1:
        np.testing.assert_allclose(predictions.sum(-1), 1.0, atol=1e-5)
    path = tmp_path / f"{model.name}.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_allclose(reloaded(images, training=False).numpy(), predictions, atol=1e-5)


@pytest.mark.parametrize(
    ("decoder", "encoder", "size", "num_classes", "kwargs"),
    [
        ("unet", "plain", 64, 1, TINY),
        ("unet", LIGHT_ENCODER, 64, 3, {}),
        ("fpn", "plain", 64, 1, {"pyramid_filters": 8, "segmentation_filters": 8, **TINY}),
        ("linknet", "plain", 64, 2, TINY),
        ("pspnet", "plain", 48, 1, {"filters": 8, **TINY}),
        ("deeplabv3plus", "plain", 64, 3, {"aspp_filters": 8, "decoder_filters": 8, **TINY}),
    ],
)
def test_every_decoder_trains_one_step_and_reloads_identically(
    decoder, encoder, size, num_classes, kwargs, tmp_path
):
    model = build_segmenter(decoder, encoder, (size, size, 1), num_classes, **kwargs)
    assert model.name == f"{decoder}_{encoder}"
    _check_train_and_reload(model, size, 1, num_classes, tmp_path)


def test_plain_unet_parameter_count_by_hand():
    model = build_segmenter("unet", "plain", (16, 16, 1), 1, encoder_kwargs={"filters": (4, 8)})
    # level0: conv 1->4 (36) + BN (16) + conv 4->4 (144) + BN (16); level1: 4->8 (288) + BN (32)
    # + 8->8 (576) + BN (32); up-conv 2x2 8->4 with bias (132); concat 4+4 -> conv 8->4 (288) + BN
    # (16) + conv 4->4 (144) + BN (16); head 1x1 4->1 with bias (5).
    assert model.count_params() == 212 + 928 + 132 + 464 + 5
    concat = model.get_layer("decoder_stage1_concat")
    assert concat.output.shape[1:] == (16, 16, 8)  # the full-resolution skip of the classic U-Net


def test_encoder_unet_has_skips_at_strides_16_to_2_and_none_at_full_resolution():
    model = build_segmenter("unet", LIGHT_ENCODER, (64, 64, 3), 1)
    names = {layer.name for layer in model.layers}
    assert {f"decoder_stage{i}_concat" for i in range(1, 5)} <= names
    assert "decoder_stage5_concat" not in names
    assert model.get_layer("decoder_stage5_2_conv").output.shape[1:] == (64, 64, 16)


def test_freeze_encoder_keeps_encoder_weights_fixed():
    model = build_segmenter("linknet", "plain", (64, 64, 1), 1, freeze_encoder=True, **TINY)
    encoder = model.get_layer("encoder")
    assert not encoder.trainable and not encoder.trainable_weights
    encoder_before = [weight.numpy().copy() for weight in encoder.weights]
    head_before = model.get_layer("head_logits").kernel.numpy().copy()
    _train_one_step(model, *_batch(64, 1, 1))
    for before, weight in zip(encoder_before, encoder.weights, strict=True):
        np.testing.assert_array_equal(before, weight.numpy())  # BN statistics too: inference mode
    assert not np.array_equal(head_before, model.get_layer("head_logits").kernel.numpy())


def test_mixed_precision_keeps_float32_output():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = build_segmenter("unet", "plain", (32, 32, 1), 2, encoder_kwargs={"filters": (4, 8)})
        assert model.get_layer("decoder_stage1_1_conv").compute_dtype == "bfloat16"
        predictions = model(_batch(32, 1, 2)[0], training=False).numpy()
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert predictions.dtype == np.float32
    np.testing.assert_allclose(predictions.sum(-1), 1.0, atol=1e-5)


@pytest.mark.parametrize(("output_stride", "rates"), [(16, (6, 12, 18)), (8, (12, 24, 36))])
def test_deeplab_aspp_rates_double_at_output_stride_8(output_stride, rates):
    model = build_segmenter("deeplabv3plus", LIGHT_ENCODER, (64, 64, 3), 2, output_stride=output_stride)
    for rate in rates:
        assert model.get_layer(f"aspp_rate{rate}_depthwise").dilation_rate == (rate, rate)
    assert model.get_layer("aspp_concat").output.shape[1:3] == (64 // output_stride,) * 2
    assert model.get_layer("decoder_skip_conv").output.shape[1:] == (16, 16, 48)


def test_deeplab_on_aligned_xception_uses_atrous_backbone():
    model = build_segmenter("deeplabv3plus", "xception65", (64, 64, 1), 1)
    encoder = model.get_layer("encoder")
    assert [shape[1:] for shape in encoder.output_shape] == [(16, 16, 256), (4, 4, 2048)]
    assert encoder.get_layer("exit_block2_sepconv1_depthwise").dilation_rate == (2, 2)
    assert model.output_shape == (None, 64, 64, 1)


def test_pspnet_size_constraint():
    assert input_size_multiple() == 48
    assert input_size_multiple((1, 2, 4)) == 32
    with pytest.raises(ValueError, match=r"pspnet: input size 64x64 must be divisible by 48"):
        build_segmenter("pspnet", LIGHT_ENCODER, (64, 64, 3), 1)


def test_registry_lists_pairs_and_rejects_bad_names():
    pairs = list_segmenters()
    assert ("unet", "plain") in pairs and ("deeplabv3plus", "xception65") in pairs
    assert ("unet", "resnet34") in pairs and ("fpn", "densenet121") in pairs
    plain_pairs = [pair for pair in pairs if pair[1] == "plain"]
    assert plain_pairs == [("deeplabv3plus", "plain"), ("pspnet", "plain"), ("unet", "plain")]
    assert len(pairs) == 5 * 19 + 3
    with pytest.raises(ValueError, match=r"unknown decoder 'segnet'; choose one of \['deeplabv3plus', 'fpn'"):
        build_segmenter("segnet", "vgg16", (64, 64, 3), 1)
    with pytest.raises(ValueError, match="unknown encoder 'resnet18'"):
        build_segmenter("unet", "resnet18", (64, 64, 3), 1)
    # FPN uses C1..C5 as segmentation_models does (it used C2..C5 before issue 11).
    with pytest.raises(
        ValueError, match=r"plain: levels \(1, 2, 3, 4, 5\) requested, but this encoder offers"
    ):
        build_segmenter("fpn", "plain", (64, 64, 3), 1)


@pytest.mark.slow
@pytest.mark.parametrize(("decoder", "encoder"), list_segmenters())
def test_every_pair_builds_trains_and_reloads(decoder, encoder, tmp_path):
    size = 96 if decoder == "pspnet" else 128
    model = build_segmenter(decoder, encoder, (size, size, 3), 2)
    _check_train_and_reload(model, size, 3, 2, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("output_stride", [8, 16])
def test_deeplab_xception65_trains_and_reloads(output_stride, tmp_path):
    model = build_segmenter("deeplabv3plus", "xception65", (128, 128, 1), 2, output_stride=output_stride)
    _check_train_and_reload(model, 128, 1, 2, tmp_path)
