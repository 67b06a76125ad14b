"""Zenodo 3757476, "COVID-19 CT Lung and Infection Segmentation Dataset" (Ma et al. 2020): lung and infection masks.

Two layouts are recognised under the root:

- The published download (or its Kaggle copy): CT volumes in `COVID-19-CT-Seg_20cases/` (Kaggle:
  `ct_scans/`) named `coronacases_org_001.nii.gz` / `radiopaedia_org_covid-19-pneumonia-4_85506_1-dcm.nii.gz`,
  and masks named by case id (`coronacases_001`, `radiopaedia_4_85506_1`, `.nii.gz` or `.nii`) in
  `Lung_Mask/` (1 = left lung, 2 = right lung), `Infection_Mask/` (1 = infection) and
  `Lung_and_Infection_Mask/` (1, 2 = lungs, 3 = infection; used for a mask whose own folder is absent).
  One volume per case; patient id = case id (the two series of one Radiopaedia patient share one,
  `patient_of`); intensity as found ("hu" for coronacases; the Radiopaedia
  cases may already be 0-255 "display"). Volumes are reoriented to canonical RAS+.
- The re-stacked subset (`ct/`, `lung_mask/`, `infection_mask/` holding `<block>_part<k>.nii.gz`, see its
  README): the parts of each block are stitched in numeric part order into one volume per inferred block
  (patient id = block). `vol[:, :, k]` there is the source PNG in display orientation; Radiopaedia (`RP*`)
  blocks are stored upside down and are flipped (`np.flip(vol, axis=0)`) to match the coronacases ones.
  uint8 "display" values (CLAHE-enhanced), spacing unknown (placeholder affine). `Record.path` is the
  block's part pattern `ct/<block>_part*.nii.gz`.

`records()` yields the axial slices of every volume in display orientation, keyed `<volume>/<slice:04d>`,
with masks "lung" and "infection" and the label "infection" when the slice's infection mask is non-empty.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from data_prep.adapters.base import DatasetAdapter, register
from data_prep.errors import DataError
from data_prep.io import (
    check_label_values,
    check_same_shape,
    check_split,
    from_display,
    nifti_files,
    nifti_stem,
    read_label_volume,
    read_nifti,
    require_nifti,
    volume_from_scan,
    volume_records,
)
from data_prep.records import Record, Volume

# Published layout: candidate folder names (Zenodo zip name first, then the Kaggle copy's).
CT_FOLDERS = ("COVID-19-CT-Seg_20cases", "ct_scans")
LUNG_FOLDERS = ("Lung_Mask", "lung_mask")
INFECTION_FOLDERS = ("Infection_Mask", "infection_mask")
COMBINED_FOLDERS = ("Lung_and_Infection_Mask", "lung_and_infection_mask")
COMBINED_INFECTION_LABEL = 3
LUNG_LARGEST_LABEL = 2  # 1 = left, 2 = right
# Re-stacked subset.
RELEASE_CASES = 20  # CT volumes in the published Zenodo 3757476 release
SUBSET_FOLDERS = {"ct": "ct", "lung": "lung_mask", "infection": "infection_mask"}
_PART_NAME = re.compile(r"^(?P<block>.+)_part(?P<part>\d+)\.nii\.gz$")
_SOURCES = {"CC": "coronacases", "RP": "radiopaedia"}
_FLIPPED_SOURCES = ("radiopaedia",)


def case_id(ct_file_name: str) -> str:
    """The mask file stem of a published CT file name, e.g. `radiopaedia_org_covid-19-pneumonia-4_85506_1-dcm.nii.gz` -> `radiopaedia_4_85506_1`."""
    return (
        nifti_stem(Path(ct_file_name))
        .replace("_org_covid-19-pneumonia-", "_")
        .replace("_org_", "_")
        .removesuffix("-dcm")
    )


def patient_of(case: str) -> str:
    """The patient of a published case id: Radiopaedia cases `radiopaedia_<patient>_<study>_<series>`
    group by patient (`radiopaedia_10_85902_1` with `_3`, `radiopaedia_29_86490_1` with
    `radiopaedia_29_86491_1`); a coronacases case is its own patient."""
    parts = case.split("_")
    return "_".join(parts[:2]) if parts[0] == "radiopaedia" and len(parts) > 2 else case


def _first_folder(root: Path, names: tuple[str, ...]) -> Path | None:
    return next((root / name for name in names if (root / name).is_dir()), None)


@register
class ZenodoCovidCtSeg(DatasetAdapter):
    """COVID-19 CT lung and infection segmentation volumes (Zenodo 3757476), either layout."""

    name = "zenodo"
    modality = "ct"
    label_names = ("infection",)
    mask_names = ("lung", "infection")
    patient_ids = "inferred"  # "real" for the published 20-case layout, set per instance
    orientation = "axial display: anterior up, patient right on the image left (RP blocks flipped)"
    homepage = "https://zenodo.org/records/3757476"
    citation = (
        "Ma J. et al., COVID-19 CT Lung and Infection Segmentation Dataset, Zenodo, 2020, "
        "doi:10.5281/zenodo.3757476; Ma J. et al., Medical Physics 48(3), 2021."
    )

    def __init__(self, root: str | Path) -> None:
        super().__init__(root)
        self.ct_folder = _first_folder(self.root, CT_FOLDERS)
        if self.ct_folder is not None:
            self.layout = "published"
            self.patient_ids = "real"
        elif (self.root / SUBSET_FOLDERS["ct"]).is_dir():
            self.layout = "restacked"
        else:
            raise DataError(
                self.root,
                f"not a Zenodo 3757476 layout: expected a {' or '.join(CT_FOLDERS)} folder "
                "(published) or ct/, lung_mask/, infection_mask/ (re-stacked subset)",
            )

    def release_coverage(self, n_records: int | None = None) -> str | None:
        """"subset" for the re-stacked layout (only a selection of infected slices has it) and for a
        published layout with fewer than the release's 20 cases, else "full"."""
        if self.layout == "restacked":
            return "subset"
        return "subset" if len(nifti_files(self.ct_folder)) < RELEASE_CASES else "full"

    def records(self, split: str | None = None) -> Iterator[Record]:
        check_split(split, self.splits(), self.name)
        for volume in self.volumes():
            yield from volume_records(volume, self.label_names)

    def volumes(self) -> Iterator[Volume]:
        """Yields one canonical RAS+ volume per case (published) or per block (re-stacked), sorted by key."""
        if self.layout == "published":
            yield from self._published_volumes()
        else:
            yield from self._restacked_volumes()

    def _published_volumes(self) -> Iterator[Volume]:
        cases = sorted((case_id(path.name), path) for path in nifti_files(self.ct_folder))
        for case, ct_path in cases:
            scan = read_nifti(ct_path)
            masks = self._published_masks(case, scan.array.shape)
            source = case.split("_")[0]
            yield volume_from_scan(
                scan, case, ct_path, masks, patient_id=patient_of(case), source=source, synthetic=self.synthetic
            )

    def _published_masks(self, case: str, shape: tuple[int, ...]) -> dict[str, np.ndarray]:
        """ "lung" (left + right) and "infection", each from the combined mask when its own folder is absent."""
        lung_folder, infection_folder, combined_folder = (
            _first_folder(self.root, names) for names in (LUNG_FOLDERS, INFECTION_FOLDERS, COMBINED_FOLDERS)
        )
        masks = {}
        if lung_folder is not None:
            masks["lung"] = read_label_volume(require_nifti(lung_folder, case), shape, LUNG_LARGEST_LABEL) > 0
        if infection_folder is not None:
            masks["infection"] = read_label_volume(require_nifti(infection_folder, case), shape, 1) > 0
        if combined_folder is not None and len(masks) < len(self.mask_names):
            combined = read_label_volume(
                require_nifti(combined_folder, case), shape, COMBINED_INFECTION_LABEL
            )
            masks.setdefault("lung", combined > 0)
            masks.setdefault("infection", combined == COMBINED_INFECTION_LABEL)
        return {name: mask.astype(np.uint8) for name, mask in masks.items()}

    def _restacked_volumes(self) -> Iterator[Volume]:
        ct_folder = self.root / SUBSET_FOLDERS["ct"]
        blocks: dict[str, list[tuple[int, str]]] = {}
        for path in nifti_files(ct_folder):
            match = _PART_NAME.match(path.name)
            if match is None:
                raise DataError(path, "unexpected file name; expected <block>_part<k>.nii.gz")
            blocks.setdefault(match["block"], []).append((int(match["part"]), path.name))
        for block in sorted(blocks):
            yield self._restacked_block(block, [name for _, name in sorted(blocks[block])])

    def _restacked_block(self, block: str, part_names: list[str]) -> Volume:
        """Stitches one block's parts (in part order) into a canonical volume; RP blocks are flipped first."""
        image_parts: list[np.ndarray] = []
        mask_parts: dict[str, list[np.ndarray]] = {name: [] for name in self.mask_names}
        for part_name in part_names:
            image_parts.append(_read_part(self.root / SUBSET_FOLDERS["ct"] / part_name))
            for mask_name, parts in mask_parts.items():
                path = self.root / SUBSET_FOLDERS[mask_name] / part_name
                part = _read_part(path)
                check_same_shape(part, image_parts[-1].shape, path)
                parts.append(check_label_values(part, 1, path))
        source = _SOURCES.get(block[:2])

        def stitch(parts: list[np.ndarray]) -> np.ndarray:
            stack = np.concatenate(parts, axis=2)  # (rows, cols, slices), display orientation as stored
            return from_display(np.flip(stack, axis=0) if source in _FLIPPED_SOURCES else stack)

        return Volume(
            key=block,
            image=stitch(image_parts),
            affine=np.eye(4),
            intensity="display",
            path=str(self.root / SUBSET_FOLDERS["ct"] / f"{block}_part*.nii.gz"),
            masks={name: stitch(parts) for name, parts in mask_parts.items()},
            spacing_mm=None,
            patient_id=block,
            source=source,
            synthetic=self.synthetic,
        )


def _read_part(path: Path) -> np.ndarray:
    """One re-stacked part as stored: (rows, cols, slices); its affine must be the axis-aligned placeholder."""
    scan = read_nifti(path)
    if scan.array.shape != scan.source_shape or not np.allclose(scan.affine, scan.source_affine):
        raise DataError(
            path, "affine reorders the voxels; re-stacked parts must keep the identity placeholder"
        )
    return scan.array
