"""Tests for data_prep.inspect: exact summaries of hand-made records, and of the shared subsets."""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pytest

from data_prep.adapters.base import DatasetAdapter
from data_prep.adapters.covid_qu_ex import CovidQuEx
from data_prep.adapters.image_folder import ImageFolder
from data_prep.inspect import format_summary, inspect_dataset
from data_prep.records import Record


class _Listed(DatasetAdapter):
    """An adapter over a given list of records (not registered)."""

    name = "listed"
    modality = "ct"
    label_names = ("A", "B")
    mask_names = ("lung",)
    patient_ids = "real"
    expected_nonempty = {"lung": ("A",)}

    def __init__(self, root, records: list[Record]) -> None:
        super().__init__(root)
        self.listed = records

    def splits(self) -> tuple[str, ...]:
        return ("train",)

    def records(self, split: str | None = None) -> Iterator[Record]:
        yield from (r for r in self.listed if split in (None, r.split))


def _record(key: str, image: np.ndarray, **fields) -> Record:
    return Record(key=key, image=image, modality="ct", intensity="display", path=f"/data/{key}", **fields)


def _problem_records(tmp_path) -> _Listed:
    lung = np.array([[0, 1, 1], [0, 0, 0]], np.uint8)
    return _Listed(
        tmp_path,
        [
            _record(
                "a",
                np.array([[0, 10, 20], [30, 40, 255]], np.uint8),
                masks={"lung": lung},
                labels=("A",),
                split="train",
                patient_id="site:1",
            ),
            _record(
                "c",
                np.zeros((4, 1), np.uint8),
                masks={"lung": np.zeros((4, 1), np.uint8)},
                labels=("A",),
                split="train",
            ),
            _record(
                "b",
                np.full((2, 2), 0.5, np.float32),
                masks={"lung": np.array([[0, 2], [0, 0]], np.uint8)},
                labels=("C",),
                split="test",
                patient_id="7",
            ),
            _record("a", np.zeros((2, 2, 3), np.uint8), patient_id="site:2"),
        ],
    )


def test_inspect_counts_and_problems(tmp_path):
    summary = inspect_dataset(_problem_records(tmp_path), progress=False)
    json.dumps(summary)  # serialisable
    assert summary["records"] == 4
    assert summary["counts"] == {"(none)": {"(unlabelled)": 1}, "test": {"C": 1}, "train": {"A": 2}}
    assert summary["class_counts"] == {"(unlabelled)": 1, "A": 2, "C": 1}
    assert summary["split_counts"] == {"(none)": 1, "test": 1, "train": 2}
    assert summary["masks"] == {
        "lung": {
            "values": [0, 1, 2],
            "records": 3,
            "non_empty": 2,
            "fraction_non_empty": 2 / 3,
            "non_empty_by_label": {"A": 1, "C": 1},
        }
    }
    assert summary["intensity"] == {
        "declared": {"display": 4},
        "measured": {"display": 3, "normalized": 1},
        "dtypes": {"float32": 1, "uint8": 3},
        "min": 0.0,
        "max": 255.0,
    }
    assert summary["shapes"] == {"height": [2, 4], "width": [1, 3], "channels": {"1": 3, "3": 1}}
    assert summary["patients"] == {
        "kind": "real",
        "records_with_id": 3,
        "distinct_ids": 3,
        "by_prefix": {"(no prefix)": 1, "site": 2},
    }
    assert summary["orientation"] is None
    assert summary["problems"] == [
        {
            "problem": "mask 'lung' is empty where the set says it is always drawn",
            "records": 1,
            "first_key": "c",
        },
        {"problem": "no patient id although the set has real ids", "records": 1, "first_key": "c"},
        {"problem": "records not in sorted key order", "records": 2, "first_key": "b"},
        {"problem": "a label the adapter does not declare", "records": 1, "first_key": "b"},
        {"problem": "a split the adapter does not list", "records": 1, "first_key": "b"},
        {"problem": "pixel values look 'normalized', declared 'display'", "records": 1, "first_key": "b"},
        {"problem": "mask 'lung' has values other than {0, 1}", "records": 1, "first_key": "b"},
        {"problem": "duplicated key", "records": 1, "first_key": "a"},
    ]


def test_inspect_one_split(tmp_path):
    summary = inspect_dataset(_problem_records(tmp_path), split="train", progress=False)
    assert summary["counts"] == {"train": {"A": 2}}
    assert [p["problem"] for p in summary["problems"]] == [
        "mask 'lung' is empty where the set says it is always drawn",
        "no patient id although the set has real ids",
    ]


def test_format_summary_text(tmp_path):
    adapter = _Listed(
        tmp_path,
        [
            _record("x", np.array([[3, 9]], np.uint8), labels=("A",), split="train", patient_id="p"),
            _record("y", np.array([[4, 200]], np.uint8), labels=("B",), split="train", patient_id="p"),
        ],
    )
    assert format_summary(inspect_dataset(adapter, progress=False)) == "\n".join(
        [
            f"dataset listed at {tmp_path}: 2 records",
            "splits: train",
            "counts per split and class:",
            "  train    A=1  B=1  total=2",
            "modalities: {'ct': 2}",
            "masks: none",
            "intensity: declared {'display': 2}, measured {'display': 2}, range [3.0, 200.0], dtypes {'uint8': 2}",
            "image shapes: height [1, 1], width [2, 2], channels {'1': 2}",
            "orientation: not known to the adapter",
            "patient ids: kind real, 2 records with an id, 1 distinct ids, by prefix {'(no prefix)': 2}",
            "problems: none found",
        ]
    )


@pytest.mark.shared_data
def test_inspect_real_qu_ex_matches_readme(shared_data):
    summary = inspect_dataset(CovidQuEx(shared_data / "cxr-covid-qu-ex"), progress=False)
    assert summary["counts"] == {
        "train": {"COVID-19": 600, "Non-COVID": 300, "Normal": 300},
        "val": {"COVID-19": 200, "Non-COVID": 100, "Normal": 100},
    }
    assert summary["masks"]["lung"]["values"] == [0, 1]
    assert (summary["masks"]["lung"]["non_empty"], summary["masks"]["lung"]["records"]) == (1600, 1600)
    assert summary["masks"]["infection"]["non_empty_by_label"] == {"COVID-19": 800}
    assert summary["intensity"]["declared"] == summary["intensity"]["measured"] == {"display": 1600}
    assert summary["shapes"] == {"height": [256, 256], "width": [256, 256], "channels": {"1": 1600}}
    assert summary["patients"] == {"kind": "none", "records_with_id": 0, "distinct_ids": 0, "by_prefix": {}}
    assert summary["problems"] == []


@pytest.mark.shared_data
def test_inspect_real_ct_classification_matches_readme(shared_data):
    summary = inspect_dataset(ImageFolder(shared_data / "ct-covid-classification"), progress=False)
    assert summary["counts"] == {"(none)": {"COVID": 600, "NonCOVID": 600}}
    assert summary["sources"] == {
        "journal-figures-unknown": 6,
        "mosmeddata": 269,
        "sars-cov-2-ct-scan": 635,
        "ucsd-covid-ct": 203,
        "unknown-china-negatives": 87,
    }
    # files.csv: heights 61-320, widths 130-320 (the README's "115" is not in the table).
    assert summary["shapes"]["height"] == [61, 320] and summary["shapes"]["width"] == [130, 320]
    assert summary["masks"] == {} and summary["intensity"]["dtypes"] == {"uint8": 1200}
    assert summary["patients"]["by_prefix"] == {"group": 722, "ucsd": 203}
    assert summary["problems"] == []
