"""Feature Pyramid Network for semantic segmentation as segmentation_models defines it (its `FPN`,
after Lin et al. 2017 and Kirillov et al.'s COCO 2017 stuff-segmentation entry), written by us."""

from __future__ import annotations

import keras
from keras import layers

from segmentation.models.blocks import (
    DECODER_INITIALIZER,
    conv_bn_relu,
    double_conv,
    segmentation_head,
    upsample,
)
from segmentation.models.encoders import PYRAMID_LEVELS, EncoderRequest

AGGREGATIONS = ("concat", "sum")


def build_fpn(
    image: keras.KerasTensor,
    encoder: EncoderRequest,
    num_classes: int,
    pyramid_filters: int = 256,
    segmentation_filters: int = 128,
    aggregation: str = "concat",
) -> keras.KerasTensor:
    """segmentation_models' `FPN` (segmodels-keras 0.1.0.dev13) with its defaults, on C1..C5.

    Pyramid (top-down, strides 16..2): P4 = nearest-upsampled (1x1 conv of C5) + 1x1 conv(C4); P_k =
    upsampled P_{k+1} + 1x1 conv(C_k) for k = 3, 2, 1 (segmentation_models names P4..P1 "p5".."p2").
    The 1x1 convs have `pyramid_filters` (256) channels and biases; the one on C5 only exists where
    C5 has another channel count. Segmentation branch: each P_k gets two 3x3 conv-BN-ReLU
    (`segmentation_filters`, 128) and nearest upsampling to stride 2; the four maps are concatenated
    (`aggregation` "concat", or "sum"), then a 3x3 conv-BN-ReLU (`segmentation_filters`), x2 bilinear
    upsampling and a 3x3 conv head at full resolution. Decoder kernels use he_uniform. Needs C1..C5
    (every encoder; "plain" only with six filters); H and W divisible by 32.
    Deliberate differences: BatchNorm momentum 0.9 (`blocks.batch_norm`), the input scaling inside the
    model, no `pyramid_dropout` option (its default is off); parameter counts are equal.
    Output (B, H, W, num_classes): sigmoid for 1 class, softmax otherwise, float32.
    """
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"fpn: aggregation {aggregation!r} is not one of {AGGREGATIONS}")
    features = encoder.features(image, PYRAMID_LEVELS)
    x = features[-1]
    if x.shape[-1] != pyramid_filters:
        x = _pyramid_conv(x, pyramid_filters, "fpn_c5_pre_conv")
    pyramid = []
    for level, skip in zip(PYRAMID_LEVELS[-2::-1], features[-2::-1], strict=True):
        lateral = _pyramid_conv(skip, pyramid_filters, f"fpn_p{level}_lateral")
        x = upsample(x, lateral.shape[1] // x.shape[1], f"fpn_p{level}_upsample", interpolation="nearest")
        x = layers.Add(name=f"fpn_p{level}")([x, lateral])
        pyramid.append(x)
    finest = pyramid[-1].shape[1]
    branches = []
    for level, p in zip(PYRAMID_LEVELS[-2::-1], pyramid, strict=True):
        branch = double_conv(
            p, segmentation_filters, f"segm_p{level}", kernel_initializer=DECODER_INITIALIZER
        )
        branches.append(upsample(branch, finest // p.shape[1], f"segm_p{level}_upsample", "nearest"))
    merge = layers.Concatenate if aggregation == "concat" else layers.Add
    x = merge(name=f"segm_{aggregation}")(branches)
    x = conv_bn_relu(x, segmentation_filters, 3, "final_stage", kernel_initializer=DECODER_INITIALIZER)
    x = upsample(x, image.shape[1] // finest, "final_upsample")
    return segmentation_head(x, num_classes, kernel_size=3)


def _pyramid_conv(x, filters: int, name: str):
    """1x1 conv with bias (no BatchNorm), he_uniform: the pyramid's lateral and C5 projections."""
    return layers.Conv2D(filters, 1, kernel_initializer=DECODER_INITIALIZER, name=name)(x)
