"""`manifest.json`: what a TFRecord directory holds, and how it was made.

The manifest is the reader's only source of truth: shard names, record counts, byte sizes and SHA-256
of each shard, the stored image shape and dtype, and the label and mask names that indices refer to.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from data_prep.errors import DataError

MANIFEST_NAME = "manifest.json"
_HASH_CHUNK_BYTES = 1 << 20


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(_HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class ShardInfo:
    """One shard file: its name inside the directory, record count, size in bytes and SHA-256."""

    name: str
    count: int
    bytes: int
    sha256: str


@dataclass(frozen=True)
class SplitInfo:
    """One split: record and patient-group counts, per-class and per-mask record counts, its shards."""

    count: int
    groups: int
    class_counts: dict[str, int]
    mask_counts: dict[str, int]
    shards: tuple[ShardInfo, ...]


@dataclass(frozen=True)
class Manifest:
    """The contents of `manifest.json`; `directory` (not stored) is where it was read from.

    image_height / image_width: the stored size in pixels, None when images differ in size.
    image_dtype: "uint8" or "uint16". intensity_offset: added to the source values before storing as
    uint16 (HU + 32768), 0 for 8-bit images.
    encoding: how records store pixels, "png" or "raw" (`tfrecords.schema`); compression: the shards'
    TFRecord compression, "" (none), "ZLIB" or "GZIP". Manifests written before schema version 2
    have neither key and mean PNG, uncompressed.
    """

    dataset: str
    schema_version: int
    preprocess: dict[str, Any]
    split_source: str
    split_file: dict[str, str] | None
    patient_id_kind: str
    image_height: int | None
    image_width: int | None
    image_channels: int
    image_dtype: str
    intensity_offset: int
    label_names: tuple[str, ...]
    multilabel: bool
    mask_names: tuple[str, ...]
    splits: dict[str, SplitInfo]
    encoding: str = "png"
    compression: str = ""
    directory: Path = field(default=Path("."), compare=False)

    def shard_paths(self, split: str) -> list[Path]:
        return [self.directory / shard.name for shard in self.split(split).shards]

    def split(self, split: str) -> SplitInfo:
        if split not in self.splits:
            raise KeyError(f"{self.directory}: no split {split!r}; the manifest has {sorted(self.splits)}")
        return self.splits[split]

    def to_json(self) -> str:
        data = asdict(self)
        del data["directory"]
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, directory: Path) -> Manifest:
        data = json.loads(text)
        splits = {
            name: SplitInfo(
                count=info["count"],
                groups=info["groups"],
                class_counts=info["class_counts"],
                mask_counts=info["mask_counts"],
                shards=tuple(ShardInfo(**shard) for shard in info["shards"]),
            )
            for name, info in data.pop("splits").items()
        }
        data["label_names"] = tuple(data["label_names"])
        data["mask_names"] = tuple(data["mask_names"])
        return cls(**data, splits=splits, directory=directory)


def load_manifest(manifest_or_dir: str | Path | Manifest) -> Manifest:
    """Reads `manifest.json` from a TFRecord directory or the file's path (a `Manifest` passes through)."""
    if isinstance(manifest_or_dir, Manifest):
        return manifest_or_dir
    path = Path(manifest_or_dir)
    if path.is_dir():
        path = path / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no TFRecord manifest here (run `python -m tfrecords write` first)")
    try:
        return Manifest.from_json(path.read_text(encoding="utf-8"), directory=path.parent)
    except (ValueError, KeyError, TypeError) as error:  # bad JSON (JSONDecodeError), or fields missing
        problem = f"not a readable TFRecord manifest ({type(error).__name__}: {error})"
        raise DataError(path, problem) from error
