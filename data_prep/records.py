"""The record types every dataset adapter yields.

A `Record` is one 2D image (a CT slice or a chest X-ray) with its masks and labels. A `Volume` is one
3D CT scan with its masks, for datasets that are volumes. Everything downstream (`tfrecords`, the
models) consumes these two types only.

Conventions
- Mask names: "lung", "infection", "ggo", "consolidation", "effusion", "nodule", "tumour".
  Every mask is a binary uint8 array with values {0, 1} and the image's height and width.
- 2D images are in display orientation: for axial CT, anterior at the top and the patient's right on
  the image's left (radiological convention) where the source orientation is known.
- `intensity` says what the pixel values are: "hu" (Hounsfield units, int16), "display" (0-255 uint8,
  already windowed or an X-ray), or "normalized" (float32 on a dataset-specific scale, not HU).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

MODALITIES = ("ct", "xray")
INTENSITY_KINDS = ("hu", "display", "normalized")
MASK_NAMES = ("lung", "infection", "ggo", "consolidation", "effusion", "nodule", "tumour")
MANIFESTATIONS = ("ggo", "consolidation", "effusion")
# How an adapter's patient ids were obtained: given by the publisher, given for part of the set,
# inferred (e.g. a volume block or a file-name pattern), or not available at all.
PATIENT_ID_KINDS = ("real", "partial", "inferred", "none")


@dataclass(frozen=True)
class Record:
    """One 2D image with masks and labels.

    image: (H, W) or (H, W, 3); uint8 for "display", int16 for "hu", float32 for "normalized".
    masks: name -> (H, W) uint8 in {0, 1}.
    labels: class label(s); several for multi-label sets (manifestations), () when unlabelled.
    """

    key: str
    image: np.ndarray
    modality: str
    intensity: str
    path: str
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    labels: tuple[str, ...] = ()
    patient_id: str | None = None
    source: str | None = None
    split: str | None = None
    volume_id: str | None = None
    slice_index: int | None = None
    spacing_mm: tuple[float, float] | None = None
    synthetic: bool = False

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise ValueError(f"{self.path}: modality {self.modality!r} is not one of {MODALITIES}")
        if self.intensity not in INTENSITY_KINDS:
            raise ValueError(f"{self.path}: intensity {self.intensity!r} is not one of {INTENSITY_KINDS}")
        for name, mask in self.masks.items():
            if mask.shape != self.image.shape[:2]:
                raise ValueError(
                    f"{self.path}: mask {name!r} has shape {mask.shape}, image has {self.image.shape[:2]}"
                )


@dataclass(frozen=True)
class Volume:
    """One 3D CT scan in nibabel's canonical RAS+ voxel order.

    image: (X, Y, Z); int16 for "hu", uint8 for "display", float32 for "normalized".
    masks: name -> (X, Y, Z) uint8 in {0, 1}.
    affine: (4, 4) voxel-to-world in mm, matching `image` after reorientation.
    spacing_mm: voxel size along X, Y, Z in mm; None where the source spacing is a placeholder.
    """

    key: str
    image: np.ndarray
    affine: np.ndarray
    intensity: str
    path: str
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    spacing_mm: tuple[float, float, float] | None = None
    patient_id: str | None = None
    source: str | None = None
    split: str | None = None
    synthetic: bool = False
