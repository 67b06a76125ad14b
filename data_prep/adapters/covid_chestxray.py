"""The ieee8023 COVID-19 image data collection (Cohen et al. 2020): chest X-rays and CT images.

Layout as distributed (GitHub `ieee8023/covid-chestxray-dataset`):

    <root>/metadata.csv    one row per image: patientid, finding, modality, folder, filename, ...
    <root>/images/<filename>

Label rule (from the `finding` column, e.g. "Pneumonia/Viral/COVID-19"): the finding is split at
"/" and ","; a record is "COVID" when one of the parts is "COVID-19", unlabelled (labels ()) when the
finding is empty, "todo" or "Unknown", and "NonCOVID" otherwise (other pneumonias, "No Finding", ...).

`modality` "X-ray" -> "xray", "CT" -> "ct". Rows outside `images/` (the 3D NIfTI files in `volumes/`)
are not 2D images and are skipped. Keys are `<folder>/<filename>`; patient ids are the publisher's.
There is no publisher split.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

from data_prep.adapters.base import DatasetAdapter, register
from data_prep.errors import DataError
from data_prep.imageio import read_display_image
from data_prep.io import check_split
from data_prep.records import Record

METADATA = "metadata.csv"
IMAGE_FOLDER = "images"
MODALITY_NAMES: dict[str, str] = {"X-ray": "xray", "CT": "ct"}
UNLABELLED_FINDINGS = ("", "todo", "unknown")  # compared in lower case
_COLUMNS = ("patientid", "finding", "modality", "folder", "filename")


def finding_label(finding: str) -> tuple[str, ...]:
    """("COVID",), ("NonCOVID",) or () for a `finding` value; see the module docstring."""
    finding = finding.strip()
    if finding.lower() in UNLABELLED_FINDINGS:
        return ()
    parts = {part.strip() for part in re.split(r"[/,]", finding)}
    return ("COVID",) if "COVID-19" in parts else ("NonCOVID",)


@register
class CovidChestXray(DatasetAdapter):
    """ieee8023 covid-chestxray-dataset: X-ray and CT images, labels COVID / NonCOVID, real patient ids.

    modalities: the record modalities to keep ("xray", "ct" or both, the default).
    """

    name = "covid_chestxray"
    modality = "mixed"
    label_names = ("COVID", "NonCOVID")
    patient_ids = "real"
    homepage = "https://github.com/ieee8023/covid-chestxray-dataset"
    citation = (
        "J. P. Cohen, P. Morrison, L. Dao, K. Roth, T. Q. Duong, M. Ghassemi, COVID-19 Image Data "
        "Collection: Prospective Predictions Are the Future, MELBA 2020"
    )
    orientation: ClassVar[str] = "as published (paper figures and case uploads; not re-oriented)"

    def __init__(self, root: str | Path, modalities: tuple[str, ...] = ("xray", "ct")) -> None:
        super().__init__(root)
        self.rows = self._read_metadata(self.root / METADATA, set(modalities))

    def _read_metadata(self, csv_path: Path, modalities: set[str]) -> list[dict[str, str]]:
        """The metadata rows of 2D images of the chosen modalities, sorted by key; checks each row."""
        if not csv_path.is_file():
            raise DataError(csv_path, "missing; expected the covid-chestxray-dataset metadata file")
        with csv_path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in _COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise DataError(csv_path, f"missing columns {missing}; expected {list(_COLUMNS)}")
            rows: dict[str, dict[str, str]] = {}
            for line, row in enumerate(reader, start=2):
                if row["folder"] != IMAGE_FOLDER:
                    continue
                if row["modality"] not in MODALITY_NAMES:
                    raise DataError(
                        csv_path, f"line {line}: unknown modality {row['modality']!r}; expected X-ray or CT"
                    )
                key = f"{IMAGE_FOLDER}/{row['filename']}"
                if key in rows:
                    raise DataError(csv_path, f"line {line}: {key!r} is listed twice")
                if MODALITY_NAMES[row["modality"]] in modalities:
                    rows[key] = row
        return [rows[key] for key in sorted(rows)]

    def records(self, split: str | None = None) -> Iterator[Record]:
        check_split(split, self.splits(), self.name)
        for row in self.rows:
            path = self.root / IMAGE_FOLDER / row["filename"]
            yield Record(
                key=f"{IMAGE_FOLDER}/{row['filename']}",
                image=read_display_image(path),
                modality=MODALITY_NAMES[row["modality"]],
                intensity="display",
                path=str(path),
                labels=finding_label(row["finding"]),
                patient_id=row["patientid"].strip() or None,
            )
