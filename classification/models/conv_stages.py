"""The VGG-style stack our own backbones (VGG19-BN, the S3 plain CNN) are made of."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import keras
from keras import layers

from common.weights import PretrainedWeightsUnavailable


def conv_stages(
    architecture: str,
    input_shape: tuple[int, int, int],
    stages: Sequence[tuple[int, int]],
    use_bias: bool,
    weights: str | Path | None,
    name: str,
) -> keras.Model:
    """Stages of (3x3 conv -> BN -> ReLU) x n, each followed by a 2x2 max-pool.

    stages: (filters, convolutions) per stage. Maps (B, H, W, C) -> (B, H / 2^S, W / 2^S,
    filters of the last stage), S = len(stages); H and W must be at least 2^S. Layers of stage k
    (1-based) are named blockK_convJ, blockK_bnJ, blockK_reluJ and blockK_pool.
    architecture: used in error messages ("vgg19_bn"); name: the model's name.
    weights: None or a local weights file saved from the same configuration; there are no published
    ImageNet weights, so "imagenet" raises `PretrainedWeightsUnavailable`.
    """
    if str(weights) == "imagenet":
        raise PretrainedWeightsUnavailable(
            f"{architecture}: keras.applications publishes no ImageNet weights for it. Remedies: pass a "
            "local weights file (weights=/path/to/file.weights.h5) or use weights=None."
        )
    min_size = 2 ** len(stages)
    if not stages or any(convolutions < 1 for _, convolutions in stages):
        raise ValueError(
            f"{architecture}: needs at least one stage and one convolution per stage; got {stages}"
        )
    if min(input_shape[:2]) < min_size:
        raise ValueError(
            f"{architecture}: input must be at least {min_size}x{min_size}; got {tuple(input_shape)}"
        )
    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    for block, (filters, convolutions) in enumerate(stages, start=1):
        prefix = f"block{block}"
        for conv in range(1, convolutions + 1):
            x = layers.Conv2D(filters, 3, padding="same", use_bias=use_bias, name=f"{prefix}_conv{conv}")(x)
            x = layers.BatchNormalization(name=f"{prefix}_bn{conv}")(x)
            x = layers.ReLU(name=f"{prefix}_relu{conv}")(x)
        x = layers.MaxPooling2D(2, strides=2, name=f"{prefix}_pool")(x)
    model = keras.Model(inputs, x, name=name)
    if weights is not None:
        model.load_weights(str(weights))
    return model
