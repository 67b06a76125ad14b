"""k-fold cross-validation by case for segmentation rows, scored on whole held-out volumes.

`data.folds: k` deals the cases (patients, else volumes) into k folds (`experiments.data.fold_table`).
Fold i (protocol "rest") trains on the other folds less one validation case, chooses its threshold on that case, writes
a self-contained model bundle in `fold-<i>/`, and is scored on the whole volumes of its test cases
through the bundle (`segmentation.volume_eval`, the `segmentation predict` path): 3-D Dice, NSD,
HD95 and volumes per case, Dice per slice. Over the k folds every case is tested exactly once; the
run's summary gives the per-case mean with its SD and a bootstrap CI over all cases.

A recipe crop by rule "model" names its lung model `run:<row>`: fold i then uses `fold-<i>` of that
row's latest run, which must have been trained on no case that fold i tests.
A finished fold (`fold-<i>/eval/cases.csv`) is kept when the run resumes. `fold-<i>/timing.json`
holds the wall and CPU seconds (all threads of the process) of training and of evaluation.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from common.bootstrap import ci_entry
from data_prep.adapters import open_dataset
from data_prep.io import write_nifti
from experiments.data import CV_PROTOCOLS, data_record, dataset_root, make_split_table, prepare_data
from experiments.run_folder import write_json
from experiments.tasks import Summary, task_config
from segmentation.bundle import load_segmenter
from segmentation.train import train_segmenter
from segmentation.volume_eval import (
    VolumeEvaluation,
    VolumePair,
    evaluate_volumes,
    summarize,
    worst_case_montage,
    write_evaluation,
)

RUN_PREFIX = "run:"
# summary.json key -> (volume_eval summary metric, its statistic: "value" is the mean with its CI)
SUMMARY_KEYS = {
    "dice_per_case": ("dice", "value"),
    "dice_per_case_sd": ("dice", "sd"),
    "nsd_per_case": ("nsd", "value"),
    "hd95_per_case": ("hd95_mm", "value"),
    "dice_per_image": ("slice_dice", "value"),
}


def split_cases(table: pd.DataFrame) -> dict[str, list[str]]:
    """{split: sorted case ids} of a split table."""
    return {str(split): sorted(set(group["patient_id"])) for split, group in table.groupby("split")}


def resolve_lung_model(recipe: Any, run_dir: Path, fold: int, test_cases: list[str]) -> Path | None:
    """The lung bundle of fold `fold` named by a recipe's `lung_model` (a path, or `run:<row>` for
    `fold-<fold>` of that row's latest run beside this one, which must not have trained on a case
    this fold tests)."""
    name = recipe.get("lung_model") if isinstance(recipe, dict) else None
    if name is None:
        return None
    if not name.startswith(RUN_PREFIX):
        return Path(name)
    row = name.removeprefix(RUN_PREFIX)
    fold_dir = (run_dir.parent.parent / row / "latest").resolve() / f"fold-{fold}"
    model = fold_dir / "best.keras"
    if not model.is_file():
        raise FileNotFoundError(f"{model}: run `python -m experiments run {row}` with the same folds first")
    seen = json.loads((fold_dir / "cases.json").read_text())
    overlap = sorted(set(test_cases) & (set(seen.get("train", [])) | set(seen.get("val", []))))
    if overlap:
        raise ValueError(f"{model} was trained on {overlap}, which fold {fold} tests: the folds differ")
    return model


def export_cases(dataset: str, root: Path, cases: list[str], out: Path, mask: str) -> list[VolumePair]:
    """Writes the canonical volumes of `cases` (patient ids) and their `mask` as NIfTI pairs
    (`images/<volume>.nii.gz`, `<mask>/<volume>.nii.gz`, with the adapter's affine) once; returns them."""
    pairs = []
    for volume in open_dataset(dataset, root).volumes():
        if (volume.patient_id or volume.key) not in cases:
            continue
        image, label = out / "images" / f"{volume.key}.nii.gz", out / mask / f"{volume.key}.nii.gz"
        if not label.is_file():
            image.parent.mkdir(parents=True, exist_ok=True)
            label.parent.mkdir(parents=True, exist_ok=True)
            write_nifti(image, volume.image, volume.affine)
            write_nifti(label, volume.masks[mask].astype(np.uint8), volume.affine)
        pairs.append(VolumePair(volume.key, image, label))
    return pairs


def run_fold(context: Any, fold: int) -> VolumeEvaluation:
    """Trains fold `fold` in `run_dir/fold-<fold>` and scores its test volumes through its bundle."""
    config = context.config
    data, seed = config.data, config.runtime.seed
    fold_dir = context.run_dir / f"fold-{fold}"
    fold_dir.mkdir(parents=True, exist_ok=True)
    mask = (data.mask_names or ["infection"])[0]
    root = dataset_root(data.dataset, data.root, context.data_dir, context.cache_dir, data.phantom, seed)
    table, _ = make_split_table(data, root, seed, fold)
    cases = split_cases(table)
    lung_model = resolve_lung_model(data.recipe, context.run_dir, fold, cases["test"])
    prepared = prepare_data(data, context.data_dir, context.cache_dir, seed, fold, lung_model)
    write_json(fold_dir / "cases.json", cases)
    write_json(fold_dir / "data.json", data_record(prepared))
    manifest = prepared.manifests[0]
    run = task_config(config, [str(manifest.directory)], context.strategy.num_replicas_in_sync)
    wall, cpu = time.perf_counter(), time.process_time()
    best = train_segmenter(run, fold_dir, context.strategy)
    timing = {"train_wall_s": time.perf_counter() - wall, "train_cpu_s": time.process_time() - cpu}
    cases_dir = context.cache_dir / "cases" / root.name
    pairs = export_cases(data.dataset, root, cases["test"], cases_dir, mask)
    wall, cpu = time.perf_counter(), time.process_time()
    evaluation = evaluate_volumes(load_segmenter(best), pairs, mask)
    timing |= {"eval_wall_s": time.perf_counter() - wall, "eval_cpu_s": time.process_time() - cpu}
    write_json(fold_dir / "timing.json", {key: round(value, 1) for key, value in timing.items()})
    return evaluation


def _flat_summary(summary: dict[str, Any]) -> Summary:
    flat: Summary = {}
    for key, (metric, statistic) in SUMMARY_KEYS.items():
        described = summary["metrics"].get(metric)
        if described is None:
            continue
        if statistic == "value":
            flat[key] = ci_entry(described["value"], described["low"], described["high"])
        else:
            flat[key] = ci_entry(described[statistic])
    return flat


def run_cross_validation(context: Any) -> Summary:
    """All folds of a `data.folds` row (finished folds are kept on resume); writes `eval/` (every
    case once: cases.csv, slices.csv, summary.json, worst_cases.png) and returns the flat summary."""
    config = context.config
    case_tables, slice_tables, previews = [], [], {}
    for fold in range(config.data.folds):
        done = context.run_dir / f"fold-{fold}" / "eval"
        if (done / "cases.csv").is_file():
            case_tables.append(pd.read_csv(done / "cases.csv"))
            slice_tables.append(pd.read_csv(done / "slices.csv"))
            continue
        evaluation = run_fold(context, fold)
        cases, slices = evaluation.cases.assign(fold=fold), evaluation.slices.assign(fold=fold)
        fold_summary = summarize(cases, config.runtime.seed, config.evaluation.bootstrap_resamples, slices)
        write_evaluation(done, cases, slices, fold_summary, worst_case_montage(evaluation, 2))
        case_tables.append(cases)
        slice_tables.append(slices)
        previews.update(evaluation.previews)
    cases, slices = pd.concat(case_tables, ignore_index=True), pd.concat(slice_tables, ignore_index=True)
    summary = summarize(cases, config.runtime.seed, config.evaluation.bootstrap_resamples, slices)
    summary["protocol"] = (
        f"{config.data.folds}-fold cross-validation by case ({config.data.cv_protocol}: "
        f"{CV_PROTOCOLS[config.data.cv_protocol]}); whole volumes through the model bundle "
        "(segmentation predict's path)"
    )
    montage = worst_case_montage(VolumeEvaluation(cases, slices, previews), 4)
    write_evaluation(context.run_dir / "eval", cases, slices, summary, montage)
    return _flat_summary(summary)
