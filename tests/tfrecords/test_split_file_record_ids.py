"""A split file's patient ids group the records, but cannot hide a patient the records themselves name."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from data_prep.splits import LeakageError
from tests.tfrecords.conftest import make_record, stage
from tfrecords.writer import write_dataset


def _per_slice_ids(tmp_path: Path, split: list[str]) -> tuple[Path, Path]:
    """Stages the records of patients p0, p0, p1, p1 under tmp_path/raw and writes a split file that
    gives each record its own patient id (s0..s3) and the split `split`; returns (raw root, split file)."""
    records = [make_record(i, patient, "covid") for i, patient in enumerate(["p0", "p0", "p1", "p1"])]
    root = stage(tmp_path / "raw", records)
    table = {"key": [record.key for record in records], "patient_id": ["s0", "s1", "s2", "s3"]}
    path = tmp_path / "split.csv"
    pd.DataFrame({**table, "label": "covid", "split": split}).to_csv(path, index=False)
    return root, path


def test_per_slice_ids_in_the_file_do_not_hide_a_patient_in_two_splits(tmp_path: Path) -> None:
    root, per_slice = _per_slice_ids(tmp_path, ["train", "test", "val", "val"])
    with pytest.raises(LeakageError) as caught:
        write_dataset("test_handmade", root, tmp_path / "out", split_file=per_slice)
    assert (
        str(caught.value)
        == f"{per_slice}: patients (by the records' own ids) in more than one split: p0 (test, train)"
    )
    assert sorted(path.name for path in tmp_path.iterdir()) == ["raw", "split.csv"]  # nothing half-written


def test_a_file_may_regroup_records_that_stay_in_one_split(tmp_path: Path) -> None:
    root, regrouped = _per_slice_ids(tmp_path, ["train", "train", "val", "val"])
    manifest = write_dataset("test_handmade", root, tmp_path / "out", split_file=regrouped)
    assert {name: info.count for name, info in manifest.splits.items()} == {"train": 2, "val": 2}
