"""The CT volume report: volumes and orientation against known answers.

Fixed intensity-band Keras models stand in for trained segmenters, so every expected number is exact:
a volume whose display values encode the classes (0 outside, 100 lung, 200 lesion) is stored in LPS
voxel order with anisotropic spacing, and the report must recover the lung and lesion volumes in mL,
the per-lung split and the masks in the input's own voxel order and affine.
"""

import json
import subprocess
import sys

import keras
import nibabel as nib
import numpy as np
import pytest
from keras import layers, ops

from data_prep import phantoms
from data_prep.adapters.zenodo import ZenodoCovidCtSeg
from data_prep.io import read_nifti, write_nifti
from experiments.pipelines.report import measure, overall_grade, severity_score, write_report
from segmentation.predict import Segmenter
from segmentation.thresholds import ThresholdChoice
from tests.conftest import REPO_ROOT
from tfrecords.spec import PreprocessSpec

LPS = np.diag([-0.8, -0.8, 2.5, 1.0])  # voxel (i, j, k) -> patient left/posterior grows with i/j


def band_model(size: tuple[int, int], low: float, high: float) -> Segmenter:
    """A segmenter of (B, H, W, 1) in [0, 1]: 1 where low < value < high, else 0 (a steep sigmoid band),
    with no preprocessing of its own and a fixed 0.5 threshold."""
    inputs = keras.Input((*size, 1))
    outputs = layers.Lambda(lambda x: ops.sigmoid(1000 * (x - low)) * ops.sigmoid(1000 * (high - x)))(inputs)
    return Segmenter(
        keras.Model(inputs, outputs), ("mask",), False, ThresholdChoice.fixed(0.5), PreprocessSpec()
    )


def encoded_volume() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(stored uint8 volume, canonical lung mask, canonical lesion mask); lesion only in one lung."""
    lung = np.zeros((40, 32, 6), bool)
    lung[4:16, 6:26, 1:5] = True  # canonical x < 20: patient left (RAS+: x grows to the right)
    lung[22:36, 6:26, 1:5] = True  # patient right
    lesion = np.zeros_like(lung)
    lesion[24:30, 10:14, 2:4] = True  # inside the right lung
    canonical = np.where(lesion, 200, np.where(lung, 100, 0)).astype(np.uint8)
    stored = canonical[::-1, ::-1, :]  # LPS storage of the canonical RAS+ array
    return stored, lung, lesion


def test_report_recovers_known_volumes_and_writes_masks_aligned_to_the_input(tmp_path):
    stored, lung, lesion = encoded_volume()
    path = tmp_path / "scan.nii.gz"
    write_nifti(path, stored, LPS)
    size = (32, 40)  # display slices are (Y, X)
    lung_model = band_model(size, 50 / 255, 255 / 255 + 1)  # lung and lesion voxels are both lung
    lesion_model = band_model(size, 150 / 255, 255 / 255 + 1)
    summary = write_report(path, tmp_path / "report", lung_model, lesion_model)

    voxel_ml = 0.8 * 0.8 * 2.5 / 1000
    assert summary["lung_volume_ml"] == pytest.approx(lung.sum() * voxel_ml)
    assert summary["infection_volume_ml"] == pytest.approx(lesion.sum() * voxel_ml)
    assert summary["lungs"]["right"]["infection_volume_ml"] == pytest.approx(lesion.sum() * voxel_ml)
    assert summary["lungs"]["left"]["infection_volume_ml"] == 0
    right_percent = 100 * lesion.sum() / lung[20:].sum()
    assert summary["lungs"]["right"]["infected_percent"] == pytest.approx(right_percent)
    assert summary["lungs"]["right"]["severity_score"] == severity_score(right_percent) == 1  # 4.3% < 5%
    assert summary["grade"] == overall_grade(100 * lesion.sum() / lung.sum()) == "mild"

    written = nib.load(tmp_path / "report" / "infection_mask.nii.gz")
    np.testing.assert_array_equal(written.affine, nib.load(path).affine)  # the input's own affine
    np.testing.assert_array_equal(np.asarray(written.dataobj), lesion[::-1, ::-1, :].astype(np.uint8))
    lung_written = np.asarray(nib.load(tmp_path / "report" / "lung_mask.nii.gz").dataobj)
    np.testing.assert_array_equal(lung_written, lung[::-1, ::-1, :].astype(np.uint8))
    assert (
        json.loads((tmp_path / "report" / "report.json").read_text())["lung_volume_ml"]
        == summary["lung_volume_ml"]
    )
    assert "| right |" in (tmp_path / "report" / "report.md").read_text()
    assert (tmp_path / "report" / "montage.png").read_bytes()[:4] == b"\x89PNG"


def test_phantom_lesion_and_lung_volumes_are_recovered_from_its_masks(tmp_path):
    """The report's volume bookkeeping on a phantom's own masks (read back from NIfTI) recovers the
    phantom's known volumes within 0.01 mL (the phantom records them from the same voxels)."""
    root = phantoms.generate(tmp_path, kinds=("zenodo",), n_cases=1, seed=3, size=64, slices=16)["zenodo"]
    truth = json.loads((root / phantoms.TRUTH_FILE).read_text())["cases"]["phantom_001"]
    (volume,) = ZenodoCovidCtSeg(root).volumes()
    summary = measure(volume.masks["lung"], volume.masks["infection"], volume.spacing_mm)
    assert summary["infection_volume_ml"] == pytest.approx(truth["infection_ml"], abs=0.01)
    assert summary["lung_volume_ml"] == pytest.approx(sum(truth["lung_ml"].values()), abs=0.01)
    assert summary["lungs"]["left"]["volume_ml"] == pytest.approx(truth["lung_ml"]["left"], rel=0.05)
    assert summary["lungs"]["right"]["volume_ml"] == pytest.approx(truth["lung_ml"]["right"], rel=0.05)


@pytest.mark.shared_data
def test_report_runs_on_a_zenodo_derived_volume(shared_data, tmp_path):
    (volume,) = [
        v for v in ZenodoCovidCtSeg(shared_data / "ct-lung-infection-zenodo").volumes() if v.key == "CC06"
    ]
    path = tmp_path / "CC06.nii.gz"
    write_nifti(path, volume.image, volume.affine)
    model = band_model(volume.image.shape[1::-1], 0.0, 0.5)  # dark pixels, a crude lung stand-in
    summary = write_report(path, tmp_path / "report", model)
    scan = read_nifti(tmp_path / "report" / "lung_mask.nii.gz")
    assert scan.array.shape == volume.image.shape
    np.testing.assert_array_equal(scan.affine, volume.affine)
    assert summary["intensity"] == "display" and summary["infection_volume_ml"] == 0


def test_report_command_rejects_a_missing_volume_in_one_line(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments",
            "report",
            str(tmp_path / "missing.nii.gz"),
            "--lung-model",
            str(tmp_path / "lung.keras"),
            "--out",
            str(tmp_path / "out"),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == f"error: {tmp_path / 'lung.keras'}: no such model file"
    assert not (tmp_path / "out").exists()
