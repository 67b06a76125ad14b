"""The input layers of every model: modes against keras.applications and hand-computed values, and
`.keras` files saved with the layers they replaced (issue 12) loading with the same outputs."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest

from common.layers import GrayToRGB, InputScaling, SegmentationInputScaling

PIXEL = np.array([[[[1.0, 0.0, 0.5]]]], dtype="float32")  # one RGB pixel in [0, 1]


def scaled(layer: keras.layers.Layer, images: np.ndarray) -> np.ndarray:
    return keras.ops.convert_to_numpy(layer(images))


def test_gray_to_rgb_repeats_the_channel():
    image = np.arange(4, dtype="float32").reshape(1, 2, 2, 1)
    rgb = scaled(GrayToRGB(), image)
    assert rgb.shape == (1, 2, 2, 3)
    for channel in range(3):
        np.testing.assert_array_equal(rgb[..., channel], image[..., 0])


@pytest.mark.parametrize(
    ("mode", "pixel", "expected"),
    [
        ("tf", [0.0, 0.5, 1.0], [-1.0, 0.0, 1.0]),
        ("raw", [0.0, 0.5, 1.0], [0.0, 127.5, 255.0]),
        ("none", [0.0, 0.5, 1.0], [0.0, 0.5, 1.0]),
        ("torch", [0.485, 0.456 + 0.224, 0.406 - 0.225], [0.0, 1.0, -1.0]),
        # RGB (1, 0, 0.5) -> BGR (127.5, 0, 255) minus (103.939, 116.779, 123.68)
        ("caffe", [1.0, 0.0, 0.5], [23.561, -116.779, 131.32]),
    ],
)
def test_input_scaling_modes_on_rgb(mode, pixel, expected):
    result = scaled(InputScaling(mode), np.array(pixel, "float32").reshape(1, 1, 1, 3))
    np.testing.assert_allclose(result.reshape(3), expected, atol=1e-4)


@pytest.mark.parametrize("mode", ["caffe", "torch", "tf"])
def test_input_scaling_matches_keras_preprocess_input(mode):
    images = np.random.default_rng(0).random((2, 4, 4, 3)).astype("float32")
    expected = keras.applications.imagenet_utils.preprocess_input(images * 255.0, mode=mode)
    np.testing.assert_allclose(scaled(InputScaling(mode), images), expected, atol=1e-4)


def test_input_scaling_on_one_channel_uses_the_mean_statistics():
    grey = np.full((1, 1, 1, 1), 0.5, "float32")
    np.testing.assert_allclose(
        scaled(InputScaling("caffe"), grey).item(), 127.5 - (103.939 + 116.779 + 123.68) / 3, atol=1e-4
    )
    # 127.5 - mean(123.68, 116.779, 103.939) = 12.700667 (the caffe mean, in either channel order)
    np.testing.assert_allclose(scaled(InputScaling("caffe"), grey).ravel(), [12.700667], rtol=1e-5)
    np.testing.assert_allclose(
        scaled(InputScaling("torch"), grey).item(), (0.5 - 1.347 / 3) / (0.678 / 3), atol=1e-5
    )


@pytest.mark.parametrize("mode", ["caffe", "torch", "tf", "raw", "none"])
def test_input_scaling_config_round_trip(mode):
    restored = keras.layers.deserialize(keras.layers.serialize(InputScaling(mode, name="scaling")))
    assert type(restored) is InputScaling
    assert (restored.mode, restored.name, restored.dtype) == (mode, "scaling", "float32")


def test_input_scaling_rejects_an_unknown_mode():
    with pytest.raises(
        ValueError, match="unknown input scaling mode 'imagenet'; known: caffe, torch, tf, raw, none"
    ):
        InputScaling("imagenet")


def test_input_scaling_keeps_float32_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        layer = InputScaling("caffe")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert layer.compute_dtype == "float32"
    assert scaled(layer, PIXEL).dtype == np.float32


def tiny_model(mode: str) -> keras.Model:
    """(B, 1, 1, 1) image -> GrayToRGB -> InputScaling(mode): the input layers of a classifier."""
    image = keras.Input((1, 1, 1), name="image")
    rgb = GrayToRGB(name="gray_to_rgb")(image)
    return keras.Model(image, InputScaling(mode, name="input_scaling")(rgb))


def with_old_layer_names(path: Path, scaling: tuple[str, str, str], gray_to_rgb: tuple[str, str]) -> Path:
    """Rewrites a saved `.keras` file's config as the replaced layers wrote it.

    scaling: (registered name, module, mode) of the old InputScaling; gray_to_rgb: (registered name,
    module) of the old GrayToRGB.
    """
    with zipfile.ZipFile(path) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(files["config.json"])
    layers = {layer["config"]["name"]: layer for layer in config["config"]["layers"]}
    registered, module, mode = scaling
    layers["input_scaling"].update(registered_name=registered, module=module)
    layers["input_scaling"]["config"]["mode"] = mode
    layers["gray_to_rgb"].update(registered_name=gray_to_rgb[0], module=gray_to_rgb[1])
    files["config.json"] = json.dumps(config).encode()
    old = path.with_name(f"old_{path.name}")
    with zipfile.ZipFile(old, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return old


CLASSIFICATION_GRAY_TO_RGB = ("classification>GrayToRGB", "classification.models.input_layers")
SEGMENTATION = ("covid_segmentation>InputScaling", "segmentation.models.blocks")
CLASSIFICATION = ("classification>InputScaling", "classification.models.input_layers")


@pytest.mark.parametrize(
    ("saved_as", "mode", "new_mode", "expected"),
    [
        (CLASSIFICATION, "raw", "raw", [63.75] * 3),
        (CLASSIFICATION, "torch", "torch", (0.25 - np.array([0.485, 0.456, 0.406])) / [0.229, 0.224, 0.225]),
        (SEGMENTATION, "x255", "raw", [63.75] * 3),
        # the segmentation layer's "torch" subtracted the caffe mean, in RGB order (123.68, 116.779, 103.939)
        (SEGMENTATION, "torch", "torch", (63.75 - np.array([123.68, 116.779, 103.939])) / [58.395, 57.12, 57.375]),
        (SEGMENTATION, "caffe", "caffe", 63.75 - np.array([103.939, 116.779, 123.68])),
    ],
)  # fmt: skip
def test_files_saved_with_the_replaced_layers_load_with_their_outputs(
    saved_as, mode, new_mode, expected, tmp_path
):
    path = tmp_path / "model.keras"
    tiny_model(mode if mode != "x255" else "raw").save(path)
    old = with_old_layer_names(path, (*saved_as, mode), CLASSIFICATION_GRAY_TO_RGB)
    reloaded = keras.saving.load_model(old)
    layer = reloaded.get_layer("input_scaling")
    assert isinstance(layer, InputScaling) and layer.mode == new_mode
    assert isinstance(reloaded.get_layer("gray_to_rgb"), GrayToRGB)
    assert isinstance(layer, SegmentationInputScaling) == (saved_as == SEGMENTATION)
    outputs = keras.ops.convert_to_numpy(reloaded(np.full((1, 1, 1, 1), 0.25, "float32")))
    np.testing.assert_allclose(outputs.ravel(), expected, rtol=1e-6)
    # saved again, it loads as the same class: a file keeps the outputs it had
    reloaded.save(tmp_path / "again.keras")
    again = keras.saving.load_model(tmp_path / "again.keras")
    assert type(again.get_layer("input_scaling")) is type(layer)


def test_the_old_segmentation_modes_on_rgb():
    """The replaced segmentation layer's answers, kept by `SegmentationInputScaling`."""
    cases = {
        "none": [1.0, 0.0, 0.5],
        "x255": [255.0, 0.0, 127.5],
        "tf": [1.0, -1.0, 0.0],
        # (255 - 123.68) / 58.395, (0 - 116.779) / 57.12, (127.5 - 103.939) / 57.375
        "torch": [2.2488227, -2.0444503, 0.4106492],
        # BGR order: 127.5 - 103.939, 0 - 116.779, 255 - 123.68
        "caffe": [23.561, -116.779, 131.32],
    }
    for mode, expected in cases.items():
        np.testing.assert_allclose(scaled(SegmentationInputScaling(mode), PIXEL).ravel(), expected, rtol=1e-5)
