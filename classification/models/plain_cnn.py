"""The small plain CNN of S3 (conv-BN-ReLU-max-pool blocks, trained from scratch) as a backbone."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import keras

from classification.models.conv_stages import conv_stages

DEFAULT_FILTERS = (32, 64, 128, 256)


def plain_cnn(
    weights: str | Path | None = None,
    input_shape: tuple[int, int, int] = (128, 128, 1),
    name: str = "plain_cnn",
    filters: Sequence[int] = DEFAULT_FILTERS,
    convs_per_block: int = 1,
) -> keras.Model:
    """Plain CNN feature extractor: (B, H, W, C) -> (B, H / 2^n, W / 2^n, filters[-1]), n = len(filters).

    Block k has `convs_per_block` 3x3 convolutions (no bias, as BN follows) with `filters[k-1]`
    channels; H and W must be at least 2^n (16 for the default filters). weights: None or a local
    weights file.
    """
    stages = [(block_filters, convs_per_block) for block_filters in filters]
    return conv_stages("plain_cnn", input_shape, stages, use_bias=False, weights=weights, name=name)
