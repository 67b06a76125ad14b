"""The one typed config tree of every run: `data`, `model`, `training`, `evaluation`, `runtime`.

A `TaskConfig` is what `classification` and `segmentation` train, evaluate and record; an
`experiments.config.ExperimentConfig` is a `TaskConfig` plus the row's name, paper and pipeline.
Loading is strict: `from_dict` rejects unknown keys by name with the allowed ones. No TensorFlow import
(configs load before any run starts).
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Any

import yaml

from common.training_config import TrainingConfig

STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker_mirrored", "tpu")
TASKS = ("binary", "multiclass", "multilabel", "segmentation")


class ConfigError(ValueError):
    """A config file or override that does not match the dataclasses (one line, names the key)."""


@dataclass
class DataConfig:
    """Which records to read, how to store them as TFRecords, and how to feed them.

    dataset: a `data_prep` adapter name; root: its folder, relative to --data-dir unless absolute.
    extra: more {dataset, root} sources pooled with the first (e.g. CT + X-ray for S0).
    split: "publisher" (the set's own splits), "patient" (patient-wise, seeded) or "file" (`split_file`).
    preprocess: the `tfrecords` preprocessing spec, e.g. "window=lung,clahe"; image_size: pixels (square).
    recipe: a CT volume recipe of `data_prep.ct_recipe` applied before `preprocess` (by name,
      e.g. "s3": keep the middle 50% of slices, lung window, CLAHE, lung ROI crop; or a mapping
      {name: s3, keep_fraction: 0.6, ...}); None = none.
    batch_size: per replica; the runner multiplies it by the number of replicas (the global batch).
    steps_per_epoch: segmentation only: repeat the training split and take this many batches per epoch
      (more BatchNorm updates per epoch on tiny sets); None = one pass.
    label_names / label_map: the run's classes and how source labels map onto them.
    augment: `tfrecords.augment.AugmentConfig` fields; empty = no augmentation.
    phantom: read synthetic phantoms generated in the dataset's layout instead of `root`.
    tfrecords: the TFRecord folders to read (written by `python -m tfrecords write`); the runner fills it
      from `dataset`/`root`, the package command lines take it from --data. Several folders (CT + X-ray)
      are mixed by sampling in proportion to their sizes.
    splits: the manifest split names used for training, validation (model and threshold choice) and test.
    positive_label: "binary" only; the class whose probability the model outputs (default: the first
      of `label_names`, else the manifest's first label).
    cache: keep decoded examples in memory after the first pass.
    balanced_sampling: classifiers: draw every class equally often in training (instead of class weights).
    mask_label_min_pixels: "multilabel" only: each class is the mask of the same name, present in an
      image when that mask has at least this many pixels at the stored resolution (the S0 recogniser).
    folds: k-fold cross-validation by case (patient, else volume): fold k tests the cases of fold k,
      validates on `val_fraction` of the others (at least one case) and trains on the rest, so every
      case is tested exactly once; None = one split as `split` says.
    cv_protocol: "rest" (as above) or "ma_task1" (Ma et al.'s Task 1 on the full 20-case download:
      fold k trains on its own 4 cases, one of them for validation, and the 16 others are tested).
    """

    dataset: str = "covid_qu_ex"
    root: str = "cxr-covid-qu-ex"
    extra: list[dict[str, str]] = field(default_factory=list)
    split: str = "publisher"
    split_file: str | None = None
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    preprocess: str = ""
    recipe: str | dict[str, Any] | None = None
    image_size: int = 128
    channels: int = 1
    batch_size: int = 8
    steps_per_epoch: int | None = None
    augment: dict[str, Any] = field(default_factory=dict)
    mask_names: list[str] = field(default_factory=list)
    label_names: list[str] = field(default_factory=list)
    label_map: dict[str, str] = field(default_factory=dict)
    phantom: bool = False
    folds: int | None = None
    cv_protocol: str = "rest"
    tfrecords: list[str] = field(default_factory=list)
    splits: dict[str, str] = field(default_factory=lambda: {"train": "train", "val": "val", "test": "test"})
    positive_label: str | None = None
    cache: bool = True
    balanced_sampling: bool = False
    mask_label_min_pixels: int | None = None


@dataclass
class ModelConfig:
    """task: "binary", "multiclass", "multilabel" or "segmentation".

    Classifiers: `name` is a `classification.models` name. Segmenters: `name` is the decoder, `encoder`
    the backbone, `multiclass` a softmax over background + masks (else one sigmoid per mask).
    weights: None, "imagenet" or a weights file; loss / loss_options / class_weights: a
    `segmentation.losses` name, its options and per-channel weights (segmenters); dropout: the
    classifier head's dropout; batchnorm_momentum: overrides every BatchNormalization momentum (None: the
    model's own; 0.9 suits short from-scratch runs, `common.training.set_batchnorm_momentum`);
    options: extra keyword options of the model builder.
    """

    task: str = "binary"
    name: str = "mobilenetv2"
    encoder: str | None = None
    weights: str | None = None
    multiclass: bool = False
    loss: str = "bce_dice"
    loss_options: dict[str, Any] = field(default_factory=dict)
    class_weights: list[float] | None = None
    dropout: float = 0.2
    batchnorm_momentum: float | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class EvalConfig:
    """How the threshold is chosen (always on the validation split) and how the test split is scored.

    criterion: classifiers: the validation rule for the decision threshold ("youden", ...);
    threshold_average: segmenters: the Dice the validation threshold maximises, "per_image", "pooled"
    or "per_case"; bootstrap_resamples: resamples of the 95% bootstrap CIs (by patient where known);
    published: keys into experiments/published.yaml.
    """

    criterion: str = "youden"
    threshold_average: str = "per_image"
    bootstrap_resamples: int = 1000
    published: list[str] = field(default_factory=list)


@dataclass
class RuntimeConfig:
    """strategy: one of STRATEGIES; precision: "auto" (by the hardware, `common.mixed_precision`),
    "mixed_bfloat16", "mixed_float16" or "float32". deterministic: same command, same numbers on one
    machine: TensorFlow op determinism, every random seed set from `seed`, and the training input in a
    fixed (seeded) order with tf.data autotuning off (slower input)."""

    strategy: str = "auto"
    precision: str = "auto"
    seed: int = 0
    deterministic: bool = False


@dataclass
class TaskConfig:
    """Everything one training + evaluation run reads (see the section classes)."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    @property
    def channel_names(self) -> tuple[str, ...]:
        """Segmenters: one output channel per mask, after "background" for a softmax model."""
        masks = tuple(self.data.mask_names or ("infection",))
        return (("background",) if self.model.multiclass else ()) + masks


def replaced(config: Any, **changes: Any) -> Any:
    """A copy of a config dataclass with dotted-key changes, e.g. replaced(c, **{"data.batch_size": 4})."""
    nested: dict[str, dict[str, Any]] = {}
    direct: dict[str, Any] = {}
    for key, value in changes.items():
        section, _, rest = key.partition(".")
        if rest:
            nested.setdefault(section, {})[rest] = value
        else:
            direct[key] = value
    for section, values in nested.items():
        direct[section] = replaced(getattr(config, section), **values)
    return dataclasses.replace(config, **direct)


def load_yaml(path: Any) -> dict[str, Any]:
    """A YAML file's top-level mapping; ConfigError naming the file otherwise."""
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: no such config file")
    try:
        with open(path, encoding="utf-8") as handle:
            values = yaml.safe_load(handle) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"{path}: cannot read YAML ({error})".replace("\n", " ")) from error
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return values


def load_task_config(path: Any, overrides: list[str] = ()) -> TaskConfig:
    """A `TaskConfig` YAML file (sections data, model, training, evaluation, runtime) with `--set`
    overrides applied (see `apply_overrides`)."""
    values = apply_overrides(load_yaml(path), list(overrides))
    try:
        return from_dict(TaskConfig, values)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from error


def _convert(value: Any, annotation: Any, where: str) -> Any:
    """Converts a YAML value to `annotation`, recursing into dataclasses; raises ConfigError."""
    origin = typing.get_origin(annotation)
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(annotation, value, where)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(value, option, where)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0])
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item_type,) = typing.get_args(annotation)
        return [_convert(item, item_type, f"{where}[{i}]") for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if annotation is Any:
        return value
    if annotation is float and isinstance(value, (int, str)) and not isinstance(value, bool):
        try:
            return float(value)  # YAML 1.1 reads "1e-4" as a string
        except ValueError:
            raise ConfigError(f"{where}: expected float, got {value!r}") from None
    if annotation is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, annotation) or (annotation is int and isinstance(value, bool)):
        raise ConfigError(f"{where}: expected {annotation.__name__}, got {value!r}")
    return value


def from_dict(cls: type, values: dict[str, Any], where: str = "config") -> Any:
    """Builds dataclass `cls` from a mapping, rejecting unknown keys by name."""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}"
        )
    kwargs = {key: _convert(value, hints[key], f"{where}.{key}") for key, value in values.items()}
    try:
        return cls(**kwargs)
    except TypeError as error:  # a required field is missing
        raise ConfigError(f"{where}: {error}") from error


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Applies `a.b.c=value` overrides (values parsed as YAML) to a nested mapping, in place."""
    for override in overrides:
        dotted, separator, raw = override.partition("=")
        if not separator or not dotted:
            raise ConfigError(f"--set {override!r}: expected KEY=VALUE, e.g. training.epochs=2")
        *parents, leaf = dotted.split(".")
        node = values
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {override!r}: {part} is not a section")
        try:
            node[leaf] = yaml.safe_load(raw)
        except yaml.YAMLError as error:
            raise ConfigError(f"--set {override!r}: not valid YAML ({error})") from error
    return values


