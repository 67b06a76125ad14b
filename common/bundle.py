"""The one run-folder format for a trained model: `bundle.json` beside its `.keras` file.

A bundle records what is needed to apply a model to a raw file, for classifiers and segmenters alike:
- `kind` ("classifier" or "segmenter"), the model file and its SHA-256;
- the input: size, channels and scaling (stored integer image / its dtype's maximum -> [0, 1]);
- the validation-chosen threshold (`common.thresholds.ThresholdChoice`, or null: argmax / none);
- the write-time preprocessing spec and the CT recipe with every parameter, or null;
- the models it depends on (the lung model whose predicted mask gives a "model"-rule crop), by path
  relative to the bundle's folder and SHA-256; `checked_dependency` refuses one whose checksum differs;
- the training data (dataset, TFRecord folder, split file);
- the kind's own fields (`segmentation.bundle`: channel names, softmax or not; `classification.task`:
  task, output and class names).
`write_bundle` writes one, `read_bundle` reads one back (bundles of version 1, "segmenter bundle",
read as kind "segmenter").
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from common.atomic import atomic_write_json
from data_prep.errors import DataError
from tfrecords.manifest import Manifest, sha256_file

BUNDLE_NAME = "bundle.json"
BUNDLE_FORMAT = "covid-repro model bundle"
BUNDLE_VERSION = 2
LEGACY_FORMATS = {"covid-repro segmenter bundle": "segmenter"}  # version 1 -> its kind
KINDS = ("classifier", "segmenter")


def _relative(path: Path, start: Path) -> str:
    try:
        return os.path.relpath(path.resolve(), start.resolve())
    except ValueError:  # another drive
        return str(path.resolve())


def dependency(model_path: str | Path, bundle_dir: str | Path) -> dict[str, str]:
    """{"path": relative to `bundle_dir`, "sha256"} of a model file another bundle depends on."""
    model_path = Path(model_path)
    if not model_path.is_file():
        raise DataError(model_path, "no such model file")
    return {"path": _relative(model_path, Path(bundle_dir)), "sha256": sha256_file(model_path)}


def checked_dependency(bundle_path: Path, entry: dict[str, str]) -> Path:
    """The model file a bundle depends on, after checking it exists and its SHA-256 is the recorded one."""
    path = (bundle_path.parent / entry["path"]).resolve()
    if not path.is_file():
        raise DataError(bundle_path, f"depends on {path}, which does not exist")
    if sha256_file(path) != entry["sha256"]:
        raise DataError(bundle_path, f"depends on {path}, whose SHA-256 differs from the recorded one")
    return path


def write_bundle(
    model_path: str | Path,
    input_shape: tuple[int, int, int],
    kind: str,
    threshold: dict[str, Any] | None,
    manifest: Manifest,
    fields: dict[str, Any],
) -> Path:
    """Writes `bundle.json` beside `model_path` (atomically) for a model of `input_shape` (H, W, C)
    trained on `manifest`'s TFRecords: its preprocessing spec, its recipe (the lung model it used
    becomes a checked dependency) and `fields`, the kind's own entries."""
    if kind not in KINDS:
        raise ValueError(f"bundle kind {kind!r} is not one of {KINDS}")
    model_path = Path(model_path)
    recipe = manifest.preprocess.get("recipe")
    recipe = None if recipe is None else dict(recipe)
    depends = {}
    if recipe is not None and isinstance(recipe.get("lung_model"), dict):
        used = recipe.pop("lung_model")
        depends["lung"] = dependency(used["path"], model_path.parent)
        if depends["lung"]["sha256"] != used["sha256"]:
            raise DataError(used["path"], "changed since it cropped the training data (SHA-256 differs)")
        recipe["lung_model"] = "depends.lung"
    height, width, channels = input_shape
    values = {
        "format": BUNDLE_FORMAT,
        "version": BUNDLE_VERSION,
        "kind": kind,
        "model": {"file": model_path.name, "sha256": sha256_file(model_path)},
        **fields,
        "threshold": threshold,
        "input": {"height": height, "width": width, "channels": channels, "scaling": "stored / dtype max"},
        "preprocess": manifest.preprocess.get("spec", ""),
        "recipe": recipe,
        "depends": depends,
        "training_data": {
            "dataset": manifest.dataset,
            "tfrecords": str(manifest.directory),
            "split_file": manifest.split_file,
        },
    }
    return atomic_write_json(model_path.with_name(BUNDLE_NAME), values, default=str)


def read_bundle(model_path: str | Path, kind: str) -> dict[str, Any] | None:
    """The bundle.json beside `model_path`, or None when there is none (an older run folder); a
    bundle of another kind, or a file that is not a bundle, is a DataError."""
    path = Path(model_path).with_name(BUNDLE_NAME)
    if not path.is_file():
        return None
    try:
        values = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise DataError(path, f"not valid JSON ({error})") from error
    found = values.get("format")
    if found in LEGACY_FORMATS:
        values["kind"] = LEGACY_FORMATS[found]
    elif found != BUNDLE_FORMAT:
        raise DataError(path, f"not a model bundle (format {found!r})")
    if values.get("kind") != kind:
        raise DataError(path, f"is the bundle of a {values.get('kind')}, not of a {kind}")
    return values
