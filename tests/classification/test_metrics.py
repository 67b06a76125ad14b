import numpy as np
import pytest

from classification.metrics import (
    ThresholdChoice,
    average_precision,
    binary_metrics,
    choose_threshold,
    confusion_matrix,
    multiclass_metrics,
    roc_auc,
    roc_curve,
)

# Positives score 0.9, 0.6, 0.4; negatives 0.6 (a tie with a positive), 0.3, 0.1.
LABELS = np.array([1, 1, 0, 1, 0, 0])
SCORES = np.array([0.9, 0.6, 0.6, 0.4, 0.3, 0.1])


def test_roc_auc_counts_ties_as_half():
    # Pairs won: 0.9 beats 3, 0.6 beats 2 and ties 1, 0.4 beats 2 -> 7.5 of 9.
    assert roc_auc(LABELS, SCORES) == pytest.approx(7.5 / 9)
    fpr, tpr, thresholds = roc_curve(LABELS, SCORES)
    np.testing.assert_allclose(fpr, [0, 0, 1 / 3, 1 / 3, 2 / 3, 1])
    np.testing.assert_allclose(tpr, [0, 1 / 3, 2 / 3, 1, 1, 1])
    np.testing.assert_allclose(thresholds, [np.inf, 0.9, 0.6, 0.4, 0.3, 0.1])


def test_average_precision_hand_value():
    # Recall steps of 1/3 at precisions 1, 2/3 and 3/4.
    assert average_precision(LABELS, SCORES) == pytest.approx(1 / 3 + 2 / 9 + 1 / 4)


def test_perfect_and_single_class_cases():
    assert roc_auc([0, 0, 1], [0.1, 0.2, 0.9]) == 1.0
    assert average_precision([0, 0, 1], [0.1, 0.2, 0.9]) == 1.0
    assert np.isnan(roc_auc([1, 1], [0.2, 0.3]))
    assert np.isnan(average_precision([0, 0], [0.2, 0.3]))


def test_binary_metrics_at_half():
    metrics = binary_metrics(LABELS, SCORES, 0.5)
    assert (metrics["tp"], metrics["fp"], metrics["tn"], metrics["fn"], metrics["n"]) == (2, 1, 2, 1, 6)
    for name in ("accuracy", "precision", "recall", "sensitivity", "specificity", "f1"):
        assert metrics[name] == pytest.approx(2 / 3), name
    assert np.isnan(binary_metrics([0, 0], [0.1, 0.2], 0.5)["precision"])


def test_confusion_matrix_rows_are_truth():
    np.testing.assert_array_equal(
        confusion_matrix([0, 1, 1, 2], [0, 2, 1, 2], 3), [[1, 0, 0], [0, 1, 1], [0, 0, 1]]
    )


def test_multiclass_hand_values():
    probabilities = np.array([[0.7, 0.2, 0.1], [0.1, 0.5, 0.4], [0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    metrics = multiclass_metrics([0, 1, 2, 2], probabilities, ["a", "b", "c"])
    assert metrics["confusion_matrix"] == [[1, 0, 0], [0, 1, 0], [1, 0, 1]]
    assert metrics["accuracy"] == 0.75
    assert metrics["macro_precision"] == pytest.approx(5 / 6)
    assert metrics["macro_recall"] == pytest.approx(5 / 6)
    assert metrics["per_class"]["a"]["specificity"] == pytest.approx(2 / 3)
    assert metrics["per_class"]["c"]["roc_auc"] == pytest.approx(2.5 / 4)
    assert metrics["macro_roc_auc"] == pytest.approx((1 + 1 + 0.625) / 3)


def test_threshold_chosen_on_validation_by_youden():
    choice = choose_threshold(LABELS, SCORES, split="val")
    # Midpoint 0.35 keeps all positives and one false positive: J = 1 + 2/3 - 1.
    assert choice == ThresholdChoice(pytest.approx(0.35), "youden", "val", pytest.approx(2 / 3))


@pytest.mark.parametrize("split", ["test", "train", "Test"])
def test_threshold_cannot_be_chosen_on_other_splits(split):
    with pytest.raises(ValueError, match=f"thresholds are chosen on validation data only .*got '{split}'"):
        choose_threshold(LABELS, SCORES, split=split)


def test_threshold_cannot_be_applied_to_the_split_it_came_from():
    choice = choose_threshold(LABELS, SCORES, split="validation")
    choice.check_applicable_to("test")
    with pytest.raises(ValueError, match="threshold was chosen on split 'validation'"):
        choice.check_applicable_to("validation")
    ThresholdChoice.fixed(0.5).check_applicable_to("test")


def test_threshold_falls_back_to_half_when_validation_lacks_a_class():
    choice = choose_threshold([0, 0, 0], [0.2, 0.4, 0.9], split="val")
    assert choice.threshold == 0.5 and np.isnan(choice.value)
