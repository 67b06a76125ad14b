"""Evaluation on synthetic disks: the files and keys written, exact values for a perfect model, guards."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from common.thresholds import ThresholdChoice, ThresholdSplitError
from segmentation.evaluate import (
    SplitPredictions,
    evaluate_predictions,
    evaluate_segmenter,
    predict_split,
    score_predictions,
    summarize_scores,
    write_report,
)
from segmentation.predict import Segmenter
from tests.segmentation.seg_helpers import bright_pixel_model, write_disks
from tfrecords.spec import PreprocessSpec


@pytest.fixture(scope="module")
def disks(tmp_path_factory):
    return write_disks(tmp_path_factory.mktemp("disks"))


def test_evaluate_writes_files_and_exact_values_for_a_perfect_model(tmp_path, disks):
    segmenter = Segmenter(
        bright_pixel_model(), ("infection",), False, ThresholdChoice.fixed(), PreprocessSpec()
    )
    report = evaluate_segmenter(segmenter, disks, tmp_path, split="test", val_split="val")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "metrics.json",
        "overlays",
        "per_case.csv",
        "per_image.csv",
        "pr_curve.png",
        "threshold.json",
        "threshold_curve.png",
    ]
    assert json.loads((tmp_path / "metrics.json").read_text()) == json.loads(json.dumps(report))
    assert (report["split"], report["n_images"], report["n_cases"]) == ("test", 4, 2)
    assert report["threshold"]["split"] == "val" and report["threshold"]["thresholds"] == [0.01]
    infection = report["masks"]["infection"]
    for score in ("dice", "iou", "precision", "recall", "specificity"):
        for average in ("per_image", "pooled", "per_case"):
            assert infection[score][average] == {
                "value": 1.0,
                "low": 1.0,
                "high": 1.0,
                **({"n_undefined": 0} if average == "per_image" else {}),
            }, (score, average)
    assert infection["hd95"]["value"] == 0.0 and infection["hd95"]["n_undefined"] == 0
    assert infection["nsd"]["value"] == 1.0 and infection["nsd"]["tolerance"] == 2.0
    assert infection["max_dice"] == 1.0 and 0.9 < infection["infnet_mean_dice"] < 1.0
    per_image = pd.read_csv(tmp_path / "per_image.csv")
    assert list(per_image["key"]) == sorted(per_image["key"]) and len(per_image) == 4
    assert set(per_image.columns) >= {"case_id", "infection_dice", "infection_hd95", "infection_truth_px"}
    per_case = pd.read_csv(tmp_path / "per_case.csv")
    assert list(per_case["case_id"]) == ["test-p6", "test-p7"] and list(per_case["n_images"]) == [2, 2]
    overlays = sorted(p.name.split("_")[0] for p in (tmp_path / "overlays").iterdir())
    assert overlays == ["best", "median", "worst"]


def test_per_image_pooled_and_per_case_agree_with_the_csvs(tmp_path, disks):
    # The disk model scored against the "lung" square: imperfect, different per image.
    segmenter = Segmenter(bright_pixel_model(), ("lung",), False, ThresholdChoice.fixed(), PreprocessSpec())
    report = evaluate_segmenter(segmenter, disks, tmp_path, split="test", val_split=None)
    assert report["threshold"]["split"] == "fixed"
    per_image = pd.read_csv(tmp_path / "per_image.csv")
    per_case = pd.read_csv(tmp_path / "per_case.csv")
    dice = report["masks"]["lung"]["dice"]
    assert dice["per_image"]["value"] == pytest.approx(per_image["lung_dice"].mean())
    assert dice["per_case"]["value"] == pytest.approx(per_case["lung_dice"].mean())
    truth, pred = per_image["lung_truth_px"].sum(), per_image["lung_pred_px"].sum()
    # The prediction (disk) lies inside the truth (square): TP = predicted pixels.
    assert dice["pooled"]["value"] == pytest.approx(2 * pred / (truth + pred))
    assert dice["per_image"]["low"] <= dice["per_image"]["value"] <= dice["per_image"]["high"]
    assert report["masks"]["lung"]["precision"]["pooled"]["value"] == 1.0


def test_threshold_from_the_evaluated_split_is_refused(tmp_path, disks):
    model = bright_pixel_model()
    predictions = predict_split(model, disks, "val", ["infection"])
    val_choice = ThresholdChoice(thresholds=(0.5,), split="val")
    with pytest.raises(ThresholdSplitError, match="chosen on split 'val', the split being evaluated"):
        evaluate_predictions(predictions, ("infection",), val_choice, "val", tmp_path)
    with pytest.raises(ThresholdSplitError):
        ThresholdChoice(thresholds=(0.5,), split="test")


def test_multiclass_evaluation_with_perfect_probabilities(tmp_path):
    labels = np.zeros((2, 8, 8), np.int64)
    labels[0, :4, :4], labels[1, 4:, 4:] = 1, 2
    masks = np.stack([labels == 1, labels == 2], axis=-1).astype(np.uint8)
    predictions = SplitPredictions(
        images=np.zeros((2, 8, 8), np.float32),
        probs=np.eye(3, dtype=np.float32)[labels],
        masks=masks,
        keys=np.array(["a", "b"]),
        case_ids=np.array(["a", "b"]),
    )
    channels = ("background", "ggo", "consolidation")
    report = evaluate_predictions(
        predictions, channels, ThresholdChoice.fixed(0.5, 2), "test", tmp_path, multiclass=True
    )
    assert report["miou"] == 1.0 and sorted(report["masks"]) == ["consolidation", "ggo"]
    # Image a has no consolidation in truth or prediction: empty/empty counts as 1.
    assert report["masks"]["consolidation"]["dice"]["per_image"]["value"] == 1.0
    assert report["masks"]["consolidation"]["hd95"]["n_undefined"] == 1
    assert "infnet_mean_dice" not in report["masks"]["ggo"]


def test_surface_metrics_in_mm_with_a_pixel_spacing(tmp_path):
    truth, probs = np.zeros((1, 8, 8, 1), np.uint8), np.zeros((1, 8, 8, 1), np.float32)
    truth[0, 0, 0, 0], probs[0, 0, 3, 0] = 1, 0.9  # 3 columns apart
    predictions = SplitPredictions(
        np.zeros((1, 8, 8), np.float32), probs, truth, np.array(["a"]), np.array(["a"])
    )
    choice = ThresholdChoice.fixed(0.5)
    in_pixels = evaluate_predictions(predictions, ("lesion",), choice, "test", tmp_path / "px")
    assert in_pixels["masks"]["lesion"]["hd95"]["value"] == 3.0
    assert in_pixels["masks"]["lesion"]["hd95"]["unit"] == "pixels at the evaluated size"
    in_mm = evaluate_predictions(
        predictions,
        ("lesion",),
        choice,
        "test",
        tmp_path / "mm",
        nsd_tolerance=1.5,
        pixel_spacing_mm=(1.0, 0.5),
    )
    assert (
        in_mm["masks"]["lesion"]["hd95"]["value"] == 1.5 and in_mm["masks"]["lesion"]["hd95"]["unit"] == "mm"
    )
    assert in_mm["masks"]["lesion"]["nsd"]["value"] == 1.0


def test_compute_aggregate_and_write_are_separate_steps(tmp_path):
    truth = np.zeros((2, 8, 8, 1), np.uint8)
    truth[0, :4, :4] = 1  # image b has an empty truth
    probs = np.zeros((2, 8, 8, 1), np.float32)
    probs[0, :4, :2], probs[1, 0, 0] = 0.9, 0.8  # half of a's square; one false pixel on b
    predictions = SplitPredictions(
        np.zeros((2, 8, 8), np.float32), probs, truth, np.array(["a", "b"]), np.array(["p", "p"])
    )
    choice = ThresholdChoice.fixed(0.5)
    scores = score_predictions(predictions, ("lesion",), choice)
    assert not any(tmp_path.iterdir())  # computing writes nothing
    # a: TP 8, FN 8 -> Dice 16/24; b: FP 1 on an empty truth -> Dice 0, recall undefined.
    np.testing.assert_allclose(scores.per_image["lesion_dice"], [2 / 3, 0.0])
    assert np.isnan(scores.per_image["lesion_recall"][1]) and np.isnan(scores.hd95[1, 0])
    # One case p: counts summed, TP 8, FP 1, FN 8 -> Dice 16/25.
    assert scores.per_case["lesion_dice"].tolist() == [pytest.approx(16 / 25)]
    report = summarize_scores(scores, choice, "test", n_resamples=50)
    dice = report["masks"]["lesion"]["dice"]
    assert dice["per_image"]["value"] == pytest.approx(1 / 3) and dice["per_case"]["value"] == pytest.approx(
        16 / 25
    )
    assert report["masks"]["lesion"]["recall"]["per_image"]["n_undefined"] == 1
    assert report["overlays"]["worst"]["key"] == "b" and report["overlays"]["best"]["key"] == "a"
    written = write_report(tmp_path, report, scores, predictions.images)
    assert written == json.loads((tmp_path / "metrics.json").read_text())
    assert sorted(p.name for p in (tmp_path / "overlays").iterdir()) == [
        "best_a.png",
        "median_a.png",  # order[N // 2] of (b, a)
        "worst_b.png",
    ]
