"""DeepLab's modified aligned Xception-65 (Chen et al. 2018, "Encoder-Decoder with Atrous Separable
Convolution", section 3.2), built by us in `keras.layers`.

Changes from Chollet's Xception, as in DeepLab's reference `xception_65` (tensorflow/models,
research/deeplab/core/xception.py):
- entry flow: 3x3 conv 32 stride 2, 3x3 conv 64, then three blocks of 128, 256 and 728 channels whose
  max pooling is replaced by a stride-2 separable convolution;
- middle flow: 16 residual blocks of three 728-channel separable convolutions (8 in Xception);
- exit flow: a [728, 1024, 1024] stride-2 block with a 1x1 conv shortcut, then [1536, 1536, 2048] with
  no shortcut;
- batch normalisation and ReLU after every 3x3 depthwise convolution; all convolutions have no bias;
- stride-2 convolutions pad symmetrically ("aligned" features: output pixel j sits on input pixel 2j);
- atrous convolution instead of striding once the requested output stride is reached: at output
  stride 16 the exit flow has stride 1 and its last block dilation 2; at output stride 8 entry block 3
  also has stride 1, the middle flow and first exit block dilation 2 and the last block dilation 4.

Like the reference, every block except the last applies ReLU *before* each separable convolution
(pre-activation, so the residual sums are not rectified); the last block applies it after. ReLU
placement adds no parameters.

Parameters: 37,867,312 trainable (convolution weights and BN scale/offset) for any input size and
output stride, plus 185,200 non-trainable BN moving statistics. The reference checkpoint as ported to
timm (`xception65.tf_in1k`, same topology) reports 39.9 M parameters including its 2048 x 1000
classifier (2,049,000), i.e. 37.85 M +- 0.05 M for the backbone; ours plus that classifier is
39,916,312. Figures of about 41 M for "DeepLabv3+ Xception-65" include the ASPP and decoder.
"""

from __future__ import annotations

from keras import layers

from segmentation.models.blocks import conv_bn_relu, separable_conv_bn

OUTPUT_STRIDES = (8, 16, 32)
MIDDLE_FLOW_BLOCKS = 16
# (block name, separable conv depths, shortcut: "conv" | "sum" | "none", stride before atrous conversion)
BLOCKS = (
    (("entry_block1", (128, 128, 128), "conv", 2),)
    + (("entry_block2", (256, 256, 256), "conv", 2),)
    + (("entry_block3", (728, 728, 728), "conv", 2),)
    + tuple((f"middle_block{i}", (728, 728, 728), "sum", 1) for i in range(1, MIDDLE_FLOW_BLOCKS + 1))
    + (("exit_block1", (728, 1024, 1024), "conv", 2),)
    + (("exit_block2", (1536, 1536, 2048), "none", 1),)
)
# Blocks whose second separable convolution is the pyramid feature C1..C4; C5 is the network output.
PYRAMID_BLOCKS = ("entry_block1", "entry_block2", "entry_block3", "exit_block1")


def xception_block(x, depths: tuple[int, int, int], shortcut: str, strides: int, dilation: int, name: str):
    """Three separable convolutions (the third strided) plus a shortcut.

    Returns (block output, output of the second separable convolution).
    """
    last_block = shortcut == "none"
    residual = x
    for index, depth in enumerate(depths, start=1):
        residual = separable_conv_bn(
            residual,
            depth,
            f"{name}_sepconv{index}",
            strides=strides if index == 3 else 1,
            dilation=dilation,
            relu_before=not last_block,
            relu_after=last_block,
        )
        if index == 2:
            second = residual
    if shortcut == "conv":
        projected = conv_bn_relu(x, depths[-1], 1, f"{name}_shortcut", strides=strides, activation=False)
        residual = layers.Add(name=f"{name}_add")([residual, projected])
    elif shortcut == "sum":
        residual = layers.Add(name=f"{name}_add")([residual, x])
    return residual, second


def aligned_xception65_features(x, output_stride: int = 32) -> list:
    """Image tensor (B, H, W, C) -> [C1..C5].

    C_k has stride min(2^k, output_stride); channels 128, 256, 728, 1024, 2048. C2 is DeepLab's
    decoder skip (entry block 2, second separable convolution); C5 is the exit-flow output.
    """
    if output_stride not in OUTPUT_STRIDES:
        raise ValueError(f"output_stride must be one of {OUTPUT_STRIDES}, got {output_stride}")
    x = conv_bn_relu(x, 32, 3, "entry_conv1", strides=2)
    x = conv_bn_relu(x, 64, 3, "entry_conv2")
    current_stride, dilation = 2, 1
    features = {}
    for name, depths, shortcut, block_stride in BLOCKS:
        if current_stride == output_stride:
            x, second = xception_block(x, depths, shortcut, 1, dilation, name)
            dilation *= block_stride
        else:
            x, second = xception_block(x, depths, shortcut, block_stride, 1, name)
            current_stride *= block_stride
        features[name] = second
    return [features[name] for name in PYRAMID_BLOCKS] + [x]
