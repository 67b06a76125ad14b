"""What the registry knows about a backbone, and how its layers group into blocks for fine-tuning.

A backbone is a `keras.Model` from an image (B, H, W, C) to a feature map (B, h, w, F). Its blocks
are consecutive groups of its layers, in order from the input to the output; the two-stage training
schedule freezes the backbone, then unfreezes the top N blocks.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import keras


class Block(NamedTuple):
    """One fine-tuning unit of a backbone: its name (e.g. "conv5", "mixed9") and its layers in order."""

    name: str
    layers: list[keras.layers.Layer]


@dataclass(frozen=True)
class BlockRule:
    """How layer names map to blocks.

    patterns: (regex, template) pairs; the first regex that matches a layer name (`re.match`) names
      that layer's block with `match.expand(template)`. Layers that match nothing (Keras' generic
      names such as "add_3" or "activation_12") belong to the block of the layer before them, or,
      before the first match, to the first block.
    ends_block: False: a matching layer opens (or continues) its block. True: a matching layer
      closes its block: it and the unmatched layers since the previous match belong to it (Inception's
      "mixedK" concatenations end their blocks); unmatched layers after the last match join the last
      block.
    """

    patterns: tuple[tuple[str, str], ...]
    ends_block: bool = False

    def block_of(self, layer_name: str) -> str | None:
        for pattern, template in self.patterns:
            match = re.match(pattern, layer_name)
            if match:
                return match.expand(template)
        return None


@dataclass(frozen=True)
class BackboneSpec:
    """A registered backbone.

    build: called as `build(weights, input_shape=..., name=..., **options)` with weights None,
      "imagenet" or a file path (`common.weights.build_application` semantics); returns the backbone
      without a classification top.
    min_size: the smallest legal input height and width in pixels (default configuration).
    scaling: the `common.layers.InputScaling` mode applied inside the classifier.
    blocks: how its layers group into fine-tuning blocks.
    """

    build: Callable[..., keras.Model]
    min_size: int
    scaling: str
    blocks: BlockRule


def group_into_blocks(backbone: keras.Model, rule: BlockRule) -> list[Block]:
    """Groups `backbone.layers` (its input layers left out) into named blocks, in order of first appearance.

    Layers of one block need not be consecutive (NASNet cells read the two previous cells' outputs).
    """
    blocks: dict[str, list[keras.layers.Layer]] = {}
    current: str | None = None
    unassigned: list[keras.layers.Layer] = []
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        name = rule.block_of(layer.name)
        if rule.ends_block or (name is None and current is None):
            unassigned.append(layer)
        elif name is None:
            blocks[current].append(layer)
        if name is not None:
            current = name
            blocks.setdefault(name, []).extend(unassigned if rule.ends_block else [*unassigned, layer])
            unassigned = []
    if current is None:
        raise ValueError(f"{backbone.name}: no layer name matches the block patterns {rule.patterns}")
    blocks[current].extend(unassigned)
    return [Block(name, layers) for name, layers in blocks.items()]
