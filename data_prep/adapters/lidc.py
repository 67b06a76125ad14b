"""LIDC-IDRI nodule slices as written by the LIDC-IDRI-Preprocessing pipeline (pylidc consensus masks).

Layout under the root (the pipeline's `data/` folder, or the shared subset):
`Image/LIDC-IDRI-<n>/<n>_NI<nodule>_slice<s>.npy|.npz` (float, key "image" in an npz), the paired mask
`Mask/LIDC-IDRI-<n>/<n>_MA<nodule>_slice<s>.npy|.png` (bool, or {0, 255} PNG) and an optional
`meta_info.csv` / `meta_info_subset.csv` with columns `original_image` (e.g.
`LIDC-IDRI-0001/0001_NI000_slice000`) and `malignancy` (1-5, the readers' median-high rating).
The pipeline's nodule-free `Clean/` folder is not read.

Records: key `<patient>/<image stem>`, image float32 (pipeline-normalised, lung-masked: "normalized",
not HU, orientation as written by the pipeline), mask "nodule", patient id and volume id = the patient
folder, label `malignancy_<m>` where the table rates the slice (the pipeline's `is_cancer` is m > 3;
m = 3 is ambiguous), () otherwise.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from data_prep.adapters.base import DatasetAdapter, register
from data_prep.errors import DataError
from data_prep.imageio import read_binary_mask
from data_prep.io import check_label_values, check_same_shape, check_split, read_csv, read_npy, read_npz
from data_prep.records import Record

META_FILES = ("meta_info.csv", "meta_info_subset.csv")
MALIGNANCY_RATINGS = range(1, 6)
IMAGE_SUFFIXES = (".npz", ".npy")
MASK_SUFFIXES = (".png", ".npy")


def _read_image(path: Path) -> np.ndarray:
    image = read_npz(path, "image") if path.suffix == ".npz" else read_npy(path)
    if image.ndim != 2:
        raise DataError(path, f"expected a 2D slice, got shape {image.shape}")
    return image.astype(np.float32)


def _read_mask(image_path: Path, mask_folder: Path) -> tuple[np.ndarray, Path]:
    """The mask paired with an image (`NI` -> `MA`), {0, 1} uint8, and its path."""
    stem = image_path.stem.replace("_NI", "_MA", 1)
    for suffix in MASK_SUFFIXES:
        path = mask_folder / f"{stem}{suffix}"
        if path.is_file():
            mask = read_binary_mask(path) if suffix == ".png" else check_label_values(read_npy(path), 1, path)
            return mask, path
    raise DataError(image_path, f"no paired mask {mask_folder / stem}{{{','.join(MASK_SUFFIXES)}}}")


@register
class LidcNoduleSlices(DatasetAdapter):
    """LIDC-IDRI axial slices with consensus nodule masks and malignancy ratings."""

    name = "lidc"
    modality = "ct"
    label_names = tuple(f"malignancy_{m}" for m in MALIGNANCY_RATINGS)
    mask_names = ("nodule",)
    patient_ids = "real"
    homepage = "https://doi.org/10.7937/K9/TCIA.2015.LO9QL9SX"
    citation = (
        "Armato S. G. III et al., The Lung Image Database Consortium (LIDC) and Image Database Resource "
        "Initiative (IDRI), Medical Physics 38(2), 2011; TCIA doi:10.7937/K9/TCIA.2015.LO9QL9SX."
    )

    def __init__(self, root: str | Path) -> None:
        super().__init__(root)
        if not (self.root / "Image").is_dir() or not (self.root / "Mask").is_dir():
            raise DataError(
                self.root, "not a LIDC-IDRI-Preprocessing layout: expected Image/ and Mask/ folders"
            )

    def release_coverage(self, n_records: int | None = None) -> str | None:
        """"subset" where the meta table is the subset's (`meta_info_subset.csv`); else not known."""
        return "subset" if (self.root / META_FILES[1]).is_file() else None

    def malignancy(self) -> dict[str, int]:
        """`<patient>/<image stem>` -> malignancy rating, from the meta table (empty without one)."""
        path = next((self.root / name for name in META_FILES if (self.root / name).is_file()), None)
        if path is None:
            return {}
        table = read_csv(path, ("original_image", "malignancy"))
        ratings = {}
        for image, rating in zip(table["original_image"], table["malignancy"], strict=True):
            if not rating.isdigit() or int(rating) not in MALIGNANCY_RATINGS:
                raise DataError(path, f"malignancy {rating!r} of {image} is not a rating 1-5")
            ratings[image] = int(rating)
        return ratings

    def records(self, split: str | None = None) -> Iterator[Record]:
        check_split(split, self.splits(), self.name)
        ratings = self.malignancy()
        images = self.root / "Image"
        paths = sorted(p for p in images.glob("*/*") if p.suffix in IMAGE_SUFFIXES)
        if not paths:
            raise DataError(images, "no image files (<patient>/*.npz or *.npy)")
        for path in sorted(paths, key=lambda p: f"{p.parent.name}/{p.stem}"):
            patient = path.parent.name
            key = f"{patient}/{path.stem}"
            image = _read_image(path)
            mask, mask_path = _read_mask(path, self.root / "Mask" / patient)
            check_same_shape(mask, image.shape, mask_path)
            yield Record(
                key=key,
                image=image,
                modality="ct",
                intensity="normalized",
                path=str(path),
                masks={"nodule": mask},
                labels=(f"malignancy_{ratings[key]}",) if key in ratings else (),
                patient_id=patient,
                source="lidc-idri",
                volume_id=patient,
                synthetic=self.synthetic,
            )
