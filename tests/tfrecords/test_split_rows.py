"""A split file must name only records that exist (issue 14: such rows were silently dropped)."""

from __future__ import annotations

import pandas as pd
import pytest

from data_prep.errors import DataError
from tests.tfrecords.conftest import make_record, stage
from tfrecords.writer import write_dataset


def test_a_split_file_row_naming_no_record_is_an_error(tmp_path):
    records = [make_record(index, f"p{index}", "covid") for index in range(3)]
    root = stage(tmp_path / "raw", records)
    keys = [r.key for r in records] + ["covid/img99"]
    table = pd.DataFrame({"key": keys, "patient_id": ["p0", "p1", "p2", "p9"], "label": "covid"})
    table["split"] = ["train", "train", "val", "val"]
    table.to_csv(tmp_path / "split.csv", index=False)
    with pytest.raises(
        DataError, match=r"split.csv: 1 split row\(s\) name no record of .*, e.g. covid/img99"
    ):
        write_dataset("test_handmade", root, tmp_path / "out", split_file=tmp_path / "split.csv")
    assert not (tmp_path / "out").exists()
