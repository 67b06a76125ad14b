"""Checking TFRecord shards against their manifest's SHA-256s before training or evaluation reads them.

A damaged shard otherwise surfaces mid-epoch as TensorFlow's `DataLossError: corrupted record at N`
(which names no file), after output has been written. Hashing runs at disk speed; the commands print
how long it took, and `--no-verify` skips it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path

from tfrecords.manifest import Manifest, load_manifest


def verify_shards(manifests: Iterable[str | Path | Manifest], splits: Iterable[str] | None = None) -> str:
    """Hashes every shard of `splits` (default: all) of each manifest; raises `DataError` naming the
    first shard that is missing, resized or altered. Returns a one-line account of what was checked."""
    from tfrecords.reader import check_shards  # imports TensorFlow: only when checking

    clock = time.perf_counter()
    count, size = 0, 0
    for item in manifests:
        manifest = load_manifest(item)
        for split in list(splits) if splits is not None else sorted(manifest.splits):
            if split not in manifest.splits:
                continue
            for path in check_shards(manifest, split, verify_checksums=True):
                count += 1
                size += path.stat().st_size
    seconds = time.perf_counter() - clock
    return f"verified {count} shards ({size / 1e6:.1f} MB) against manifest.json SHA-256s in {seconds:.2f} s"
