"""LinkNet (Chaurasia & Culurciello 2017) as segmentation_models defines it: encoder features added,
not concatenated, to the decoder."""

from __future__ import annotations

import keras
from keras import layers

from segmentation.models.blocks import (
    DECODER_INITIALIZER,
    center_block,
    conv_bn_relu,
    segmentation_head,
    upsample,
)
from segmentation.models.encoders import PYRAMID_LEVELS, EncoderRequest, deepest_feature_is_max_pooling


def linknet_block(x, filters: int, factor: int, name: str):
    """1x1 conv to C/4 -> nearest upsampling x`factor` -> 3x3 conv to C/4 -> 1x1 conv to `filters`,
    each conv-BN-ReLU with he_uniform kernels (segmentation_models' "upsampling" decoder block)."""
    bottleneck = max(1, x.shape[-1] // 4)
    x = conv_bn_relu(x, bottleneck, 1, f"{name}_reduce", kernel_initializer=DECODER_INITIALIZER)
    x = upsample(x, factor, f"{name}_upsample", interpolation="nearest")
    x = conv_bn_relu(x, bottleneck, 3, f"{name}_conv", kernel_initializer=DECODER_INITIALIZER)
    return conv_bn_relu(x, filters, 1, f"{name}_expand", kernel_initializer=DECODER_INITIALIZER)


def build_linknet(
    image: keras.KerasTensor,
    encoder: EncoderRequest,
    num_classes: int,
    final_filters: int = 16,
) -> keras.KerasTensor:
    """segmentation_models' `Linknet` (segmodels-keras 0.1.0.dev13) with its defaults, on C1..C5.

    A centre block (two 3x3 conv-BN-ReLU, 512 filters) follows a max-pooled C5 (VGG). From there each
    `linknet_block` upsamples x2 to the channels of the next skip and adds it (C4, C3, C2, C1); a last
    block (`final_filters` channels) reaches full resolution; a 3x3 conv gives the logits. Needs C1..C5
    (every encoder; "plain" only with six filters); H and W divisible by 32.
    Deliberate differences: BatchNorm momentum 0.9 (`blocks.batch_norm`), the input scaling inside the
    model, no "transpose" decoder block option; parameter counts are equal.
    Output (B, H, W, num_classes): sigmoid for 1 class, softmax otherwise, float32.
    """
    features = encoder.features(image, PYRAMID_LEVELS)
    x = features[-1]
    if deepest_feature_is_max_pooling(encoder.name):
        x = center_block(x)
    for level, skip in zip(PYRAMID_LEVELS[-2::-1], features[-2::-1], strict=True):
        x = linknet_block(x, skip.shape[-1], skip.shape[1] // x.shape[1], f"decoder_block{level}")
        x = layers.Add(name=f"decoder_block{level}_add")([x, skip])
    x = linknet_block(x, final_filters, image.shape[1] // x.shape[1], "decoder_block0")
    return segmentation_head(x, num_classes, kernel_size=3)
