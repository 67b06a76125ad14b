"""Backbone input scaling inside tf.data, for `make_dataset(..., input_scaling=...)`.

The models scale inside the graph (`common.layers.InputScaling`) and take [0, 1] images, so the
pipelines of this project leave `input_scaling=None`; it serves models that do not scale themselves.
Modes and the name table are those of `common.layers` and `common.backbones`.
"""

from __future__ import annotations

import tensorflow as tf

from common.backbones import scaling_modes_by_name
from common.layers import SCALING_MODES, scale_images


def scaling_mode(input_scaling: str | None) -> str | None:
    """None, a mode ("caffe", "torch", "tf", "raw", "none"), a backbone ("resnet50") or a
    keras.applications family ("densenet") -> the mode (None stays None)."""
    if input_scaling is None or input_scaling in SCALING_MODES:
        return input_scaling
    modes = scaling_modes_by_name()
    if input_scaling not in modes:
        known = ", ".join([*SCALING_MODES, *modes])
        raise ValueError(f"unknown input_scaling {input_scaling!r}; known: {known}")
    return modes[input_scaling]


def scale_input(image: tf.Tensor, mode: str | None) -> tf.Tensor:
    """image (..., C) float32 in [0, 1] -> the input a backbone expects (`common.layers.scale_images`);
    None: unchanged."""
    return image if mode is None else scale_images(image, mode)
