"""Segmentation models: pyramid encoders and the U-Net, FPN, Linknet, PSPNet and DeepLabv3+ decoders.

`build_segmenter(decoder, encoder, input_shape, num_classes)` builds any pair from `list_segmenters()`.
Every model takes images (B, H, W, C) as float in [0, 1] (the encoder scales them for its backbone;
do not apply `keras.applications` preprocessing in the data pipeline) and returns float32
probabilities (B, H, W, num_classes): sigmoid when num_classes == 1, softmax otherwise. The encoder is
the nested layer named "encoder", built through `encoders.EncoderRequest.features`: each decoder
builder maps (image input, encoder request, num_classes, its own options) to the output tensor.
Models save and reload as `.keras` files once this package is imported (it registers the custom
layers of `common.layers`).

U-Net (on any encoder but "plain"), FPN, Linknet and PSPNet follow segmentation_models, the library S2
used, with its defaults (as its Keras 3 fork segmodels-keras 0.1.0.dev13 builds them); each decoder's
docstring lists the deliberate differences, and tests/segmentation/models/test_param_counts.py pins
the reference's parameter counts.

Input sizes: H and W divisible by 32 for U-Net, FPN and Linknet (plain U-Net: by 2^(len(filters) - 1),
16 by default), by 48 for PSPNet (`pspnet.input_size_multiple`) and by the output stride (16 or 8)
for DeepLabv3+.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import keras

from segmentation.models.deeplabv3plus import build_deeplabv3plus
from segmentation.models.encoders import EncoderRequest, build_encoder, list_encoders
from segmentation.models.fpn import build_fpn
from segmentation.models.linknet import build_linknet
from segmentation.models.pspnet import build_pspnet
from segmentation.models.unet import build_unet

DECODERS = {
    "unet": build_unet,
    "fpn": build_fpn,
    "linknet": build_linknet,
    "pspnet": build_pspnet,
    "deeplabv3plus": build_deeplabv3plus,
}
# Decoders that build on the default plain encoder (strides 1..16). FPN and Linknet need a stride-32
# level: they build on "plain" given six filters, e.g. encoder_kwargs={"filters": (16, 32, 64, 128, 256, 512)}.
PLAIN_DECODERS = ("unet", "pspnet", "deeplabv3plus")

__all__ = ["DECODERS", "build_encoder", "build_segmenter", "list_encoders", "list_segmenters"]


def list_segmenters() -> list[tuple[str, str]]:
    """Every (decoder, encoder) pair that builds with default options, sorted."""
    return sorted(
        (decoder, encoder)
        for decoder in DECODERS
        for encoder in list_encoders()
        if encoder != "plain" or decoder in PLAIN_DECODERS
    )


def build_segmenter(
    decoder: str,
    encoder: str,
    input_shape: Sequence[int],
    num_classes: int,
    weights: str | Path | None = None,
    freeze_encoder: bool = False,
    encoder_kwargs: Mapping | None = None,
    **decoder_options,
) -> keras.Model:
    """Builds decoder on encoder, e.g. ("unet", "plain") for S3 or ("deeplabv3plus", "xception65") for S0.

    The model is named "<decoder>_<encoder>". weights: None, "imagenet" (`keras.applications`
    encoders) or an encoder weights file. freeze_encoder: the encoder is not trainable (its
    BatchNormalization layers run in inference mode). encoder_kwargs: `build_encoder` options.
    decoder_options: the decoder's own (see `build_unet`, `build_fpn`, `build_linknet`,
    `build_pspnet`, `build_deeplabv3plus`).
    """
    if decoder not in DECODERS:
        raise ValueError(f"unknown decoder {decoder!r}; choose one of {sorted(DECODERS)}")
    if encoder not in list_encoders():
        raise ValueError(f"unknown encoder {encoder!r}; choose one of {list_encoders()}")
    image = keras.Input(tuple(input_shape), name="image")
    request = EncoderRequest(encoder, weights, freeze_encoder, dict(encoder_kwargs or {}))
    outputs = DECODERS[decoder](image, request, num_classes, **decoder_options)
    return keras.Model(image, outputs, name=f"{decoder}_{encoder}")
