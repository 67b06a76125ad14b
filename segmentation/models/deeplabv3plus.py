"""DeepLabv3+ (Chen et al. 2018): atrous spatial pyramid pooling and a light decoder with a stride-4 skip."""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

from segmentation.models.blocks import conv_bn_relu, segmentation_head, separable_conv_bn, upsample
from segmentation.models.encoders import EncoderRequest

OUTPUT_STRIDES = (8, 16)
RATES_AT_OS16 = (6, 12, 18)
SKIP_LEVEL = 2  # stride 4


def aspp(x, rates: Sequence[int], filters: int, dropout: float):
    """ASPP: a 1x1 branch, one 3x3 atrous separable branch per rate, and image pooling (global average,
    1x1 conv, broadcast back), concatenated and projected by a 1x1 conv-BN-ReLU, then dropout."""
    branches = [conv_bn_relu(x, filters, 1, "aspp_1x1")]
    for rate in rates:
        branches.append(separable_conv_bn(x, filters, f"aspp_rate{rate}", dilation=rate))
    pooled = layers.GlobalAveragePooling2D(keepdims=True, name="aspp_image_pool")(x)
    pooled = conv_bn_relu(pooled, filters, 1, "aspp_image")
    branches.append(upsample(pooled, tuple(x.shape[1:3]), "aspp_image_upsample"))
    x = layers.Concatenate(name="aspp_concat")(branches)
    x = conv_bn_relu(x, filters, 1, "aspp_projection")
    return layers.Dropout(dropout, name="aspp_dropout")(x)


def build_deeplabv3plus(
    image: keras.KerasTensor,
    encoder: EncoderRequest,
    num_classes: int,
    output_stride: int = 16,
    aspp_filters: int = 256,
    skip_filters: int = 48,
    decoder_filters: int = 256,
    dropout: float = 0.1,
) -> keras.KerasTensor:
    """DeepLabv3+; the paper's backbone is the encoder "xception65" (modified aligned Xception-65).

    Encoder: "xception65" runs at `output_stride` (16 or 8) with atrous convolution and ASPP takes its
    last feature. Other encoders (`keras.applications`, resnet34, plain) are not dilated: ASPP takes
    their feature at stride `output_stride` (C4 at 16, C3 at 8) and the deeper stages are not built,
    as in the keras.io DeepLabV3+ example.
    ASPP rates are 6, 12, 18 at output stride 16 and doubled at 8. Decoder: ASPP output upsampled
    (bilinear) to stride 4, concatenated with a 1x1 conv-BN-ReLU projection of C2 to `skip_filters`
    (48) channels, two 3x3 separable conv-BN-ReLU (`decoder_filters`), a 1x1 logits conv and x4
    bilinear upsampling. H and W divisible by `output_stride`.
    Output (B, H, W, num_classes): sigmoid for 1 class, softmax otherwise, float32.
    """
    if output_stride not in OUTPUT_STRIDES:
        raise ValueError(f"deeplabv3plus: output_stride must be one of {OUTPUT_STRIDES}, got {output_stride}")
    if encoder.name == "xception65":
        skip, deep = encoder.features(image, (SKIP_LEVEL, 5), output_stride=output_stride)
    else:
        skip, deep = encoder.features(image, (SKIP_LEVEL, output_stride.bit_length() - 1))
    rates = tuple(rate * 16 // output_stride for rate in RATES_AT_OS16)
    x = aspp(deep, rates, aspp_filters, dropout)
    x = upsample(x, skip.shape[1] // x.shape[1], "decoder_upsample")
    skip = conv_bn_relu(skip, skip_filters, 1, "decoder_skip")
    x = layers.Concatenate(name="decoder_concat")([x, skip])
    x = separable_conv_bn(x, decoder_filters, "decoder_conv1")
    x = separable_conv_bn(x, decoder_filters, "decoder_conv2")
    return segmentation_head(x, num_classes, upsampling=image.shape[1] // skip.shape[1])
