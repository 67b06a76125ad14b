"""Classification sets distributed as one folder of images per class.

Known layouts (labels are the folder names, mapped through `CANONICAL_LABELS`; other names are kept):

- UCSD COVID-CT (Zhao et al. 2020): `CT_COVID/`, `CT_NonCOVID/`.
- SARS-CoV-2 CT-scan (Soares et al. 2020): `COVID/`, `non-COVID/`.
- The CVT master-data subset at `ct-covid-classification`: `COVID/`, `NonCOVID/` and `files.csv`.

Keys are `<class folder>/<file name>` (one name can occur in both class folders). Files at the root
(such as `files.csv`, `README.md`) and hidden files are not images. There is no publisher split.

Patient ids: when `<root>/files.csv` exists (columns `file`, `label`, `source_group`,
`ucsd_patient_id`; one row per image), each record's `source` is its `source_group` and its
`patient_id` says which kind of id it is by its prefix:

- `ucsd:<id>`: the UCSD patient id given in `ucsd_patient_id`.
- `group:<folder>/nor_<k>`: images `nor_<k>_img_<n>` of one class folder share the scan prefix `<k>`.
- `group:<folder>/Covid (<a>-<b>)`, `group:<folder>/Non-Covid (<a>-<b>)`: a run of image numbers
  a..b in which each number is at most `run_gap` above the previous one present (neighbouring
  slices of one scan); `run_gap=1` (the default) groups strictly consecutive numbers only.
- None for every other image (no id known).

The adapter's `patient_ids` is then "partial"; without `files.csv` every `patient_id` is None ("none").
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from pathlib import Path

from data_prep.adapters.base import DatasetAdapter, register
from data_prep.errors import DataError
from data_prep.imageio import list_image_files, read_display_image
from data_prep.io import check_split
from data_prep.records import MODALITIES, Record

# Class folder name -> label; folder names not listed here are used as labels unchanged.
CANONICAL_LABELS: dict[str, str] = {
    "CT_COVID": "COVID",
    "CT_NonCOVID": "NonCOVID",
    "non-COVID": "NonCOVID",
}
FILES_CSV = "files.csv"
_CSV_COLUMNS = ("file", "label", "source_group", "ucsd_patient_id")
_POOL_COLUMN = "original_file"  # a files.csv column naming each image's file in the pool it was drawn from
_NOR_SCAN = re.compile(r"^nor_(\d+)_img_\d+\.")
_NUMBERED_SLICE = re.compile(r"^(Covid|Non-Covid) \((\d+)\)\.")


def _label(folder: str) -> str:
    """The label of a class folder: its canonical name, or the folder name itself."""
    return CANONICAL_LABELS.get(folder, folder)


def _run_groups(keys: list[str], run_gap: int) -> dict[str, str]:
    """Key of a `Covid (n)` / `Non-Covid (n)` image -> "group:<folder>/<series> (<first>-<last>)"."""
    numbered: dict[str, list[tuple[int, str]]] = {}
    for key in keys:
        folder, name = key.split("/", 1)
        match = _NUMBERED_SLICE.match(name)
        if match:
            numbered.setdefault(f"{folder}/{match.group(1)}", []).append((int(match.group(2)), key))
    groups: dict[str, str] = {}
    for series, members in numbered.items():
        runs: list[list[tuple[int, str]]] = []
        for number, key in sorted(members):
            if runs and number - runs[-1][-1][0] <= run_gap:
                runs[-1].append((number, key))
            else:
                runs.append([(number, key)])
        for run in runs:
            group = f"group:{series} ({run[0][0]}-{run[-1][0]})"
            groups.update((key, group) for _, key in run)
    return groups


@register
class ImageFolder(DatasetAdapter):
    """One folder of 8-bit images per class; labels (class,); optional `files.csv` ids and sources.

    modality: "ct" (default) or "xray". run_gap: see the module docstring.
    """

    name = "image_folder"
    modality = "ct"
    label_names = ("COVID", "NonCOVID")
    patient_ids = "none"
    homepage = "https://github.com/Coronavirus-Visualization-Team/CVT_COVID-CT-CNN"
    citation = (
        "J. Zhao et al., COVID-CT-Dataset, arXiv:2003.13865, 2020; E. Soares et al., SARS-CoV-2 CT-scan "
        "dataset, medRxiv 2020.04.24.20078584"
    )

    def __init__(self, root: str | Path, modality: str = "ct", run_gap: int = 1) -> None:
        super().__init__(root)
        if modality not in MODALITIES:
            raise ValueError(f"modality {modality!r} is not one of {MODALITIES}")
        self.modality = modality
        class_dirs = sorted(d for d in self.root.iterdir() if d.is_dir() and not d.name.startswith("."))
        if not class_dirs:
            raise DataError(self.root, "no class folders; expected one folder of images per class")
        # key -> image path, sorted by key
        self.files = dict(sorted((f"{d.name}/{p.name}", p) for d in class_dirs for p in list_image_files(d)))
        self.label_names = tuple(sorted({_label(d.name) for d in class_dirs}))
        self.ids: dict[str, tuple[str | None, str | None]] = {}  # key -> (patient_id, source)
        self.drawn_from_pool = False  # files.csv names each image's original file in a larger pool
        if (self.root / FILES_CSV).is_file():
            self.ids = self._read_files_csv(self.root / FILES_CSV, run_gap)
            self.patient_ids = "partial"

    def release_coverage(self, n_records: int | None = None) -> str | None:
        """"subset" where files.csv says the images were drawn from a pool; else not known (a folder of
        class folders is no one release)."""
        return "subset" if self.drawn_from_pool else None

    def _read_files_csv(self, csv_path: Path, run_gap: int) -> dict[str, tuple[str | None, str | None]]:
        """key -> (patient_id, source) from `files.csv`, which must list exactly the images present."""
        with csv_path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in _CSV_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise DataError(csv_path, f"missing columns {missing}; expected {list(_CSV_COLUMNS)}")
            rows = {row["file"]: row for row in reader}
            self.drawn_from_pool = _POOL_COLUMN in (reader.fieldnames or [])
        unlisted = sorted(self.files.keys() - rows.keys())
        if unlisted:
            raise DataError(self.root / unlisted[0], f"not listed in {FILES_CSV}")
        absent = sorted(rows.keys() - self.files.keys())
        if absent:
            raise DataError(csv_path, f"lists {absent[0]!r}, which is not an image in the class folders")
        runs = _run_groups(list(self.files), run_gap)
        ids: dict[str, tuple[str | None, str | None]] = {}
        for key, row in rows.items():
            folder, name = key.split("/", 1)
            if row["label"] != _label(folder):
                raise DataError(csv_path, f"label {row['label']!r} of {key!r} differs from its folder's")
            nor_scan = _NOR_SCAN.match(name)
            if row["ucsd_patient_id"]:
                patient = f"ucsd:{row['ucsd_patient_id']}"
            elif nor_scan:
                patient = f"group:{folder}/nor_{nor_scan.group(1)}"
            else:
                patient = runs.get(key)
            ids[key] = (patient, row["source_group"] or None)
        return ids

    def records(self, split: str | None = None) -> Iterator[Record]:
        check_split(split, self.splits(), self.name)
        for key, path in self.files.items():
            patient, source = self.ids.get(key, (None, None))
            yield Record(
                key=key,
                image=read_display_image(path),
                modality=self.modality,
                intensity="display",
                path=str(path),
                labels=(_label(path.parent.name),),
                patient_id=patient,
                source=source,
                synthetic=self.synthetic,
            )
