"""Layer blocks shared by the encoders and decoders (the input layers are in `common.layers`).

Every block is a function `block(x, ..., name) -> x` on symbolic Keras tensors of shape (B, H, W, C).
Convolutions that feed a BatchNormalization have no bias. Layer names are `name` plus a suffix, so a
model's layer names say which block a weight belongs to.
"""

from __future__ import annotations

from keras import layers

# Moving-average momentum of our BatchNormalization layers (PyTorch's default; Keras's is 0.99).
# With 0.99 the moving statistics still lag the batch statistics after the few hundred steps of a
# CPU-scale run, and inference-mode predictions collapse (see `batch_norm`).
BN_MOMENTUM = 0.9
# Kernel initializer of segmentation_models' decoder convolutions (its heads keep Keras's glorot_uniform).
DECODER_INITIALIZER = "he_uniform"


def batch_norm(x, name: str):
    """BatchNormalization with momentum `BN_MOMENTUM`.

    Measured on the 50 MedSeg training slices (U-Net "plain", 128 px, batch 8, 15 epochs, Inf-Net
    test split): with momentum 0.99 the test Dice in inference mode was 0.25 against 0.74 with batch
    statistics; with 0.9 it was 0.73.
    """
    return layers.BatchNormalization(momentum=BN_MOMENTUM, name=name)(x)


def conv_bn_relu(
    x,
    filters: int,
    kernel_size: int,
    name: str,
    strides: int = 1,
    dilation: int = 1,
    activation: bool = True,
    kernel_initializer: str = "glorot_uniform",
):
    """Conv2D (no bias) -> BatchNorm -> ReLU (unless `activation=False`).

    'same' padding at stride 1; at stride 2 `aligned_padding` then 'valid', so output pixel j is
    centred on input pixel 2j.
    """
    padding = "same"
    if strides > 1 and kernel_size > 1:
        x = aligned_padding(x, kernel_size, name)
        padding = "valid"
    x = layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        dilation_rate=dilation,
        padding=padding,
        use_bias=False,
        kernel_initializer=kernel_initializer,
        name=f"{name}_conv",
    )(x)
    x = batch_norm(x, f"{name}_bn")
    return layers.ReLU(name=f"{name}_relu")(x) if activation else x


def double_conv(x, filters: int, name: str, kernel_initializer: str = "glorot_uniform"):
    """Two 3x3 conv-BN-ReLU layers: the U-Net stage block."""
    x = conv_bn_relu(x, filters, 3, f"{name}_1", kernel_initializer=kernel_initializer)
    return conv_bn_relu(x, filters, 3, f"{name}_2", kernel_initializer=kernel_initializer)


def center_block(x, name: str = "center_block"):
    """segmentation_models' centre block: two 3x3 conv-BN-ReLU with 512 filters (`DECODER_INITIALIZER`).

    Its U-Net and Linknet insert it after an encoder whose deepest feature is a max pooling (VGG).
    """
    return double_conv(x, 512, name, kernel_initializer=DECODER_INITIALIZER)


def aligned_padding(x, kernel_size: int, name: str):
    """Symmetric zero padding of (kernel_size - 1) / 2 before a stride-2 'valid' convolution.

    Keras 'same' padding with stride 2 pads only at the bottom/right of an even-sized input, which
    shifts the output by half an input pixel relative to a 1x1 stride-2 shortcut; this keeps output
    pixel j centred on input pixel 2j (DeepLab's `fixed_padding`).
    """
    return layers.ZeroPadding2D((kernel_size - 1) // 2, name=f"{name}_pad")(x)


def separable_conv_bn(
    x,
    filters: int,
    name: str,
    strides: int = 1,
    dilation: int = 1,
    relu_before: bool = False,
    relu_after: bool = True,
):
    """[ReLU] -> 3x3 depthwise -> BN -> ReLU -> 1x1 pointwise -> BN -> [ReLU].

    The BN + ReLU after the depthwise convolution is DeepLabv3+'s addition to Xception. A stride-2
    depthwise convolution uses `aligned_padding`; dilation applies only at stride 1.
    """
    if relu_before:
        x = layers.ReLU(name=f"{name}_prerelu")(x)
    padding = "same"
    if strides > 1:
        x = aligned_padding(x, 3, name)
        padding = "valid"
    x = layers.DepthwiseConv2D(
        3, strides=strides, dilation_rate=dilation, padding=padding, use_bias=False, name=f"{name}_depthwise"
    )(x)
    x = batch_norm(x, f"{name}_depthwise_bn")
    x = layers.ReLU(name=f"{name}_depthwise_relu")(x)
    return conv_bn_relu(x, filters, 1, f"{name}_pointwise", activation=relu_after)


def upsample(x, factor: int | tuple[int, int], name: str, interpolation: str = "bilinear"):
    """Upsamples (B, h, w, C) by an integer factor; returns x unchanged when the factor is 1."""
    if factor in (1, (1, 1)):
        return x
    return layers.UpSampling2D(factor, interpolation=interpolation, name=name)(x)


def segmentation_head(x, num_classes: int, upsampling: int = 1, kernel_size: int = 1, name: str = "head"):
    """Logits conv -> bilinear upsampling -> sigmoid (num_classes == 1) or softmax, in float32.

    Output (B, H, W, num_classes) float32 probabilities, so the head stays exact under mixed precision.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    x = layers.Conv2D(num_classes, kernel_size, padding="same", name=f"{name}_logits")(x)
    x = upsample(x, upsampling, f"{name}_upsample")
    activation = "sigmoid" if num_classes == 1 else "softmax"
    return layers.Activation(activation, dtype="float32", name=f"{name}_{activation}")(x)
