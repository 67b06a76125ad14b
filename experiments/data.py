"""Data for a run: the dataset root (real or synthetic phantoms), its split file, and cached TFRecords.

Split modes (`DataConfig.split`):
- "publisher": the set's own splits (a set with none, or with a train split only, is split as
  "patient" below). A set without a validation split gets one carved from its
  training split (patient-wise where ids exist); a set with train/val but no test uses its val split
  as test and carves a new val from train. Thresholds are then always chosen on data that is not test.
- "patient": a fresh patient-wise stratified train/val/test split of all records (seeded).
- "file": `split_file`, a `data_prep.splits` CSV.
With `folds` set, the cases (patients, else volumes) are dealt into that many folds instead, and fold
k's table tests the cases of fold k, validates on `val_fraction` of the other cases (at least one) and
trains on the rest (`fold_table`): over the k folds every case is tested exactly once.
A CT recipe (`data_prep.ct_recipe`) is applied per split: training records may be cropped with their
labels, validation and test records only through the label-free inference chain, with the lung
model named by the caller for rule "model".
TFRecords are cached under `cache_dir/tfrecords/<dataset>-<hash of everything that shapes them>`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from common.atomic import atomic_write_text
from common.config import DataConfig
from data_prep import phantoms
from data_prep.adapters import open_dataset
from data_prep.ct_recipe import CTRecipe, apply_recipe, recipe_from_config
from data_prep.splits import (
    POLICY_COLUMNS,
    TABLE_COLUMNS,
    check_no_leakage,
    kfold_split,
    load_split,
    policy_split,
    save_split,
)
from segmentation.bundle import load_segmenter
from segmentation.predict import lung_predictor
from tfrecords.manifest import MANIFEST_NAME, Manifest, load_manifest, sha256_file
from tfrecords.writer import write_dataset

PHANTOM_CASES = 8  # volumes (CT) or images per class and split unit (X-ray) of generated phantoms
PHANTOM_KINDS = ("zenodo", "medseg", "covid_qu_ex", "lidc", "image_folder")


@dataclass(frozen=True)
class PreparedData:
    """The manifest of each pooled source (the main one first) and how the split was made."""

    manifests: list[Manifest]
    split_type: str  # "patient-wise", "volume-wise", "image-level", "publisher" ...
    data_scale: str  # per source: "synthetic", "subset", "full" or "unknown" (`source_scale`)


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
        columns=list(POLICY_COLUMNS),
    )


CV_PROTOCOLS = {
    "rest": "fold k is tested; the other folds train (less the validation cases): each case tested once",
    "ma_task1": "Ma et al.'s Task 1: fold k trains (less one validation case); the other folds are tested",
}


def fold_table(
    rows: pd.DataFrame, folds: int, fold: int, val_fraction: float, seed: int, protocol: str = "rest"
) -> pd.DataFrame:
    """Fold `fold` of a case-wise k-fold split of `_rows` output; column "fold" = each case's fold.

    protocol "rest": split "test" = the cases of that fold, "val" = max(1, round(val_fraction x the
    other cases)) of the other cases (seeded), "train" = the rest. "ma_task1" (Ma et al. 2021, 20
    cases: 4 train / 16 test): "train" = the fold's cases less one "val" case (seeded), "test" = all
    other cases.
    """
    if not 0 <= fold < folds:
        raise ValueError(f"fold must be in 0..{folds - 1}, got {fold}")
    if protocol not in CV_PROTOCOLS:
        raise ValueError(f"cv protocol must be one of {', '.join(CV_PROTOCOLS)}; got {protocol!r}")
    grouped = rows[["key", "patient_id", "label", "kind"]].itertuples(index=False)
    table = kfold_split(grouped, folds=folds, test=0.0, seed=seed)
    cases = table[["patient_id", "fold"]].drop_duplicates("patient_id")
    in_fold = cases["fold"] == fold
    training = sorted(cases.loc[~in_fold if protocol == "rest" else in_fold, "patient_id"])
    if len(training) < 2:
        raise ValueError(f"fold {fold}: fewer than 2 cases to train and validate on")
    count = (
        1 if protocol == "ma_task1" else min(max(1, round(val_fraction * len(training))), len(training) - 1)
    )
    val = set(np.random.default_rng([seed, fold]).permutation(training)[:count])
    table["split"] = np.where(
        ~table["patient_id"].isin(training), "test", np.where(table["patient_id"].isin(val), "val", "train")
    )
    check_no_leakage(table)
    return table[[*TABLE_COLUMNS, "fold"]]


def make_split_table(
    data: DataConfig, root: Path, seed: int, fold: int | None = None
) -> tuple[pd.DataFrame | None, str]:
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
    if data.folds:
        if fold is None:
            raise ValueError(f"data.folds is {data.folds}: say which fold to prepare")
        table = fold_table(rows, data.folds, fold, data.val_fraction, seed, data.cv_protocol)
        return table, f"{grouping} {data.folds}-fold cross-validation ({data.cv_protocol})"
    table, source = policy_split(
        rows, data.split, data.val_fraction, data.test_fraction, seed, complete=True, where=root
    )
    if source == "publisher":
        return None, f"publisher ({grouping})"  # the writer reads the records' own splits
    return table, grouping if source == "patient-wise" else f"{source} ({grouping})"


def _fingerprint(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _recipe_transform(
    recipe: CTRecipe, table: pd.DataFrame | None, lung_model: Path | None, seed: int
) -> tuple[functools.partial, dict]:
    """(the records transform of a recipe, its record for the manifest): splits from `table` (else
    the records' own), the lung model's predictions for rule "model" crops outside training."""
    predictor = None
    record = recipe.to_dict()
    if recipe.crop == "model":
        if lung_model is None:
            raise ValueError('CT recipe crop "model" needs data.recipe.lung_model (a lung model bundle)')
        predictor = lung_predictor(load_segmenter(lung_model))
        record["lung_model"] = {"path": str(Path(lung_model).resolve()), "sha256": sha256_file(lung_model)}
    split_of = None if table is None else dict(zip(table["key"], table["split"], strict=True))
    transform = functools.partial(
        apply_recipe, recipe=recipe, lung_predictor=predictor, split_of=split_of, seed=seed
    )
    return transform, record


def prepare_source(
    dataset: str,
    root: Path,
    data: DataConfig,
    cache_dir: Path,
    seed: int,
    fold: int | None = None,
    lung_model: Path | None = None,
) -> tuple[Manifest, str]:
    """Writes (or reuses) the TFRecords of one source (one fold of a cross-validation); returns its
    manifest and split type. lung_model: the lung bundle of a recipe's "model" crop."""
    recipe = None
    if data.recipe is not None:  # the recipe resizes to the run's image size
        recipe = dataclasses.replace(recipe_from_config(data.recipe), image_size=data.image_size)
    key = _fingerprint(
        {
            "recipe": None if recipe is None else recipe.to_dict(),
            "lung_model": None if lung_model is None else sha256_file(lung_model),
            "dataset": dataset,
            "root": str(root.resolve()),
            "preprocess": data.preprocess,
            "image_size": data.image_size,
            "split": data.split,
            "split_file": data.split_file,
            "val": data.val_fraction,
            "test": data.test_fraction,
            "folds": data.folds,
            "fold": fold,
            "cv_protocol": data.cv_protocol,
            "seed": seed,
        }
    )
    out = cache_dir / "tfrecords" / f"{dataset}-{key}"
    split_type_file = out / "split_type.txt"
    if (out / MANIFEST_NAME).is_file() and split_type_file.is_file():
        return load_manifest(out), split_type_file.read_text().strip()
    source_config = DataConfig(**{**data.__dict__, "dataset": dataset})
    table, split_type = make_split_table(source_config, root, seed, fold)
    split_file = None
    if table is not None:
        split_file = cache_dir / "splits" / f"{dataset}-{key}.csv"
        split_file.parent.mkdir(parents=True, exist_ok=True)
        save_split(table, split_file)
    transform, transform_record = (None, None)
    if recipe is not None:
        transform, transform_record = _recipe_transform(recipe, table, lung_model, seed)
    manifest = write_dataset(
        dataset,
        root,
        out,
        preprocess=data.preprocess or None,
        split_file=split_file,
        image_size=data.image_size,
        seed=seed,
        records_transform=transform,
        transform_record=transform_record,
    )
    atomic_write_text(split_type_file, split_type + "\n")
    return manifest, split_type


def prepare_data(
    data: DataConfig,
    data_dir: Path,
    cache_dir: Path,
    seed: int,
    fold: int | None = None,
    lung_model: Path | None = None,
) -> PreparedData:
    """Every source of `data` (the main dataset, then `extra`) as TFRecords with manifests; with
    `data.folds`, those of cross-validation fold `fold`."""
    manifests, split_types, scales = [], [], []
    for dataset, root in source_roots(data, data_dir, cache_dir, seed):
        manifest, split_type = prepare_source(dataset, root, data, cache_dir, seed, fold, lung_model)
        manifests.append(manifest)
        split_types.append(split_type)
        scales.append(source_scale(dataset, root, manifest))
    return PreparedData(manifests, "; ".join(dict.fromkeys(split_types)), "; ".join(dict.fromkeys(scales)))


def source_roots(data: DataConfig, data_dir: Path, cache_dir: Path, seed: int) -> list[tuple[str, Path]]:
    """(dataset, root folder) of each source of `data`: the main dataset, then `extra`."""
    sources = [{"dataset": data.dataset, "root": data.root}, *data.extra]
    return [
        (s["dataset"], dataset_root(s["dataset"], s["root"], data_dir, cache_dir, data.phantom, seed))
        for s in sources
    ]


def source_scale(dataset: str, root: Path, manifest: Manifest | None = None) -> str:
    """How much of its published release one source holds, from its adapter ("synthetic", "subset",
    "full" or "unknown"); the manifest's record count where given, else the adapter counts."""
    count = None if manifest is None else sum(info.count for info in manifest.splits.values())
    return open_dataset(dataset, root).data_scale(count)


def data_scale(data: DataConfig, data_dir: Path, cache_dir: Path, seed: int) -> str:
    """`source_scale` of every source of `data`, joined with "; " where they differ."""
    roots = source_roots(data, data_dir, cache_dir, seed)
    return "; ".join(dict.fromkeys(source_scale(dataset, root) for dataset, root in roots))


def data_record(prepared: PreparedData) -> dict:
    """The run record's data section: split type, data scale, and each manifest's shards and counts."""
    return {
        "split_type": prepared.split_type,
        "data_scale": prepared.data_scale,
        "manifests": [
            {
                "directory": str(m.directory),
                "dataset": m.dataset,
                "split_file": m.split_file,
                "shards": {split: [s.sha256 for s in info.shards] for split, info in m.splits.items()},
                "counts": {split: info.count for split, info in m.splits.items()},
            }
            for m in prepared.manifests
        ],
    }
