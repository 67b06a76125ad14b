from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from data_prep.errors import DataError
from tests.tfrecords.conftest import HEIGHT, WIDTH, handmade_records, make_record, stage
from tfrecords.augment import AugmentConfig
from tfrecords.manifest import load_manifest
from tfrecords.read_config import ReadConfig
from tfrecords.reader import make_dataset, read_examples
from tfrecords.writer import write_dataset


@pytest.fixture
def written(handmade_root: Path, tmp_path: Path) -> Path:
    out = tmp_path / "out"
    write_dataset("test_handmade", handmade_root, out)
    return out


def _collect(dataset: tf.data.Dataset) -> list[tuple[np.ndarray, ...]]:
    return [tuple(part for part in batch) for batch in dataset.as_numpy_iterator()]


def _expected_train_order(out: Path) -> list[str]:
    return [example["key"] for example in read_examples(out, "train")]


def test_classification_batches_in_shard_order(written: Path) -> None:
    dataset = make_dataset(
        written, ReadConfig("train", "classification", batch_size=3, deterministic=True, with_meta=True)
    )
    batches = _collect(dataset)
    assert [len(batch[0]) for batch in batches] == [3, 3, 2]
    keys = [key.decode() for batch in batches for key in batch[2]["key"]]
    assert keys == _expected_train_order(written)
    records = {record.key: record for record in handmade_records()}
    labels = [label for batch in batches for label in batch[1]]
    assert labels == [("covid", "normal").index(records[key].labels[0]) for key in keys]
    images = np.concatenate([batch[0] for batch in batches])
    assert images.shape == (8, HEIGHT, WIDTH, 1) and images.dtype == np.float32
    np.testing.assert_array_equal(images[0, :, :, 0] * 255.0, records[keys[0]].image.astype(np.float32))
    assert batches[0][2]["patient_id"][0].decode() == records[keys[0]].patient_id


def test_one_hot_targets(written: Path) -> None:
    dataset = make_dataset(
        written, ReadConfig("test", "classification", batch_size=4, deterministic=True, one_hot=True)
    )
    ((images, targets),) = _collect(dataset)
    sparse = next(
        iter(make_dataset(written, ReadConfig("test", "classification", batch_size=4, deterministic=True)))
    )[1]
    np.testing.assert_array_equal(targets, np.eye(2, dtype=np.float32)[sparse.numpy()])


def test_segmentation_targets_are_exact_masks(written: Path) -> None:
    dataset = make_dataset(
        written,
        ReadConfig(
            "train", "segmentation", batch_size=8, deterministic=True, mask_names=["lung"], with_meta=True
        ),
    )
    ((images, masks, meta),) = _collect(dataset)
    records = {record.key: record for record in handmade_records()}
    assert masks.shape == (8, HEIGHT, WIDTH, 1)
    for mask, key in zip(masks, meta["key"], strict=True):
        np.testing.assert_array_equal(mask[:, :, 0], records[key.decode()].masks["lung"].astype(np.float32))


def test_segmentation_refuses_a_mask_missing_from_some_records(written: Path) -> None:
    with pytest.raises(ValueError, match="mask 'infection' exists for 4 of 8 train records, not all"):
        make_dataset(
            written, ReadConfig("train", "segmentation", batch_size=2, mask_names=["lung", "infection"])
        )


def test_resize_keeps_masks_binary(written: Path) -> None:
    dataset = make_dataset(
        written,
        ReadConfig(
            "train", "segmentation", batch_size=8, image_size=7, mask_names=["lung"], deterministic=True
        ),
    )
    ((images, masks),) = _collect(dataset)
    assert images.shape == (8, 7, 7, 1) and masks.shape == (8, 7, 7, 1)
    assert set(np.unique(masks)) == {0.0, 1.0}


def test_multilabel_multi_hot(tmp_path: Path) -> None:
    label_sets = [("ggo",), ("ggo", "consolidation"), (), ("effusion", "ggo")]
    records = [
        make_record(i, f"p{i}", "normal", split="train", labels=labels) for i, labels in enumerate(label_sets)
    ]
    root = stage(tmp_path / "raw", records)
    write_dataset("test_manifestations", root, tmp_path / "out")
    assert load_manifest(tmp_path / "out").multilabel
    dataset = make_dataset(
        tmp_path / "out",
        ReadConfig("train", "multilabel", batch_size=4, deterministic=True, label_names=["effusion", "ggo"]),
    )
    ((_, targets),) = _collect(dataset)
    np.testing.assert_array_equal(targets, [[0, 1], [0, 1], [0, 0], [1, 1]])


@pytest.mark.parametrize(
    ("scaling", "reference"),
    [
        ("resnet50", keras.applications.resnet50.preprocess_input),
        ("densenet", keras.applications.densenet.preprocess_input),
        ("inception_v3", keras.applications.inception_v3.preprocess_input),
    ],
)
def test_input_scaling_matches_keras_applications(written: Path, scaling: str, reference) -> None:
    plain = make_dataset(
        written, ReadConfig("test", "classification", batch_size=4, deterministic=True, channels=3)
    )
    scaled = make_dataset(
        written,
        ReadConfig(
            "test", "classification", batch_size=4, deterministic=True, channels=3, input_scaling=scaling
        ),
    )
    ((images, _),) = _collect(plain)
    ((inputs, _),) = _collect(scaled)
    assert images.shape == (4, HEIGHT, WIDTH, 3)
    np.testing.assert_array_equal(images[..., 0], images[..., 2])
    np.testing.assert_allclose(inputs, reference(images * 255.0), rtol=1e-6, atol=1e-4)


def test_caffe_scaling_needs_three_channels(written: Path) -> None:
    with pytest.raises(ValueError, match="input scaling mode 'caffe' needs channels=3"):
        make_dataset(written, ReadConfig("test", "classification", batch_size=4, input_scaling="resnet50"))


def test_truncated_shard_is_named(written: Path) -> None:
    shard = written / load_manifest(written).split("train").shards[1].name
    data = shard.read_bytes()
    shard.write_bytes(data[:-10])
    message = (
        f"{shard}: shard is {len(data) - 10} bytes, manifest.json says {len(data)}: truncated or replaced"
    )
    with pytest.raises(DataError) as caught:
        make_dataset(written, ReadConfig("train", "classification", batch_size=2))
    assert str(caught.value) == message
    with pytest.raises(DataError) as caught:
        list(read_examples(written, "train"))
    assert str(caught.value) == message


def test_corrupt_shard_is_named(written: Path) -> None:
    shard = written / load_manifest(written).split("train").shards[0].name
    data = bytearray(shard.read_bytes())
    data[40] ^= 0xFF  # inside the first record's payload: same size, wrong CRC
    shard.write_bytes(bytes(data))
    with pytest.raises(DataError) as caught:
        make_dataset(written, ReadConfig("train", "classification", batch_size=2, verify_checksums=True))
    assert (
        str(caught.value)
        == f"{shard}: shard SHA-256 differs from manifest.json: the file is corrupt or replaced"
    )
    with pytest.raises(DataError, match=f"^{shard}: corrupt shard"):
        list(read_examples(written, "train"))


def test_two_workers_read_every_record_once(written: Path) -> None:
    keys = []
    for worker in range(2):
        context = tf.distribute.InputContext(
            num_input_pipelines=2, input_pipeline_id=worker, num_replicas_in_sync=2
        )
        dataset = make_dataset(
            written,
            ReadConfig("train", "classification", batch_size=4, deterministic=True, with_meta=True),
            input_context=context,
        )
        batches = _collect(dataset)
        assert all(len(batch[0]) <= 2 for batch in batches)  # per-replica batch size 4 / 2
        keys.append([key.decode() for batch in batches for key in batch[2]["key"]])
    assert keys[0] and keys[1]
    assert sorted(keys[0] + keys[1]) == sorted(_expected_train_order(written))


def test_file_auto_shard_policy_splits_by_shard(written: Path) -> None:
    from tensorflow.python.data.experimental.ops.distribute import _AutoShardDataset

    dataset = make_dataset(
        written, ReadConfig("train", "classification", batch_size=1, deterministic=True, with_meta=True)
    )
    assert (
        dataset.options().experimental_distribute.auto_shard_policy
        == tf.data.experimental.AutoShardPolicy.FILE
    )
    keys = []
    for worker in range(2):
        shard = _AutoShardDataset(dataset, num_workers=2, index=worker, num_replicas=2)
        keys.append([batch[2]["key"][0].decode() for batch in shard.as_numpy_iterator()])
    manifest = load_manifest(written)
    by_shard = {}
    for example in read_examples(written, "train"):
        by_shard.setdefault(example["shard"], []).append(example["key"])
    names = [shard.name for shard in manifest.split("train").shards]
    assert keys[0] == by_shard[names[0]] + by_shard[names[2]]
    assert keys[1] == by_shard[names[1]] + by_shard[names[3]]


def test_shuffle_and_augment_are_reproducible(written: Path) -> None:
    def run() -> list:
        dataset = make_dataset(
            written,
            ReadConfig(
                "train",
                "segmentation",
                batch_size=8,
                shuffle=True,
                cache=True,
                seed=3,
                augment=AugmentConfig(),
                mask_names=["lung"],
                deterministic=True,
            ),
        )
        return _collect(dataset)

    first, second = run(), run()
    # Same order and transforms; float image values may differ in the last bit (threaded kernels).
    np.testing.assert_allclose(first[0][0], second[0][0], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(first[0][1], second[0][1])
    plain = _collect(
        make_dataset(
            written,
            ReadConfig("train", "segmentation", batch_size=8, mask_names=["lung"], deterministic=True),
        )
    )
    assert not np.array_equal(first[0][0], plain[0][0])
    assert set(np.unique(first[0][1])) <= {0.0, 1.0}


def test_variable_sizes_need_image_size(tmp_path: Path) -> None:
    records = [
        make_record(0, "p0", "covid", split="train"),
        make_record(1, "p1", "covid", split="train", image=np.zeros((5, 5), np.uint8), masks={}),
    ]
    root = stage(tmp_path / "raw", records)
    write_dataset("test_handmade", root, tmp_path / "out")
    with pytest.raises(ValueError, match="stored images differ in size; pass image_size"):
        make_dataset(tmp_path / "out", ReadConfig("train", "classification", batch_size=2))
    ((images, _),) = _collect(
        make_dataset(
            tmp_path / "out",
            ReadConfig("train", "classification", batch_size=2, image_size=(4, 6), deterministic=True),
        )
    )
    assert images.shape == (2, 4, 6, 1)


def test_pipelines_feed_model_fit(written: Path) -> None:
    keras.utils.set_random_seed(0)
    classifier = keras.Sequential(
        [
            keras.Input((HEIGHT, WIDTH, 1)),
            keras.layers.Conv2D(2, 3),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    classifier.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    classes = make_dataset(written, ReadConfig("train", "classification", batch_size=4, deterministic=True))
    assert len(classifier.fit(classes, epochs=1, verbose=0, shuffle=False).history["loss"]) == 1
    segmenter = keras.Sequential(
        [keras.Input((HEIGHT, WIDTH, 1)), keras.layers.Conv2D(1, 1, activation="sigmoid")]
    )
    segmenter.compile(optimizer="sgd", loss="binary_crossentropy")
    masks = make_dataset(
        written, ReadConfig("train", "segmentation", batch_size=4, mask_names=["lung"], deterministic=True)
    )
    assert np.isfinite(segmenter.fit(masks, epochs=1, verbose=0, shuffle=False).history["loss"][0])


def test_more_workers_than_shards_is_refused(written: Path) -> None:
    context = tf.distribute.InputContext(num_input_pipelines=3, input_pipeline_id=0)
    with pytest.raises(ValueError, match=r"^test has 2 shard\(s\), fewer than the 3 input pipelines"):
        make_dataset(written, ReadConfig("test", "classification", batch_size=2), input_context=context)
