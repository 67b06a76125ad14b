"""A stored image as a model input array, in NumPy: what `tfrecords.make_dataset` feeds a model."""

from __future__ import annotations

import cv2
import numpy as np

STORED_DTYPES = (np.uint8, np.uint16)


def model_input(stored: np.ndarray, size: tuple[int, int], channels: int) -> np.ndarray:
    """A stored (H, W) uint8/uint16 image -> (height, width, channels) float32 in [0, 1].

    Scaled by the dtype's maximum (255 or 65535), resized bilinearly to size = (height, width) where
    it differs, the channel repeated `channels` times.
    """
    if stored.dtype not in STORED_DTYPES:
        raise ValueError(f"stored images are uint8 or uint16, got {stored.dtype}")
    scaled = stored.astype(np.float32) / float(np.iinfo(stored.dtype).max)
    height, width = size
    if scaled.shape[:2] != (height, width):
        scaled = cv2.resize(scaled, (width, height), interpolation=cv2.INTER_LINEAR)
    return np.repeat(scaled.reshape(height, width, 1), channels, axis=-1)
