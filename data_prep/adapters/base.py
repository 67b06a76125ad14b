"""The adapter interface and the registry of datasets by name."""

from __future__ import annotations

import abc
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

from data_prep.errors import DataError
from data_prep.phantoms import is_synthetic
from data_prep.records import Record, Volume

_REGISTRY: dict[str, type[DatasetAdapter]] = {}


class DatasetAdapter(abc.ABC):
    """Reads one public dataset in the layout its publishers distribute.

    Construct with the dataset's root folder; the constructor checks the layout and raises
    `DataError` naming the folder when it is not recognised. `synthetic` is True for phantoms written
    by `data_prep.phantoms` (records carry it). `records()` yields 2D `Record`s in a
    deterministic order (sorted by key).
    """

    name: ClassVar[str]
    modality: ClassVar[str]  # "ct" or "xray"; "mixed" for sets with both
    label_names: ClassVar[tuple[str, ...]] = ()  # class labels a record can carry
    mask_names: ClassVar[tuple[str, ...]] = ()  # masks a record can carry
    patient_ids: ClassVar[str] = "none"  # one of records.PATIENT_ID_KINDS
    homepage: ClassVar[str] = ""
    citation: ClassVar[str] = ""
    orientation: ClassVar[str | None] = None  # how 2D images are oriented, in words, where known
    # mask name -> the labels whose records must have it non-empty (None: every record); for `inspect`.
    expected_nonempty: ClassVar[dict[str, tuple[str, ...] | None]] = {}
    # records in the complete published release (None: not known); `data_scale` compares with it
    release_records: ClassVar[int | None] = None

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(self.root, f"not a folder; expected the {self.name} dataset root")
        self.synthetic = is_synthetic(self.root)  # a phantom written by data_prep.phantoms

    @abc.abstractmethod
    def records(self, split: str | None = None) -> Iterator[Record]:
        """Yields the 2D records, of one publisher split ("train"/"val"/"test") or of all."""

    def splits(self) -> tuple[str, ...]:
        """The publisher's splits present under `root`; () when the set has none."""
        return ()

    def volumes(self) -> Iterator[Volume]:
        """Yields whole 3D volumes; only volume datasets implement it."""
        raise NotImplementedError(f"{self.name} is not a volume dataset")

    def release_coverage(self, n_records: int | None = None) -> str | None:
        """ "subset" or "full": how much of the published release `root` holds, by `release_records`
        (adapters whose layout shows it say so instead); None where the release size is not known.
        n_records: the records read from `root` (counted with `records()` when None)."""
        if self.release_records is None:
            return None
        count = n_records if n_records is not None else sum(1 for _ in self.records())
        return "subset" if count < self.release_records else "full"

    def data_scale(self, n_records: int | None = None) -> str:
        """ "synthetic" (phantoms), "subset", "full", or "unknown" (the release size is not known)."""
        if self.synthetic:
            return "synthetic"
        return self.release_coverage(n_records) or "unknown"


def register(cls: type[DatasetAdapter]) -> type[DatasetAdapter]:
    """Class decorator: makes an adapter available by `cls.name`."""
    _REGISTRY[cls.name] = cls
    return cls


def get_adapter(name: str) -> type[DatasetAdapter]:
    if name not in _REGISTRY:
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def dataset_names() -> list[str]:
    return sorted(_REGISTRY)


def open_dataset(name: str, root: str | Path, **options: object) -> DatasetAdapter:
    """The adapter `name` on `root`; `options` go to its constructor (e.g. `part` for covid_qu_ex)."""
    return get_adapter(name)(root, **options)
