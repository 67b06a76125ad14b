from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from tests.tfrecords.conftest import handmade_records, make_record, stage
from tfrecords.tfds_builders import UNSPLIT, builder_class, builder_name


def _load(name: str, raw: Path, data_dir: Path, **kwargs):
    (raw / "README.md").write_text("TFDS refuses an empty manual folder")
    config = tfds.download.DownloadConfig(manual_dir=str(raw))
    return tfds.load(
        name, data_dir=str(data_dir), download_and_prepare_kwargs={"download_config": config}, **kwargs
    )


def test_builder_builds_offline_from_a_manual_folder(tmp_path: Path) -> None:
    records = [
        make_record(i, f"p{i // 2}", "covid" if i < 2 else "normal", split="train" if i < 3 else "val")
        for i in range(4)
    ]
    raw = stage(tmp_path / "raw", records)
    builder = builder_class("test_handmade")
    assert builder.name == builder_name("test_handmade") == "test_handmade"
    splits, info = _load("test_handmade", raw, tmp_path / "tfds", split=["train", "val"], with_info=True)
    assert info.homepage == "https://example.org/handmade"
    assert info.citation == "Handmade records for tests."
    assert info.features["label"].names == ["covid", "normal"]
    assert (info.splits["train"].num_examples, info.splits["val"].num_examples) == (3, 1)
    by_key = {record.key: record for record in records}
    seen = []
    for example in tfds.as_numpy(splits[0].concatenate(splits[1])):
        record = by_key[example["key"].decode()]
        seen.append(record.key)
        np.testing.assert_array_equal(example["image"][:, :, 0], record.image)
        np.testing.assert_array_equal(example["masks"]["lung"][:, :, 0], record.masks["lung"])
        assert bool(example["has_mask"]["infection"]) == ("infection" in record.masks)
        if "infection" not in record.masks:
            assert not example["masks"]["infection"].any()
        assert example["label"] == ("covid", "normal").index(record.labels[0])
        assert example["patient_id"].decode() == record.patient_id
    assert sorted(seen) == sorted(by_key)


def test_set_without_publisher_split_has_one_split_and_multilabel(tmp_path: Path) -> None:
    records = [
        make_record(0, "p0", "normal", labels=("ggo", "effusion")),
        make_record(1, "p1", "normal", labels=()),
    ]
    raw = stage(tmp_path / "raw", records)
    builder_class("test_manifestations")  # adapters registered after import get their builder on demand
    dataset, info = _load("test_manifestations", raw, tmp_path / "tfds", split=UNSPLIT, with_info=True)
    examples = sorted(tfds.as_numpy(dataset), key=lambda example: example["key"])
    names = info.features["labels"].feature.names
    assert [[names[i] for i in example["labels"]] for example in examples] == [["ggo", "effusion"], []]
    assert len(handmade_records()) == 12  # the shared fixture records are untouched
