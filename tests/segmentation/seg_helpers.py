"""Tiny synthetic segmentation data and models for the segmentation tests (no real data needed).

`write_disks(folder)` writes a TFRecord directory through the "test_seg_disks" adapter: 32 x 32
images with a bright disk (200) on a dark background (40), masks "infection" (the disk), "lung" (a
square around it), "ggo" / "consolidation" (the disk's left / right half); splits train 8 / val 4 /
test 4 records, two records per patient.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import keras
import numpy as np

from data_prep.adapters.base import DatasetAdapter, register
from data_prep.records import Record
from tests.records import ct_slice
from tfrecords.writer import write_dataset

SIZE = 32
SPLITS = {"train": 8, "val": 4, "test": 4}


def disk_record(index: int, split: str) -> Record:
    rows, cols = np.mgrid[:SIZE, :SIZE]
    centre_row, centre_col, radius = 10 + index % 12, 9 + (index * 5) % 14, 4 + index % 4
    disk = ((rows - centre_row) ** 2 + (cols - centre_col) ** 2 <= radius**2).astype(np.uint8)
    image = np.where(disk, 200, 40).astype(np.uint8)
    lung = np.zeros_like(disk)
    lung[max(centre_row - 8, 0) : centre_row + 9, max(centre_col - 8, 0) : centre_col + 9] = 1
    left = (cols < centre_col).astype(np.uint8)
    masks = {"infection": disk, "lung": lung, "ggo": disk * left, "consolidation": disk * (1 - left)}
    name = f"{split}/img{index:02d}"
    return ct_slice(
        name,
        image,
        f"/synthetic/{name}.png",
        masks=masks,
        patient_id=f"{split}-p{index // 2}",
        source="synthetic",
        split=split,
        slice_index=index,
        synthetic=True,
    )


@register
class DiskAdapter(DatasetAdapter):
    """Synthetic disks (see the module docstring); the root folder only has to exist."""

    name = "test_seg_disks"
    modality = "ct"
    mask_names = ("infection", "lung", "ggo", "consolidation")
    patient_ids = "real"

    def records(self, split: str | None = None) -> Iterator[Record]:
        offset = 0
        for name, count in SPLITS.items():
            if split is None or split == name:
                yield from (disk_record(offset + i, name) for i in range(count))
            offset += count

    def splits(self) -> tuple[str, ...]:
        return tuple(SPLITS)


def write_disks(folder: Path) -> Path:
    """Writes the disk records as TFRecords under folder/"tfrecords" and returns that directory."""
    raw = folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    out = folder / "tfrecords"
    write_dataset("test_seg_disks", raw, out, shards=2)
    return out


def tiny_model(outputs: int = 1, activation: str = "sigmoid", size: int = SIZE) -> keras.Model:
    """Two convolutions: (size, size, 1) -> (size, size, outputs) probabilities."""
    inputs = keras.Input((size, size, 1))
    features = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    outputs = keras.layers.Conv2D(outputs, 1, activation=activation, dtype="float32")(features)
    return keras.Model(inputs, outputs)


def bright_pixel_model(size: int = SIZE, outputs: int = 1) -> keras.Model:
    """A fixed 1x1 convolution: probability sigmoid(20 * (x - 0.5)) for input x in [0, 1], so pixels
    above 0.5 (e.g. the disks, 200 / 255) get probabilities > 0.99 and the background (40 / 255) < 0.01."""
    inputs = keras.Input((size, size, 1))
    layer = keras.layers.Conv2D(outputs, 1, activation="sigmoid", dtype="float32")
    outputs_tensor = layer(inputs)
    layer.set_weights([np.full((1, 1, 1, outputs), 20.0, np.float32), np.full((outputs,), -10.0, np.float32)])
    return keras.Model(inputs, outputs_tensor)
