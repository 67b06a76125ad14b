"""U-Net (Ronneberger et al. 2015): the plain S3 U-Net, or segmentation_models' U-Net on any pyramid encoder."""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

from segmentation.models.blocks import (
    DECODER_INITIALIZER,
    center_block,
    double_conv,
    segmentation_head,
    upsample,
)
from segmentation.models.encoders import EncoderRequest, available_levels, deepest_feature_is_max_pooling
from segmentation.models.plain import DEFAULT_FILTERS

ENCODER_DECODER_FILTERS = (256, 128, 64, 32, 16)
UPSAMPLINGS = ("transpose", "nearest", "bilinear")


def build_unet(
    image: keras.KerasTensor,
    encoder: EncoderRequest,
    num_classes: int,
    decoder_filters: Sequence[int] | None = None,
    upsampling: str | None = None,
) -> keras.KerasTensor:
    """U-Net: from the deepest feature, repeatedly upsample x2, concatenate the skip of that stride,
    and apply two 3x3 conv-BN-ReLU, until full resolution; then the head.

    The encoder "plain" gives the classic U-Net of S3: `encoder_kwargs={"filters": (...)}` sets the
    contracting path (default (32, 64, 128, 256, 512), 4 poolings); the expanding path mirrors it
    (decoder_filters default: the encoder filters reversed, without the deepest) with 2x2 transposed
    convolutions, every level including full resolution has a skip, and the head is a 1x1 conv.
    H and W must be divisible by 2^(len(filters) - 1).
    Any other encoder: segmentation_models' `Unet` (as in segmodels-keras 0.1.0.dev13) with its
    defaults: a centre block (two 3x3 conv-BN-ReLU, 512 filters) after a max-pooled C5 (VGG), skips
    C4..C1, a last stage from stride 2 to full resolution without a skip, decoder_filters
    (256, 128, 64, 32, 16), nearest-neighbour upsampling, he_uniform decoder kernels and a 3x3 conv
    head. H and W divisible by 32. Deliberate differences: BatchNorm momentum 0.9 (`blocks.batch_norm`)
    and the input scaling inside the model; parameter counts are equal.
    upsampling: "transpose" (2x2 Conv2DTranspose with bias, the classic U-Net's; not segmentation_models'
    4x4 transpose block), "nearest" or "bilinear" (UpSampling2D) overrides the default.
    Output (B, H, W, num_classes): sigmoid for 1 class, softmax otherwise, float32.
    """
    plain = encoder.name == "plain"
    upsampling = upsampling or ("transpose" if plain else "nearest")
    if upsampling not in UPSAMPLINGS:
        raise ValueError(f"unet: upsampling {upsampling!r} is not one of {UPSAMPLINGS}")
    initializer = "glorot_uniform" if plain else DECODER_INITIALIZER
    features = encoder.features(image, available_levels(encoder.name, **encoder.options))
    skips_by_size = {feature.shape[1]: feature for feature in features[:-1]}
    x = features[-1]
    if deepest_feature_is_max_pooling(encoder.name):
        x = center_block(x)
    num_stages = (image.shape[1] // x.shape[1]).bit_length() - 1
    if decoder_filters is None:
        encoder_filters = encoder.options.get("filters", DEFAULT_FILTERS)
        decoder_filters = tuple(encoder_filters[-2::-1]) if plain else ENCODER_DECODER_FILTERS[-num_stages:]
    if len(decoder_filters) != num_stages:
        raise ValueError(f"unet: decoder_filters needs {num_stages} values, got {tuple(decoder_filters)}")
    for stage, filters in enumerate(decoder_filters, start=1):
        name = f"decoder_stage{stage}"
        if upsampling == "transpose":
            x = layers.Conv2DTranspose(filters, 2, strides=2, name=f"{name}_upconv")(x)
        else:
            x = upsample(x, 2, f"{name}_upsample", interpolation=upsampling)
        skip = skips_by_size.get(x.shape[1])
        if skip is not None:
            x = layers.Concatenate(name=f"{name}_concat")([x, skip])
        x = double_conv(x, filters, name, kernel_initializer=initializer)
    return segmentation_head(x, num_classes, kernel_size=1 if plain else 3)
