"""The keras.applications classifier zoo of the seeds, as backbone specs for the registry.

Block boundaries for fine-tuning (the top N blocks are unfrozen in stage 2):
- VGG16/19: block1 ... block5 (conv layers and their pool).
- ResNet50/101, ResNet50V2: the stages conv1 (with pool1), conv2 ... conv5 (ResNetV2's post_bn/relu
  belong to conv5).
- DenseNet121: conv1 (with pool1), conv2 ... conv5; each transition layer (poolK_*) belongs to the
  dense block before it, the final bn/relu to conv5.
- InceptionV3: mixed0 ... mixed10, each ending at its concatenation "mixedK"; mixed0 includes the stem.
- InceptionResNetV2: mixed_5b (with the stem), block35_1 ... block35_10, mixed_6a, block17_1 ...
  block17_20, mixed_7a, block8_1 ... block8_10, conv_7b.
- Xception: block1 ... block14 (entry flow 1-4, middle flow 5-12, exit flow 13-14); each residual
  shortcut belongs to the block it bypasses.
- MobileNetV2: stem (Conv1 and the first expanded_conv), block_1 ... block_16, top (Conv_1, out_relu).
- NASNetLarge: one block per cell: cell_stem_1, cell_stem_2, cell_0 ... cell_5, cell_reduce_6,
  cell_7 ... cell_12, cell_reduce_12, cell_13 ... cell_18.
- EfficientNetB0-B7: stem (with the input rescaling), block1 ... block7, top.

Constructors, input scaling modes and smallest inputs come from `common.backbones.BACKBONES`. For
EfficientNet's ImageNet weights use weights="imagenet" with the file placed in ~/.keras/models/: Keras
adds its ImageNet variance correction layer only for that value, not for a weights file path.
"""

from __future__ import annotations

from classification.models.backbone import BackboneSpec, BlockRule
from common.backbones import BACKBONES

VGG_BLOCKS = BlockRule(((r"(block\d+)_", r"\1"),))
STAGE_BLOCKS = BlockRule(((r"(conv\d)_", r"\1"),))  # ResNet v1/v2 and DenseNet
INCEPTION_V3_BLOCKS = BlockRule(((r"(mixed\d+)$", r"\1"),), ends_block=True)
# Residual blocks end at "<block>_conv" (then a generically named scale layer and "<block>_ac", which
# rejoin their block by name); block8_10 has no "_ac", so its weightless scale layer counts in conv_7b.
INCEPTION_RESNET_V2_BLOCKS = BlockRule(
    ((r"(mixed_\w+)$", r"\1"), (r"(block\d+_\d+)_(conv|ac)$", r"\1"), (r"(conv_7b)_ac$", r"\1")),
    ends_block=True,
)
MOBILENET_V2_BLOCKS = BlockRule(
    ((r"(block_\d+)_", r"\1"), (r"(Conv_1|out_relu)", "top"), (r"(Conv1|bn_Conv1|expanded_conv)", "stem"))
)
# Cell layers end in the cell id; Keras' generic names ("activation_12") must not match.
NASNET_BLOCKS = BlockRule(
    ((r"(?:normal|reduction|adjust|separable)_.*?_(stem_\d|reduce_\d+|\d+)$", r"cell_\1"),)
)
EFFICIENTNET_BLOCKS = BlockRule(((r"(stem|top)_", r"\1"), (r"(block\d)", r"\1")))


BLOCK_RULES: dict[str, BlockRule] = {
    "vgg16": VGG_BLOCKS,
    "vgg19": VGG_BLOCKS,
    "resnet50": STAGE_BLOCKS,
    "resnet101": STAGE_BLOCKS,
    "resnet50v2": STAGE_BLOCKS,
    "inceptionv3": INCEPTION_V3_BLOCKS,
    "inceptionresnetv2": INCEPTION_RESNET_V2_BLOCKS,
    "xception": VGG_BLOCKS,
    "densenet121": STAGE_BLOCKS,
    "mobilenetv2": MOBILENET_V2_BLOCKS,
    "nasnetlarge": NASNET_BLOCKS,
    **{f"efficientnetb{k}": EFFICIENTNET_BLOCKS for k in range(8)},
}
APPLICATIONS: dict[str, BackboneSpec] = {
    name: BackboneSpec(backbone.build, backbone.min_size, backbone.scaling, BLOCK_RULES[name])
    for name, backbone in BACKBONES.items()
}
