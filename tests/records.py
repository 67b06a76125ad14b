"""Test records built in one place: `ct_slice` is a 2D CT `Record` of display intensities."""

from __future__ import annotations

from typing import Any

import numpy as np

from data_prep.records import Record


def ct_slice(key: str, image: np.ndarray, path: str, **fields: Any) -> Record:
    """A CT `Record` of `image` (H, W) read from `path`: display intensities (uint8) unless `fields`
    say otherwise (e.g. intensity="hu"); other `fields` as `Record`'s (masks, labels, patient_id,
    source, split, volume_id, slice_index, synthetic, ...)."""
    return Record(
        **{"modality": "ct", "intensity": "display", **fields, "key": key, "image": image, "path": path}
    )
