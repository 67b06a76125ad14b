import warnings

import numpy as np
import pytest
from sklearn import metrics as sk

from classification.metrics import (
    BINARY_METRICS,
    average_precision,
    binary_metrics,
    confusion_matrix,
    multiclass_metrics,
    pr_curve,
    roc_auc,
    roc_curve,
    threshold_sweep,
)
from common.thresholds import ThresholdChoice, ThresholdSplitError, choose_threshold

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


def choose(labels, scores, split, criterion="youden") -> ThresholdChoice:
    candidates, values = threshold_sweep(labels, scores, criterion)
    return choose_threshold([candidates], [values], split, criterion)


def test_threshold_sweep_hand_values():
    candidates, values = threshold_sweep(LABELS, SCORES)
    np.testing.assert_allclose(candidates, [0.9 + 1e-6, 0.75, 0.5, 0.35, 0.2, 0.1])
    # Youden J = sensitivity + specificity - 1 at each candidate.
    np.testing.assert_allclose(values, [0, 1 / 3, 1 / 3, 2 / 3, 1 / 3, 0], atol=1e-12)
    with pytest.raises(ValueError, match="criterion 'auc' is not one of"):
        threshold_sweep(LABELS, SCORES, "auc")


def test_threshold_chosen_on_validation_by_youden():
    choice = choose(LABELS, SCORES, split="val")
    # Midpoint 0.35 keeps all positives and one false positive: J = 1 + 2/3 - 1.
    assert choice == ThresholdChoice(
        (pytest.approx(0.35),), "val", "youden", "pooled", (pytest.approx(2 / 3),)
    )


@pytest.mark.parametrize("split", ["test", "train", "Test"])
def test_threshold_cannot_be_chosen_on_other_splits(split):
    with pytest.raises(
        ThresholdSplitError, match=f"thresholds are chosen on validation data only .*not on '{split}'"
    ):
        choose(LABELS, SCORES, split=split)


def test_threshold_cannot_be_applied_to_the_split_it_came_from():
    choice = choose(LABELS, SCORES, split="validation")
    choice.check_applicable_to("test")
    with pytest.raises(ThresholdSplitError, match="threshold was chosen on split 'validation'"):
        choice.check_applicable_to("validation")
    ThresholdChoice.fixed(0.5).check_applicable_to("test")


def test_threshold_falls_back_to_half_when_validation_lacks_a_class():
    choice = choose([0, 0, 0], [0.2, 0.4, 0.9], split="val")
    assert choice.thresholds == (0.5,) and np.isnan(choice.validation_scores[0])


# Pinned to the reference: scikit-learn on random scores with many ties, plus a brute-force check
# of the areas' definitions that does not go through scikit-learn at all.
def _tied_cases(seed: int, n: int = 60) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    scores = np.round(rng.random(n) * 10) / 10  # 11 distinct values: many ties within and across classes
    return labels, scores


@pytest.mark.parametrize("seed", range(5))
def test_curves_and_areas_equal_scikit_learn(seed):
    labels, scores = _tied_cases(seed)
    for ours, reference in zip(
        roc_curve(labels, scores), sk.roc_curve(labels, scores, drop_intermediate=False), strict=True
    ):
        np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-12)
    precision, recall, thresholds = sk.precision_recall_curve(labels, scores)
    for ours, reference in zip(
        pr_curve(labels, scores), (recall[-2::-1], precision[-2::-1], thresholds[::-1]), strict=True
    ):
        np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-12)
    assert roc_auc(labels, scores) == pytest.approx(sk.roc_auc_score(labels, scores), abs=1e-12)
    assert average_precision(labels, scores) == pytest.approx(
        sk.average_precision_score(labels, scores), abs=1e-12
    )


@pytest.mark.parametrize("seed", range(5))
def test_areas_equal_their_definitions_by_brute_force(seed):
    labels, scores = _tied_cases(seed)
    positives, negatives = scores[labels == 1], scores[labels == 0]
    pairs = (positives[:, None] > negatives[None, :]) + 0.5 * (positives[:, None] == negatives[None, :])
    assert roc_auc(labels, scores) == pytest.approx(pairs.mean(), abs=1e-12)
    thresholds = np.unique(scores)[::-1]
    tp = np.array([np.sum(positives >= t) for t in thresholds])
    fp = np.array([np.sum(negatives >= t) for t in thresholds])
    steps = np.diff(np.r_[0, tp]) / len(positives) * tp / (tp + fp)
    assert average_precision(labels, scores) == pytest.approx(steps.sum(), abs=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_binary_metrics_and_counts_equal_scikit_learn(seed):
    labels, scores = _tied_cases(seed)
    for threshold in (0.0, 0.3, 0.5, 0.55, 1.0, 1.1):
        predicted = (scores >= threshold).astype(int)
        tn, fp, fn, tp = sk.confusion_matrix(labels, predicted, labels=[0, 1]).ravel()
        metrics = binary_metrics(labels, scores, threshold)
        assert (metrics["tp"], metrics["fp"], metrics["tn"], metrics["fn"]) == (tp, fp, tn, fn)
        nan = float("nan")
        reference = {
            "accuracy": sk.accuracy_score(labels, predicted),
            "precision": sk.precision_score(labels, predicted, zero_division=nan),
            "recall": sk.recall_score(labels, predicted, zero_division=nan),
            "specificity": sk.recall_score(labels, predicted, pos_label=0, zero_division=nan),
            "f1": sk.f1_score(labels, predicted, zero_division=nan),
        }
        for name, value in reference.items():
            assert metrics[name] == pytest.approx(value, abs=1e-12, nan_ok=True), (threshold, name)


def test_multiclass_metrics_equal_scikit_learn():
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 3, 80)
    probabilities = np.round(rng.dirichlet(np.ones(3), 80) * 20) / 20  # tied probabilities
    metrics = multiclass_metrics(labels, probabilities, ["a", "b", "c"])
    predicted = probabilities.argmax(axis=1)
    np.testing.assert_array_equal(metrics["confusion_matrix"], sk.confusion_matrix(labels, predicted))
    assert metrics["accuracy"] == pytest.approx(sk.accuracy_score(labels, predicted), abs=1e-12)
    for name in ("precision", "recall", "f1"):
        score = getattr(sk, f"{name}_score")
        assert metrics[f"macro_{name}"] == pytest.approx(score(labels, predicted, average="macro"), abs=1e-12)
    one_hot = np.eye(3)[labels]
    assert metrics["macro_roc_auc"] == pytest.approx(
        sk.roc_auc_score(one_hot, probabilities, average="macro"), abs=1e-12
    )
    assert metrics["macro_pr_auc"] == pytest.approx(
        sk.average_precision_score(one_hot, probabilities, average="macro"), abs=1e-12
    )


@pytest.mark.parametrize("seed", range(3))
def test_confusion_matrix_equals_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    labels, predictions = rng.integers(0, 4, 50), rng.integers(0, 4, 50)
    matrix = confusion_matrix(labels, predictions, 5)  # class 4 never occurs: a zero row and column
    assert matrix.dtype == np.int64
    np.testing.assert_array_equal(matrix, sk.confusion_matrix(labels, predictions, labels=range(5)))


def test_confusion_matrix_edge_cases():
    np.testing.assert_array_equal(confusion_matrix([], [], 2), [[0, 0], [0, 0]])
    with pytest.raises(ValueError, match=r"predictions must be class ids in \[0, 3\); got 0..3"):
        confusion_matrix([0, 1], [0, 3], 3)
    with pytest.raises(ValueError, match=r"labels must be class ids in \[0, 3\); got -1..1"):
        confusion_matrix([-1, 1], [0, 1], 3)


def test_missing_class_gives_nan_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scikit-learn warns (or raises) here; we return NaN quietly
        fpr, tpr, _ = roc_curve([1, 1, 1], [0.2, 0.3, 0.3])
        assert np.isnan(fpr).all() and tpr.tolist() == [0, 2 / 3, 1]
        fpr, tpr, _ = roc_curve([0, 0], [0.2, 0.3])
        assert np.isnan(tpr).all() and fpr.tolist() == [0, 0.5, 1]
        recall, precision, thresholds = pr_curve([0, 0], [0.2, 0.3])
        assert np.isnan(recall).all() and precision.tolist() == [0, 0] and thresholds.tolist() == [0.3, 0.2]
        assert np.isnan(average_precision([0, 0], [0.2, 0.3]))
        assert average_precision([1, 1], [0.2, 0.3]) == 1.0
        assert np.isnan(roc_auc([], []))
        empty = binary_metrics([], [], 0.5)
        assert empty["n"] == 0 and all(np.isnan(empty[name]) for name in BINARY_METRICS)
