import json

import numpy as np
import pandas as pd
import pytest

from classification.evaluate import (
    Predictions,
    choose_thresholds,
    collect_predictions,
    evaluate_predictions,
    model_predict_fn,
    write_evaluation,
)
from classification.metrics import binary_metrics
from classification.task import CLASSIFICATION_TASKS
from common.thresholds import NoValidationDataError, ThresholdChoice, ThresholdSplitError
from tests.classification.test_uncertainty import constant_model
from tests.classification.tiny_data import classification_inputs, tiny_ct, tiny_xray


def meta(modalities, patients):
    n = len(modalities)
    return pd.DataFrame(
        {
            "key": [f"k{i}" for i in range(n)],
            "patient_id": patients,
            "modality": modalities,
            "source": ["s"] * n,
            "path": [f"/x/{i}.png" for i in range(n)],
        }
    )


def binary_predictions(split: str) -> Predictions:
    targets = np.array([1, 1, 0, 1, 0, 0, 1, 0])
    scores = np.array([0.9, 0.6, 0.6, 0.4, 0.3, 0.1, 0.8, 0.7])
    modalities = ["ct"] * 6 + ["xray"] * 2
    patients = ["a", "a", "b", "c", "d", "", "e", "f"]
    return Predictions(
        split,
        CLASSIFICATION_TASKS["binary"],
        ["COVID"],
        ["COVID", "NonCOVID"],
        scores[:, None],
        targets,
        meta(modalities, patients),
    )


def test_binary_report_overall_and_per_modality():
    threshold = choose_thresholds(binary_predictions("val"))
    # Youden J = 0.5 at 0.75 (2 of 4 positives, no false positive) and at 0.35 (all positives, 2 false
    # positives); the tie goes to the lower threshold (`common.thresholds`, as for segmentation).
    assert threshold.thresholds == (pytest.approx(0.35),) and threshold.validation_scores == (
        pytest.approx(0.5),
    )
    assert (threshold.split, threshold.criterion, threshold.average) == ("val", "youden", "pooled")
    test = binary_predictions("test")
    report = evaluate_predictions(test, threshold, n_resamples=200)
    expected = binary_metrics(test.targets, test.probabilities[:, 0], threshold.thresholds[0])
    overall = report["overall"]
    for name in ("accuracy", "sensitivity", "specificity", "roc_auc", "pr_auc"):
        assert overall[name]["value"] == pytest.approx(expected[name]), name
        assert overall[name]["low"] <= overall[name]["value"] <= overall[name]["high"], name
    assert overall["counts"] == {k: expected[k] for k in ("tp", "fp", "tn", "fn", "n")}
    assert overall["counts"] == {"tp": 4, "fp": 2, "tn": 2, "fn": 0, "n": 8}
    assert sorted(report["by_modality"]) == ["ct", "xray"]
    # CT: positives 0.9, 0.6, 0.4 against negatives 0.6, 0.3, 0.1 -> AUC 7.5 / 9.
    assert report["by_modality"]["ct"]["roc_auc"]["value"] == pytest.approx(7.5 / 9)
    assert report["by_modality"]["xray"]["accuracy"]["value"] == 0.5  # 0.8 (positive) and 0.7 at 0.35
    assert "by_source" not in report  # one source only
    assert report["threshold"]["split"] == "val" and report["threshold"]["thresholds"] == list(
        threshold.thresholds
    )


def test_multilabel_thresholds_are_one_choice_with_one_threshold_per_class():
    validation = Predictions(
        "val",
        CLASSIFICATION_TASKS["multilabel"],
        ["a", "b"],
        ["a", "b"],
        np.array([[0.9, 0.9], [0.2, 0.7], [0.7, 0.5], [0.1, 0.1]]),
        np.array([[1, 1], [0, 0], [1, 1], [0, 0]]),
        meta(["ct"] * 4, [""] * 4),
    )
    choice = choose_thresholds(validation)
    # a: 0.45 separates (0.9, 0.7) from (0.2, 0.1); b: J = 0.5 at 0.8 and at 0.3, the lower wins.
    assert choice.thresholds == (pytest.approx(0.45), pytest.approx(0.3))
    assert choice.validation_scores == (pytest.approx(1.0), pytest.approx(0.5))


def test_threshold_from_the_evaluated_split_or_missing_is_refused():
    test = binary_predictions("test")
    with pytest.raises(ThresholdSplitError, match="thresholds are chosen on validation data only"):
        choose_thresholds(test)
    with pytest.raises(NoValidationDataError, match="no validation predictions on split 'val'"):
        choose_thresholds(binary_predictions("val").subset(np.array([], dtype=int)))
    with pytest.raises(ThresholdSplitError, match="threshold was chosen on split 'val'"):
        evaluate_predictions(binary_predictions("val"), ThresholdChoice((0.5,), "val", "youden"))
    with pytest.raises(ValueError, match="binary predictions need a threshold chosen on validation data"):
        evaluate_predictions(test, None)


def test_outputs_written_with_nulls_for_undefined_metrics(tmp_path):
    test = binary_predictions("test").subset(np.array([0, 1, 3]))  # positives only: no specificity
    report = evaluate_predictions(test, ThresholdChoice.fixed(0.5), n_resamples=20)
    write_evaluation(tmp_path, report, test, ThresholdChoice.fixed(0.5))
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["overall"]["specificity"] == {"value": None, "low": None, "high": None}
    frame = pd.read_csv(tmp_path / "predictions.csv", keep_default_na=False)
    assert list(frame.columns) == [
        "file",
        "key",
        "patient",
        "modality",
        "source",
        "label",
        "probability",
        "predicted",
    ]
    assert frame["predicted"].tolist() == ["COVID", "COVID", "NonCOVID"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "confusion_matrix.png",
        "metrics.json",
        "pr.png",
        "predictions.csv",
        "roc.png",
    ]


def test_multiclass_report_has_macro_and_per_class():
    probabilities = np.array([[0.7, 0.2, 0.1], [0.1, 0.5, 0.4], [0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    test = Predictions(
        "test",
        CLASSIFICATION_TASKS["multiclass"],
        ["a", "b", "c"],
        ["a", "b", "c"],
        probabilities,
        np.array([0, 1, 2, 2]),
        meta(["xray"] * 4, [""] * 4),
    )
    overall = evaluate_predictions(test, None, n_resamples=20)["overall"]
    assert overall["accuracy"]["value"] == 0.75
    assert overall["macro_recall"]["value"] == pytest.approx(5 / 6)
    assert overall["per_class"]["c"]["recall"] == 0.5
    assert overall["confusion_matrix"] == [[1, 0, 0], [0, 1, 0], [1, 0, 1]]


def test_multimodal_predictions_from_two_tfrecord_folders(tmp_path):
    config = classification_inputs(
        [tiny_ct(tmp_path), tiny_xray(tmp_path)],
        label_map={"COVID-19": "COVID", "Non-COVID": "NonCOVID", "Normal": "NonCOVID"},
        image_size=16,
        channels=1,
        batch_size=8,
    )
    predictions = collect_predictions(model_predict_fn(constant_model(0.7)), config, "test")
    # 8 CT test images (4 COVID) and 6 X-ray test images (2 COVID-19, 4 others).
    assert predictions.meta["modality"].tolist() == ["ct"] * 8 + ["xray"] * 6
    assert predictions.targets.tolist() == [1, 1, 0, 0, 1, 1, 0, 0] + [1, 1, 0, 0, 0, 0]
    np.testing.assert_allclose(predictions.probabilities, 0.7, rtol=1e-6)
    report = evaluate_predictions(predictions, ThresholdChoice.fixed(0.5), n_resamples=20)
    assert report["by_modality"]["ct"]["sensitivity"]["value"] == 1.0
    assert report["by_modality"]["xray"]["specificity"]["value"] == 0.0
    assert report["by_source"]["xraysrc"]["counts"]["n"] == 6
