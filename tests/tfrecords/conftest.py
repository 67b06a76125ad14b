"""Hand-made records behind a test adapter, so the tfrecords tests do not depend on real data.

`handmade_root` gives a folder whose `handmade_records()` the "test_handmade" adapter yields: 12 CT
slices of 6 patients (2 each; 4 patients in the publisher's "train" split, 2 in "test"), 10 x 14
pixels, labels "covid"/"normal", a lung mask on every record and an infection mask on the "covid" ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from data_prep.adapters import base
from data_prep.adapters.base import DatasetAdapter, register
from data_prep.errors import DataError
from data_prep.records import MANIFESTATIONS, Record
from tests.records import ct_slice

HEIGHT, WIDTH = 10, 14


def make_record(index: int, patient: str, label: str, split: str | None = None, **overrides) -> Record:
    """A record whose pixels are (index * 7 + position) mod 256 and whose masks are fixed shapes."""
    image = ((np.arange(HEIGHT * WIDTH).reshape(HEIGHT, WIDTH) + index * 7) % 256).astype(np.uint8)
    lung = np.zeros((HEIGHT, WIDTH), np.uint8)
    lung[2:8, 1 + index % 3 : 12] = 1
    masks = {"lung": lung}
    if label == "covid":
        infection = np.zeros((HEIGHT, WIDTH), np.uint8)
        infection[3 : 5 + index % 2, 4:7] = 1
        masks["infection"] = infection
    name = f"{label}/img{index:02d}"
    fields = dict(masks=masks, labels=(label,), patient_id=patient, source="handmade", split=split)
    fields |= {"slice_index": index, **overrides}
    return ct_slice(name, fields.pop("image", image), f"/raw/{name}.png", **fields)


def handmade_records(published_split: bool = True) -> list[Record]:
    """Patients p0-p5, labels alternating covid/normal by patient; with `published_split`, p0-p3 are
    in the publisher's "train" split and p4, p5 in "test", else no record has a split."""
    records = [
        make_record(
            index,
            f"p{index // 2}",
            "covid" if index // 2 % 2 == 0 else "normal",
            split=("train" if index < 8 else "test") if published_split else None,
        )
        for index in range(12)
    ]
    return sorted(records, key=lambda record: record.key)


class HandmadeAdapter(DatasetAdapter):
    """Test adapter: yields the records stored for its root folder in `RECORDS`."""

    name = "test_handmade"
    modality = "ct"
    label_names = ("covid", "normal")
    mask_names = ("lung", "infection")
    patient_ids = "real"
    homepage = "https://example.org/handmade"
    citation = "Handmade records for tests."
    RECORDS: ClassVar[dict[str, list[Record]]] = {}

    def records(self, split: str | None = None) -> Iterator[Record]:
        for record in self.RECORDS[str(self.root)]:
            if isinstance(record, DataError):
                raise record
            if split is None or record.split == split:
                yield record

    def splits(self) -> tuple[str, ...]:
        return tuple(sorted({r.split for r in self.RECORDS[str(self.root)] if r.split is not None}))


class ManifestationAdapter(HandmadeAdapter):
    """The same test records with the multi-label manifestation label names."""

    name = "test_manifestations"
    label_names = MANIFESTATIONS


def stage(root: Path, records: list) -> Path:
    """Makes `root` a folder whose adapter yields `records` (DataError entries are raised)."""
    root.mkdir(parents=True, exist_ok=True)
    HandmadeAdapter.RECORDS[str(root)] = records
    return root


@pytest.fixture(scope="package", autouse=True)
def test_adapters() -> Iterator[None]:
    """Registers the test adapters for this package's tests only; removes them (and the sampled
    real adapters that `test_writer` registers) afterwards, so other packages see the real registry."""
    before = set(base._REGISTRY)
    register(HandmadeAdapter)
    register(ManifestationAdapter)
    yield
    for name in set(base._REGISTRY) - before:
        del base._REGISTRY[name]


@pytest.fixture
def handmade_root(tmp_path: Path) -> Path:
    return stage(tmp_path / "raw", handmade_records())
