"""Medical Segmentation Decathlon Task06 (lung tumour): 2D CT patches in HDF5 files.

Layout: `*.h5` files under the root (e.g. `val_patches.h5`, `test_patches.h5`), each with datasets
`images` (N, 1, H, W) float (intensity-windowed CT scaled to 0-1: "normalized", not HU) and `labels`
(N, 1, H, W) in {0, 1} (1 = tumour). Each file holds the patches of one group of patients, so the
patient id is the file stem (the only grouping given; patient_ids "partial"). A file named
`<split>_patches.h5` with split train / val / test gives its records that split.

Records: key `<file stem>/<index:04d>`, image (H, W) float32, mask "tumour", label "tumour" when the
patch's mask is non-empty.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from data_prep.adapters.base import DatasetAdapter, register
from data_prep.errors import DataError
from data_prep.io import check_label_values, check_same_shape, check_split, labels_present, read_h5
from data_prep.records import Record

SPLIT_NAMES = ("train", "val", "test")
FILE_SUFFIX = "_patches"


def _split_of(stem: str) -> str | None:
    split = stem.removesuffix(FILE_SUFFIX)
    return split if stem.endswith(FILE_SUFFIX) and split in SPLIT_NAMES else None


@register
class MsdLungPatches(DatasetAdapter):
    """MSD Task06 lung-tumour patches (channel-first HDF5)."""

    name = "msd_patches"
    modality = "ct"
    label_names = ("tumour",)
    mask_names = ("tumour",)
    patient_ids = "partial"
    homepage = "http://medicaldecathlon.com/"
    citation = (
        "Simpson A. L. et al., arXiv:1902.09063, 2019; Antonelli M. et al., The Medical Segmentation "
        "Decathlon, Nature Communications 13, 4128, 2022."
    )

    def __init__(self, root: str | Path) -> None:
        super().__init__(root)
        self.files = sorted(self.root.glob("*.h5"))
        if not self.files:
            raise DataError(self.root, "no .h5 patch files; expected e.g. val_patches.h5 with images/labels")

    def splits(self) -> tuple[str, ...]:
        return tuple(sorted({s for s in map(_split_of, (p.stem for p in self.files)) if s is not None}))

    def records(self, split: str | None = None) -> Iterator[Record]:
        check_split(split, self.splits(), self.name)
        for path in self.files:
            file_split = _split_of(path.stem)
            if split not in (None, file_split):
                continue
            images = read_h5(path, "images")
            if images.ndim != 4 or images.shape[1] != 1:
                raise DataError(path, f"images have shape {images.shape}; expected (N, 1, H, W)")
            labels = read_h5(path, "labels")
            check_same_shape(labels, images.shape, path)
            masks = check_label_values(labels[:, 0], 1, path)
            for index in range(images.shape[0]):
                record_masks = {"tumour": masks[index]}
                yield Record(
                    key=f"{path.stem}/{index:04d}",
                    image=images[index, 0].astype(np.float32),
                    modality="ct",
                    intensity="normalized",
                    path=str(path),
                    masks=record_masks,
                    labels=labels_present(record_masks, self.label_names),
                    patient_id=path.stem,
                    source="msd-task06-lung",
                    split=file_split,
                    synthetic=self.synthetic,
                )
