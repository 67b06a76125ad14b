"""MedSeg "COVID-19 CT segmentation dataset": 2D CT slices with ground-glass / consolidation / effusion masks.

Two layouts are recognised under the root:

- The MedSeg download: `tr_im.nii.gz` (100 axial slices from more than 40 patients, HU) with
  `tr_mask.nii.gz` (0 = background, 1 = ground-glass opacity, 2 = consolidation, 3 = pleural effusion),
  `val_im.nii.gz` (10 test slices whose masks were never published), and the Radiopaedia volumes
  `rp_im/<n>.nii.gz` with `rp_msk/<n>.nii.gz` (same labels) and `rp_lung_msk/<n>.nii.gz` (lungs, any
  non-zero label). Splits: tr and rp -> "train"; val -> "unlabelled", which `records()` yields only when
  asked for by name (nothing can be trained or scored on it). Slices are read in canonical RAS+ and
  shown in display orientation.
- Inf-Net's COVID-SemiSeg copy of the labelled slices (`Dataset/TrainingSet`, `Dataset/TestingSet`; the
  root may also be `Dataset/` itself): JPEG images, binary infection GT ({0, 255}) and palette GT
  (0 = background, 1 = ground-glass opacity, 2 = consolidation). File `<k>.jpg` is MedSeg slice k.
  Inf-Net stored the slices transposed (lungs at the top and bottom, anterior on the left, the patient's
  right at the top, judged from the spine and the aortic arch), so images and masks are transposed into
  display orientation. Splits "train" / "test" as in Inf-Net (50 / 48).

Keys: `tr/<k:04d>` for MedSeg slice k in either layout, `val/<k:04d>`, `rp_<n>/<k:04d>`. Masks: "ggo",
"consolidation", "effusion" (MedSeg download only), "infection" (= ground-glass or consolidation; Inf-Net's
binary GT in the SemiSeg layout) and "lung" (Radiopaedia volumes only). Labels: the manifestations present
in the slice. No patient ids: the 100 slices come from unnamed patients; each Radiopaedia volume is one scan
(volume id `rp_<n>`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from data_prep.adapters.base import DatasetAdapter, register
from data_prep.errors import DataError
from data_prep.imageio import read_binary_mask, read_image, read_palette_mask
from data_prep.io import (
    check_same_shape,
    check_split,
    find_nifti,
    labels_present,
    nifti_files,
    nifti_stem,
    read_label_volume,
    read_nifti,
    require_nifti,
    volume_from_scan,
    volume_records,
)
from data_prep.records import MANIFESTATIONS, Record, Volume

# MedSeg label value -> mask name (tr_mask, rp_msk; the SemiSeg palette GT uses 1 and 2 alike).
MEDSEG_LABELS = {1: "ggo", 2: "consolidation", 3: "effusion"}
INFECTION_LABELS = (1, 2)
SEMISEG_LARGEST_LABEL = 2
LUNG_LARGEST_LABEL = 2
# SemiSeg split -> (image folder, binary GT folder, palette GT folder), relative to `Dataset/`.
SEMISEG_FOLDERS = {
    "train": (
        "TrainingSet/LungInfection-Train/Doctor-label/Imgs",
        "TrainingSet/LungInfection-Train/Doctor-label/GT",
        "TrainingSet/MultiClassInfection-Train/GT",
    ),
    "test": (
        "TestingSet/LungInfection-Test/Imgs",
        "TestingSet/LungInfection-Test/GT",
        "TestingSet/MultiClassInfection-Test/GT",
    ),
}


def manifestation_masks(label_mask: np.ndarray, largest_label: int) -> dict[str, np.ndarray]:
    """MedSeg label mask -> one binary mask per manifestation label 1..`largest_label`."""
    return {
        name: (label_mask == value).astype(np.uint8)
        for value, name in MEDSEG_LABELS.items()
        if value <= largest_label
    }


@register
class MedSegCovidCt(DatasetAdapter):
    """MedSeg COVID-19 CT segmentation slices and Radiopaedia volumes, or Inf-Net's COVID-SemiSeg copy."""

    name = "medseg"
    modality = "ct"
    label_names = MANIFESTATIONS
    mask_names = ("infection", "ggo", "consolidation", "effusion", "lung")
    patient_ids = "none"
    orientation = "axial display: anterior up, patient right on the image left (Inf-Net slices transposed)"
    release_records = 100  # MedSeg's expert-labelled slices (Inf-Net's COVID-SemiSeg copy keeps 98)
    homepage = "https://medicalsegmentation.com/covid19/"
    citation = (
        "MedSeg, COVID-19 CT segmentation dataset (images: Italian Society of Medical and Interventional "
        "Radiology; Radiopaedia); Fan D.-P. et al., Inf-Net, IEEE TMI 39(8), 2020 (COVID-SemiSeg split)."
    )

    def __init__(self, root: str | Path) -> None:
        super().__init__(root)
        self.dataset = self.root / "Dataset" if (self.root / "Dataset").is_dir() else self.root
        if find_nifti(self.root, "tr_im") is not None:
            self.layout = "medseg"
        elif (self.dataset / "TrainingSet").is_dir() or (self.dataset / "TestingSet").is_dir():
            self.layout = "semiseg"
        else:
            raise DataError(
                self.root,
                "not a MedSeg layout: expected tr_im.nii.gz (MedSeg download) or "
                "Dataset/TrainingSet, Dataset/TestingSet (Inf-Net COVID-SemiSeg)",
            )

    def splits(self) -> tuple[str, ...]:
        if self.layout == "medseg":
            return ("train", "unlabelled") if find_nifti(self.root, "val_im") is not None else ("train",)
        return tuple(s for s, (images, _, _) in SEMISEG_FOLDERS.items() if (self.dataset / images).is_dir())

    def records(self, split: str | None = None) -> Iterator[Record]:
        check_split(split, self.splits(), self.name)
        if self.layout == "semiseg":
            yield from self._semiseg_records(split)
            return
        if split in (None, "train"):
            for volume in self.volumes():
                yield from volume_records(volume, self.label_names)
            tr = self._volume(
                "tr", require_nifti(self.root, "tr_im"), require_nifti(self.root, "tr_mask"), None
            )
            yield from volume_records(tr, self.label_names, one_scan=False)
        if split == "unlabelled":
            val = self._volume("val", require_nifti(self.root, "val_im"), None, None)
            yield from volume_records(val, self.label_names, one_scan=False)

    def volumes(self) -> Iterator[Volume]:
        """The Radiopaedia volumes `rp_<n>` (MedSeg download only; the SemiSeg layout has none), by key."""
        images = self.root / "rp_im"
        if self.layout != "medseg" or not images.is_dir():
            return
        lungs = self.root / "rp_lung_msk"
        for stem in sorted(nifti_stem(path) for path in nifti_files(images)):
            yield self._volume(
                f"rp_{stem}",
                require_nifti(images, stem),
                require_nifti(self.root / "rp_msk", stem),
                require_nifti(lungs, stem) if lungs.is_dir() else None,
            )

    def _volume(self, key: str, image_path: Path, label_path: Path | None, lung_path: Path | None) -> Volume:
        """A canonical volume with the masks of a MedSeg label file and, when given, a lung label file."""
        scan = read_nifti(image_path)
        masks: dict[str, np.ndarray] = {}
        if label_path is not None:
            labels = read_label_volume(label_path, scan.array.shape, max(MEDSEG_LABELS))
            masks["infection"] = np.isin(labels, INFECTION_LABELS).astype(np.uint8)
            masks.update(manifestation_masks(labels, max(MEDSEG_LABELS)))
        if lung_path is not None:
            lungs = read_label_volume(lung_path, scan.array.shape, LUNG_LARGEST_LABEL)
            masks["lung"] = (lungs > 0).astype(np.uint8)
        return volume_from_scan(
            scan,
            key,
            image_path,
            masks,
            source="radiopaedia" if key.startswith("rp_") else "medseg",
            split="unlabelled" if key == "val" else "train",
            synthetic=self.synthetic,
        )

    def _semiseg_records(self, split: str | None) -> Iterator[Record]:
        """The labelled SemiSeg slices of one split or both, in MedSeg slice order (= key order)."""
        slices: list[tuple[int, str, Path]] = []
        for split_name in self.splits():
            if split in (None, split_name):
                folder = self.dataset / SEMISEG_FOLDERS[split_name][0]
                paths = sorted(folder.iterdir())
                if not paths:
                    raise DataError(folder, "no image files")
                slices += [(_slice_number(path), split_name, path) for path in paths]
        for index, split_name, image_path in sorted(slices):
            yield self._semiseg_record(index, split_name, image_path)

    def _semiseg_record(self, index: int, split: str, image_path: Path) -> Record:
        _, binary_folder, palette_folder = (self.dataset / f for f in SEMISEG_FOLDERS[split])
        image = read_image(image_path)
        if image.ndim != 2:
            raise DataError(image_path, f"expected a grayscale CT slice, got shape {image.shape}")
        binary_path = binary_folder / f"{image_path.stem}.png"
        infection = read_binary_mask(binary_path)
        check_same_shape(infection, image.shape, binary_path)
        palette_path = palette_folder / f"{image_path.stem}.png"
        labels = read_palette_mask(palette_path, allowed=range(SEMISEG_LARGEST_LABEL + 1))
        check_same_shape(labels, image.shape, palette_path)
        masks = {"infection": infection} | manifestation_masks(labels, SEMISEG_LARGEST_LABEL)
        masks = {name: np.ascontiguousarray(mask.T) for name, mask in masks.items()}  # to display orientation
        return Record(
            key=f"tr/{index:04d}",
            image=np.ascontiguousarray(image.T),
            modality="ct",
            intensity="display",
            path=str(image_path),
            masks=masks,
            labels=labels_present(masks, self.label_names),
            source="medseg",
            split=split,
            slice_index=index,
            synthetic=self.synthetic,
        )


def _slice_number(path: Path) -> int:
    """The MedSeg slice number of a SemiSeg file name (`12.jpg` -> 12)."""
    if not path.stem.isdigit():
        raise DataError(path, "unexpected file name; expected the MedSeg slice number, e.g. 12.jpg")
    return int(path.stem)
