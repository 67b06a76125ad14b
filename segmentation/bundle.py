"""A trained segmenter as a self-contained bundle: `bundle.json` (`common.bundle`, kind "segmenter")
beside its `.keras` file.

Every inference path (`segmentation predict`, `evaluate-volumes`, the experiments' evaluation and the
CT report) loads a segmenter through `load_segmenter`. Beside the fields every bundle has (model
checksum, input, threshold, preprocessing spec, CT recipe, dependencies, training data), a segmenter's
bundle names its output channels (label names) and whether they are a softmax.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras

from common.bundle import BUNDLE_NAME, checked_dependency, read_bundle, write_bundle
from common.model_files import load_model_file, require_output_rank
from common.thresholds import ThresholdChoice
from data_prep.ct_recipe import CTRecipe, recipe_from_config
from data_prep.errors import DataError
from tfrecords.manifest import Manifest
from tfrecords.spec import PreprocessSpec

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


def write_segmenter_bundle(
    model: keras.Model,
    model_path: str | Path,
    channel_names: tuple[str, ...],
    multiclass: bool,
    threshold: ThresholdChoice | None,
    manifest: Manifest,
) -> Path:
    """Writes the segmenter's `bundle.json` beside `model_path`; threshold None = fixed 0.5 (argmax for
    a softmax model)."""
    foreground = len(channel_names) - (1 if multiclass else 0)
    choice = threshold or ThresholdChoice.fixed(0.5, foreground)
    fields = {"channel_names": list(channel_names), "multiclass": multiclass}
    return write_bundle(model_path, tuple(model.input_shape[1:]), "segmenter", choice.to_dict(), manifest, fields)


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
    model = load_model_file(model_path, compile=False)  # inference only: no loss or optimizer
    require_output_rank(model, 4, model_path)  # a classifier here would "segment" into nonsense
    outputs = int(model.output_shape[-1])
    bundle = read_bundle(model_path, "segmenter") or _legacy_bundle(model_path, outputs)
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
            lung = load_segmenter(checked_dependency(bundle_path, bundle["depends"]["lung"]))
        elif recipe.crop == "model":
            raise DataError(
                model_path.with_name(BUNDLE_NAME), 'crop rule "model" but no lung model in depends'
            )
    return Segmenter(model, names, multiclass, threshold, spec, recipe, lung)
