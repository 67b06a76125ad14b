"""`ReadConfig`: what `tfrecords.reader.make_dataset` reads from a TFRecord directory and how it
batches it (one object instead of a keyword per knob). Imports no TensorFlow."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tfrecords.augment import AugmentConfig

TASKS = ("classification", "multilabel", "segmentation")


@dataclass(frozen=True)
class ReadConfig:
    """One split of a TFRecord directory as batches of (image, target) or (image, target, meta).

    split: the manifest's split name. task: one of `TASKS`. batch_size: examples per batch (global;
    per replica under an input context).
    image_size: N or (H, W) pixels (None: as stored, when every stored image has one size); images are
    resized bilinearly, masks by nearest neighbour. channels: 1 or 3 (the gray channel repeated).
    input_scaling: a backbone family like "resnet50" or a mode (`tfrecords.scaling.INPUT_SCALINGS`);
    None keeps float32 in [0, 1] (16-bit stores: value / 65535).
    mask_names: segmentation targets, in this order (None: all of the manifest's). label_names:
    multilabel targets (None: all of the manifest's). one_hot: classification targets as (classes,)
    float32 instead of an int32 index.
    augment: applied after the cache with stateless seeds drawn from `seed`: other transforms every
    epoch, the same ones in every run. shuffle: over the whole split (at most 10,000 examples), after
    sharding and cache, reshuffled each epoch from `seed`. cache: True keeps decoded examples (integer
    pixels, before augmentation) in memory; a path caches them to files with that prefix. repeat:
    endlessly (pass steps_per_epoch to fit).
    deterministic: fixed order and tf.data autotuning off (for tests and exact reruns).
    verify_checksums: hash every shard against the manifest first (byte sizes are always checked).
    with_meta: also yield the `reader.META_FIELDS` strings, name -> (B,).
    """

    split: str
    task: str
    batch_size: int
    image_size: int | tuple[int, int] | None = None
    channels: int = 1
    input_scaling: str | None = None
    mask_names: Sequence[str] | None = None
    label_names: Sequence[str] | None = None
    one_hot: bool = False
    augment: AugmentConfig | None = None
    shuffle: bool = False
    cache: bool | str = False
    repeat: bool = False
    seed: int = 0
    deterministic: bool = False
    verify_checksums: bool = False
    with_meta: bool = False

    @property
    def size(self) -> tuple[int, int] | None:
        """`image_size` as (H, W) pixels, or None."""
        if self.image_size is None or isinstance(self.image_size, tuple):
            return self.image_size
        return (self.image_size, self.image_size)
