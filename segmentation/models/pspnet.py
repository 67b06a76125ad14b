"""PSPNet (Zhao et al. 2017) as segmentation_models defines it: pyramid pooling on one encoder feature."""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
from keras import layers

from segmentation.models.blocks import DECODER_INITIALIZER, conv_bn_relu, segmentation_head, upsample
from segmentation.models.encoders import EncoderRequest

DOWNSAMPLE_FACTORS = (4, 8, 16)  # the stride of the pooled feature: C2, C3 or C4
DEFAULT_BINS = (1, 2, 3, 6)


def input_size_multiple(bins: Sequence[int] = DEFAULT_BINS, downsample_factor: int = 8) -> int:
    """H and W must be multiples of this: downsample_factor x lcm(bins) (48 for the defaults)."""
    return downsample_factor * math.lcm(*bins)


def build_pspnet(
    image: keras.KerasTensor,
    encoder: EncoderRequest,
    num_classes: int,
    downsample_factor: int = 8,
    bins: Sequence[int] = DEFAULT_BINS,
    filters: int = 512,
    dropout: float | None = None,
) -> keras.KerasTensor:
    """segmentation_models' `PSPNet` (segmodels-keras 0.1.0.dev13) with its defaults.

    Pools the encoder feature of stride `downsample_factor` (8: C3; 4: C2; 16: C4; deeper encoder
    layers are not built). Pyramid pooling: for each bin b, average pooling to b x b cells, a 1x1
    conv-BN-ReLU to `filters` (512) channels and bilinear upsampling back; concatenated with the
    feature, then a 1x1 conv-BN-ReLU (`filters`), optional spatial dropout (`dropout`, default none),
    a 3x3 conv for the logits and bilinear upsampling by `downsample_factor`. Decoder kernels use
    he_uniform. Average pooling needs the feature size divisible by every bin: H and W must be
    multiples of `input_size_multiple(bins, downsample_factor)` (48 by default, e.g. 192, 288, 384).
    Deliberate differences: BatchNorm momentum 0.9 (`blocks.batch_norm`), the input scaling inside the
    model, `bins` as an option (segmentation_models fixes 1, 2, 3, 6), no max-pooling option;
    parameter counts are equal.
    Output (B, H, W, num_classes): sigmoid for 1 class, softmax otherwise, float32.
    """
    if downsample_factor not in DOWNSAMPLE_FACTORS:
        raise ValueError(f"pspnet: downsample_factor {downsample_factor} is not one of {DOWNSAMPLE_FACTORS}")
    multiple = input_size_multiple(bins, downsample_factor)
    height, width = image.shape[1:3]
    if height % multiple or width % multiple:
        raise ValueError(
            f"pspnet: input size {height}x{width} must be divisible by {multiple} "
            f"({downsample_factor} x the least common multiple of the bins {tuple(bins)})"
        )
    (feature,) = encoder.features(image, (downsample_factor.bit_length() - 1,))
    branches = [feature]
    for b in bins:
        cell = (feature.shape[1] // b, feature.shape[2] // b)
        x = layers.AveragePooling2D(cell, strides=cell, name=f"psp_bin{b}_pool")(feature)
        x = conv_bn_relu(x, filters, 1, f"psp_bin{b}", kernel_initializer=DECODER_INITIALIZER)
        branches.append(upsample(x, cell, f"psp_bin{b}_upsample"))
    x = layers.Concatenate(name="psp_concat")(branches)
    x = conv_bn_relu(x, filters, 1, "psp_aggregation", kernel_initializer=DECODER_INITIALIZER)
    if dropout:
        x = layers.SpatialDropout2D(dropout, name="psp_dropout")(x)
    return segmentation_head(x, num_classes, upsampling=downsample_factor, kernel_size=3)
