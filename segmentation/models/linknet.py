"""LinkNet (Chaurasia & Culurciello 2017): encoder features added, not concatenated, to the decoder."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import keras
from keras import layers

from segmentation.models.blocks import batch_norm, conv_bn_relu, segmentation_head
from segmentation.models.encoders import PYRAMID_LEVELS, encoder_features


def linknet_block(x, filters: int, strides: int, name: str):
    """1x1 conv to C/4 -> 3x3 transposed conv (x`strides`) -> 1x1 conv to `filters`, each BN-ReLU."""
    bottleneck = max(1, x.shape[-1] // 4)
    x = conv_bn_relu(x, bottleneck, 1, f"{name}_reduce")
    x = layers.Conv2DTranspose(
        bottleneck, 3, strides=strides, padding="same", use_bias=False, name=f"{name}_upconv"
    )(x)
    x = layers.ReLU(name=f"{name}_upconv_relu")(batch_norm(x, f"{name}_upconv_bn"))
    return conv_bn_relu(x, filters, 1, f"{name}_expand")


def build_linknet(
    encoder_name: str,
    input_shape: Sequence[int],
    num_classes: int,
    weights: str | Path | None = None,
    freeze_encoder: bool = False,
    encoder_kwargs: Mapping | None = None,
    final_filters: int = 16,
) -> keras.Model:
    """LinkNet on C1..C5: from C5, each decoder block upsamples x2 to the channels of the next skip and
    adds it (C4, C3, C2, C1); a last block (`final_filters` channels) reaches full resolution; a 3x3
    conv gives the logits. Needs C1..C5 (every encoder; "plain" only with six filters); H and W
    divisible by 32.
    Output (B, H, W, num_classes): sigmoid for 1 class, softmax otherwise, float32.
    """
    inputs, features = encoder_features(
        encoder_name, input_shape, weights, freeze_encoder, PYRAMID_LEVELS, encoder_kwargs
    )
    x = features[-1]
    for level, skip in zip(PYRAMID_LEVELS[-2::-1], features[-2::-1], strict=True):
        strides = skip.shape[1] // x.shape[1]
        x = linknet_block(x, skip.shape[-1], strides, f"decoder_block{level}")
        x = layers.Add(name=f"decoder_block{level}_add")([x, skip])
    x = linknet_block(x, final_filters, input_shape[0] // x.shape[1], "decoder_block0")
    outputs = segmentation_head(x, num_classes, kernel_size=3)
    return keras.Model(inputs, outputs, name=f"linknet_{encoder_name}")
