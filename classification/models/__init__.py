"""Classification model registry: the keras.applications zoo, VGG19-BN and the S3 plain CNN, each
with a new head.

Every classifier is `image (B, H, W, C) float32 in [0, 1]` -> `GrayToRGB` (only when pretrained
three-channel weights meet one-channel input) -> `InputScaling` (both `common.layers`; the family's
keras.applications preprocessing, inside the model so `.keras` files carry it; feed [0, 1] images and
do not scale in the data pipeline) -> the backbone (`common.backbones` for keras.applications), a
nested `keras.Model` named "backbone" -> the head (global average pooling, dropout, dense, float32
activation). The classifier itself is named after its registry name.

BatchNorm and fine-tuning. The keras.io transfer-learning guide calls the base model with
`training=False` and relies on that to keep BatchNorm in inference mode after unfreezing. In Keras 3
that does not hold: a functional model passes its own `training` flag to every nested layer, so
`fit` (training=True) overrides the stored `training=False` (measured here on Keras 3.15; see
keras-team/keras#20285, after which the guide was amended). We therefore use the guide's other
option: BatchNorm layers are kept frozen (`trainable=False`), and a frozen Keras BN layer always
runs in inference mode with its moving statistics. Stage 1 freezes the whole backbone
(`unfreeze_top_blocks(model, 0)`); stage 2 unfreezes the top N blocks except their BatchNorm layers.
A classifier trained from scratch (`weights=None`) is built fully trainable, so its BN layers learn
batch statistics as usual, with a faster moving average by default (see `bn_momentum`).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import keras

from classification.models.applications import APPLICATIONS, VGG_BLOCKS
from classification.models.backbone import BackboneSpec, Block, group_into_blocks
from classification.models.head import classification_head
from classification.models.plain_cnn import DEFAULT_FILTERS, plain_cnn
from classification.models.vgg19_bn import vgg19_bn
from common.layers import GrayToRGB, InputScaling
from common.weights import build_application

BACKBONE_NAME = "backbone"
FROM_SCRATCH_BN_MOMENTUM = 0.9

REGISTRY: dict[str, BackboneSpec] = {
    **APPLICATIONS,
    "vgg19_bn": BackboneSpec(partial(build_application, vgg19_bn), 32, "torch", VGG_BLOCKS),
    "plain_cnn": BackboneSpec(
        partial(build_application, plain_cnn), 2 ** len(DEFAULT_FILTERS), "none", VGG_BLOCKS
    ),
}

__all__ = [
    "Block",
    "backbone_blocks",
    "base_model",
    "build_classifier",
    "input_scaling_mode",
    "list_classifiers",
    "smallest_input_size",
    "unfreeze_top_blocks",
]


def list_classifiers() -> list[str]:
    """The registered classifier names, in registry order."""
    return list(REGISTRY)


def _spec(name: str) -> BackboneSpec:
    spec = REGISTRY.get(name.lower())
    if spec is None:
        raise ValueError(f"unknown classifier {name!r}; known: {', '.join(REGISTRY)}")
    return spec


def smallest_input_size(name: str) -> int:
    """The smallest input height and width (pixels) the named classifier builds at (default options)."""
    return _spec(name).min_size


def input_scaling_mode(name: str) -> str:
    """The `InputScaling` mode the named classifier applies INSIDE the model (for run records only)."""
    return _spec(name).scaling


def build_classifier(
    name: str,
    input_shape: tuple[int, int, int],
    num_outputs: int,
    output: str = "binary",
    weights: str | Path | None = None,
    dropout: float = 0.2,
    head_units: int | None = None,
    bn_momentum: float | None = None,
    **backbone_kwargs: Any,
) -> keras.Model:
    """Builds a registered classifier: (B, H, W, C) float32 in [0, 1] -> (B, num_outputs) float32.

    input_shape: (H, W, C), C = 1 (grayscale) or 3. With `weights=None` the backbone is built on C
      channels directly; with pretrained weights it is built on 3 and grey input is repeated.
    output: "binary" (num_outputs = 1, sigmoid), "multiclass" (softmax) or "multilabel" (sigmoids).
    weights: None, "imagenet" (raises `common.weights.PretrainedWeightsUnavailable` when it cannot be
      downloaded) or a local weights file saved from the same backbone built on 3 channels.
    head_units: width of an optional hidden ReLU layer in the head.
    bn_momentum: moving-average momentum for every BatchNorm layer of the backbone. Default: 0.9
      when training from scratch (`weights=None`), Keras's own otherwise (0.99; MobileNetV2 0.999).
      With a few hundred images per epoch, 0.99-0.999 leaves the moving statistics far from the
      data after tens of epochs, so inference-mode outputs collapse (measured: MobileNetV2 from
      scratch on 854 CT slices, 10 epochs, validation AUC 0.50). Frozen BN layers ignore it.
    backbone_kwargs: options of our own backbones, e.g. `filters=(16, 32)` for "plain_cnn".
    """
    spec = _spec(name)
    height, width, channels = input_shape
    pretrained = weights is not None and str(weights).lower() != "none"
    if pretrained and channels not in (1, 3):
        raise ValueError(f"{name}: pretrained weights need 1 or 3 input channels; got {channels}")
    backbone_channels = 3 if pretrained else channels
    backbone = spec.build(
        weights if pretrained else None,
        input_shape=(height, width, backbone_channels),
        name=BACKBONE_NAME,
        **backbone_kwargs,
    )
    momentum = FROM_SCRATCH_BN_MOMENTUM if bn_momentum is None and not pretrained else bn_momentum
    if momentum is not None:
        set_bn_momentum(backbone, momentum)
    inputs = keras.Input(shape=input_shape, name="image")
    x = GrayToRGB(name="gray_to_rgb")(inputs) if backbone_channels != channels else inputs
    x = InputScaling(spec.scaling, name="input_scaling")(x)
    probabilities = classification_head(backbone(x), num_outputs, output, dropout, head_units)
    return keras.Model(inputs, probabilities, name=name.lower())


def set_bn_momentum(model: keras.Model, momentum: float) -> None:
    """Sets the moving-average momentum of every BatchNormalization layer in `model` (saved in `.keras`)."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum


def base_model(model: keras.Model) -> keras.Model:
    """The nested backbone of a classifier built by `build_classifier` (the layer named "backbone")."""
    try:
        return model.get_layer(BACKBONE_NAME)
    except ValueError as error:
        raise ValueError(
            f"{model.name}: no layer named {BACKBONE_NAME!r}; not built by build_classifier"
        ) from error


def backbone_blocks(model: keras.Model, name: str | None = None) -> list[Block]:
    """The backbone's fine-tuning blocks, from the input to the output (see `applications` for each family).

    name: the registry name; default `model.name` (classifiers are named after it).
    """
    return group_into_blocks(base_model(model), _spec(name or model.name).blocks)


def unfreeze_top_blocks(
    model: keras.Model, num_blocks: int, name: str | None = None, train_batchnorm: bool = False
) -> list[str]:
    """Freezes the backbone except its top `num_blocks` blocks; returns the unfrozen block names.

    num_blocks = 0 freezes the whole backbone (stage 1); a value >= the block count unfreezes it all.
    BatchNormalization layers stay frozen, hence in inference mode, unless `train_batchnorm`. The
    head is left as it is. Recompile the model afterwards for the change to take effect.
    """
    if num_blocks < 0:
        raise ValueError(f"num_blocks must be >= 0; got {num_blocks}")
    backbone = base_model(model)
    blocks = backbone_blocks(model, name)
    top = [block.name for block in blocks[len(blocks) - num_blocks :]] if num_blocks else []
    backbone.trainable = bool(top)
    for block in blocks:
        for layer in block.layers:
            is_batchnorm = isinstance(layer, keras.layers.BatchNormalization)
            layer.trainable = block.name in top and (train_batchnorm or not is_batchnorm)
    return top
