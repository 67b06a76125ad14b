"""VGG19 with batch normalisation (VGG19-BN, as in torchvision), the S4 classifier backbone.

The keras.applications VGG19 topology (5 blocks of 2, 2, 4, 4, 4 3x3 convolutions with 64, 128,
256, 512, 512 filters, a 2x2 max-pool after each block) with BatchNormalization between every
convolution and its ReLU. The convolutions keep their bias, as in torchvision's `vgg19_bn`, so its
weights map one to one: 20,024,384 convolution + 11,008 BN scale/offset parameters (and 11,008
non-trainable moving statistics) in the feature extractor for RGB input.
"""

from __future__ import annotations

from pathlib import Path

import keras

from classification.models.conv_stages import conv_stages

VGG19_STAGES = ((64, 2), (128, 2), (256, 4), (512, 4), (512, 4))  # (filters, convolutions) per block


def vgg19_bn(
    weights: str | Path | None = None,
    input_shape: tuple[int, int, int] = (224, 224, 3),
    name: str = "vgg19_bn",
) -> keras.Model:
    """VGG19-BN feature extractor: (B, H, W, C) -> (B, H/32, W/32, 512), H and W >= 32.

    Layer names follow keras.applications VGG19 plus BN (block1_conv1, block1_bn1, block1_relu1, ...,
    block1_pool), so fine-tuning unfreezes by block. weights: None or a local weights file.
    """
    return conv_stages("vgg19_bn", input_shape, VGG19_STAGES, use_bias=True, weights=weights, name=name)
