"""Backbone input scaling with `keras.applications` preprocess_input semantics, inside tf.data."""

from __future__ import annotations

import tensorflow as tf
from keras.applications import imagenet_utils

# keras.applications backbone family -> its preprocess_input mode; "raw" = 0-255 as is (the model
# rescales inside, e.g. EfficientNet, ConvNeXt).
INPUT_SCALINGS = {
    "vgg16": "caffe",
    "vgg19": "caffe",
    "resnet": "caffe",
    "resnet50": "caffe",
    "densenet": "torch",
    "inception_v3": "tf",
    "inception_resnet_v2": "tf",
    "xception": "tf",
    "resnet_v2": "tf",
    "mobilenet": "tf",
    "mobilenet_v2": "tf",
    "mobilenet_v3": "raw",
    "nasnet": "tf",
    "efficientnet": "raw",
    "efficientnet_v2": "raw",
    "convnext": "raw",
}
SCALING_MODES = ("caffe", "torch", "tf", "raw")


def scaling_mode(input_scaling: str | None) -> str | None:
    """A backbone family ("resnet50", "densenet", ...) or mode ("caffe", "torch", "tf", "raw") -> mode."""
    if input_scaling is None or input_scaling in SCALING_MODES:
        return input_scaling
    if input_scaling not in INPUT_SCALINGS:
        known = ", ".join([*SCALING_MODES, *INPUT_SCALINGS])
        raise ValueError(f"unknown input_scaling {input_scaling!r}; known: {known}")
    return INPUT_SCALINGS[input_scaling]


def scale_input(image: tf.Tensor, mode: str | None) -> tf.Tensor:
    """image (..., C) float32 in [0, 1] -> the input a backbone expects (keras.applications semantics).

    None: unchanged; "raw": 0-255; "tf": [-1, 1]; "torch": ImageNet mean/std; "caffe": BGR minus the
    ImageNet mean on 0-255. "torch" and "caffe" need C = 3.
    """
    if mode is None:
        return image
    if mode == "raw":
        return image * 255.0
    return imagenet_utils.preprocess_input(image * 255.0, data_format="channels_last", mode=mode)
