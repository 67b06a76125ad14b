"""Encoders that expose pyramid features: `keras.applications` backbones and our own three.

`build_encoder(name, input_shape)` returns a functional `keras.Model` named "encoder" that maps images
(B, H, W, C), float in [0, 1], to the list of feature maps [C_k for k in levels]. C_k has stride 2^k:
spatial size (H / 2^k, W / 2^k). Every encoder offers levels 1..5 (strides 2..32), except
- "plain" (the S3 U-Net contracting path), which offers levels 0..len(filters)-1 (strides 1..16 by
  default) and pairs with the U-Net decoder only;
- "xception65" at output_stride 8 or 16, where C_k has stride min(2^k, output_stride).

Input scaling is part of the model (an `InputScaling` layer maps [0, 1] to the backbone family's
ImageNet convention), so data pipelines feed [0, 1] images to every encoder. Grayscale input
(C == 1) goes straight into the backbone, except for a `keras.applications` backbone with weights
("imagenet" or a file, both 3-channel): there a `Concatenate` layer named "gray_to_rgb" first
repeats the channel three times. Our own encoders load weights files saved with the same C.
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
from dataclasses import dataclass
from numbers import Integral
from pathlib import Path

import keras
from keras import layers

from common.weights import build_application
from segmentation.models.aligned_xception import aligned_xception65_features
from segmentation.models.blocks import BN_MOMENTUM, InputScaling
from segmentation.models.plain import DEFAULT_FILTERS, plain_features
from segmentation.models.resnet34 import resnet34_features

PYRAMID_LEVELS = (1, 2, 3, 4, 5)
VALID_PADDING = 37
STEM_OFFSETS = (3, 9, 13, 21, 37)


@dataclass(frozen=True)
class ApplicationSpec:
    """A `keras.applications` backbone: constructor name, the layers giving C1..C5, input scaling.

    A `None` feature layer means "the input of the k-th MaxPooling2D layer" (the Inception stems, whose
    layers have automatically numbered names).
    """

    constructor: str
    feature_layers: tuple[str | None, ...]
    scaling: str
    valid_padding: bool = False


_RESNET = ("conv1_relu", "conv2_block3_out", "conv3_block4_out", "conv4_block6_out", "conv5_block3_out")
_EFFICIENTNET = (
    "block2a_expand_activation",
    "block3a_expand_activation",
    "block4a_expand_activation",
    "block6a_expand_activation",
    "top_activation",
)
APPLICATIONS: dict[str, ApplicationSpec] = {
    "resnet50": ApplicationSpec("ResNet50", _RESNET, "caffe"),
    "resnet101": ApplicationSpec("ResNet101", _RESNET[:3] + ("conv4_block23_out", _RESNET[4]), "caffe"),
    "resnet50v2": ApplicationSpec(
        "ResNet50V2",
        (
            "conv1_conv",
            "conv2_block3_preact_relu",
            "conv3_block4_preact_relu",
            "conv4_block6_preact_relu",
            "post_relu",
        ),
        "tf",
    ),
    "vgg16": ApplicationSpec(
        "VGG16", ("block2_conv2", "block3_conv3", "block4_conv3", "block5_conv3", "block5_pool"), "caffe"
    ),
    "vgg19": ApplicationSpec(
        "VGG19", ("block2_conv2", "block3_conv4", "block4_conv4", "block5_conv4", "block5_pool"), "caffe"
    ),
    # DenseNet's C2..C4 are its transition convolutions (after the channel halving), as segmentation_models.
    "densenet121": ApplicationSpec(
        "DenseNet121", ("conv1_relu", "pool2_conv", "pool3_conv", "pool4_conv", "relu"), "torch"
    ),
    **{f"efficientnetb{i}": ApplicationSpec(f"EfficientNetB{i}", _EFFICIENTNET, "x255") for i in range(8)},
    "mobilenetv2": ApplicationSpec(
        "MobileNetV2",
        (
            "block_1_expand_relu",
            "block_3_expand_relu",
            "block_6_expand_relu",
            "block_13_expand_relu",
            "out_relu",
        ),
        "tf",
    ),
    "inceptionv3": ApplicationSpec("InceptionV3", (None, None, "mixed2", "mixed7", "mixed10"), "tf", True),
    "inceptionresnetv2": ApplicationSpec(
        "InceptionResNetV2", (None, None, "block35_10_ac", "block17_20_ac", "conv_7b_ac"), "tf", True
    ),
}
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
    return name in APPLICATIONS and (APPLICATIONS[name].feature_layers[-1] or "").endswith("_pool")


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
            x = layers.Concatenate(name="gray_to_rgb")([x, x, x])
        spec = APPLICATIONS[name]
        x = InputScaling(spec.scaling, name="input_scaling")(x)
        features = _application_features(spec, x, weights, (height, width))
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


def _application_features(spec: ApplicationSpec, x, weights, image_size: tuple[int, int]) -> list:
    """Builds the application on x (padded first if it has 'valid' layers) and returns C1..C5."""
    if spec.valid_padding:
        x = layers.ZeroPadding2D(VALID_PADDING, name="valid_padding")(x)
    constructor = getattr(keras.applications, spec.constructor)
    model = build_application(
        constructor, weights, include_top=False, input_tensor=x, input_shape=tuple(x.shape[1:])
    )
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            layer.momentum = BN_MOMENTUM  # as in our own layers; see `blocks.batch_norm`
    pools = [layer for layer in model.layers if isinstance(layer, layers.MaxPooling2D)]
    features = [
        model.get_layer(layer_name).output if layer_name else pools[index].input
        for index, layer_name in enumerate(spec.feature_layers)
    ]
    if not spec.valid_padding:
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


def encoder_features(
    encoder_name: str,
    input_shape: Sequence[int],
    weights: str | Path | None,
    freeze_encoder: bool,
    levels: Sequence[int],
    encoder_kwargs: Mapping | None = None,
) -> tuple:
    """The start of every segmenter: (image input, [C_k for k in levels]) via a nested encoder.

    The encoder is one layer named "encoder"; `freeze_encoder=True` makes it non-trainable, which
    also runs its BatchNormalization layers in inference mode.
    """
    encoder = build_encoder(encoder_name, input_shape, weights, levels, **(encoder_kwargs or {}))
    encoder.trainable = not freeze_encoder
    inputs = keras.Input(tuple(input_shape), name="image")
    features = encoder(inputs)
    return inputs, list(features)
