"""Layers at the classifier's input: grey-to-RGB adaptation and the backbone family's input scaling.

Every classifier takes images as float32 in [0, 1], shape (B, H, W, C), which is what
`tfrecords.make_dataset(..., input_scaling=None)` yields. The family's `keras.applications`
preprocessing is applied inside the model by `InputScaling`, so a saved `.keras` file carries its own
preprocessing and a user's own scans need only be scaled to [0, 1]. Do not scale again in the data
pipeline.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers, ops

# ImageNet channel statistics, as used by `keras.applications.imagenet_utils.preprocess_input`:
# "torch" mode (RGB, [0, 1] units) and "caffe" mode (BGR, 0-255 units).
TORCH_MEAN_RGB = (0.485, 0.456, 0.406)
TORCH_STD_RGB = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
# mode -> what it does to x in [0, 1]:
#   "caffe": 255 x, RGB -> BGR, minus the ImageNet mean (0-255 units), as for VGG and ResNet (v1);
#   "torch": (x - mean) / std with the ImageNet statistics, as for DenseNet;
#   "tf": 2 x - 1, i.e. [-1, 1], as for Inception, Xception, ResNetV2, MobileNetV2, NASNet;
#   "raw": 255 x, for backbones that rescale inside (EfficientNet);
#   "none": x unchanged, for the models we train from scratch.
SCALING_MODES = ("caffe", "torch", "tf", "raw", "none")


@keras.saving.register_keras_serializable(package="classification")
class GrayToRGB(layers.Layer):
    """Repeats a one-channel image to three channels: (B, H, W, 1) -> (B, H, W, 3), dtype unchanged.

    Used when ImageNet (or other three-channel) weights meet grayscale CT or X-ray input.
    """

    def call(self, images):
        return ops.repeat(images, 3, axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 3)


@keras.saving.register_keras_serializable(package="classification")
class InputScaling(layers.Layer):
    """Maps images in [0, 1] to a backbone family's expected input (see `SCALING_MODES`).

    images: (B, H, W, C) float in [0, 1]. C = 3 is taken as RGB. For C = 1 (grayscale with a
    backbone built on one channel), "caffe" and "torch" use the mean of the three channel statistics.
    Runs in float32 by default so the constants are exact under mixed precision.
    """

    def __init__(self, mode: str, **kwargs: Any) -> None:
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if mode not in SCALING_MODES:
            raise ValueError(f"unknown input scaling mode {mode!r}; known: {', '.join(SCALING_MODES)}")
        self.mode = mode

    def call(self, images):
        if self.mode == "tf":
            return images * 2.0 - 1.0
        if self.mode == "raw":
            return images * 255.0
        if self.mode == "none":
            return images
        channels = images.shape[-1]
        if self.mode == "torch":
            return (images - _statistic(TORCH_MEAN_RGB, channels)) / _statistic(TORCH_STD_RGB, channels)
        bgr = ops.flip(images, axis=-1) if channels == 3 else images
        return bgr * 255.0 - _statistic(CAFFE_MEAN_BGR, channels)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "mode": self.mode}


def _statistic(values: tuple[float, float, float], channels: int):
    """Per-channel constants as a float32 tensor of shape (channels,); for C = 1 their mean."""
    if channels == 3:
        return ops.convert_to_tensor(values, "float32")
    if channels == 1:
        return ops.convert_to_tensor([sum(values) / 3], "float32")
    raise ValueError(f"ImageNet statistics need 1 or 3 channels, got {channels}")
