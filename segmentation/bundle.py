"""A trained segmenter as a self-contained bundle: `bundle.json` beside its `.keras` file.

The bundle records everything needed to apply the model to a raw file, and every inference path
(`segmentation predict`, `evaluate-volumes`, the experiments' evaluation and the CT report) loads it
through `load_segmenter`:
- the model file and its SHA-256;
- the output channels (label names), softmax or sigmoid, and the validation-chosen thresholds;
- the input: size, channels and scaling (stored integer image / its dtype's maximum -> [0, 1]);
- the write-time preprocessing spec and the CT recipe with every parameter (trim fraction, window,
  CLAHE, crop rule, margin and jitter, resize), or null;
- the models it depends on (the lung model whose predicted mask gives a "model"-rule crop), by path
  relative to the bundle's folder and SHA-256; loading fails when a dependency's checksum differs.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras

from common.atomic import atomic_write_json
from common.model_files import load_model_file, require_output_rank
from common.thresholds import ThresholdChoice
from data_prep.ct_recipe import CTRecipe, recipe_from_config
from data_prep.errors import DataError
from tfrecords.manifest import sha256_file
from tfrecords.spec import PreprocessSpec

BUNDLE_NAME = "bundle.json"
BUNDLE_FORMAT = "covid-repro segmenter bundle"
BUNDLE_VERSION = 1
GEOMETRIC_STEPS = ("resize",)


@dataclass(frozen=True)
class Segmenter:
    """A trained model with what is needed to apply it.

    channel_names: one per output channel ("background" first for softmax models).
    threshold: per-channel thresholds for sigmoid outputs (ignored for softmax: argmax).
    preprocess: the write-time preprocessing spec of the training data (used without a recipe).
    recipe: the CT recipe its training data went through, replayed on every input; None = none.
    lung: the lung segmenter whose predicted masks give the crop of recipe rule "model".
    """

    model: keras.Model
    channel_names: tuple[str, ...]
    multiclass: bool
    threshold: ThresholdChoice
    preprocess: PreprocessSpec
    recipe: CTRecipe | None = None
    lung: Segmenter | None = None

    @property
    def input_size(self) -> tuple[int, int]:
        return tuple(self.model.input_shape[1:3])

    @property
    def channels(self) -> int:
        return int(self.model.input_shape[-1])


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


def write_bundle(
    model_path: str | Path,
    channel_names: tuple[str, ...],
    multiclass: bool,
    threshold: ThresholdChoice | None,
    preprocess: str,
    recipe: dict[str, Any] | None,
    training_data: dict[str, Any],
) -> Path:
    """Writes `bundle.json` beside `model_path` (atomically). recipe: the manifest's recipe record,
    with its lung dependency as {"path", "sha256"} (`dependency`); threshold None = fixed 0.5."""
    model_path = Path(model_path)
    model = keras.saving.load_model(model_path)
    foreground = len(channel_names) - (1 if multiclass else 0)
    choice = threshold or ThresholdChoice.fixed(0.5, foreground)
    recipe = None if recipe is None else dict(recipe)
    depends = {}
    if recipe is not None and isinstance(recipe.get("lung_model"), dict):
        used = recipe.pop("lung_model")
        depends["lung"] = dependency(used["path"], model_path.parent)
        if depends["lung"]["sha256"] != used["sha256"]:
            raise DataError(used["path"], "changed since it cropped the training data (SHA-256 differs)")
        recipe["lung_model"] = "depends.lung"
    height, width, channels = model.input_shape[1:]
    values = {
        "format": BUNDLE_FORMAT,
        "version": BUNDLE_VERSION,
        "model": {"file": model_path.name, "sha256": sha256_file(model_path)},
        "channel_names": list(channel_names),
        "multiclass": multiclass,
        "threshold": choice.to_dict(),
        "input": {"height": height, "width": width, "channels": channels, "scaling": "stored / dtype max"},
        "preprocess": preprocess,
        "recipe": recipe,
        "depends": depends,
        "training_data": training_data,
    }
    path = model_path.with_name(BUNDLE_NAME)
    return atomic_write_json(path, values, default=str)


def read_bundle(model_path: str | Path) -> dict[str, Any] | None:
    """The bundle.json beside `model_path`, or None when there is none (an older run folder)."""
    path = Path(model_path).with_name(BUNDLE_NAME)
    if not path.is_file():
        return None
    try:
        values = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise DataError(path, f"not valid JSON ({error})") from error
    if values.get("format") != BUNDLE_FORMAT:
        raise DataError(path, f"not a segmenter bundle (format {values.get('format')!r})")
    return values


def _legacy_bundle(model_path: Path, outputs: int) -> dict[str, Any]:
    """The bundle of a run folder from before bundles: config.json and threshold.json."""
    run_dir = model_path.parent
    config = json.loads((run_dir / "config.json").read_text()) if (run_dir / "config.json").is_file() else {}
    saved = run_dir / "threshold.json"
    return {
        "channel_names": config.get("channel_names", [f"channel{k}" for k in range(outputs)]),
        "multiclass": bool(config.get("multiclass", False)),
        "threshold": json.loads(saved.read_text()) if saved.is_file() else None,
        "preprocess": config.get("preprocess", ""),
        "recipe": None,
        "depends": {},
    }


def _checked_dependency(bundle_path: Path, entry: dict[str, str]) -> Path:
    path = (bundle_path.parent / entry["path"]).resolve()
    if not path.is_file():
        raise DataError(bundle_path, f"depends on {path}, which does not exist")
    if sha256_file(path) != entry["sha256"]:
        raise DataError(bundle_path, f"depends on {path}, whose SHA-256 differs from the recorded one")
    return path


def load_segmenter(
    model_path: str | Path,
    threshold: ThresholdChoice | str | Path | None = None,
    preprocess: str | None = None,
) -> Segmenter:
    """Loads a `.keras` model with its bundle (`bundle.json`, else the run folder's config.json /
    threshold.json beside it) and, recursively, the models the bundle depends on.

    threshold: a choice, a threshold.json path, or None for the bundle's (else fixed 0.5).
    preprocess: a spec string replacing the bundle's (for models without a recipe).
    """
    model_path = Path(model_path)
    model = load_model_file(model_path)
    require_output_rank(model, 4, model_path)  # a classifier here would "segment" into nonsense
    outputs = int(model.output_shape[-1])
    bundle = read_bundle(model_path) or _legacy_bundle(model_path, outputs)
    names = tuple(bundle["channel_names"])
    multiclass = bool(bundle["multiclass"])
    foreground = outputs - 1 if multiclass else outputs
    if threshold is None:
        saved = bundle.get("threshold")
        threshold = ThresholdChoice.from_dict(saved) if saved else ThresholdChoice.fixed(0.5, foreground)
    elif not isinstance(threshold, ThresholdChoice):
        threshold = ThresholdChoice.load(threshold)
    spec = PreprocessSpec.parse(bundle["preprocess"] if preprocess is None else preprocess)
    if any(step.name == "lungcrop" for step in spec.steps):
        raise ValueError(f"preprocess {spec} crops to the lungs; predict supports whole images only")
    spec = PreprocessSpec(tuple(step for step in spec.steps if step.name not in GEOMETRIC_STEPS))
    recipe, lung = None, None
    if bundle.get("recipe") is not None:
        values = {key: value for key, value in bundle["recipe"].items() if key != "lung_model"}
        recipe = recipe_from_config(values)
        if "lung" in bundle.get("depends", {}):
            bundle_path = model_path.with_name(BUNDLE_NAME)
            lung = load_segmenter(_checked_dependency(bundle_path, bundle["depends"]["lung"]))
        elif recipe.crop == "model":
            raise DataError(
                model_path.with_name(BUNDLE_NAME), 'crop rule "model" but no lung model in depends'
            )
    return Segmenter(model, names, multiclass, threshold, spec, recipe, lung)
