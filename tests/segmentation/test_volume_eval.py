"""Volume evaluation on hand-made NIfTI phantoms whose prediction is known exactly (SYNTHETIC volumes).

The segmenter is `bright_pixel_model`: it predicts exactly the voxels brighter than 127, so a bright cube
in the image is the prediction, and the label files hold the truth with hand-computed scores.
"""

from __future__ import annotations

import json
import math
import os

import cv2
import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from common.bootstrap import bootstrap_ci
from common.thresholds import ThresholdChoice
from segmentation import metrics
from segmentation.__main__ import main
from segmentation.predict import Segmenter
from segmentation.volume_eval import (
    CAPTION,
    PREVIEW_SLICES,
    TILE,
    channel_index,
    default_tolerance_mm,
    evaluate_volumes,
    pair_volumes,
    summarize,
    worst_case_montage,
)
from tests.segmentation.seg_helpers import bright_pixel_model
from tests.segmentation.test_surface_metrics import shifted_cube_nsd
from tfrecords.spec import PreprocessSpec

SHAPE, N, START, Z0 = (32, 32, 10), 6, 10, 2  # a 6^3 cube at [10:16, 10:16, 2:8]
SPACING = (0.5, 1.0, 2.0)  # mm; the shift is along axis 0, the smallest spacing
RAS = np.diag([*SPACING, 1.0])
LPS = np.array([[-0.5, 0, 0, 60.0], [0, -1.0, 0, 40.0], [0, 0, 2.0, -90.0], [0, 0, 0, 1]])
CUBE_ML = N**3 * np.prod(SPACING) / 1000  # 0.216 mL


def cube(shift: int = 0) -> np.ndarray:
    mask = np.zeros(SHAPE, bool)
    mask[START + shift : START + shift + N, START : START + N, Z0 : Z0 + N] = True
    return mask


def image_of(mask: np.ndarray) -> np.ndarray:
    """uint8 display values: 200 in the mask (predicted), 40 elsewhere."""
    return np.where(mask, 200, 40).astype(np.uint8)


def save(path, array: np.ndarray, affine: np.ndarray = RAS):
    nib.save(nib.Nifti1Image(array, affine), path)
    return path


def segmenter(names=("infection",), multiclass: bool = False) -> Segmenter:
    model = bright_pixel_model(SHAPE[0])
    return Segmenter(model, names, multiclass, ThresholdChoice.fixed(), PreprocessSpec())


def write_cases(tmp_path, affine: np.ndarray = RAS):
    """Three cases: "shifted" (truth one voxel off, Zenodo-style names), "missed" (nothing predicted),
    "perfect" (truth = label 1; label 3 marks a block that --label-values 1 leaves out)."""
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    save(images / "coronacases_org_001.nii.gz", image_of(cube()), affine)
    save(labels / "coronacases_001.nii.gz", cube(1).astype(np.uint8), affine)
    save(images / "missed.nii", image_of(np.zeros(SHAPE, bool)), affine)
    save(labels / "missed.nii", cube().astype(np.uint8), affine)
    save(images / "perfect.nii.gz", image_of(cube()), affine)
    perfect = cube().astype(np.uint8)
    perfect[0:4, 0:4, 0:2] = 3
    save(labels / "perfect.nii.gz", perfect, affine)
    save(images / "no_label.nii.gz", image_of(cube()), affine)
    return images, labels


def test_pairing_by_stem_and_by_zenodo_case_id(tmp_path):
    pairs, unpaired = pair_volumes(*write_cases(tmp_path))
    assert [(p.case, p.image.name, p.label.name) for p in pairs] == [
        ("coronacases_001", "coronacases_org_001.nii.gz", "coronacases_001.nii.gz"),
        ("missed", "missed.nii", "missed.nii"),
        ("perfect", "perfect.nii.gz", "perfect.nii.gz"),
    ]
    assert [p.name for p in unpaired] == ["no_label.nii.gz"]


@pytest.mark.parametrize(("affine", "orientation"), [(RAS, "display"), (LPS, "display"), (LPS, "stored")])
def test_known_scores_per_case_and_per_slice(tmp_path, affine, orientation):
    pairs, _ = pair_volumes(*write_cases(tmp_path, affine))
    result = evaluate_volumes(
        segmenter(), pairs, tolerance_mm=0.49, label_values=(1,), orientation=orientation
    )
    cases = result.cases.set_index("case")
    shifted, missed, perfect = cases.loc["coronacases_001"], cases.loc["missed"], cases.loc["perfect"]
    # Shifted by one voxel along the 0.5 mm axis: Dice (n - 1) / n; every surfel at distance 0 or 0.5 mm.
    assert shifted["dice"] == pytest.approx((N - 1) / N)
    assert shifted["hd95_mm"] == pytest.approx(0.5)
    assert shifted["nsd"] == pytest.approx(shifted_cube_nsd(N, SPACING))
    assert shifted["pred_ml"] == pytest.approx(CUBE_ML) and shifted["true_ml"] == pytest.approx(CUBE_ML)
    assert (shifted["spacing_x_mm"], shifted["spacing_y_mm"], shifted["spacing_z_mm"]) == SPACING
    # Nothing predicted: Dice 0, NSD 0, HD95 undefined.
    assert missed["dice"] == 0.0 and missed["nsd"] == 0.0 and math.isnan(missed["hd95_mm"])
    assert missed["pred_ml"] == 0.0 and missed["true_ml"] == pytest.approx(CUBE_ML)
    assert perfect["dice"] == 1.0 and perfect["nsd"] == 1.0 and perfect["hd95_mm"] == 0.0
    # Per axial slice: the cube's slices 2..7 score (n - 1) / n and 0; the empty slices 1 (both empty).
    slices = result.slices.set_index(["case", "slice"])["dice"]
    assert len(result.slices) == 3 * SHAPE[2]
    in_cube = list(range(Z0, Z0 + N))
    np.testing.assert_allclose(slices.loc["coronacases_001"].loc[in_cube], (N - 1) / N)
    np.testing.assert_array_equal(slices.loc["missed"].loc[in_cube], 0.0)
    np.testing.assert_array_equal(slices.loc["missed"].drop(in_cube), 1.0)
    assert result.slices.query("case == 'missed'")["true_voxels"].sum() == N**3


def test_default_tolerance_label_values_and_channels(tmp_path):
    assert default_tolerance_mm("lung") == 1.0 and default_tolerance_mm("infection") == 3.0
    pairs, _ = pair_volumes(*write_cases(tmp_path))
    result = evaluate_volumes(segmenter(), pairs[2:])  # perfect, every label > 0 counts as truth
    (row,) = result.cases.to_dict("records")
    assert row["tolerance_mm"] == 3.0
    assert row["dice"] == pytest.approx(2 * N**3 / (2 * N**3 + 4 * 4 * 2))  # the label-3 block is missed
    softmax = segmenter(("background", "ggo", "consolidation"), multiclass=True)
    assert channel_index(softmax, "consolidation") == 2
    for channel, problem in ((None, "choose one with --channel"), ("background", "no channel 'background'")):
        with pytest.raises(ValueError, match=problem):
            channel_index(softmax, channel)


def test_summary_and_montage(tmp_path):
    pairs, _ = pair_volumes(*write_cases(tmp_path))
    result = evaluate_volumes(segmenter(), pairs, tolerance_mm=0.49, label_values=(1,))
    summary = summarize(result.cases, seed=3, n_resamples=200, slices=result.slices)
    dice = summary["metrics"]["dice"]
    values = np.array([(N - 1) / N, 0.0, 1.0])
    assert dice["n"] == 3 and dice["value"] == pytest.approx(values.mean())
    assert dice["median"] == pytest.approx((N - 1) / N) and dice["sd"] == pytest.approx(values.std(ddof=1))
    _, low, high = bootstrap_ci(metrics.nanmean, result.cases["dice"].to_numpy(), n_resamples=200, seed=3)
    assert (dice["low"], dice["high"]) == (low, high) and low <= dice["value"] <= high
    hd95 = summary["metrics"]["hd95_mm"]
    assert hd95["n"] == 2 and hd95["value"] == pytest.approx(0.25)  # the missed case is left out
    assert summary["metrics"]["slice_dice"]["n"] == 3 * SHAPE[2]
    montage = worst_case_montage(result, worst=2)
    assert montage.shape == (2 * (CAPTION + TILE), PREVIEW_SLICES * TILE, 3) and montage.dtype == np.uint8
    np.testing.assert_array_equal(montage[: CAPTION + TILE], result.previews["missed"])  # worst first
    # Truth contours are drawn green (0, 200, 0) on the missed case's tiles, and no prediction (red).
    tiles = result.previews["missed"][CAPTION:]
    assert (tiles == (0, 200, 0)).all(-1).any() and not (tiles == (0, 0, 255)).all(-1).any()


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    bright_pixel_model(SHAPE[0]).save(run / "best.keras")
    (run / "config.json").write_text(json.dumps({"channel_names": ["infection"]}))
    return run / "best.keras"


def test_command_writes_every_output(tmp_path, model_file, capsys):
    images, labels = write_cases(tmp_path)
    out = tmp_path / "eval"
    argv = ["evaluate-volumes", str(model_file), "--images", str(images), "--labels", str(labels)]
    assert (
        main([*argv, "--out", str(out), "--label-values", "1", "--tolerance-mm", "0.49", "--worst", "2"]) == 0
    )
    assert "infection: 3-D Dice 0.6111" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == [
        "cases.csv",
        "slices.csv",
        "summary.json",
        "worst_cases.png",
    ]
    cases = pd.read_csv(out / "cases.csv")
    assert cases["case"].tolist() == ["coronacases_001", "missed", "perfect"]
    assert cases["dice"].tolist() == pytest.approx([(N - 1) / N, 0.0, 1.0])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["channel"] == "infection" and summary["tolerance_mm"] == 0.49
    assert summary["label_values"] == [1] and summary["unpaired_images"] == ["no_label.nii.gz"]
    assert (
        summary["metrics"]["hd95_mm"]["n"] == 2 and "surface-area-weighted" in summary["definitions"]["nsd"]
    )
    assert cv2.imread(str(out / "worst_cases.png")).shape == (2 * (CAPTION + TILE), PREVIEW_SLICES * TILE, 3)
    assert len(pd.read_csv(out / "slices.csv")) == 3 * SHAPE[2]
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask  # not the temporary folder's private 0700
    assert (out / "worst_cases.png").stat().st_mode & 0o777 == 0o666 & ~umask
    # A second run into the existing folder replaces the files.
    assert main([*argv, "--out", str(out), "--label-values", "1,3"]) == 0
    assert json.loads((out / "summary.json").read_text())["label_values"] == [1, 3]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval", "images", "labels"]  # no temporary left


def bad_inputs(tmp_path, model_file):
    """name -> (argv tail, the file the error line must name, problem text)."""
    images, labels = write_cases(tmp_path)
    flat = tmp_path / "flat"
    flat.mkdir()
    save(flat / "missed.nii", np.zeros((32, 32, 10, 2), np.uint8))
    save(labels / "missed.nii", np.zeros((32, 32, 9), np.uint8))  # overwrites the good label
    other = tmp_path / "other"
    other.mkdir()
    save(other / "unrelated.nii.gz", np.zeros(SHAPE, np.uint8))
    return {
        "missing folder": (
            ["--images", str(tmp_path / "nowhere"), "--labels", str(labels)],
            tmp_path / "nowhere",
            "no such folder",
        ),
        "no pairs": (["--images", str(images), "--labels", str(other)], other, "no label file matches"),
        "label shape": (
            ["--images", str(images), "--labels", str(labels)],
            labels / "missed.nii",
            "mask shape (32, 32, 9) differs",
        ),
        "4-D volume": (
            ["--images", str(flat), "--labels", str(labels)],
            flat / "missed.nii",
            "expected a 3-D volume",
        ),
    }


def test_bad_input_gives_one_error_line_and_writes_nothing(tmp_path, model_file, capsys):
    for name, (tail, path, problem) in bad_inputs(tmp_path, model_file).items():
        out = tmp_path / f"out_{name.replace(' ', '_')}"
        assert main(["evaluate-volumes", str(model_file), *tail, "--out", str(out)]) == 2, name
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"error: {path}: ") and problem in err, (name, err)
        assert not out.exists(), name
    # An unknown channel names the model; a bad --label-values names the option.
    images, labels = tmp_path / "images", tmp_path / "other"
    save(labels / "perfect.nii.gz", cube().astype(np.uint8))
    argv = ["evaluate-volumes", str(model_file), "--images", str(images), "--labels", str(labels)]
    assert main([*argv, "--out", str(tmp_path / "x"), "--channel", "lung"]) == 2
    assert (
        capsys.readouterr().err
        == f"error: {model_file}: no channel 'lung'; the model's channels: infection\n"
    )
    assert main([*argv, "--out", str(tmp_path / "x"), "--label-values", "1,a"]) == 2
    assert capsys.readouterr().err.startswith("error: --label-values: expected integers")
    assert not (tmp_path / "x").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
