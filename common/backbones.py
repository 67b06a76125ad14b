"""The one registry of `keras.applications` backbones: constructor, input scaling and pyramid outputs.

Classifiers build a backbone from it and put its `scaling` in an `InputScaling` layer; segmentation
encoders tap its `pyramid_outputs`, keras-hub style {"P1": ..., "P5": ...}: P_k is the feature map at
stride 2^k, (B, H / 2^k, W / 2^k, channels); `tfrecords.scaling` looks its modes up by name or family.

Scaling modes are those of each family's `preprocess_input` (`common.layers.SCALING_MODES`; "raw" for
EfficientNet, which rescales inside). Smallest inputs are those keras.applications accepts with
include_top=False (32 px; InceptionV3 and InceptionResNetV2 75; Xception 71).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
from keras import applications

from common.weights import build_application

PYRAMID_KEYS = ("P1", "P2", "P3", "P4", "P5")


@dataclass(frozen=True)
class Backbone:
    """A `keras.applications` backbone without its classification top.

    constructor: the keras.applications constructor.
    scaling: its input scaling mode (`common.layers.SCALING_MODES`).
    min_size: the smallest input height and width in pixels.
    pyramid: the layers whose outputs are P1..P5; None where no pyramid is defined. A None entry is
      the input of the k-th MaxPooling2D layer (the Inception stems, whose layers have automatically
      numbered names).
    valid_convolutions: its stem and reductions use 'valid' convolutions, so P_k is smaller than
      H / 2^k and shifted (Inception); the segmentation encoders pad and crop it.
    """

    constructor: Callable[..., keras.Model]
    scaling: str
    min_size: int = 32
    pyramid: tuple[str | None, ...] | None = None
    valid_convolutions: bool = False

    @property
    def family(self) -> str:
        """The keras.applications module of the constructor: "resnet", "densenet", "inception_v3", ..."""
        return self.constructor.__module__.rsplit(".", 1)[-1]

    def build(self, weights: str | Path | None, **kwargs: Any) -> keras.Model:
        """The backbone with include_top=False; weights and kwargs as `common.weights.build_application`."""
        return build_application(self.constructor, weights, include_top=False, **kwargs)

    def pyramid_outputs(self, model: keras.Model) -> dict[str, keras.KerasTensor]:
        """{"P1": ..., "P5": ...}: the pyramid feature tensors of `model`, built by `build`."""
        if self.pyramid is None:
            raise ValueError(f"{self.constructor.__name__}: no pyramid outputs are defined")
        pools = [layer for layer in model.layers if isinstance(layer, keras.layers.MaxPooling2D)]
        return {
            key: model.get_layer(layer_name).output if layer_name else pools[index].input
            for index, (key, layer_name) in enumerate(zip(PYRAMID_KEYS, self.pyramid, strict=True))
        }


_RESNET = ("conv1_relu", "conv2_block3_out", "conv3_block4_out", "conv4_block6_out", "conv5_block3_out")
_EFFICIENTNET = (
    "block2a_expand_activation",
    "block3a_expand_activation",
    "block4a_expand_activation",
    "block6a_expand_activation",
    "top_activation",
)
BACKBONES: dict[str, Backbone] = {
    "vgg16": Backbone(
        applications.VGG16,
        "caffe",
        pyramid=("block2_conv2", "block3_conv3", "block4_conv3", "block5_conv3", "block5_pool"),
    ),
    "vgg19": Backbone(
        applications.VGG19,
        "caffe",
        pyramid=("block2_conv2", "block3_conv4", "block4_conv4", "block5_conv4", "block5_pool"),
    ),
    "resnet50": Backbone(applications.ResNet50, "caffe", pyramid=_RESNET),
    "resnet101": Backbone(
        applications.ResNet101, "caffe", pyramid=(*_RESNET[:3], "conv4_block23_out", _RESNET[4])
    ),
    "resnet50v2": Backbone(
        applications.ResNet50V2,
        "tf",
        pyramid=(
            "conv1_conv",
            "conv2_block3_preact_relu",
            "conv3_block4_preact_relu",
            "conv4_block6_preact_relu",
            "post_relu",
        ),
    ),
    "inceptionv3": Backbone(
        applications.InceptionV3, "tf", 75, (None, None, "mixed2", "mixed7", "mixed10"), True
    ),
    "inceptionresnetv2": Backbone(
        applications.InceptionResNetV2,
        "tf",
        75,
        (None, None, "block35_10_ac", "block17_20_ac", "conv_7b_ac"),
        True,
    ),
    "xception": Backbone(applications.Xception, "tf", 71),
    # DenseNet's P2..P4 are its transition convolutions (after the channel halving), as segmentation_models.
    "densenet121": Backbone(
        applications.DenseNet121,
        "torch",
        pyramid=("conv1_relu", "pool2_conv", "pool3_conv", "pool4_conv", "relu"),
    ),
    "mobilenetv2": Backbone(
        applications.MobileNetV2,
        "tf",
        pyramid=(
            "block_1_expand_relu",
            "block_3_expand_relu",
            "block_6_expand_relu",
            "block_13_expand_relu",
            "out_relu",
        ),
    ),
    "nasnetlarge": Backbone(applications.NASNetLarge, "tf"),
    **{
        f"efficientnetb{k}": Backbone(
            getattr(applications, f"EfficientNetB{k}"), "raw", pyramid=_EFFICIENTNET
        )
        for k in range(8)
    },
}


def scaling_modes_by_name() -> dict[str, str]:
    """Registry name ("resnet50") or keras.applications family ("resnet", "densenet") -> scaling mode."""
    by_family = {backbone.family: backbone.scaling for backbone in BACKBONES.values()}
    return {**{name: backbone.scaling for name, backbone in BACKBONES.items()}, **by_family}
