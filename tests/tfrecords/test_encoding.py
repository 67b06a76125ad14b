"""Pixel storage: PNG and raw records, with and without ZLIB/GZIP shard compression, read back exactly;
manifests written before schema version 2 (PNG only, no encoding keys) still read."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from data_prep.records import Record
from tests.tfrecords.conftest import HEIGHT, WIDTH, handmade_records, make_record, stage
from tfrecords.__main__ import main
from tfrecords.manifest import MANIFEST_NAME, load_manifest
from tfrecords.read_config import ReadConfig
from tfrecords.reader import _batchwise, make_dataset, read_examples
from tfrecords.spec import PreprocessSpec
from tfrecords.writer import write_dataset

STORAGES = [("png", ""), ("raw", ""), ("raw", "ZLIB"), ("raw", "GZIP"), ("png", "GZIP")]


def _train_batches(out: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(images (N, H, W, 1) float32, lung masks (N, H, W, 1), keys) of the train split, in order."""
    dataset = make_dataset(
        out,
        ReadConfig(
            "train", "segmentation", batch_size=16, deterministic=True, mask_names=["lung"], with_meta=True
        ),
    )
    ((images, masks, meta),) = list(dataset.as_numpy_iterator())
    return images, masks, [key.decode() for key in meta["key"]]


@pytest.mark.parametrize(("encoding", "compression"), STORAGES)
def test_every_storage_reads_back_the_exact_pixels(
    handmade_root: Path, tmp_path: Path, encoding: str, compression: str
) -> None:
    out = tmp_path / "out"
    manifest = write_dataset("test_handmade", handmade_root, out, encoding=encoding, compression=compression)
    assert (manifest.encoding, manifest.compression) == (encoding, compression)
    assert json.loads((out / MANIFEST_NAME).read_text())["encoding"] == encoding
    records = {record.key: record for record in handmade_records()}
    images, masks, keys = _train_batches(out)
    for image, mask, key in zip(images, masks, keys, strict=True):
        np.testing.assert_array_equal(image[:, :, 0] * 255.0, records[key].image.astype(np.float32))
        np.testing.assert_array_equal(mask[:, :, 0], records[key].masks["lung"].astype(np.float32))
    examples = [example for split in ("train", "test") for example in read_examples(out, split)]
    assert len(examples) == len(records)
    for example in examples:
        record = records[example["key"]]
        assert example["image"].dtype == np.uint8
        np.testing.assert_array_equal(example["image"], record.image)
        assert example["masks"].keys() == record.masks.keys()
        for name, mask in record.masks.items():
            np.testing.assert_array_equal(example["masks"][name], mask)


def test_compressed_shards_are_gzip_files_and_raw_records_hold_their_shape(
    handmade_root: Path, tmp_path: Path
) -> None:
    manifest = write_dataset(
        "test_handmade", handmade_root, tmp_path / "out", encoding="raw", compression="gzip"
    )
    shard = manifest.shard_paths("train")[0]
    assert shard.read_bytes()[:2] == b"\x1f\x8b"  # the GZIP magic number
    serialized = next(iter(tf.data.TFRecordDataset(str(shard), compression_type="GZIP")))
    feature = tf.train.Example.FromString(serialized.numpy()).features.feature
    assert list(feature["shape"].int64_list.value) == [HEIGHT, WIDTH]
    assert len(feature["image"].bytes_list.value[0]) == HEIGHT * WIDTH


def test_raw_uint16_hounsfield_units_are_exact(tmp_path: Path) -> None:
    hu = np.array([[-1024, -600, 0], [40, 400, 3071]], np.int16)
    root = stage(tmp_path / "raw", [make_record(0, "p0", "covid", image=hu, intensity="hu", masks={})])
    manifest = write_dataset("test_handmade", root, tmp_path / "out", preprocess="hu16", encoding="raw")
    assert (manifest.encoding, manifest.image_dtype) == ("raw", "uint16")
    (example,) = read_examples(tmp_path / "out", "train")
    assert example["image"].dtype == np.uint16
    np.testing.assert_array_equal(example["image"].astype(np.int32) - 32768, hu)
    ((image, _),) = make_dataset(
        tmp_path / "out", ReadConfig("train", "classification", batch_size=1)
    ).as_numpy_iterator()
    np.testing.assert_allclose(image[0, :, :, 0] * 65535.0 - 32768, hu, atol=1e-2)


def test_auto_encoding_is_raw_only_when_every_image_gets_one_size(
    handmade_root: Path, tmp_path: Path
) -> None:
    def encoding_of(name: str, **options) -> str:
        return write_dataset("test_handmade", handmade_root, tmp_path / name, **options).encoding

    assert encoding_of("resized", image_size=6) == "raw"
    assert encoding_of("native") == "png"
    assert encoding_of("cropped-last", preprocess="resize=8,lungcrop") == "png"
    assert encoding_of("cropped-then-resized", preprocess="lungcrop,resize=8") == "raw"


def _dark_lungs(record: Record) -> Record:
    """The record with a bright body and a dark "lung" whose width depends on its index, so that the
    label-free lung crop gives images of different sizes."""
    image = np.full(record.image.shape, 200, np.uint8)
    image[2:7, 2 : 5 + record.slice_index % 4] = 20
    return dataclasses.replace(record, image=image)


def test_raw_images_of_different_sizes_read_at_a_given_size(tmp_path: Path) -> None:
    out = tmp_path / "out"
    varied = [_dark_lungs(record) for record in handmade_records()]
    root = stage(tmp_path / "varied", varied)
    manifest = write_dataset("test_handmade", root, out, preprocess="lungcrop=0", encoding="raw")
    assert manifest.image_height is None
    spec = PreprocessSpec.parse("lungcrop=0")
    records = {record.key: record for record in varied}
    examples = list(read_examples(out, "train"))
    assert len({example["image"].shape for example in examples}) > 1
    for example in examples:
        image, masks = spec.apply(records[example["key"]])
        np.testing.assert_array_equal(example["image"], image)
        np.testing.assert_array_equal(example["masks"]["lung"], masks["lung"])
    batches = make_dataset(
        out, ReadConfig("train", "segmentation", batch_size=8, image_size=5, mask_names=["lung"])
    )
    ((images, lungs),) = list(batches.as_numpy_iterator())
    assert images.shape == (8, 5, 5, 1) and lungs.shape == (8, 5, 5, 1)


def test_a_manifest_from_before_schema_version_2_reads_as_png(handmade_root: Path, tmp_path: Path) -> None:
    """PNG records are the same bytes as before version 2; only the manifest gained two keys."""
    out = tmp_path / "out"
    write_dataset("test_handmade", handmade_root, out, encoding="png")
    old = json.loads((out / MANIFEST_NAME).read_text())
    del old["encoding"], old["compression"]
    old["schema_version"] = 1
    (out / MANIFEST_NAME).write_text(json.dumps(old, indent=2, sort_keys=True) + "\n")
    manifest = load_manifest(out)
    assert (manifest.schema_version, manifest.encoding, manifest.compression) == (1, "png", "")
    records = {record.key: record for record in handmade_records()}
    images, masks, keys = _train_batches(out)
    for image, key in zip(images, keys, strict=True):
        np.testing.assert_array_equal(image[:, :, 0] * 255.0, records[key].image.astype(np.float32))
    for example in read_examples(out, "test"):
        np.testing.assert_array_equal(example["image"], records[example["key"]].image)


def test_unknown_encoding_or_compression_is_refused(handmade_root: Path, tmp_path: Path, capsys) -> None:
    with pytest.raises(ValueError, match="unknown encoding 'jpeg'; use auto or one of png, raw"):
        write_dataset("test_handmade", handmade_root, tmp_path / "a", encoding="jpeg")
    with pytest.raises(ValueError, match="unknown compression 'lz4'; use none, zlib or gzip"):
        write_dataset("test_handmade", handmade_root, tmp_path / "b", compression="lz4")
    args = ["write", "test_handmade", str(handmade_root), str(tmp_path / "c"), "--image-size", "6"]
    assert main([*args, "--compression", "zlib"]) == 0
    assert (load_manifest(tmp_path / "c").encoding, load_manifest(tmp_path / "c").compression) == (
        "raw",
        "ZLIB",
    )
    assert sorted(path.name for path in tmp_path.iterdir()) == ["c", "raw"]


# Requests covering every decode path; raw stores of one size read these a batch at a time.
BATCHWISE_READS = {
    "classification": ReadConfig("train", "classification", batch_size=5),
    "one-hot, 3 channels, scaled": ReadConfig(
        "train", "classification", batch_size=5, one_hot=True, channels=3, input_scaling="resnet50"
    ),
    "masks, resized, meta": ReadConfig(
        "train",
        "segmentation",
        batch_size=5,
        mask_names=["lung", "infection"],
        image_size=(7, 9),
        with_meta=True,
    ),
    "cached": ReadConfig("test", "segmentation", batch_size=3, mask_names=["lung"], cache=True),
    "multilabel": ReadConfig("train", "multilabel", batch_size=3, label_names=["effusion", "ggo"]),
}


# manifestation labels of 10 train records, then 4 test records
MANIFESTATION_SETS = [
    *[("ggo",), ("ggo", "consolidation"), (), ("effusion", "ggo"), ("effusion",)] * 2,
    *[("ggo",)] * 4,
]


@pytest.mark.parametrize("request_name", BATCHWISE_READS)
def test_raw_batches_equal_the_png_batches(tmp_path: Path, request_name: str) -> None:
    """Raw records read a batch at a time give exactly the batches of the same records stored as PNG
    (parsed example by example), partial last batches included."""
    config = dataclasses.replace(BATCHWISE_READS[request_name], deterministic=True)
    multilabel = config.task == "multilabel"
    records = []  # covid records: every one has both masks
    for index, labels in enumerate(MANIFESTATION_SETS):
        split = "train" if index < 10 else "test"
        fields = {"labels": labels} if multilabel else {}
        records.append(make_record(index, f"p{index}", "covid", split, **fields))
    root = stage(tmp_path / "records", records)
    batches, batchwise = {}, {}
    for encoding in ("png", "raw"):
        adapter = "test_manifestations" if multilabel else "test_handmade"
        manifest = write_dataset(adapter, root, tmp_path / encoding, encoding=encoding)
        batchwise[encoding] = _batchwise(manifest, config)
        batches[encoding] = list(make_dataset(manifest, config).as_numpy_iterator())
    assert batchwise == {"png": False, "raw": True}
    count, size = (10 if config.split == "train" else 4), config.batch_size
    assert [len(batch[0]) for batch in batches["raw"]] == [
        min(size, count - i) for i in range(0, count, size)
    ]
    tf.nest.map_structure(np.testing.assert_array_equal, batches["raw"], batches["png"])
