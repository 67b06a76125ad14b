"""Typed `pipeline_options` of each composed pipeline (no TensorFlow import: checked when a config loads).

A row's `pipeline_options` mapping is read into its pipeline's dataclass by `pipeline_options(config)`,
strictly: an unknown key names the allowed ones, a wrong type names its path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from common.config import ConfigError, from_dict
from experiments.pipelines.pretrain_args import PRETRAIN_DATASETS

ROW_WEIGHTS = "model.weights"  # a lung segmenter's weights: the row's own `model.weights`
VARIANTS = ("original", "segmented_lung", "without_lung")
INITS = ("nodule", "imagenet", "scratch")


def _one_of(where: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{where}: must be one of {', '.join(allowed)}; got {value!r}")


@dataclass
class LungSegmenterOptions:
    """S4's lung segmenter: decoder `name`, `encoder`, `epochs`, `weights` (default: the row's
    model.weights), extra builder `options`."""

    name: str = "fpn"
    encoder: str = "densenet121"
    epochs: int = 10
    weights: str | None = ROW_WEIGHTS
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class LungThenClassifyOptions:
    """`variant`: the classifier's input, "original", "segmented_lung" or "without_lung"."""

    variant: str = "original"
    lung_segmenter: LungSegmenterOptions = field(default_factory=LungSegmenterOptions)

    def __post_init__(self) -> None:
        _one_of("pipeline_options.variant", self.variant, VARIANTS)


PRETRAIN_MONITORS = ("val_loss", "val_dice")


@dataclass
class PretrainOptions:
    """S0's nodule pretraining: `dataset` (lidc | msd_patches) and its `root`, `mask_names`, `split`,
    `preprocess` (None: the dataset's defaults, `pretrain_args.PRETRAIN_DATASETS`), `epochs`, and
    `monitor`, the validation quantity that picks the checkpoint to transfer: "val_loss" (lowest), or
    "val_dice" (highest; on a short run whose held-out Dice stays 0 every epoch ties keep epoch 1)."""

    dataset: str = "lidc"
    root: str | None = None
    epochs: int = 10
    mask_names: list[str] | None = None
    split: str = "patient"
    preprocess: str | None = None
    monitor: str = "val_loss"

    def __post_init__(self) -> None:
        _one_of("pipeline_options.pretrain.dataset", self.dataset, tuple(PRETRAIN_DATASETS))
        _one_of("pipeline_options.pretrain.monitor", self.monitor, PRETRAIN_MONITORS)


@dataclass
class NoduleTransferOptions:
    """`init`: "nodule" (pretrain on `pretrain`, then transfer), "imagenet" or "scratch"."""

    init: str = "nodule"
    pretrain: PretrainOptions = field(default_factory=PretrainOptions)

    def __post_init__(self) -> None:
        _one_of("pipeline_options.init", self.init, INITS)


@dataclass
class RecogniserOptions:
    """S0's manifestation recogniser: classifier `name`, `epochs` / `learning_rate` (None: the row's
    training settings), `weights`, builder `options`, and the mask size in pixels that counts as present."""

    name: str = "mobilenetv2"
    epochs: int | None = None
    learning_rate: float | None = None
    weights: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    min_pixels: int = 10


@dataclass
class GateSetOptions:
    """S0's second gate set, with lesion-free slices: an image-level classification set (`dataset`,
    `root` read as the row's own data: under the data dir, or its phantoms with data.phantom), stored
    with `preprocess` (None: the row's data.preprocess) at the row's image size; `lesion_free_class`
    names the class whose slices show no manifestation."""

    dataset: str = "image_folder"
    root: str = "ct-covid-classification"
    preprocess: str | None = None
    lesion_free_class: str = "NonCOVID"


@dataclass
class StreamsOptions:
    """S0's streams: the `recogniser`, and `gate_set` (None: the compute saving is measured on the
    test split only)."""

    recogniser: RecogniserOptions = field(default_factory=RecogniserOptions)
    gate_set: GateSetOptions | None = field(default_factory=GateSetOptions)


@dataclass
class UncertaintyOptions:
    """S1's ensemble: classifier `members`, each trained once per seed of `seeds`; `mc_dropout_samples`
    passes for MC dropout."""

    members: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0])
    mc_dropout_samples: int = 20

    def __post_init__(self) -> None:
        if len(self.members) * len(self.seeds) < 2:
            raise ConfigError(
                f"pipeline_options: an ensemble needs at least 2 members x seeds, got members {self.members} "
                f"and seeds {self.seeds}"
            )


@dataclass
class DemoOptions:
    """`parts`: part name -> its `--set` overrides of the demo row."""

    parts: dict[str, list[str]] = field(default_factory=dict)


PIPELINE_OPTIONS: dict[str, type] = {
    "demo": DemoOptions,
    "lung_then_classify": LungThenClassifyOptions,
    "nodule_transfer": NoduleTransferOptions,
    "streams": StreamsOptions,
    "uncertainty": UncertaintyOptions,
}


def pipeline_options(config: Any) -> Any:
    """The row's `pipeline_options` as its pipeline's dataclass (ConfigError naming the key)."""
    if config.pipeline is None:
        if config.pipeline_options:
            raise ConfigError("pipeline_options: set, but the row has no pipeline")
        return None
    return from_dict(PIPELINE_OPTIONS[config.pipeline], dict(config.pipeline_options), "pipeline_options")
