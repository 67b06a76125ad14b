from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from data_prep.adapters import dataset_names, get_adapter, open_dataset, register
from data_prep.errors import DataError
from data_prep.splits import LeakageError
from tests.tfrecords.conftest import HEIGHT, WIDTH, handmade_records, make_record, stage
from tfrecords.__main__ import main
from tfrecords.manifest import load_manifest
from tfrecords.reader import read_examples
from tfrecords.spec import PreprocessSpec
from tfrecords.writer import assign_shards, rewrite_images, shard_name, write_dataset


def _all_examples(out: Path) -> list[dict]:
    manifest = load_manifest(out)
    return [example for split in manifest.splits for example in read_examples(out, split)]


def test_assign_shards_is_greedy_by_count() -> None:
    # a(5) -> 0; b(3) -> 1; c(3) -> 1 (loads 5, 3); d(1) -> 0 (loads 5, 6).
    assert assign_shards({"d": 1, "c": 3, "b": 3, "a": 5}, 2) == {"a": 0, "b": 1, "c": 1, "d": 0}
    # Equal counts: name order, to the emptiest then lowest shard.
    assert assign_shards({"y": 2, "x": 2, "z": 2}, 2) == {"x": 0, "y": 1, "z": 0}


def test_round_trip_is_pixel_exact(handmade_root: Path, tmp_path: Path) -> None:
    write_dataset("test_handmade", handmade_root, tmp_path / "out")
    originals = {record.key: record for record in handmade_records()}
    examples = _all_examples(tmp_path / "out")
    assert sorted(example["key"] for example in examples) == sorted(originals)
    for example in examples:
        record = originals[example["key"]]
        np.testing.assert_array_equal(example["image"], record.image)
        assert example["image"].dtype == np.uint8
        assert example["masks"].keys() == record.masks.keys()
        for name, mask in record.masks.items():
            np.testing.assert_array_equal(example["masks"][name], mask)
        assert example["labels"] == record.labels
        assert example["label_indices"] == (("covid", "normal").index(record.labels[0]),)
        assert (example["patient_id"], example["group"]) == (record.patient_id, record.patient_id)
        assert (example["modality"], example["source"], example["path"]) == ("ct", "handmade", record.path)
        assert (example["slice_index"], example["synthetic"]) == (record.slice_index, False)
        assert example["original_shape"] == (HEIGHT, WIDTH)


def test_manifest_counts_checksums_and_shards(handmade_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_dataset("test_handmade", handmade_root, out)
    data = json.loads((out / "manifest.json").read_text())
    assert data["split_source"] == "publisher"
    assert sorted(data["splits"]) == ["test", "train"]
    train, test = data["splits"]["train"], data["splits"]["test"]
    assert (train["count"], train["groups"], test["count"], test["groups"]) == (8, 4, 4, 2)
    assert train["class_counts"] == {"covid": 4, "normal": 4}
    assert test["class_counts"] == {"covid": 2, "normal": 2}
    assert train["mask_counts"] == {"lung": 8, "infection": 4}
    assert [shard["name"] for shard in train["shards"]] == [shard_name("train", i, 4) for i in range(4)]
    assert [shard["count"] for shard in train["shards"]] == [2, 2, 2, 2]
    for shard in train["shards"] + test["shards"]:
        path = out / shard["name"]
        assert shard["bytes"] == path.stat().st_size
        assert shard["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (data["image_height"], data["image_width"], data["image_channels"]) == (HEIGHT, WIDTH, 1)
    assert (data["image_dtype"], data["intensity_offset"]) == ("uint8", 0)
    assert data["label_names"] == ["covid", "normal"] and data["multilabel"] is False
    assert data["mask_names"] == ["lung", "infection"]
    assert (data["dataset"], data["schema_version"], data["patient_id_kind"]) == ("test_handmade", 2, "real")
    assert data["split_file"] is None
    assert sorted(path.name for path in out.iterdir()) == sorted(
        ["manifest.json", *(shard["name"] for shard in train["shards"] + test["shards"])]
    )


def test_no_patient_spans_two_splits_or_shards(handmade_root: Path, tmp_path: Path) -> None:
    write_dataset("test_handmade", handmade_root, tmp_path / "out", shards=3)
    places: dict[str, set[str]] = {}
    for example in _all_examples(tmp_path / "out"):
        places.setdefault(example["patient_id"], set()).add(example["shard"])
    assert len(places) == 6
    assert all(len(shards) == 1 for shards in places.values())
    # 4 train groups of 2 into 3 shards: loads 4, 2, 2.
    manifest = load_manifest(tmp_path / "out")
    assert [shard.count for shard in manifest.split("train").shards] == [4, 2, 2]


def test_rewrite_is_byte_identical_and_replaces(handmade_root: Path, tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    write_dataset("test_handmade", handmade_root, first)
    write_dataset("test_handmade", handmade_root, second)
    names = sorted(path.name for path in first.iterdir())
    assert names == sorted(path.name for path in second.iterdir())
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    before = (first / "manifest.json").read_bytes()
    write_dataset("test_handmade", handmade_root, first)  # replaces the earlier output in place
    assert (first / "manifest.json").read_bytes() == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["first", "raw", "second"]


def test_patient_wise_split_when_there_is_none(tmp_path: Path) -> None:
    root = stage(tmp_path / "raw", handmade_records(published_split=False))
    manifest = write_dataset("test_handmade", root, tmp_path / "out")
    assert manifest.split_source == "patient-wise"
    assert sum(info.count for info in manifest.splits.values()) == 12
    assert sum(info.groups for info in manifest.splits.values()) == 6
    splits_of = {}
    for split in manifest.splits:
        for example in read_examples(tmp_path / "out", split):
            splits_of.setdefault(example["patient_id"], set()).add(split)
    assert len(splits_of) == 6 and all(len(splits) == 1 for splits in splits_of.values())


def test_publisher_split_and_split_file(tmp_path: Path) -> None:
    records = [make_record(i, f"p{i}", "covid", split="train" if i < 3 else "test") for i in range(5)]
    root = stage(tmp_path / "raw", records)
    manifest = write_dataset("test_handmade", root, tmp_path / "pub")
    assert manifest.split_source == "publisher"
    assert {name: info.count for name, info in manifest.splits.items()} == {"test": 2, "train": 3}

    table = pd.DataFrame(
        {
            "key": [r.key for r in records],
            "patient_id": [r.patient_id for r in records],
            "label": "covid",
            "split": ["val", "val", "train", "train", "train"],
        }
    )
    csv = tmp_path / "split.csv"
    table.to_csv(csv, index=False)
    manifest = write_dataset("test_handmade", root, tmp_path / "file", split_file=csv)
    assert manifest.split_source == "file"
    assert manifest.split_file == {"path": str(csv), "sha256": hashlib.sha256(csv.read_bytes()).hexdigest()}
    assert {name: info.count for name, info in manifest.splits.items()} == {"train": 3, "val": 2}


def test_publisher_split_with_a_patient_in_two_splits_is_refused(tmp_path: Path) -> None:
    records = [make_record(0, "p0", "covid", split="train"), make_record(1, "p0", "covid", split="test")]
    root = stage(tmp_path / "raw", records)
    with pytest.raises(LeakageError, match=r"patients in more than one split: p0 \(test, train\)"):
        write_dataset("test_handmade", root, tmp_path / "out")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["raw"]


def test_hu16_stores_hounsfield_units_losslessly(tmp_path: Path) -> None:
    hu = np.array([[-1024, -600, 0], [40, 400, 3071]], np.int16)
    record = make_record(0, "p0", "covid", image=hu, intensity="hu", masks={})
    root = stage(tmp_path / "raw", [record])
    manifest = write_dataset("test_handmade", root, tmp_path / "out", preprocess="hu16")
    assert (manifest.image_dtype, manifest.intensity_offset) == ("uint16", 32768)
    (example,) = _all_examples(tmp_path / "out")
    assert example["image"].dtype == np.uint16
    np.testing.assert_array_equal(example["image"].astype(np.int32) - 32768, hu)


def test_hu_without_an_intensity_step_gets_the_lung_window(tmp_path: Path) -> None:
    hu = np.array([[-1350, -600, 150]], np.int16)
    record = make_record(0, "p0", "covid", image=hu, intensity="hu", masks={})
    root = stage(tmp_path / "raw", [record])
    manifest = write_dataset("test_handmade", root, tmp_path / "out")
    assert manifest.preprocess["hu_images"] == ["window=lung"]
    (example,) = _all_examples(tmp_path / "out")
    np.testing.assert_array_equal(example["image"], [[0, 128, 255]])


def test_normalized_without_an_intensity_step_is_refused(tmp_path: Path) -> None:
    record = make_record(
        0, "p0", "covid", image=np.zeros((4, 4), np.float32), intensity="normalized", masks={}
    )
    root = stage(tmp_path / "raw", [record])
    with pytest.raises(DataError) as caught:
        write_dataset("test_handmade", root, tmp_path / "out")
    assert str(caught.value) == (
        "/raw/covid/img00.png: normalized image ends as float32 after preprocess ''; expected uint8: "
        "use range=LOW:HIGH or minmax"
    )


def test_preprocess_resizes_images_and_masks(handmade_root: Path, tmp_path: Path) -> None:
    manifest = write_dataset("test_handmade", handmade_root, tmp_path / "out", image_size=6)
    assert manifest.preprocess == {
        "spec": "resize=6x6",
        "steps": ["resize=6x6"],
        "hu_images": ["window=lung", "resize=6x6"],
        "recipe": None,  # no records transform (a CT recipe records its settings here)
    }
    for example in _all_examples(tmp_path / "out"):
        assert example["image"].shape == (6, 6)
        assert set(np.unique(example["masks"]["lung"])) <= {0, 1}
        assert example["original_shape"] == (HEIGHT, WIDTH)


def test_cli_bad_input_prints_one_line_and_leaves_nothing(tmp_path: Path, capsys) -> None:
    records = [make_record(0, "p0", "covid"), DataError("/raw/bad.png", "not a readable image")]
    root = stage(tmp_path / "raw", records)
    assert main(["write", "test_handmade", str(root), str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == "error: /raw/bad.png: not a readable image\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["raw"]


def test_cli_bad_spec_and_success(handmade_root: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert main(["write", "test_handmade", str(handmade_root), str(out), "--preprocess", "blur"]) == 2
    assert capsys.readouterr().err.startswith("error: unknown preprocess step 'blur'; known: window,")
    assert main(["write", "test_handmade", str(handmade_root), str(out), "--shards", "1"]) == 0
    assert capsys.readouterr().out == f"wrote {out}: test 4, train 8 records (publisher split)\n"


def test_refuses_to_replace_a_folder_that_is_not_an_output(handmade_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="exists and is not a TFRecord output"):
        write_dataset("test_handmade", handmade_root, out)
    assert (out / "notes.txt").read_text() == "mine"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out", "raw"]


SHARED_SETS = [
    ("image_folder", "ct-covid-classification", "resize=64"),
    ("covid_qu_ex", "cxr-covid-qu-ex", ""),
    ("zenodo", "ct-lung-infection-zenodo", ""),
    ("medseg", "ct-infection-medseg", ""),
    ("lidc", "nodule-lidc", "range=-0.5:5"),
    ("msd_patches", "tumour-msd-patches", "range=0:1"),
]
SAMPLE_SIZE = 12


def _sample_adapter(name: str) -> str:
    """Registers (once) an adapter yielding the first SAMPLE_SIZE records of adapter `name`."""
    sample_name = f"sample_{name}"
    if sample_name not in dataset_names():
        base = get_adapter(name)

        def records(self, split=None):
            return itertools.islice(base.records(self, split), SAMPLE_SIZE)

        register(type(f"Sample_{name}", (base,), {"name": sample_name, "records": records}))
    return sample_name


@pytest.mark.shared_data
@pytest.mark.parametrize(("adapter", "folder", "spec"), SHARED_SETS)
def test_shared_sample_round_trip(
    shared_data: Path, tmp_path: Path, adapter: str, folder: str, spec: str
) -> None:
    root = shared_data / folder
    manifest = write_dataset(_sample_adapter(adapter), root, tmp_path / "out", preprocess=spec)
    expected = {
        record.key: record for record in itertools.islice(open_dataset(adapter, root).records(), SAMPLE_SIZE)
    }
    examples = _all_examples(tmp_path / "out")
    assert len(examples) == SAMPLE_SIZE == sum(info.count for info in manifest.splits.values())
    parsed = PreprocessSpec.parse(spec)
    for example in examples:
        record = expected[example["key"]]
        image, masks = parsed.apply(record)
        np.testing.assert_array_equal(example["image"], image)
        assert example["masks"].keys() == masks.keys()
        for name, mask in masks.items():
            np.testing.assert_array_equal(example["masks"][name], mask)
        assert example["labels"] == record.labels
        assert example["patient_id"] == (record.patient_id or "")


def test_split_file_without_ids_still_keeps_record_patients_together(tmp_path: Path) -> None:
    records = [make_record(0, "p0", "covid"), make_record(1, "p0", "covid")]
    root = stage(tmp_path / "raw", records)
    csv = tmp_path / "split.csv"
    pd.DataFrame(
        {"key": [r.key for r in records], "patient_id": ["", ""], "label": "covid", "split": ["train", "val"]}
    ).to_csv(csv, index=False)
    with pytest.raises(LeakageError) as caught:
        write_dataset("test_handmade", root, tmp_path / "out", split_file=csv)
    assert str(caught.value) == f"{csv}: patients in more than one split: p0 (train, val)"


def test_records_transform_runs_before_preprocessing(handmade_root: Path, tmp_path: Path) -> None:
    every_key = sorted(example["key"] for example in _all_examples_of(handmade_root, tmp_path / "all"))
    kept = set(every_key[::2])
    write_dataset(
        "test_handmade",
        handmade_root,
        tmp_path / "out",
        records_transform=lambda records: (record for record in records if record.key in kept),
    )
    assert sorted(example["key"] for example in _all_examples(tmp_path / "out")) == sorted(kept)


def _all_examples_of(root: Path, out: Path) -> list[dict]:
    write_dataset("test_handmade", root, out)
    return _all_examples(out)


@pytest.mark.parametrize("options", [{"shards": 2}, {"shards": 2, "image_size": 6, "compression": "zlib"}])
def test_rewrite_images_copies_everything_but_the_image(handmade_root: Path, tmp_path: Path, options) -> None:
    source = write_dataset("test_handmade", handmade_root, tmp_path / "source", **options)
    batch_sizes = []

    def transform(batch):
        batch_sizes.append(len(batch))
        return {
            "inverted": [255 - example["image"] for example in batch],
            "same": [example["image"] for example in batch],
        }

    manifests = rewrite_images(source, tmp_path / "out", ("inverted", "same"), transform, {"why": "test"})
    inverted, same = load_manifest(tmp_path / "out" / "inverted"), load_manifest(tmp_path / "out" / "same")
    assert (inverted, same) == (manifests["inverted"], manifests["same"])
    assert inverted.preprocess == {**source.preprocess, "why": "test", "variant": "inverted"}
    assert (inverted.encoding, inverted.compression) == (source.encoding, source.compression)
    assert sum(batch_sizes) == 12 and len(batch_sizes) == sum(
        len(info.shards) for info in source.splits.values()
    )
    for split, info in source.splits.items():
        assert [(s.name, s.count) for s in inverted.split(split).shards] == [
            (s.name, s.count) for s in info.shards
        ]
        assert [s.sha256 for s in same.split(split).shards] == [s.sha256 for s in info.shards]  # same bytes
        before = list(read_examples(source, split))
        after = list(read_examples(inverted, split, verify_checksums=True))
        assert len(after) == len(before) == info.count
        for old, new in zip(before, after, strict=True):
            np.testing.assert_array_equal(new["image"], 255 - old["image"])
            assert new["masks"].keys() == old["masks"].keys()
            for name in old["masks"]:
                np.testing.assert_array_equal(new["masks"][name], old["masks"][name])
            for field in ("key", "patient_id", "group", "labels", "label_indices", "slice_index", "shard"):
                assert new[field] == old[field]
            assert (new["original_shape"], new["path"]) == (old["original_shape"], old["path"])
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out", "raw", "source"]  # no staging left


def test_rewrite_images_leaves_nothing_when_the_transform_fails(handmade_root: Path, tmp_path: Path) -> None:
    source = write_dataset("test_handmade", handmade_root, tmp_path / "source")

    def transform(batch):
        raise ValueError("no lungs found")

    with pytest.raises(ValueError, match="no lungs found"):
        rewrite_images(source, tmp_path / "out", ("inverted",), transform, {})
    assert sorted(path.name for path in tmp_path.iterdir()) == ["raw", "source"]
