"""Feature Pyramid Network for semantic segmentation (Lin et al. 2017; head of Kirillov et al. 2019,
"Panoptic Feature Pyramid Networks"), written by us."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import keras
from keras import layers

from segmentation.models.blocks import conv_bn_relu, segmentation_head, upsample
from segmentation.models.encoders import encoder_features

PYRAMID_LEVELS = (2, 3, 4, 5)


def build_fpn(
    encoder_name: str,
    input_shape: Sequence[int],
    num_classes: int,
    weights: str | Path | None = None,
    freeze_encoder: bool = False,
    encoder_kwargs: Mapping | None = None,
    pyramid_filters: int = 256,
    segmentation_filters: int = 128,
) -> keras.Model:
    """FPN on C2..C5 with Kirillov's semantic segmentation branch.

    Pyramid: P5 = 1x1 conv(C5); P_k = 1x1 conv(C_k) + nearest-upsampled P_{k+1}; each P_k then gets a
    3x3 conv (`pyramid_filters` channels, 256). Head: each P_k goes through max(1, k - 2) stages of
    3x3 conv-BN-ReLU (`segmentation_filters`, 128) each followed by x2 bilinear upsampling until
    stride 4; the four maps are summed, a 1x1 conv gives the logits, which are upsampled x4.
    BatchNorm replaces the paper's GroupNorm. Needs C2..C5 (every encoder; "plain" only with six
    filters); H and W divisible by 32.
    Output (B, H, W, num_classes): sigmoid for 1 class, softmax otherwise, float32.
    """
    inputs, features = encoder_features(
        encoder_name, input_shape, weights, freeze_encoder, PYRAMID_LEVELS, encoder_kwargs
    )
    merged = None
    pyramid = {}
    for level, feature in reversed(list(zip(PYRAMID_LEVELS, features, strict=True))):
        lateral = layers.Conv2D(pyramid_filters, 1, name=f"fpn_lateral{level}")(feature)
        if merged is not None:
            factor = lateral.shape[1] // merged.shape[1]
            coarser = upsample(merged, factor, f"fpn_topdown{level}", interpolation="nearest")
            lateral = layers.Add(name=f"fpn_merge{level}")([lateral, coarser])
        merged = lateral
        pyramid[level] = layers.Conv2D(pyramid_filters, 3, padding="same", name=f"fpn_p{level}")(merged)
    finest = pyramid[PYRAMID_LEVELS[0]].shape[1]
    branches = []
    for level, x in pyramid.items():
        stages = max(1, (finest // x.shape[1]).bit_length() - 1)
        for stage in range(1, stages + 1):
            x = conv_bn_relu(x, segmentation_filters, 3, f"semantic_p{level}_{stage}")
            x = upsample(x, 2 if x.shape[1] < finest else 1, f"semantic_p{level}_{stage}_upsample")
        branches.append(x)
    x = layers.Add(name="semantic_sum")(branches)
    outputs = segmentation_head(x, num_classes, upsampling=input_shape[0] // finest)
    return keras.Model(inputs, outputs, name=f"fpn_{encoder_name}")
