"""Reading a TFRecord directory: a `tf.data` pipeline ready for `model.fit`, and a NumPy iterator.

Pipeline: shard files (auto-sharded by FILE across workers) -> interleaved reads (decompressed when
the manifest says ZLIB/GZIP) -> parallel parse, PNG decode or raw reshape, and resize -> optional
cache -> shuffle -> optional augmentation -> (image, target) -> batch -> prefetch. Raw records of one
stored size read without shuffle, repeat or augmentation are batched first and then parsed and
decoded a batch at a time (`_batchwise`): the same batches for less per-example work. With
`deterministic=True` the order is fixed (shards in manifest order, records in shard order) and
tf.data autotuning is off (it stalls iterator teardown; see RUNTIME.md).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import tensorflow as tf

from data_prep.errors import DataError
from tfrecords import schema
from tfrecords.augment import AugmentConfig
from tfrecords.augment import augment as augment_example
from tfrecords.manifest import Manifest, load_manifest, sha256_file
from tfrecords.read_config import TASKS, ReadConfig
from tfrecords.scaling import scale_input, scaling_mode

META_FIELDS = ("key", "patient_id", "modality", "source", "path")
_MAX_SHUFFLE_BUFFER = 10_000
_PARALLEL_CALLS_DETERMINISTIC = 2


def check_shards(manifest: Manifest, split: str, verify_checksums: bool = False) -> list[Path]:
    """The split's shard paths, after checking each exists with the manifest's byte size (and SHA-256).

    Raises DataError naming the first missing, truncated, extended or (with checksums) altered shard.
    """
    paths = manifest.shard_paths(split)
    for path, shard in zip(paths, manifest.split(split).shards, strict=True):
        if not path.is_file():
            raise DataError(path, "shard listed in manifest.json is missing")
        size = path.stat().st_size
        if size != shard.bytes:
            raise DataError(
                path, f"shard is {size} bytes, manifest.json says {shard.bytes}: truncated or replaced"
            )
        if verify_checksums and sha256_file(path) != shard.sha256:
            raise DataError(path, "shard SHA-256 differs from manifest.json: the file is corrupt or replaced")
    return paths


def _validate_request(
    manifest: Manifest, config: ReadConfig, mode: str | None
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Checks `config` against the manifest; returns the (mask names, label names) to use."""
    split, task, channels = config.split, config.task, config.channels
    info = manifest.split(split)
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; use one of {TASKS}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if mode in ("caffe", "torch") and channels != 3:
        raise ValueError(f"input scaling mode {mode!r} needs channels=3")
    if config.image_size is None and manifest.image_height is None:
        raise ValueError(f"{manifest.directory}: stored images differ in size; pass image_size to batch them")
    masks = tuple(manifest.mask_names if config.mask_names is None else config.mask_names)
    labels = tuple(manifest.label_names if config.label_names is None else config.label_names)
    unknown_labels = sorted(set(labels) - set(manifest.label_names))
    if unknown_labels:
        raise ValueError(f"labels {unknown_labels} are not in the manifest's {list(manifest.label_names)}")
    if task == "segmentation":
        if not masks:
            raise ValueError(f"{manifest.directory}: segmentation needs masks; the manifest has none")
        for name in masks:
            have = info.mask_counts.get(name)
            if have is None:
                raise ValueError(f"mask {name!r} is not in the manifest's {list(manifest.mask_names)}")
            if have != info.count:
                raise ValueError(f"mask {name!r} exists for {have} of {info.count} {split} records, not all")
    if task == "classification":
        if manifest.multilabel:
            raise ValueError(f"{manifest.directory}: a multi-label set; use task='multilabel'")
        if sum(info.class_counts.values()) != info.count:
            raise ValueError(f"{split}: some records have no class label; classification needs one each")
        if config.label_names is not None and labels != manifest.label_names:
            raise ValueError("classification uses all manifest labels in manifest order; omit label_names")
    if task == "multilabel" and not labels:
        raise ValueError(f"{manifest.directory}: multilabel needs label names; the manifest has none")
    return masks, labels


def make_dataset(
    manifest_or_dir: str | Path | Manifest,
    config: ReadConfig,
    input_context: tf.distribute.InputContext | None = None,
) -> tf.data.Dataset:
    """Batches of (image, target) or, with `config.with_meta`, (image, target, meta) for one split.

    image: (B, H, W, channels) float32 in [0, 1] (16-bit stores: value / 65535), or `input_scaling`
    applied (a backbone like "resnet50", a family like "densenet" or a mode, see `tfrecords.scaling`).
    target: classification -> (B,) int32 label index, or (B, classes) float32 with `one_hot`;
    multilabel -> (B, len(label_names)) float32 multi-hot; segmentation -> (B, H, W, K) float32 {0, 1}
    for the K `mask_names`. meta: name -> (B,) string for `META_FIELDS`. See `ReadConfig`.
    input_context: from `strategy.distribute_datasets_from_function`; this pipeline then reads only its
    share of the shard files and batches `input_context.get_per_replica_batch_size(batch_size)`.
    """
    manifest = load_manifest(manifest_or_dir)
    mode = scaling_mode(config.input_scaling)
    masks, labels = _validate_request(manifest, config, mode)
    paths = check_shards(manifest, config.split, config.verify_checksums)
    batch_size = config.batch_size
    files = tf.data.Dataset.from_tensor_slices([str(path) for path in paths])
    if input_context is not None:
        files = _worker_share(files, len(paths), config.split, input_context)
        batch_size = input_context.get_per_replica_batch_size(batch_size)
    records = _read_records(files, len(paths), config.deterministic, manifest.compression)
    batchwise = _batchwise(manifest, config)
    if batchwise:
        records = records.batch(batch_size)
    decode = _decoder(manifest, config.task, masks, labels, config.size, config.one_hot)
    parallel, deterministic = _parallel_calls(config), config.deterministic
    dataset = records.map(decode, num_parallel_calls=parallel, deterministic=deterministic)
    dataset = _preprocessed(dataset, manifest, config, mode)
    if not batchwise:
        dataset = dataset.batch(batch_size)
    dataset = dataset.prefetch(tf.data.AUTOTUNE if not config.deterministic else 2)
    return dataset.with_options(_options(config.deterministic, sharded=input_context is not None))


def _batchwise(manifest: Manifest, config: ReadConfig) -> bool:
    """Whether the split is parsed and decoded a batch at a time (one `parse_example`, one
    `decode_raw` per feature for the whole batch) instead of example by example: raw records of one
    stored size, read in order without shuffle, repeat or augmentation (which work on single examples).
    The batches are the same either way; PNG bytes decode one image at a time."""
    fixed_raw = manifest.encoding == "raw" and manifest.image_height is not None
    return fixed_raw and not (config.shuffle or config.repeat or config.augment is not None)


def _parallel_calls(config: ReadConfig) -> int:
    return _PARALLEL_CALLS_DETERMINISTIC if config.deterministic else tf.data.AUTOTUNE


def _worker_share(
    files: tf.data.Dataset, count: int, split: str, input_context: tf.distribute.InputContext
) -> tf.data.Dataset:
    """This input pipeline's share of the `count` shard `files`."""
    if count < input_context.num_input_pipelines:
        raise ValueError(
            f"{split} has {count} shard(s), fewer than the {input_context.num_input_pipelines} "
            "input pipelines; write it with more shards (--shards)"
        )
    return files.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)


def _preprocessed(
    dataset: tf.data.Dataset, manifest: Manifest, config: ReadConfig, mode: str | None
) -> tf.data.Dataset:
    """Decoded examples -> (image, target[, meta]) model inputs: cache, shuffle, repeat, then `_finish`
    (with a (2,) stateless augmentation seed per example when augmenting)."""
    if config.cache:
        dataset = dataset.cache("" if config.cache is True else str(config.cache))
    if config.shuffle:
        buffer = min(manifest.split(config.split).count, _MAX_SHUFFLE_BUFFER)
        dataset = dataset.shuffle(buffer, seed=config.seed, reshuffle_each_iteration=True)
    if config.repeat:
        dataset = dataset.repeat()
    finish = functools.partial(
        _finish,
        masks=config.task == "segmentation",
        augment=config.augment,
        image_max=float(np.iinfo(manifest.image_dtype).max),
        channels=config.channels,
        mode=mode,
        with_meta=config.with_meta,
    )
    parallel, deterministic = _parallel_calls(config), config.deterministic
    if config.augment is None:
        return dataset.map(
            lambda example: finish(example, None), num_parallel_calls=parallel, deterministic=deterministic
        )
    keys = tf.data.Dataset.random(seed=config.seed, rerandomize_each_iteration=True).batch(2)
    return tf.data.Dataset.zip(dataset, keys).map(
        finish, num_parallel_calls=parallel, deterministic=deterministic
    )


def _read_records(
    files: tf.data.Dataset, count: int, deterministic: bool, compression: str
) -> tf.data.Dataset:
    """Serialized examples of the shard `files`: one shard after another when deterministic, else
    interleaved over up to 8 shards read in parallel."""
    read = functools.partial(tf.data.TFRecordDataset, compression_type=compression)
    if deterministic:
        return files.interleave(read, cycle_length=1)
    return files.interleave(
        read,
        cycle_length=min(count, 8),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=False,
    )


def _options(deterministic: bool, sharded: bool) -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = deterministic
    options.autotune.enabled = not deterministic
    # Without a cache or shuffle between them, the decode and finish maps become one map: a raw
    # record's first pass then costs one map call instead of two (about 1.4x faster on 2 cores).
    options.experimental_optimization.map_fusion = True
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.OFF if sharded else tf.data.experimental.AutoShardPolicy.FILE
    )
    return options


def _decode_pixels(
    encoded: tf.Tensor,
    shape: tf.Tensor | tuple[int, int] | None,
    dtype: tf.DType,
    size: tuple[int, int] | None,
    method: str,
) -> tf.Tensor:
    """Stored bytes, a scalar or a (B,) batch -> (H, W, 1) or (B, H, W, 1) as stored, or resized to
    `size` with `method` (float32 for "bilinear").

    shape: None for PNG bytes (scalars only), else the (H, W) of raw little-endian bytes."""
    if shape is None:
        pixels = tf.io.decode_png(encoded, channels=1, dtype=dtype)
    else:
        batch = (-1,) * encoded.shape.rank
        pixels = tf.reshape(tf.io.decode_raw(encoded, dtype), (*batch, shape[0], shape[1], 1))
    return pixels if size is None else tf.image.resize(pixels, size, method=method)


def _decoder(
    manifest: Manifest,
    task: str,
    mask_names: tuple[str, ...],
    label_names: tuple[str, ...],
    size: tuple[int, int] | None,
    one_hot: bool,
):
    """A function: serialized example, or a (B,) batch of them -> dict of decoded tensors (with a
    leading batch axis for a batch): "image" (H, W, 1) as stored (uint8 or uint16; float32 on the
    stored scale when resized), "target" (masks as uint8), and the meta strings. Integer images keep
    the cache small; `_finish` converts to float32 after it."""
    spec = schema.feature_spec(manifest.mask_names, manifest.encoding)
    needed = {"image", "shape", *META_FIELDS}
    needed |= {schema.mask_feature_name(name) for name in mask_names} if task == "segmentation" else {"labels"}
    spec = {name: feature for name, feature in spec.items() if name in needed}
    # Manifest label index of each requested label, in `label_names` order (the multi-hot columns).
    columns = [manifest.label_names.index(name) for name in label_names]
    stored = (manifest.image_height, manifest.image_width)
    shape = size or stored
    resize = None if size == stored else size
    image_dtype = tf.uint16 if manifest.image_dtype == "uint16" else tf.uint8

    def decode(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
        batch = (None,) * serialized.shape.rank  # () for one example, (None,) for a batch
        parse = tf.io.parse_example if batch else tf.io.parse_single_example
        parsed = parse(serialized, spec)
        # Raw records of a fixed-size store reshape to the manifest's (static) size.
        raw_shape = None
        if manifest.encoding == "raw":
            raw_shape = stored if manifest.image_height is not None else parsed["shape"]
        image = _decode_pixels(parsed["image"], raw_shape, image_dtype, resize, "bilinear")
        image.set_shape((*batch, *shape, 1))
        example = {"image": image, **{field: parsed[field] for field in META_FIELDS}}
        if task == "classification":
            label = tf.cast(tf.sparse.to_dense(parsed["labels"]), tf.int32)[..., 0]
            example["target"] = tf.one_hot(label, len(label_names), dtype=tf.float32) if one_hot else label
        elif task == "multilabel":
            present = tf.sparse.to_indicator(parsed["labels"], len(manifest.label_names))
            example["target"] = tf.cast(tf.gather(present, columns, axis=-1), tf.float32)
        else:
            stacked = [
                _decode_pixels(parsed[schema.mask_feature_name(name)], raw_shape, tf.uint8, resize, "nearest")
                for name in mask_names
            ]
            example["target"] = tf.concat(stacked, axis=-1)
            example["target"].set_shape((*batch, *shape, len(mask_names)))
        return example

    return decode


def _finish(
    example: dict[str, tf.Tensor],
    key: tf.Tensor | None,
    masks: bool,
    augment: AugmentConfig | None,
    image_max: float,
    channels: int,
    mode: str | None,
    with_meta: bool,
) -> tuple[tf.Tensor, ...]:
    """Decoded example (or batch) -> model input: float32 [0, 1] image (and `masks` targets),
    augmentation with the (2,) stateless seed `key` (single examples; masks move with the image),
    channel repeat, backbone input scaling."""
    image = tf.cast(example["image"], tf.float32) / image_max
    target = example["target"]
    if masks:
        target = tf.cast(target, tf.float32)
    if augment is not None:
        image, moved = augment_example(image, target if masks else None, key, augment)
        target = moved if masks else target
    if channels == 3:
        image = tf.repeat(image, 3, axis=-1)
    image = scale_input(image, mode)
    if not with_meta:
        return image, target
    return image, target, {field: example[field] for field in META_FIELDS}


def read_examples(
    manifest_or_dir: str | Path | Manifest, split: str, verify_checksums: bool = False
) -> Iterator[dict[str, Any]]:
    """Decoded examples of one split as NumPy, in manifest shard order, for evaluation code.

    Each dict: "image" (H, W) uint8/uint16 as stored; "masks" name -> (H, W) uint8 {0, 1} (present
    masks only); "labels" tuple of label names; "label_indices" tuple of int; "slice_index" int (-1 =
    unknown); "synthetic" bool; "original_shape" tuple; "shard" the file name; and the strings of
    `schema.STRING_FIELDS` ("" = unknown). Raises DataError naming a corrupt or truncated shard.
    """
    manifest = load_manifest(manifest_or_dir)
    for path in check_shards(manifest, split, verify_checksums):
        records = tf.data.TFRecordDataset(str(path), compression_type=manifest.compression)
        options = tf.data.Options()
        options.autotune.enabled = False
        try:
            for serialized in records.with_options(options).as_numpy_iterator():
                yield _example_to_numpy(tf.train.Example.FromString(serialized), manifest, path.name)
        except tf.errors.DataLossError as error:
            raise DataError(path, f"corrupt shard ({error.message})") from error


def _to_numpy(encoded: bytes, shape: tuple[int, ...] | None, dtype: str) -> np.ndarray:
    """Stored bytes -> (H, W) array of `dtype`: PNG when `shape` is None, else raw little-endian."""
    if shape is None:
        return cv2.imdecode(np.frombuffer(encoded, np.uint8), cv2.IMREAD_UNCHANGED)
    stored = np.dtype(dtype).newbyteorder("<")
    return np.frombuffer(encoded, stored).reshape(shape).astype(dtype)


def _example_to_numpy(example: tf.train.Example, manifest: Manifest, shard: str) -> dict[str, Any]:
    feature = example.features.feature
    indices = tuple(int(index) for index in feature["labels"].int64_list.value)
    shape = tuple(feature["shape"].int64_list.value) if manifest.encoding == "raw" else None
    masks = {}
    for name in manifest.mask_names:
        encoded = feature[schema.mask_feature_name(name)].bytes_list.value[0]
        if encoded:
            masks[name] = _to_numpy(encoded, shape, "uint8")
    return {
        "image": _to_numpy(feature["image"].bytes_list.value[0], shape, manifest.image_dtype),
        "masks": masks,
        "labels": tuple(manifest.label_names[index] for index in indices),
        "label_indices": indices,
        "slice_index": int(feature["slice_index"].int64_list.value[0]),
        "synthetic": bool(feature["synthetic"].int64_list.value[0]),
        "original_shape": tuple(int(n) for n in feature["original_shape"].int64_list.value),
        "shard": shard,
        **{field: feature[field].bytes_list.value[0].decode("utf-8") for field in schema.STRING_FIELDS},
    }
