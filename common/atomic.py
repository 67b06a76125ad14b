"""All-or-nothing writes: the one place that turns a temporary path into a published one.

`atomic_path(path)` yields a hidden temporary path in the same folder; when the block succeeds it is
renamed onto `path` (`os.replace`, atomic on one file system), when it raises it is removed and `path`
is left as it was. `atomic_write_text` / `atomic_write_bytes` / `atomic_write_json` are the common
cases. `staged_folder(out_dir)` does the same for a folder of files, merged into `out_dir`;
`replace_folder(staging, out_dir)` swaps a whole staged folder in for `out_dir`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yields a temporary path beside `path` (a file or a folder the block creates there); on success
    it replaces `path`, on error it is removed. `suffix` keeps a file ending that a writer needs
    (e.g. ".nii.gz", ".png")."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix or ".tmp")
    os.close(handle)
    temporary = Path(name)
    temporary.unlink()  # the block creates it (a file or a folder)
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        if temporary.is_dir():
            shutil.rmtree(temporary, ignore_errors=True)
        else:
            temporary.unlink(missing_ok=True)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Writes `data` to `path` all-or-nothing; returns the path."""
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Writes UTF-8 `text` to `path` all-or-nothing; returns the path."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, value: Any, **dump_options: Any) -> Path:
    """Writes `value` as JSON (indent 2 and a final newline unless told otherwise) all-or-nothing."""
    dump_options.setdefault("indent", 2)
    return atomic_write_text(path, json.dumps(value, **dump_options) + "\n")


@contextlib.contextmanager
def staged_folder(out_dir: str | Path) -> Iterator[Path]:
    """Yields a hidden staging folder beside `out_dir`. When the block succeeds its files are moved into
    `out_dir` (created if needed; files of the same name replaced); when it raises, the staging
    folder is removed and `out_dir` is left as it was, so a bad last input leaves no partial output."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.staging-", dir=out_dir.parent))
    try:
        yield staging
        out_dir.mkdir(exist_ok=True)
        for path in sorted(staging.iterdir()):
            os.replace(path, out_dir / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def replace_folder(staging: str | Path, out_dir: str | Path) -> Path:
    """Publishes the complete folder `staging` as `out_dir`, replacing any folder there: the old one is
    renamed aside first and removed only after the new one is in place."""
    staging, out_dir = Path(staging), Path(out_dir)
    if out_dir.exists():
        retired = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        os.replace(out_dir, retired / out_dir.name)
        os.replace(staging, out_dir)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.replace(staging, out_dir)
    return out_dir
