"""Writes a dataset's records, preprocessed once, as sharded TFRecord files with a `manifest.json`.

Layout of OUT_DIR: `<split>-<i>-of-<n>.tfrecord` shards and `manifest.json`. Pixels are stored as
PNG or as raw arrays (`encoding`; "auto" = raw when the spec resizes every image to one size, which
reads about 9x faster than PNG without a cache), and shards may be ZLIB/GZIP-compressed. All records of one patient group go to one split and one shard; groups are dealt
to shards greedily by record count, so a re-run with the same inputs gives byte-identical files.
`rewrite_images` copies a written output with its images replaced (e.g. lungs masked out).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import shutil
import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import tensorflow as tf

from common.atomic import replace_folder
from data_prep.adapters import open_dataset
from data_prep.adapters.base import DatasetAdapter
from data_prep.errors import DataError
from data_prep.records import MANIFESTATIONS, MASK_NAMES, Record
from data_prep.splits import POLICY_COLUMNS, check_no_leakage, check_record_ids, load_split, policy_split
from tfrecords import schema
from tfrecords.manifest import MANIFEST_NAME, Manifest, ShardInfo, SplitInfo, sha256_file
from tfrecords.reader import read_examples
from tfrecords.spec import HU16_OFFSET, PreprocessSpec

DEFAULT_SHARDS = 8
REWRITE_BATCH = 32  # decoded examples handed to a `rewrite_images` transform at once
DecodedExample = dict[str, Any]  # one example of `tfrecords.reader.read_examples`
ImageTransform = Callable[[list[DecodedExample]], dict[str, list[np.ndarray]]]


@dataclass(frozen=True)
class EncodedRecord:
    """One record after preprocessing and encoding (`schema.encode_pixels`), without its arrays.

    patient_id: the record's patient id, else its volume id, else None (used to split and shard).
    strings: the values of `schema.STRING_FIELDS` except "group", which is set when sharding.
    """

    key: str
    patient_id: str | None
    split: str | None
    labels: tuple[str, ...]
    image_bytes: bytes
    mask_bytes: dict[str, bytes]
    stored_shape: tuple[int, int]
    original_shape: tuple[int, ...]
    slice_index: int
    synthetic: bool
    strings: dict[str, str]


def assign_shards(group_counts: dict[str, int], num_shards: int) -> dict[str, int]:
    """Group -> shard index in [0, num_shards): largest groups first, each to the emptiest shard.

    Deterministic: ties in size are broken by group name, ties in shard load by the lower index.
    """
    loads = [0] * num_shards
    shard_of = {}
    for group, count in sorted(group_counts.items(), key=lambda item: (-item[1], item[0])):
        target = min(range(num_shards), key=lambda index: (loads[index], index))
        shard_of[group] = target
        loads[target] += count
    return shard_of


def resolve_encoding(encoding: str, spec: PreprocessSpec) -> str:
    """ "png" or "raw" for a requested `encoding` ("auto": raw when `spec` gives one output size)."""
    if encoding == "auto":
        return "raw" if spec.output_size is not None else "png"
    if encoding not in schema.ENCODINGS:
        raise ValueError(f"unknown encoding {encoding!r}; use auto or one of {', '.join(schema.ENCODINGS)}")
    return encoding


def _compression(compression: str | None) -> str:
    name = (compression or "").upper()
    if name == "NONE":
        return ""
    if name not in schema.COMPRESSIONS:
        raise ValueError(f"unknown compression {compression!r}; use none, zlib or gzip")
    return name


def shard_name(split: str, index: int, count: int) -> str:
    return f"{split}-{index:05d}-of-{count:05d}.tfrecord"


def _encode(records: Iterable[Record], spec: PreprocessSpec, encoding: str) -> Iterator[EncodedRecord]:
    for record in records:
        image, masks = spec.apply(record)
        yield EncodedRecord(
            key=record.key,
            patient_id=record.patient_id or record.volume_id,
            split=record.split,
            labels=record.labels,
            image_bytes=schema.encode_pixels(image, encoding),
            mask_bytes={name: schema.encode_pixels(mask, encoding) for name, mask in masks.items()},
            stored_shape=image.shape,
            original_shape=record.image.shape,
            slice_index=-1 if record.slice_index is None else record.slice_index,
            synthetic=record.synthetic,
            strings={
                "key": record.key,
                "patient_id": record.patient_id or "",
                "modality": record.modality,
                "source": record.source or "",
                "path": record.path,
                "volume_id": record.volume_id or "",
            },
        )


def _split_table(
    encoded: list[EncodedRecord],
    adapter: DatasetAdapter,
    split_file: Path | None,
    seed: int,
    every_row_a_record: bool = True,
) -> tuple[pd.DataFrame, str]:
    """(table with columns key, patient_id (the group: never empty), split, in `encoded` order; where the
    split came from). Records without any id form their own group, named by their key.
    every_row_a_record: a split-file row naming no record is an error (a typo or another dataset's
    file); False when a records transform drops records on purpose (slice trimming)."""
    keys = [item.key for item in encoded]
    if split_file is not None:
        table = load_split(split_file)
        missing = sorted(set(keys) - set(table["key"]))
        if missing:
            shown = ", ".join(missing[:5])
            raise DataError(split_file, f"{len(missing)} record key(s) have no split row, e.g. {shown}")
        unknown = sorted(set(table["key"]) - set(keys))
        if unknown and every_row_a_record:
            shown = ", ".join(unknown[:5])
            problem = f"{len(unknown)} split row(s) name no record of {adapter.root}, e.g. {shown}"
            raise DataError(split_file, problem)
        table = table.set_index("key", drop=False).loc[keys].reset_index(drop=True)
        # The split file's patient id is the authority for grouping where it gives one.
        table["patient_id"] = table["patient_id"].fillna(pd.Series([item.patient_id for item in encoded]))
        source = "file"
    else:  # the publisher's splits as they are, else a patient-wise 70/15/15 split
        id_kind = "inferred" if adapter.patient_ids == "inferred" else "patient"
        rows = pd.DataFrame(
            [(item.key, item.patient_id, "+".join(item.labels), item.split, id_kind) for item in encoded],
            columns=list(POLICY_COLUMNS),
        )
        table, source = policy_split(rows, "publisher", 0.15, 0.15, seed, complete=False, where=adapter.root)
        table = table.set_index("key", drop=False).loc[keys].reset_index(drop=True)
    table["patient_id"] = table["patient_id"].fillna(table["key"])
    check_no_leakage(table[["key", "patient_id", "split"]], split_file or adapter.root)
    if split_file is not None:  # a file may regroup records, but not separate a patient they name
        check_record_ids(table, [item.patient_id for item in encoded], split_file)
    return table[["key", "patient_id", "split"]], source


def _label_names(adapter: DatasetAdapter, encoded: list[EncodedRecord]) -> tuple[str, ...]:
    seen = sorted({label for item in encoded for label in item.labels})
    declared = tuple(adapter.label_names)
    unknown = sorted(set(seen) - set(declared))
    if declared and unknown:
        raise DataError(adapter.root, f"labels {unknown} are not among the adapter's {list(declared)}")
    return declared or tuple(seen)


def _is_multilabel(label_names: tuple[str, ...], encoded: list[EncodedRecord]) -> bool:
    """Manifestation label sets, and any set where a record carries several labels, are multi-label."""
    manifestations = bool(label_names) and set(label_names) <= set(MANIFESTATIONS)
    return manifestations or any(len(item.labels) > 1 for item in encoded)


def _mask_names(adapter: DatasetAdapter, encoded: list[EncodedRecord]) -> tuple[str, ...]:
    seen = {name for item in encoded for name in item.mask_bytes}
    declared = tuple(adapter.mask_names)
    return declared + tuple(name for name in MASK_NAMES if name in seen and name not in declared)


def _serialize(
    item: EncodedRecord,
    group: str,
    label_names: tuple[str, ...],
    mask_names: tuple[str, ...],
    encoding: str,
) -> bytes:
    return schema.build_example(
        image=item.image_bytes,
        masks={name: item.mask_bytes.get(name, b"") for name in mask_names},
        label_indices=[label_names.index(label) for label in item.labels],
        strings={**item.strings, "group": group},
        slice_index=item.slice_index,
        synthetic=item.synthetic,
        original_shape=item.original_shape,
        shape=item.stored_shape if encoding == "raw" else None,
    )


def _write_split(
    items: list[tuple[EncodedRecord, str]],
    split: str,
    directory: Path,
    num_shards: int,
    label_names: tuple[str, ...],
    mask_names: tuple[str, ...],
    encoding: str,
    compression: str,
) -> SplitInfo:
    """Writes one split's (record, group) pairs as shards; returns the split's manifest entry."""
    counts = Counter(group for _, group in items)
    num_shards = max(1, min(num_shards, len(counts)))
    shard_of = assign_shards(dict(counts), num_shards)
    by_shard: dict[int, list[tuple[EncodedRecord, str]]] = defaultdict(list)
    for item, group in items:
        by_shard[shard_of[group]].append((item, group))
    shards = []
    for index in range(num_shards):
        name = shard_name(split, index, num_shards)
        members = sorted(by_shard[index], key=lambda member: member[0].key)
        options = tf.io.TFRecordOptions(compression_type=compression)
        with tf.io.TFRecordWriter(str(directory / name), options) as writer:
            for item, group in members:
                writer.write(_serialize(item, group, label_names, mask_names, encoding))
        path = directory / name
        shards.append(ShardInfo(name, len(members), path.stat().st_size, sha256_file(path)))
    class_counts = Counter(label for item, _ in items for label in item.labels)
    mask_counts = Counter(name for item, _ in items for name in item.mask_bytes)
    return SplitInfo(
        count=len(items),
        groups=len(counts),
        class_counts={name: class_counts[name] for name in label_names},
        mask_counts={name: mask_counts[name] for name in mask_names},
        shards=tuple(shards),
    )


@contextlib.contextmanager
def _staged_output(out_dir: Path) -> Iterator[Path]:
    """Yields a hidden staging folder beside `out_dir`; when the block succeeds it replaces `out_dir`
    (an earlier TFRecord output, an empty folder or nothing), when it raises it is removed."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        yield staging
        if out_dir.exists() and not (out_dir / MANIFEST_NAME).is_file() and any(out_dir.iterdir()):
            raise DataError(
                out_dir, "exists and is not a TFRecord output (no manifest.json); refusing to replace it"
            )
        replace_folder(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_dataset(
    dataset: str,
    raw_dir: str | Path,
    out_dir: str | Path,
    preprocess: str | None = None,
    split_file: str | Path | None = None,
    shards: int = DEFAULT_SHARDS,
    image_size: int | None = None,
    encoding: str = "auto",
    compression: str = "",
    seed: int = 0,
    records_transform: Callable[[Iterable[Record]], Iterable[Record]] | None = None,
    transform_record: Mapping[str, Any] | None = None,
) -> Manifest:
    """Reads `dataset` from `raw_dir` through its adapter and writes TFRecords and manifest to `out_dir`.

    preprocess: a `PreprocessSpec` string; image_size: adds resize=N. encoding: "png", "raw" or "auto"
    (raw when the spec resizes every image to one size, else PNG); compression: "", "ZLIB" or "GZIP"
    (case-insensitive) for the shard files. records_transform: applied to the
    adapter's record stream before preprocessing (e.g. a recipe that trims volumes and crops lungs);
    transform_record: its settings, kept in the manifest as `preprocess["recipe"]` (for model bundles).
    The split comes from `split_file` (a `data_prep.splits` CSV), else the publisher's `Record.split`, else a patient-wise
    70/15/15 split (`patient_split` with `seed`). Everything is written in a temporary folder beside
    `out_dir`, then renamed into place; on any error nothing is left behind.
    Raises DataError for bad input and LeakageError when a patient group spans two splits.
    """
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    spec = PreprocessSpec.parse(preprocess, image_size)
    encoding = resolve_encoding(encoding, spec)
    compression = _compression(compression)
    out_dir = Path(out_dir)
    split_path = None if split_file is None else Path(split_file)
    adapter = open_dataset(dataset, raw_dir)
    records = adapter.records() if records_transform is None else records_transform(adapter.records())
    encoded = list(_encode(records, spec, encoding))
    if not encoded:
        raise DataError(adapter.root, f"the {dataset} adapter found no records")
    table, split_source = _split_table(encoded, adapter, split_path, seed, records_transform is None)
    label_names = _label_names(adapter, encoded)
    mask_names = _mask_names(adapter, encoded)
    by_split: dict[str, list[tuple[EncodedRecord, str]]] = defaultdict(list)
    for item, group, split in zip(encoded, table["patient_id"], table["split"], strict=True):
        by_split[split].append((item, group))
    shapes = {item.stored_shape for item in encoded}
    height, width = next(iter(shapes)) if len(shapes) == 1 else (None, None)

    with _staged_output(out_dir) as staging:
        splits = {
            split: _write_split(
                by_split[split], split, staging, shards, label_names, mask_names, encoding, compression
            )
            for split in sorted(by_split)
        }
        manifest = Manifest(
            dataset=dataset,
            schema_version=schema.SCHEMA_VERSION,
            preprocess={
                "spec": str(spec),
                "steps": [str(step) for step in spec.steps],
                "hu_images": [str(step) for step in spec.steps_for("hu")],
                "recipe": None if transform_record is None else dict(transform_record),
            },
            split_source=split_source,
            split_file=None
            if split_path is None
            else {"path": str(split_path), "sha256": sha256_file(split_path)},
            patient_id_kind=adapter.patient_ids,
            image_height=height,
            image_width=width,
            image_channels=1,
            image_dtype=spec.stored_dtype,
            intensity_offset=HU16_OFFSET if spec.stored_dtype == "uint16" else 0,
            label_names=label_names,
            multilabel=_is_multilabel(label_names, encoded),
            mask_names=mask_names,
            splits=splits,
            encoding=encoding,
            compression=compression,
            directory=out_dir,
        )
        (staging / MANIFEST_NAME).write_text(manifest.to_json(), encoding="utf-8")
    return manifest


def _reencoded(
    example: DecodedExample, image: np.ndarray, mask_names: tuple[str, ...], encoding: str
) -> EncodedRecord:
    """A decoded example as an `EncodedRecord` again, with `image` (H, W) in place of its own."""
    masks = example["masks"]
    return EncodedRecord(
        key=example["key"],
        patient_id=example["patient_id"] or None,
        split=None,
        labels=example["labels"],
        image_bytes=schema.encode_pixels(image, encoding),
        mask_bytes={
            name: schema.encode_pixels(masks[name], encoding) for name in mask_names if name in masks
        },
        stored_shape=image.shape,
        original_shape=example["original_shape"],
        slice_index=example["slice_index"],
        synthetic=example["synthetic"],
        strings={name: example[name] for name in schema.STRING_FIELDS if name != "group"},
    )


def _batches(examples: Iterator[DecodedExample], size: int) -> Iterator[list[DecodedExample]]:
    """Batches of one shard's examples and of one image shape (so that they stack)."""
    for _, group in itertools.groupby(
        examples, key=lambda example: (example["shard"], example["image"].shape)
    ):
        while batch := list(itertools.islice(group, size)):
            yield batch


def _copy_manifest(source: Manifest, folder: Path, note: Mapping[str, Any]) -> Manifest:
    """Writes `folder/manifest.json`: `source`'s, with `note` added to its `preprocess` and the shard
    sizes and hashes of `folder`."""
    splits = {
        split: dataclasses.replace(
            info,
            shards=tuple(
                ShardInfo(
                    shard.name,
                    shard.count,
                    (folder / shard.name).stat().st_size,
                    sha256_file(folder / shard.name),
                )
                for shard in info.shards
            ),
        )
        for split, info in source.splits.items()
    }
    manifest = dataclasses.replace(
        source, preprocess={**source.preprocess, **note}, splits=splits, directory=folder
    )
    (folder / MANIFEST_NAME).write_text(manifest.to_json(), encoding="utf-8")
    return manifest


def rewrite_images(
    source: Manifest,
    out_dir: str | Path,
    names: tuple[str, ...],
    transform: ImageTransform,
    note: Mapping[str, Any],
) -> dict[str, Manifest]:
    """Writes `out_dir/<name>` TFRecord folders that copy `source` (splits, shards, record order, labels,
    masks, strings, encoding, compression) with each image replaced by `transform(batch)[name]`, an
    (H, W) array of the source's dtype per example of the batch (up to `REWRITE_BATCH` examples of one
    shard and image shape). `note` and {"variant": name} are added to each manifest's `preprocess`.
    All-or-nothing: written in a staging folder that then replaces `out_dir` (nothing, an empty
    folder or an earlier output); returns name -> manifest.
    """
    out_dir = Path(out_dir)
    with _staged_output(out_dir) as staging:
        for name in names:
            (staging / name).mkdir()
        for split in sorted(source.splits):
            writers = {
                (name, shard.name): tf.io.TFRecordWriter(
                    str(staging / name / shard.name), tf.io.TFRecordOptions(source.compression)
                )
                for name in names
                for shard in source.split(split).shards
            }
            for batch in _batches(read_examples(source, split), REWRITE_BATCH):
                images = transform(batch)
                for name in names:
                    writer = writers[(name, batch[0]["shard"])]
                    for example, image in zip(batch, images[name], strict=True):
                        item = _reencoded(example, image, source.mask_names, source.encoding)
                        writer.write(
                            _serialize(
                                item, example["group"], source.label_names, source.mask_names, source.encoding
                            )
                        )
            for writer in writers.values():
                writer.close()
        manifests = {name: _copy_manifest(source, staging / name, note | {"variant": name}) for name in names}
    return {
        name: dataclasses.replace(manifest, directory=out_dir / name) for name, manifest in manifests.items()
    }
