"""`tensorflow_datasets` builders for every registered dataset adapter, built offline from a manual folder.

Usage (the dataset's root folder, as its publishers distribute it, is the manual folder):

    import tensorflow_datasets as tfds
    import tfrecords.tfds_builders  # registers one builder per adapter, e.g. "covid_qu_ex"
    ds = tfds.load("covid_qu_ex", split="train", data_dir=DATA_DIR,
                   download_and_prepare_kwargs={"download_config":
                       tfds.download.DownloadConfig(manual_dir=RAW_DIR)})

Builder names are the adapter names with "-" replaced by "_". Features: "image" (H, W, 1) uint8 (uint16
for the "hu16" config) PNG; "masks": name -> (H, W, 1) uint8 {0, 1} PNG (zeros when the record has
none; "has_mask" says which are real); "label" (single-label sets) or "labels" (multi-label sets);
"key", "patient_id", "modality", "source", "path". Splits are the publisher's; a set without one
has a single split "full": split it by patient with `data_prep.splits` (or use `python -m tfrecords
write`). Configs: "default" stores 0-255 images as they are, "minmax" rescales "normalized" float
images per image to 0-255, "hu16" stores HU losslessly (+32768); see `tfrecords.spec`.
Images are PNG-encoded here with OpenCV and handed to TFDS as bytes, which is much faster than
handing it arrays.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds

from data_prep.adapters import dataset_names, get_adapter, open_dataset
from data_prep.adapters.base import DatasetAdapter
from data_prep.records import MANIFESTATIONS, Record
from tfrecords.schema import encode_png
from tfrecords.spec import PreprocessSpec

UNSPLIT = "full"


@dataclasses.dataclass
class AdapterConfig(tfds.core.BuilderConfig):
    """A builder config: `preprocess` is a `tfrecords.spec` string applied to every record."""

    preprocess: str = ""


CONFIGS = (
    AdapterConfig(name="default", description="0-255 display images stored as they are"),
    AdapterConfig(name="minmax", preprocess="minmax", description="float images min-max scaled to 0-255"),
    AdapterConfig(name="hu16", preprocess="hu16", description="HU stored as uint16 (HU + 32768)"),
)


def builder_name(adapter_name: str) -> str:
    return adapter_name.replace("-", "_").lower()


def _is_multilabel(adapter_cls: type[DatasetAdapter]) -> bool:
    return bool(adapter_cls.label_names) and set(adapter_cls.label_names) <= set(MANIFESTATIONS)


class AdapterBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Builds one adapter's records into TFDS files; subclasses set `ADAPTER` (the adapter name)."""

    ADAPTER: ClassVar[str]
    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = list(CONFIGS)
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Download the dataset from its homepage and pass its root folder, unchanged, as manual_dir."
    )

    @property
    def _adapter_cls(self) -> type[DatasetAdapter]:
        return get_adapter(self.ADAPTER)

    @property
    def _spec(self) -> PreprocessSpec:
        return PreprocessSpec.parse(self.builder_config.preprocess)

    def _info(self) -> tfds.core.DatasetInfo:
        adapter_cls = self._adapter_cls
        dtype = np.uint16 if self._spec.stored_dtype == "uint16" else np.uint8
        png = {"shape": (None, None, 1), "encoding_format": "png"}
        features: dict[str, Any] = {
            "image": tfds.features.Image(dtype=dtype, **png),
            "masks": {name: tfds.features.Image(dtype=np.uint8, **png) for name in adapter_cls.mask_names},
            "has_mask": {name: np.bool_ for name in adapter_cls.mask_names},
            **{name: tfds.features.Text() for name in ("key", "patient_id", "modality", "source", "path")},
        }
        supervised_keys = None
        if _is_multilabel(adapter_cls):
            features["labels"] = tfds.features.Sequence(
                tfds.features.ClassLabel(names=adapter_cls.label_names)
            )
        elif adapter_cls.label_names:
            features["label"] = tfds.features.ClassLabel(names=adapter_cls.label_names)
            supervised_keys = ("image", "label")
        return tfds.core.DatasetInfo(
            builder=self,
            description=inspect.getdoc(adapter_cls) or adapter_cls.name,
            features=tfds.features.FeaturesDict(features),
            supervised_keys=supervised_keys,
            homepage=adapter_cls.homepage or None,
            citation=adapter_cls.citation or None,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Iterator]:
        adapter = open_dataset(self.ADAPTER, os.fspath(dl_manager.manual_dir))
        splits = adapter.splits()
        if not splits:
            return {UNSPLIT: self._generate_examples(adapter, None)}
        return {split: self._generate_examples(adapter, split) for split in splits}

    def _generate_examples(self, adapter: DatasetAdapter, split: str | None) -> Iterator[tuple[str, dict]]:
        spec = self._spec
        for record in adapter.records(split):
            yield record.key, self._example(record, spec)

    def _example(self, record: Record, spec: PreprocessSpec) -> dict[str, Any]:
        image, masks = spec.apply(record)
        mask_names = self._adapter_cls.mask_names
        empty = np.zeros(image.shape, np.uint8)
        example: dict[str, Any] = {
            "image": encode_png(image),
            "masks": {name: encode_png(masks.get(name, empty)) for name in mask_names},
            "has_mask": {name: name in masks for name in mask_names},
            "key": record.key,
            "patient_id": record.patient_id or "",
            "modality": record.modality,
            "source": record.source or "",
            "path": record.path,
        }
        if _is_multilabel(self._adapter_cls):
            example["labels"] = list(record.labels)
        elif self._adapter_cls.label_names:
            example["label"] = record.labels[0] if record.labels else -1
        return example


_BUILDERS: dict[str, type[AdapterBuilder]] = {}


def builder_class(adapter_name: str) -> type[AdapterBuilder]:
    """The TFDS builder class of a registered adapter (created and registered with TFDS on first use)."""
    if adapter_name not in _BUILDERS:
        adapter_cls = get_adapter(adapter_name)
        class_name = "".join(part.capitalize() for part in builder_name(adapter_name).split("_"))
        _BUILDERS[adapter_name] = type(
            class_name,
            (AdapterBuilder,),
            {"name": builder_name(adapter_name), "ADAPTER": adapter_cls.name, "__module__": __name__},
        )
    return _BUILDERS[adapter_name]


def register_builders() -> list[str]:
    """Creates the builders of every registered adapter; returns their TFDS names."""
    return [builder_class(name).name for name in dataset_names()]


register_builders()
