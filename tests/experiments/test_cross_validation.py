"""Case-wise cross-validation of the S3 cascade on SYNTHETIC Zenodo-layout phantoms (tiny models).

Known answers: every case is tested exactly once; fold i of the infection row crops with fold i of
the lung row (by checksum); test inputs are bit-identical when the test labels are corrupted; and a
user's `segmentation predict` path on the raw NIfTI file reproduces the evaluation's inputs and
probabilities slice for slice.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from common.config import ConfigError
from data_prep.adapters import open_dataset
from data_prep.errors import DataError
from data_prep.io import read_nifti, to_display, write_nifti
from experiments.data import fold_table, prepare_source
from experiments.registry import get_experiment
from experiments.runner import run_experiment
from segmentation.bundle import load_segmenter
from segmentation.predict import predict_probs, segmenter_inputs, volume_probabilities
from tfrecords.manifest import sha256_file
from tfrecords.reader import read_examples

TINY = [
    "data.phantom=true",
    "data.image_size=32",
    "data.folds=2",
    "data.batch_size=4",
    "data.steps_per_epoch=2",
    "data.augment={}",
    "training.epochs=1",
    "training.verbose=0",
    "training.tensorboard=false",
    "evaluation.bootstrap_resamples=50",
    "model.options={encoder_kwargs: {filters: [4, 8, 16]}}",
]
LUNG = [*TINY, "data.recipe={name: s3, crop: none}"]
INFECTION = [
    *TINY,
    'data.recipe={name: s3, crop: model, crop_margin: 2, lung_model: "run:s3_unet_lung_zenodo"}',
]


@pytest.fixture(scope="module")
def cascade(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cv") / "runs"
    data_dir = out.parent / "data"
    run_experiment("s3_unet_lung_zenodo", data_dir, out, LUNG)
    run_experiment("s3_unet_infection_zenodo", data_dir, out, INFECTION)
    return out


def _fold_dir(out: Path, row: str, fold: int) -> Path:
    return (out / row / "latest").resolve() / f"fold-{fold}"


def case_rows(cases: int, slices: int) -> pd.DataFrame:
    """`experiments.data._rows`-style rows: `slices` records of each of `cases` cases c0, c1, ..."""
    return pd.DataFrame(
        [
            (f"c{case}/{k}", f"c{case}", "infection", None, "inferred")
            for case in range(cases)
            for k in range(slices)
        ],
        columns=["key", "patient_id", "label", "publisher", "kind"],
    )


def test_fold_table_tests_every_case_once_and_validates_on_a_training_case():
    rows = case_rows(9, 3)
    tested = []
    for fold in range(5):
        table = fold_table(rows, 5, fold, 0.15, seed=0)
        cases = {split: set(group["patient_id"]) for split, group in table.groupby("split")}
        assert len(cases["val"]) == 1 and not cases["val"] & cases["test"]
        assert cases["train"] | cases["val"] | cases["test"] == {f"c{c}" for c in range(9)}
        assert len(cases["train"] & (cases["val"] | cases["test"])) == 0
        tested += sorted(cases["test"])
    assert sorted(tested) == [f"c{c}" for c in range(9)]  # each case exactly once
    with pytest.raises(ValueError, match=r"fold must be in 0..4, got 5"):
        fold_table(rows, 5, 5, 0.15, seed=0)


def test_ma_task1_trains_on_one_fold_and_tests_the_others():
    rows = case_rows(20, 2)
    trained = []
    for fold in range(5):
        table = fold_table(rows, 5, fold, 0.15, seed=0, protocol="ma_task1")
        cases = {split: set(group["patient_id"]) for split, group in table.groupby("split")}
        assert (len(cases["train"]), len(cases["val"]), len(cases["test"])) == (3, 1, 16)
        trained += sorted(cases["train"] | cases["val"])
    assert sorted(trained) == sorted(f"c{c}" for c in range(20))  # each case trains in one fold


def test_scale_variants_are_named_override_sets():
    cpu = get_experiment("s3_unet_lung_zenodo", scale="cpu")
    full = get_experiment("s3_unet_lung_zenodo")
    assert (cpu.scale, cpu.data.image_size, cpu.training.epochs) == ("cpu", 128, 8)
    assert (full.scale, full.data.image_size, full.training.epochs) == ("full", 256, 30)
    assert get_experiment("s3_unet_lung_zenodo", ["training.epochs=2"], scale="cpu").training.epochs == 2
    with pytest.raises(ConfigError, match="no scale 'gpu'; this row has: full, cpu"):
        get_experiment("s3_unet_lung_zenodo", scale="gpu")


def test_every_case_is_tested_once_over_the_folds(cascade):
    for row in ("s3_unet_lung_zenodo", "s3_unet_infection_zenodo"):
        run = (cascade / row / "latest").resolve()
        cases = pd.read_csv(run / "eval" / "cases.csv")
        keys = sorted(volume.key for volume in open_dataset("zenodo", _phantom_root(cascade)).volumes())
        assert sorted(cases["case"]) == keys and len(keys) == 8  # each case once
        splits = [json.loads((run / f"fold-{fold}" / "cases.json").read_text()) for fold in range(2)]
        assert not set(splits[0]["test"]) & set(splits[1]["test"])
        for split in splits:
            assert not set(split["test"]) & (set(split["train"]) | set(split["val"]))
        summary = json.loads((run / "summary.json").read_text())
        assert {"dice_per_case", "nsd_per_case", "hd95_per_case", "dice_per_image"} <= set(summary)
        assert summary["dice_per_case"]["value"] == pytest.approx(cases["dice"].mean())


def test_the_infection_bundle_depends_on_the_fold_matched_lung_model(cascade):
    for fold in range(2):
        bundle = json.loads(
            (_fold_dir(cascade, "s3_unet_infection_zenodo", fold) / "bundle.json").read_text()
        )
        lung_model = _fold_dir(cascade, "s3_unet_lung_zenodo", fold) / "best.keras"
        assert bundle["depends"]["lung"]["sha256"] == sha256_file(lung_model)
        assert bundle["recipe"]["crop"] == "model" and bundle["recipe"]["lung_model"] == "depends.lung"
        assert bundle["recipe"]["keep_fraction"] == 0.5 and bundle["recipe"]["clahe_clip"] == 2.0


def _test_examples(fold_dir: Path) -> list[dict]:
    manifest = json.loads((fold_dir / "data.json").read_text())["manifests"][0]["directory"]
    return list(read_examples(manifest, "test"))


def test_predict_on_the_raw_file_reproduces_the_evaluation_inputs_and_probabilities(cascade):
    fold_dir = _fold_dir(cascade, "s3_unet_infection_zenodo", 0)
    segmenter = load_segmenter(fold_dir / "best.keras")
    examples = _test_examples(fold_dir)
    case = examples[0]["patient_id"]
    raw = next(v.path for v in open_dataset("zenodo", _phantom_root(cascade)).volumes() if v.key == case)
    scan = read_nifti(raw)  # the user's file: HU, its own orientation
    slices = [to_display(scan.array[:, :, k]) for k in range(scan.array.shape[2])]
    inputs, boxes = segmenter_inputs(segmenter, slices, "hu", raw)
    ours = [e for e in examples if e["patient_id"] == case]
    assert len(ours) == len(slices) // 2  # the middle 50 % was evaluated
    stored = np.stack([e["image"] for e in ours]).astype(np.float32)[..., None] / 255.0
    chosen = inputs[[e["slice_index"] for e in ours]]
    np.testing.assert_array_equal(chosen, stored)
    # what `segmentation predict` computes for the whole raw volume, on the evaluated slices
    volume_probs = volume_probabilities(segmenter, scan.array, raw)
    from_records = predict_probs(segmenter.model, stored)
    for example, prob in zip(ours, from_records, strict=True):
        k = example["slice_index"]
        y0, y1, x0, x1 = boxes[k]
        pasted = np.zeros((*slices[k].shape, 1), np.float32)
        pasted[y0:y1, x0:x1] = cv2.resize(prob, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)[..., None]
        np.testing.assert_allclose(to_display(volume_probs[:, :, k]), pasted, atol=1e-6)


def _phantom_root(out: Path) -> Path:
    return next((out / ".cache" / "chief").glob("phantoms-seed*/zenodo"))


def test_corrupted_test_labels_change_no_test_input(cascade, tmp_path):
    fold_dir = _fold_dir(cascade, "s3_unet_infection_zenodo", 0)
    test_cases = json.loads((fold_dir / "cases.json").read_text())["test"]
    corrupted = tmp_path / "zenodo"
    shutil.copytree(_phantom_root(cascade), corrupted)
    rng = np.random.default_rng(0)
    for folder in ("Lung_Mask", "Infection_Mask"):
        for case in test_cases:
            path = corrupted / folder / f"{case}.nii.gz"
            scan = read_nifti(path)
            write_nifti(path, rng.integers(0, 2, scan.source_shape).astype(np.uint8), scan.source_affine)
    # the same split as the clean fold (a stratified split may move cases when their labels change)
    clean_split = json.loads((fold_dir / "data.json").read_text())["manifests"][0]["split_file"]["path"]
    split = ["data.folds=null", "data.split=file", f"data.split_file={clean_split}"]
    config = get_experiment("s3_unet_infection_zenodo", [*INFECTION, *split])
    lung_model = _fold_dir(cascade, "s3_unet_lung_zenodo", 0) / "best.keras"
    manifest, _ = prepare_source("zenodo", corrupted, config.data, tmp_path / "cache", 0, None, lung_model)
    clean = _test_examples(fold_dir)
    dirty = list(read_examples(manifest.directory, "test"))
    assert [e["key"] for e in clean] == [e["key"] for e in dirty]
    for a, b in zip(clean, dirty, strict=True):
        np.testing.assert_array_equal(a["image"], b["image"])  # inputs bit-identical
    assert any(
        not np.array_equal(a["masks"]["infection"], b["masks"]["infection"])
        for a, b in zip(clean, dirty, strict=True)
    )


def test_a_changed_dependency_is_refused(cascade, tmp_path):
    copy = tmp_path / "runs"
    shutil.copytree(cascade, copy, symlinks=True, ignore=shutil.ignore_patterns(".cache"))
    lung = _fold_dir(copy, "s3_unet_lung_zenodo", 0) / "best.keras"
    with open(lung, "ab") as stream:
        stream.write(b"\0")
    with pytest.raises(DataError, match="SHA-256 differs from the recorded one"):
        load_segmenter(_fold_dir(copy, "s3_unet_infection_zenodo", 0) / "best.keras")
