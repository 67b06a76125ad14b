"""ResNet-34 (He et al. 2016, basic blocks [3, 4, 6, 3]), built by us: `keras.applications` has no ResNet-34.

The S2 configuration `s2_unet_resnet34_medseg` names this encoder. The topology is torchvision's
`resnet34` without the classifier: 21,284,672 trainable parameters (torchvision's 21,797,672 minus the
513,000 of its 1000-class fully connected layer). No ImageNet weights are shipped for it here.
"""

from __future__ import annotations

from keras import layers

from segmentation.models.blocks import aligned_padding, conv_bn_relu

STAGE_BLOCKS = (3, 4, 6, 3)
STAGE_FILTERS = (64, 128, 256, 512)


def basic_block(x, filters: int, strides: int, name: str):
    """Two 3x3 conv-BN layers plus a shortcut (1x1 conv-BN when the shape changes), then ReLU."""
    shortcut = x
    if strides > 1 or x.shape[-1] != filters:
        shortcut = conv_bn_relu(x, filters, 1, f"{name}_shortcut", strides=strides, activation=False)
    x = conv_bn_relu(x, filters, 3, f"{name}_1", strides=strides)
    x = conv_bn_relu(x, filters, 3, f"{name}_2", activation=False)
    x = layers.Add(name=f"{name}_add")([x, shortcut])
    return layers.ReLU(name=f"{name}_out")(x)


def resnet34_features(x) -> list:
    """Image tensor (B, H, W, C) -> [C1..C5] at strides 2, 4, 8, 16, 32 with 64, 64, 128, 256, 512 channels."""
    features = [conv_bn_relu(x, 64, 7, "conv1", strides=2)]
    x = layers.MaxPooling2D(3, strides=2, name="pool1_pool")(aligned_padding(features[0], 3, "pool1"))
    for stage, (num_blocks, filters) in enumerate(zip(STAGE_BLOCKS, STAGE_FILTERS, strict=True), start=2):
        for block in range(1, num_blocks + 1):
            strides = 2 if block == 1 and stage > 2 else 1
            x = basic_block(x, filters, strides, f"conv{stage}_block{block}")
        features.append(x)
    return features
