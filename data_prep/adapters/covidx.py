"""COVIDx chest X-rays (COVID-Net, Wang et al. 2020), in any of its published label-file versions.

Layout as distributed (Kaggle / the COVID-Net repository):

    <root>/train.txt, <root>/test.txt, and <root>/val.txt where present
    <root>/train/<filename>, <root>/test/<filename>, <root>/val/<filename>

Each label-file line is `patient_id filename label source`, with label "positive"/"negative"
(COVIDx CXR-3 and later) or "COVID-19"/"normal"/"pneumonia" (earlier versions, where the `source`
column may be absent). Labels are kept as written. File names may contain spaces: the label is found
from the end of the line. Patient ids are the publisher's, prefixed with their source collection
(`<source>:<patient_id>`) because ids are only unique within one collection. Keys are
`<split>/<filename>`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from data_prep.adapters.base import DatasetAdapter, register
from data_prep.errors import DataError
from data_prep.imageio import read_display_image
from data_prep.io import check_split
from data_prep.records import Record

SPLITS = ("train", "val", "test")
LABELS = ("positive", "negative", "COVID-19", "normal", "pneumonia")


@dataclass(frozen=True)
class LabelLine:
    """One parsed label-file line."""

    patient_id: str
    filename: str
    label: str
    source: str | None


def parse_label_line(line: str) -> LabelLine | None:
    """Parses `patient_id filename label [source]`; None when the line has no known label."""
    tokens = line.split()
    if len(tokens) >= 3 and tokens[-1] in LABELS:
        return LabelLine(tokens[0], " ".join(tokens[1:-1]), tokens[-1], None)
    if len(tokens) >= 4 and tokens[-2] in LABELS:
        return LabelLine(tokens[0], " ".join(tokens[1:-2]), tokens[-2], tokens[-1])
    return None


@register
class Covidx(DatasetAdapter):
    """COVIDx CXR: labels (label,) as written, source collections, real patient ids."""

    name = "covidx"
    modality = "xray"
    label_names = LABELS
    patient_ids = "real"
    homepage = "https://github.com/lindawangg/COVID-Net"
    citation = (
        "L. Wang, Z. Q. Lin, A. Wong, COVID-Net: a tailored deep convolutional neural network design for "
        "detection of COVID-19 cases from chest X-ray images, Scientific Reports 10, 19549, 2020"
    )
    orientation: ClassVar[str] = "as distributed (frontal CXR; not re-oriented)"

    def __init__(self, root: str | Path) -> None:
        super().__init__(root)
        self.lines = {s: self._read_label_file(s) for s in SPLITS if (self.root / f"{s}.txt").is_file()}
        if not self.lines:
            raise DataError(self.root, "no label files; expected train.txt and test.txt (and val.txt)")

    def _read_label_file(self, split: str) -> dict[str, LabelLine]:
        """key -> parsed line of `<split>.txt`; checks the split's image folder and duplicate names."""
        txt = self.root / f"{split}.txt"
        if not (self.root / split).is_dir():
            raise DataError(self.root / split, f"missing image folder for {txt.name}")
        lines: dict[str, LabelLine] = {}
        for number, text in enumerate(txt.read_text(encoding="utf-8").splitlines(), start=1):
            if not text.strip():
                continue
            parsed = parse_label_line(text)
            if parsed is None:
                raise DataError(
                    txt,
                    f"line {number}: expected 'patient_id filename label [source]' with label one of {LABELS}",
                )
            key = f"{split}/{parsed.filename}"
            if key in lines:
                raise DataError(txt, f"line {number}: {parsed.filename!r} is listed twice")
            lines[key] = parsed
        return lines

    def splits(self) -> tuple[str, ...]:
        return tuple(self.lines)

    def records(self, split: str | None = None) -> Iterator[Record]:
        check_split(split, self.splits(), self.name)
        entries = [
            (key, name, line)
            for name, lines in self.lines.items()
            if split in (None, name)
            for key, line in lines.items()
        ]
        for key, split_name, line in sorted(entries, key=lambda entry: entry[0]):
            path = self.root / key
            yield Record(
                key=key,
                image=read_display_image(path),
                modality="xray",
                intensity="display",
                path=str(path),
                labels=(line.label,),
                patient_id=f"{line.source}:{line.patient_id}" if line.source else line.patient_id,
                source=line.source,
                split=split_name,
            )
