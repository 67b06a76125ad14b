"""Data for a run: the dataset root (real or synthetic phantoms), its split file, and cached TFRecords.

Split modes (`DataConfig.split`):
- "publisher": the set's own splits (a set with none, or with a train split only, is split as
  "patient" below). A set without a validation split gets one carved from its
  training split (patient-wise where ids exist); a set with train/val but no test uses its val split
  as test and carves a new val from train. Thresholds are then always chosen on data that is not test.
- "patient": a fresh patient-wise stratified train/val/test split of all records (seeded).
- "file": `split_file`, a `data_prep.splits` CSV.
TFRecords are cached under `cache_dir/tfrecords/<dataset>-<hash of everything that shapes them>`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from data_prep import phantoms
from data_prep.adapters import open_dataset
from data_prep.splits import load_split, patient_split, save_split
from experiments.config import DataConfig
from experiments.pipelines.ct_recipe import apply_recipe, recipe_from_config
from tfrecords.manifest import MANIFEST_NAME, Manifest, load_manifest
from tfrecords.writer import write_dataset

COLUMNS = ["key", "patient_id", "label", "group_kind", "split"]
PHANTOM_CASES = 8  # volumes (CT) or images per class and split unit (X-ray) of generated phantoms
PHANTOM_KINDS = ("zenodo", "medseg", "covid_qu_ex", "lidc", "image_folder")


@dataclass(frozen=True)
class PreparedData:
    """The manifest of each pooled source (the main one first) and how the split was made."""

    manifests: list[Manifest]
    split_type: str  # "patient-wise", "volume-wise", "image-level", "publisher" ...
    data_scale: str  # "synthetic", "subset" (shared subsets) or "full"


def dataset_root(dataset: str, root: str, data_dir: Path, cache_dir: Path, phantom: bool, seed: int) -> Path:
    """The folder to read: `data_dir/root`, or synthetic phantoms generated (once) into the cache."""
    if not phantom:
        return Path(root) if Path(root).is_absolute() else data_dir / root
    if dataset not in PHANTOM_KINDS:
        raise ValueError(
            f"no synthetic phantoms for dataset {dataset!r}; available: {', '.join(PHANTOM_KINDS)}"
        )
    out = cache_dir / f"phantoms-seed{seed}"
    kind_root = out / dataset
    if not kind_root.is_dir():
        phantoms.generate(out, kinds=(dataset,), n_cases=PHANTOM_CASES, seed=seed)
    return kind_root


def _rows(adapter) -> pd.DataFrame:
    """One row per record: key, group id (the patient id, else the volume id), label, publisher split,
    and the kind of the group id ("patient" or "inferred")."""
    patient_kind = "inferred" if adapter.patient_ids == "inferred" else "patient"
    return pd.DataFrame(
        [
            (
                r.key,
                r.patient_id or r.volume_id,
                "+".join(r.labels) or "none",
                r.split,
                patient_kind if r.patient_id else "inferred",
            )
            for r in adapter.records()
        ],
        columns=["key", "patient_id", "label", "publisher", "kind"],
    )


def _split(rows: pd.DataFrame, val: float, test: float, seed: int) -> pd.DataFrame:
    """Patient-wise (group-wise) stratified split of `_rows` output."""
    grouped = rows[["key", "patient_id", "label", "kind"]].itertuples(index=False)
    return patient_split(grouped, val=val, test=test, seed=seed)[COLUMNS]


def make_split_table(data: DataConfig, root: Path, seed: int) -> tuple[pd.DataFrame | None, str]:
    """(split table or None to use the publisher's splits as they are, the split type in words)."""
    adapter = open_dataset(data.dataset, root)
    grouping = {
        "real": "patient-wise",
        "partial": "partly patient-wise",
        "inferred": "volume-wise",
        "none": "image-level",
    }[adapter.patient_ids]
    if data.split == "file":
        if not data.split_file:
            raise ValueError("data.split is 'file' but data.split_file is not set")
        return load_split(data.split_file), "file"
    rows = _rows(adapter)
    if rows["patient_id"].notna().any() and adapter.patient_ids == "none":
        grouping = "volume-wise"  # no patient ids, but slices of one volume are kept together
    present = set(rows["publisher"].dropna())
    if data.split == "patient" or (data.split == "publisher" and present <= {"train"}):
        return _split(rows, data.val_fraction, data.test_fraction, seed), grouping
    if data.split != "publisher":
        raise ValueError(f"data.split must be publisher, patient or file; got {data.split!r}")
    if {"train", "val", "test"} <= present:
        return None, f"publisher ({grouping})"
    if "train" not in present or not ({"val", "test"} & present):
        raise ValueError(f"{root}: publisher splits {sorted(present)} need train plus val or test")
    test_name = "test" if "test" in present else "val"
    test = rows[rows["publisher"] == test_name].assign(split="test")
    test["group_kind"] = [
        kind if pid else "image" for pid, kind in zip(test["patient_id"], test["kind"], strict=True)
    ]
    train_val = _split(rows[rows["publisher"] == "train"], data.val_fraction, 0.0, seed)
    table = pd.concat([train_val, test[COLUMNS]], ignore_index=True)
    return table, f"publisher {test_name} as test, val carved from train ({grouping})"


def _fingerprint(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]


def prepare_source(
    dataset: str, root: Path, data: DataConfig, cache_dir: Path, seed: int
) -> tuple[Manifest, str]:
    """Writes (or reuses) the TFRecords of one source; returns its manifest and split type."""
    recipe = None
    if data.recipe is not None:  # the recipe resizes to the run's image size
        recipe = dataclasses.replace(recipe_from_config(data.recipe), image_size=data.image_size)
    key = _fingerprint(
        {
            "recipe": None if recipe is None else dataclasses.asdict(recipe),
            "dataset": dataset,
            "root": str(root.resolve()),
            "preprocess": data.preprocess,
            "image_size": data.image_size,
            "split": data.split,
            "split_file": data.split_file,
            "val": data.val_fraction,
            "test": data.test_fraction,
            "seed": seed,
        }
    )
    out = cache_dir / "tfrecords" / f"{dataset}-{key}"
    split_type_file = out / "split_type.txt"
    if (out / MANIFEST_NAME).is_file() and split_type_file.is_file():
        return load_manifest(out), split_type_file.read_text().strip()
    source_config = DataConfig(**{**data.__dict__, "dataset": dataset})
    table, split_type = make_split_table(source_config, root, seed)
    split_file = None
    if table is not None:
        split_file = cache_dir / "splits" / f"{dataset}-{key}.csv"
        split_file.parent.mkdir(parents=True, exist_ok=True)
        save_split(table, split_file)
    manifest = write_dataset(
        dataset,
        root,
        out,
        preprocess=data.preprocess or None,
        split_file=split_file,
        image_size=data.image_size,
        seed=seed,
        records_transform=None if recipe is None else functools.partial(apply_recipe, recipe=recipe),
    )
    split_type_file.write_text(split_type + "\n")
    return manifest, split_type


def prepare_data(data: DataConfig, data_dir: Path, cache_dir: Path, seed: int) -> PreparedData:
    """Every source of `data` (the main dataset, then `extra`) as TFRecords with manifests."""
    sources = [{"dataset": data.dataset, "root": data.root}, *data.extra]
    manifests, split_types = [], []
    for source in sources:
        root = dataset_root(source["dataset"], source["root"], data_dir, cache_dir, data.phantom, seed)
        manifest, split_type = prepare_source(source["dataset"], root, data, cache_dir, seed)
        manifests.append(manifest)
        split_types.append(split_type)
    scale = "synthetic" if data.phantom else ("subset" if "shared" in str(data_dir) else "full")
    return PreparedData(manifests, "; ".join(dict.fromkeys(split_types)), scale)
