"""Tiny learnable classification sets written to TFRecords through a test adapter.

Class "A"/"COVID"-like images are bright (pixel mean ~170), the others dark (~70), so even a tiny
model separates them in one or two epochs. Every record has a patient id (2 records per patient) and
a publisher split, so the tests control train/val/test exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import numpy as np

from classification.data import ClassificationInputs
from classification.task import task_of
from common.config import DataConfig, ModelConfig, TaskConfig
from data_prep.adapters.base import DatasetAdapter, register
from data_prep.records import Record
from tests.records import ct_slice
from tfrecords.writer import write_dataset

SIZE = 16
SPLITS = ("train", "train", "train", "val", "test")  # by patient index modulo 5


def tiny_records(
    labels: tuple[str, ...], positive: str, modality: str, per_label: int, source: str
) -> list[Record]:
    """`per_label` records per label, bright for `positive`, in patients of 2 records each."""
    rng = np.random.default_rng(len(source))
    records = []
    for label in labels:
        for index in range(per_label):
            mean = 170 if label == positive else 70
            image = np.clip(rng.normal(mean, 20, (SIZE, SIZE)), 0, 255).astype(np.uint8)
            patient = f"{source}-{label}-p{index // 2}"
            records.append(
                Record(
                    key=f"{label}/{index:03d}",
                    image=image,
                    modality=modality,
                    intensity="display",
                    path=f"/raw/{source}/{label}/{index:03d}.png",
                    labels=(label,),
                    patient_id=patient,
                    source=source,
                    split=SPLITS[(index // 2) % len(SPLITS)],
                )
            )
    return sorted(records, key=lambda record: record.key)


@register
class TinyAdapter(DatasetAdapter):
    """Test adapter yielding the records registered for its root folder."""

    name = "test_tiny_classification"
    modality = "mixed"
    patient_ids = "real"
    RECORDS: ClassVar[dict[str, list[Record]]] = {}

    def __init__(self, root: str | Path) -> None:
        super().__init__(root)
        self.label_names = tuple(sorted({label for r in self.RECORDS[str(self.root)] for label in r.labels}))

    def records(self, split: str | None = None) -> Iterator[Record]:
        yield from (r for r in self.RECORDS[str(self.root)] if split is None or r.split == split)

    def splits(self) -> tuple[str, ...]:
        return ("test", "train", "val")


def write_tiny(tmp_path: Path, name: str, records: list[Record]) -> Path:
    """Writes `records` as a TFRecord folder `tmp_path/name` and returns it."""
    raw = tmp_path / f"raw_{name}"
    raw.mkdir(parents=True)
    TinyAdapter.RECORDS[str(raw)] = records
    out = tmp_path / name
    write_dataset(TinyAdapter.name, raw, out, shards=2)
    return out


def tiny_ct(tmp_path: Path, per_label: int = 20) -> Path:
    """CT set with labels COVID / NonCOVID."""
    return write_tiny(tmp_path, "ct", tiny_records(("COVID", "NonCOVID"), "COVID", "ct", per_label, "ctsrc"))


def tiny_xray(tmp_path: Path, per_label: int = 10) -> Path:
    """X-ray set with labels COVID-19 / Non-COVID / Normal."""
    labels = ("COVID-19", "Non-COVID", "Normal")
    return write_tiny(tmp_path, "xray", tiny_records(labels, "COVID-19", "xray", per_label, "xraysrc"))


def manifestation_records(count: int = 40) -> list[Record]:
    """CT slices with ggo / consolidation / effusion masks of known sizes.

    ggo: 12 pixels when index % 4 == 0, 5 pixels (below a 10-pixel minimum) when 1, none when 2,
    20 pixels when 3. consolidation: 16 pixels when index % 3 == 0. effusion: always empty.
    Lesions are bright on a dark background.
    """
    ggo_sizes = (12, 5, 0, 20)
    records = []
    for index in range(count):
        ggo = np.zeros((SIZE, SIZE), np.uint8)
        ggo.flat[: ggo_sizes[index % 4]] = 1
        consolidation = np.zeros((SIZE, SIZE), np.uint8)
        if index % 3 == 0:
            consolidation[8:12, 8:12] = 1
        masks = {"ggo": ggo, "consolidation": consolidation, "effusion": np.zeros((SIZE, SIZE), np.uint8)}
        image = (50 + 100 * ggo + 180 * consolidation).astype(np.uint8)
        labels = tuple(name for name in ("ggo", "consolidation") if masks[name].any())
        records.append(
            ct_slice(
                f"slice{index:03d}",
                image,
                f"/raw/slices/{index:03d}.png",
                masks=masks,
                labels=labels,
                patient_id=f"p{index // 2}",
                source="tiny-medseg",
                split=SPLITS[(index // 2) % len(SPLITS)],
            )
        )
    return records


def classification_inputs(tfrecords, task: str = "binary", **data) -> ClassificationInputs:
    """The resolved inputs of a classifier config over `tfrecords` (a folder or a list of folders);
    `data` are further `common.config.DataConfig` fields."""
    folders = [str(f) for f in tfrecords] if isinstance(tfrecords, list) else [str(tfrecords)]
    config = TaskConfig(data=DataConfig(tfrecords=folders, **data), model=ModelConfig(task=task))
    return task_of(config).inputs(config)
