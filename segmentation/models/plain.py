"""The plain U-Net contracting path (Ronneberger et al. 2015; S3's U-Net): no pretrained backbone."""

from __future__ import annotations

from collections.abc import Sequence

from keras import layers

from segmentation.models.blocks import double_conv

DEFAULT_FILTERS = (32, 64, 128, 256, 512)


def plain_features(x, filters: Sequence[int] = DEFAULT_FILTERS) -> list:
    """Image tensor (B, H, W, C) -> [L0, L1, ..., L_{n-1}] with n = len(filters).

    L_k is a double 3x3 conv-BN-ReLU block with filters[k] channels at stride 2^k (L0 at full
    resolution); 2x2 max pooling leads from one level to the next. The default is the 4-pooling U-Net.
    """
    if len(filters) < 2:
        raise ValueError(f"the plain encoder needs at least 2 levels of filters, got {tuple(filters)}")
    features = [double_conv(x, filters[0], "level0")]
    for level, level_filters in enumerate(filters[1:], start=1):
        pooled = layers.MaxPooling2D(2, name=f"level{level}_pool")(features[-1])
        features.append(double_conv(pooled, level_filters, f"level{level}"))
    return features
