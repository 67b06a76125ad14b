"""Encoders that expose pyramid features: `keras.applications` backbones and our own three.

`build_encoder(name, input_shape)` returns a functional `keras.Model` named "encoder" that maps images
(B, H, W, C), float in [0, 1], to the list of feature maps [C_k for k in levels]. C_k has stride 2^k:
spatial size (H / 2^k, W / 2^k). Every encoder offers levels 1..5 (strides 2..32), except
- "plain" (the S3 U-Net contracting path), which offers levels 0..len(filters)-1 (strides 1..16 by
  default) and pairs with the U-Net decoder only;
- "xception65" at output_stride 8 or 16, where C_k has stride min(2^k, output_stride).

Input scaling is part of the model (a `common.layers.InputScaling` layer maps [0, 1] to the backbone
family's ImageNet convention), so data pipelines feed [0, 1] images to every encoder. Grayscale input
(C == 1) goes straight into the backbone, except for a `keras.applications` backbone with weights
("imagenet" or a file, both 3-channel): there a `common.layers.GrayToRGB` layer named "gray_to_rgb"
first repeats the channel three times. The backbones, their scaling and the layers giving C1..C5
(their `pyramid_outputs` P1..P5) are those of `common.backbones`. Our own encoders load weights files saved with the same C.
Every BatchNormalization layer, the backbones' included, uses momentum `blocks.BN_MOMENTUM` (0.9).

InceptionV3 and InceptionResNetV2 use 'valid' convolutions in their stems and reductions, which
shrink and shift the feature maps. We pad the image with VALID_PADDING = 37 zero pixels on every
side and centre-crop each feature map to (H / 2^k, W / 2^k). A feature pixel j of C_k at stride s
then sits exactly on image pixel s * j, the same convention as the explicitly padded ResNets: the
valid layers before C_k shift it by STEM_OFFSETS[k - 1] = 3, 9, 13, 21, 37 image pixels, and the crop
removes (37 - offset) / s = 17, 7, 3, 1, 0 pixels on each side. The padding costs (1 + 74 / H)^2 in
compute (1.66x at 256 px).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Integral
from pathlib import Path
from typing import Any

import keras
from keras import layers

from common.backbones import BACKBONES, Backbone
from common.layers import GrayToRGB, InputScaling
from segmentation.models.aligned_xception import aligned_xception65_features
from segmentation.models.blocks import BN_MOMENTUM
from segmentation.models.plain import DEFAULT_FILTERS, plain_features
from segmentation.models.resnet34 import resnet34_features

PYRAMID_LEVELS = (1, 2, 3, 4, 5)
VALID_PADDING = 37
STEM_OFFSETS = (3, 9, 13, 21, 37)


# The keras.applications backbones with pyramid outputs (`common.backbones`).
APPLICATIONS: dict[str, Backbone] = {name: b for name, b in BACKBONES.items() if b.pyramid is not None}
# Our own encoders: feature function and input scaling. They have no ImageNet weights.
OWN_ENCODERS = {
    "resnet34": (resnet34_features, "none"),
    "xception65": (aligned_xception65_features, "tf"),
    "plain": (plain_features, "none"),
}


def list_encoders() -> list[str]:
    """Names accepted by `build_encoder`, sorted."""
    return sorted([*APPLICATIONS, *OWN_ENCODERS])


def available_levels(name: str, **encoder_kwargs) -> tuple[int, ...]:
    """The pyramid levels k an encoder offers; `level_stride` gives their strides."""
    if name == "plain":
        return tuple(range(len(encoder_kwargs.get("filters", DEFAULT_FILTERS))))
    _check_name(name)
    return PYRAMID_LEVELS


def deepest_feature_is_max_pooling(name: str) -> bool:
    """True where C5 is a max pooling output (VGG): segmentation_models' U-Net and Linknet add a centre block."""
    return name in APPLICATIONS and (APPLICATIONS[name].pyramid[-1] or "").endswith("_pool")


def level_stride(name: str, level: int, **encoder_kwargs) -> int:
    """The stride of C_level: 2^level, or xception65's output_stride where that is smaller."""
    if name == "xception65":
        return min(2**level, encoder_kwargs.get("output_stride", 32))
    return 2**level


def build_encoder(
    name: str,
    input_shape: Sequence[int],
    weights: str | Path | None = None,
    levels: Sequence[int] | None = None,
    **encoder_kwargs,
) -> keras.Model:
    """Builds encoder `name` for images of `input_shape` = (H, W, C), float in [0, 1].

    weights: None (random), "imagenet" (`keras.applications` backbones only), or a weights file; for
        our own encoders a file saved by `build_encoder(name, input_shape).save_weights(path)` (all
        levels, same channels), e.g. the S0 encoder pretrained on nodules.
    levels: which C_k to output, in that order; default all of `available_levels(name)`. Only the
        layers these need are part of the model.
    encoder_kwargs: `filters` for "plain", `output_stride` (8, 16 or 32, default 32) for "xception65".
    H and W must be divisible by the stride of the deepest requested level.
    """
    _check_name(name)
    levels = tuple(levels) if levels is not None else available_levels(name, **encoder_kwargs)
    offered = available_levels(name, **encoder_kwargs)
    if not levels or any(level not in offered for level in levels):
        raise ValueError(f"{name}: levels {levels} requested, but this encoder offers levels {offered}")
    height, width, channels = _check_input_shape(name, input_shape, levels, **encoder_kwargs)
    weights = None if weights is None or str(weights).lower() == "none" else weights

    inputs = keras.Input((height, width, channels), name="image")
    x = inputs
    if name in APPLICATIONS:
        if encoder_kwargs:
            raise ValueError(f"{name}: unexpected encoder options {sorted(encoder_kwargs)}")
        if channels == 1 and weights is not None:
            x = GrayToRGB(name="gray_to_rgb")(x)
        backbone = APPLICATIONS[name]
        x = InputScaling(backbone.scaling, name="input_scaling")(x)
        features = _application_features(backbone, x, weights, (height, width))
    else:
        feature_fn, scaling = OWN_ENCODERS[name]
        x = InputScaling(scaling, name="input_scaling")(x)
        features = feature_fn(x, **encoder_kwargs)
        if weights is not None:
            _load_own_weights(name, keras.Model(inputs, features), weights)
    return keras.Model(inputs, [features[offered.index(level)] for level in levels], name="encoder")


def _check_name(name: str) -> None:
    if name not in APPLICATIONS and name not in OWN_ENCODERS:
        raise ValueError(f"unknown encoder {name!r}; choose one of {list_encoders()}")


def _check_input_shape(name: str, input_shape: Sequence[int], levels: Sequence[int], **encoder_kwargs):
    if len(input_shape) != 3 or any(not isinstance(size, Integral) or size < 1 for size in input_shape):
        raise ValueError(f"{name}: input_shape must be (H, W, C) with positive integers, got {input_shape}")
    height, width, channels = input_shape
    divisor = max(level_stride(name, level, **encoder_kwargs) for level in levels)
    if height % divisor or width % divisor:
        raise ValueError(f"{name}: input size {height}x{width} must be divisible by {divisor}")
    return height, width, channels


def _application_features(backbone: Backbone, x, weights, image_size: tuple[int, int]) -> list:
    """Builds the backbone on x (padded first if it has 'valid' convolutions) and returns C1..C5."""
    if backbone.valid_convolutions:
        x = layers.ZeroPadding2D(VALID_PADDING, name="valid_padding")(x)
    model = backbone.build(weights, input_tensor=x, input_shape=tuple(x.shape[1:]))
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            layer.momentum = BN_MOMENTUM  # as in our own layers; see `blocks.batch_norm`
    features = list(backbone.pyramid_outputs(model).values())
    if not backbone.valid_convolutions:
        return features
    return [
        _centre_crop(feature, level, image_size)
        for level, feature in zip(PYRAMID_LEVELS, features, strict=True)
    ]


def _centre_crop(feature, level: int, image_size: tuple[int, int]):
    """Crops a padded Inception feature map to (H / 2^k, W / 2^k), aligned as the module docstring says."""
    stride = 2**level
    begin = (VALID_PADDING - STEM_OFFSETS[level - 1]) // stride
    cropping = [
        (begin, size - begin - target // stride)
        for size, target in zip(feature.shape[1:3], image_size, strict=True)
    ]
    return layers.Cropping2D(tuple(cropping), name=f"crop_c{level}")(feature)


def _load_own_weights(name: str, model: keras.Model, weights: str | Path) -> None:
    if str(weights) == "imagenet":
        raise ValueError(
            f"{name}: no ImageNet weights exist for this encoder (it is built by us, not by "
            "keras.applications); use weights=None or a weights file saved from this encoder"
        )
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights file not found (expected 'imagenet', None or a file path)")
    model.load_weights(path)


@dataclass(frozen=True)
class EncoderRequest:
    """The encoder a segmenter was asked for; its decoder builds it with `features`.

    name: one of `list_encoders()`. weights: as `build_encoder`. freeze: the encoder is made
    non-trainable, which also runs its BatchNormalization layers in inference mode. options:
    `build_encoder`'s encoder_kwargs.
    """

    name: str
    weights: str | Path | None = None
    freeze: bool = False
    options: Mapping[str, Any] = field(default_factory=dict)

    def features(self, image: keras.KerasTensor, levels: Sequence[int], **options: Any) -> list:
        """[C_k for k in levels] of `image` (B, H, W, C) through one nested layer named "encoder".

        options: encoder options the decoder sets (they override the requested ones).
        """
        encoder = build_encoder(
            self.name, tuple(image.shape[1:]), self.weights, levels, **{**self.options, **options}
        )
        encoder.trainable = not self.freeze
        return list(encoder(image))
