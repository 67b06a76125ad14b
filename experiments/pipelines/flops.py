"""Per-layer FLOP count of a Keras model (one multiply-add = 2 FLOPs), for compute comparisons.

Counted: Conv2D (with groups), Conv2DTranspose, DepthwiseConv2D, SeparableConv2D and Dense layers,
which hold nearly all the arithmetic of the models here. Not counted: normalisation, activations,
pooling, resizing and element-wise merges (each is O(output size), small beside the convolutions).
Nested models (backbones) are counted through.
"""

from __future__ import annotations

import math

import keras


def _spatial(shape: tuple) -> int:
    """Product of the dimensions between batch and channels, e.g. H*W for (B, H, W, C)."""
    return math.prod(int(d) for d in shape[1:-1])


def layer_flops(layer: keras.layers.Layer) -> int:
    """FLOPs of one call of `layer` on one example, from its built input and output shapes."""
    if isinstance(layer, keras.Model):
        return model_flops(layer)
    if not layer.weights or not hasattr(layer, "output"):
        return 0
    out_shape = tuple(layer.output.shape)
    in_channels = int(layer.input.shape[-1])
    if isinstance(layer, keras.layers.SeparableConv2D):
        kh, kw = layer.kernel_size
        depthwise = kh * kw * in_channels * layer.depth_multiplier
        pointwise = in_channels * layer.depth_multiplier * layer.filters
        return 2 * _spatial(out_shape) * (depthwise + pointwise)
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        kh, kw = layer.kernel_size
        return 2 * _spatial(out_shape) * kh * kw * in_channels * layer.depth_multiplier
    if isinstance(layer, keras.layers.Conv2DTranspose):
        kh, kw = layer.kernel_size
        return 2 * _spatial(tuple(layer.input.shape)) * kh * kw * in_channels * layer.filters
    if isinstance(layer, keras.layers.Conv2D):
        kh, kw = layer.kernel_size
        return 2 * _spatial(out_shape) * kh * kw * (in_channels // layer.groups) * layer.filters
    if isinstance(layer, keras.layers.Dense):
        return 2 * max(_spatial(out_shape), 1) * in_channels * layer.units
    return 0


def model_flops(model: keras.Model) -> int:
    """FLOPs of one forward pass of one example through `model`."""
    return sum(layer_flops(layer) for layer in model.layers)
