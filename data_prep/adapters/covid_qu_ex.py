"""COVID-QU-Ex chest X-rays with lung and COVID-19 infection masks, in three classes.

Layout as distributed on Kaggle (`anasmohammedtahir/covidqu`); names contain spaces and parentheses:

    <root>/Infection Segmentation Data/<Train|Val|Test>/<COVID-19|Non-COVID|Normal>/
        images/<name>.png, lung masks/<name>.png, infection masks/<name>.png
    <root>/Lung Segmentation Data/<Train|Val|Test>/<class>/images/<name>.png, lung masks/<name>.png

`root` may also be one of the two part folders itself. Masks are {0, 255} PNGs; the infection mask is
annotated for COVID-19 images only and is all-zero for Non-COVID and Normal ("not annotated", not
"verified normal lung"). There are no patient ids. Keys are `<split folder>/<class>/<file name>`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from data_prep.adapters.base import DatasetAdapter, register
from data_prep.errors import DataError
from data_prep.imageio import list_image_files, read_binary_mask, read_display_image
from data_prep.io import check_same_shape, check_split
from data_prep.records import Record

# Option value -> the part's folder name, in the order of preference when the option is left out.
PART_FOLDERS: dict[str, str] = {
    "infection": "Infection Segmentation Data",
    "lung": "Lung Segmentation Data",
}
# Images in each part of the published release (Tahir et al. 2021, Kaggle "covidqu").
PART_RELEASE_RECORDS: dict[str, int] = {"infection": 5_826, "lung": 33_920}
PART_MASKS: dict[str, tuple[str, ...]] = {"infection": ("lung", "infection"), "lung": ("lung",)}
MASK_FOLDERS: dict[str, str] = {"lung": "lung masks", "infection": "infection masks"}
SPLIT_FOLDERS: dict[str, str] = {"Train": "train", "Val": "val", "Test": "test"}
CLASSES = ("COVID-19", "Non-COVID", "Normal")


@dataclass(frozen=True)
class _Entry:
    """One image of the index: its key, split, class and the paths of the image and its masks."""

    key: str
    split: str
    label: str
    image: Path
    masks: dict[str, Path]


@register
class CovidQuEx(DatasetAdapter):
    """COVID-QU-Ex (Tahir et al. 2021): 256x256 8-bit CXRs, labels (class,), lung + infection masks.

    part: "infection" or "lung"; by default the Infection part if present, else the Lung part.
    """

    name = "covid_qu_ex"
    modality = "xray"
    label_names = CLASSES
    mask_names = ("lung", "infection")
    patient_ids = "none"
    homepage = "https://www.kaggle.com/datasets/anasmohammedtahir/covidqu"
    citation = (
        "A. M. Tahir et al., COVID-19 infection localization and severity grading from chest X-ray images, "
        "Computers in Biology and Medicine 139, 105002, 2021"
    )
    orientation: ClassVar[str] = "standard frontal CXR display, as distributed (not re-oriented)"
    # Mask name -> the classes whose records must have it non-empty (None: every record).
    expected_nonempty: ClassVar[dict[str, tuple[str, ...] | None]] = {
        "lung": None,
        "infection": ("COVID-19",),
    }

    def __init__(self, root: str | Path, part: str | None = None) -> None:
        super().__init__(root)
        if part is not None and part not in PART_FOLDERS:
            raise ValueError(f"unknown COVID-QU-Ex part {part!r}; expected one of {sorted(PART_FOLDERS)}")
        self.part, self.part_dir = self._find_part(part)
        self.masks_of_part = PART_MASKS[self.part]
        self.release_records = PART_RELEASE_RECORDS[self.part]
        self.split_dirs = {
            split: self.part_dir / folder
            for folder, split in SPLIT_FOLDERS.items()
            if (self.part_dir / folder).is_dir()
        }
        if not self.split_dirs:
            raise DataError(self.part_dir, f"no split folders; expected some of {', '.join(SPLIT_FOLDERS)}")

    def _find_part(self, part: str | None) -> tuple[str, Path]:
        """The chosen part and its folder: `root` itself when it is a part folder, else below `root`."""
        for option, folder in PART_FOLDERS.items():
            if self.root.name == folder and part in (None, option):
                return option, self.root
        options = [part] if part is not None else list(PART_FOLDERS)
        for option in options:
            if (self.root / PART_FOLDERS[option]).is_dir():
                return option, self.root / PART_FOLDERS[option]
        expected = " or ".join(repr(PART_FOLDERS[o]) for o in options)
        raise DataError(self.root, f"no {expected} folder; expected the COVID-QU-Ex dataset root")

    def splits(self) -> tuple[str, ...]:
        return tuple(self.split_dirs)

    def _class_entries(self, split: str, class_dir: Path) -> list[_Entry]:
        """The images of one class folder, each matched by file name to one file per mask folder."""
        images = {p.name: p for p in list_image_files(class_dir / "images")}
        masks = {
            m: {p.name: p for p in list_image_files(class_dir / MASK_FOLDERS[m])} for m in self.masks_of_part
        }
        for mask_name, by_name in masks.items():
            unmasked = sorted(images.keys() - by_name.keys())
            if unmasked:
                raise DataError(images[unmasked[0]], f"no matching file in '{MASK_FOLDERS[mask_name]}'")
            orphans = sorted(by_name.keys() - images.keys())
            if orphans:
                raise DataError(by_name[orphans[0]], "mask has no matching file in 'images'")
        prefix = f"{class_dir.parent.name}/{class_dir.name}"
        return [
            _Entry(f"{prefix}/{name}", split, class_dir.name, path, {m: masks[m][name] for m in masks})
            for name, path in images.items()
        ]

    def _entries(self, split: str | None) -> list[_Entry]:
        """The index of one split (or all), sorted by key; checks folder names and file matching."""
        entries: list[_Entry] = []
        for split_name, split_dir in self.split_dirs.items():
            if split not in (None, split_name):
                continue
            class_dirs = sorted(d for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith("."))
            if not class_dirs:
                raise DataError(split_dir, f"no class folders; expected some of {', '.join(CLASSES)}")
            for class_dir in class_dirs:
                if class_dir.name not in CLASSES:
                    raise DataError(class_dir, f"unknown class folder; expected one of {', '.join(CLASSES)}")
                entries.extend(self._class_entries(split_name, class_dir))
        return sorted(entries, key=lambda entry: entry.key)

    def records(self, split: str | None = None) -> Iterator[Record]:
        check_split(split, self.splits(), self.name)
        for entry in self._entries(split):
            image = read_display_image(entry.image)
            masks = {name: read_binary_mask(path) for name, path in entry.masks.items()}
            for name, mask in masks.items():
                check_same_shape(mask, image.shape[:2], entry.masks[name])
            yield Record(
                key=entry.key,
                image=image,
                modality="xray",
                intensity="display",
                path=str(entry.image),
                masks=masks,
                labels=(entry.label,),
                split=entry.split,
                synthetic=self.synthetic,
            )
