"""PSPNet (Zhao et al. 2017): pyramid pooling on the stride-8 encoder feature."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import keras
from keras import layers

from segmentation.models.blocks import conv_bn_relu, segmentation_head, upsample
from segmentation.models.encoders import encoder_features

FEATURE_LEVEL = 3  # stride 8
DEFAULT_BINS = (1, 2, 3, 6)


def input_size_multiple(bins: Sequence[int] = DEFAULT_BINS) -> int:
    """H and W must be multiples of this: 8 x lcm(bins) (48 for the default bins 1, 2, 3, 6)."""
    return 2**FEATURE_LEVEL * math.lcm(*bins)


def build_pspnet(
    encoder_name: str,
    input_shape: Sequence[int],
    num_classes: int,
    weights: str | Path | None = None,
    freeze_encoder: bool = False,
    encoder_kwargs: Mapping | None = None,
    bins: Sequence[int] = DEFAULT_BINS,
    filters: int = 512,
    dropout: float = 0.1,
) -> keras.Model:
    """PSPNet on C3 (stride 8; deeper encoder layers are not built).

    Pyramid pooling: for each bin b, average pooling to b x b cells, a 1x1 conv-BN-ReLU to C / len(bins)
    channels and bilinear upsampling back; concatenated with C3, then a 3x3 conv-BN-ReLU (`filters`),
    dropout, a 1x1 conv for the logits and x8 bilinear upsampling. Average pooling needs the C3 size
    divisible by every bin: H and W must be multiples of `input_size_multiple(bins)` (48 by default,
    e.g. 192, 240, 288, 384, 480).
    Output (B, H, W, num_classes): sigmoid for 1 class, softmax otherwise, float32.
    """
    multiple = input_size_multiple(bins)
    if input_shape[0] % multiple or input_shape[1] % multiple:
        raise ValueError(
            f"pspnet: input size {input_shape[0]}x{input_shape[1]} must be divisible by {multiple} "
            f"(8 x the least common multiple of the bins {tuple(bins)})"
        )
    inputs, (feature,) = encoder_features(
        encoder_name, input_shape, weights, freeze_encoder, (FEATURE_LEVEL,), encoder_kwargs
    )
    height, width, channels = feature.shape[1:]
    branches = [feature]
    for b in bins:
        cell = (height // b, width // b)
        x = layers.AveragePooling2D(cell, strides=cell, name=f"psp_bin{b}_pool")(feature)
        x = conv_bn_relu(x, max(1, channels // len(bins)), 1, f"psp_bin{b}")
        branches.append(upsample(x, cell, f"psp_bin{b}_upsample"))
    x = layers.Concatenate(name="psp_concat")(branches)
    x = conv_bn_relu(x, filters, 3, "psp_fuse")
    x = layers.Dropout(dropout, name="psp_dropout")(x)
    outputs = segmentation_head(x, num_classes, upsampling=2**FEATURE_LEVEL)
    return keras.Model(inputs, outputs, name=f"pspnet_{encoder_name}")
