import numpy as np
import pytest

from common.bootstrap import bootstrap_ci, bootstrap_cis, ci_entry


def accuracy(labels, predictions):
    return float(np.mean(labels == predictions))


def test_interval_contains_point_and_narrows_with_more_data():
    rng = np.random.default_rng(1)
    widths = []
    for n in (50, 2000):
        labels = rng.integers(0, 2, n)
        predictions = np.where(rng.random(n) < 0.8, labels, 1 - labels)
        point, low, high = bootstrap_ci(accuracy, labels, predictions, n_resamples=300)
        assert point == accuracy(labels, predictions)
        assert low <= point <= high
        widths.append(high - low)
    assert widths[1] < widths[0] / 3


def test_constant_metric_gives_a_zero_width_interval():
    assert bootstrap_ci(lambda x: 7.0, np.arange(10), n_resamples=20) == (7.0, 7.0, 7.0)


def test_same_seed_same_interval_and_groups_stay_together():
    values = np.array([0.0, 0.0, 0.0, 1.0, 1.0, 1.0])
    patients = np.array(["a", "a", "a", "b", "b", "b"])
    resampled_sizes = []

    def mean_and_record(x):
        resampled_sizes.append(len(x))
        return float(x.mean())

    first = bootstrap_ci(mean_and_record, values, groups=patients, n_resamples=200, seed=3)
    # Drawing whole patients, every resample has 6 rows and a mean of 0, 0.5 or 1 only.
    assert set(resampled_sizes) == {6}
    assert first == bootstrap_ci(lambda x: float(x.mean()), values, groups=patients, n_resamples=200, seed=3)
    assert first[0] == 0.5 and first[1] == 0.0 and first[2] == 1.0


def test_nan_resamples_are_dropped_and_too_many_give_nan_bounds():
    labels = np.array([0, 0, 0, 0, 0, 0, 0, 1])

    def positive_rate_defined_only_with_both(x):
        return float(x.mean()) if 0 < x.sum() < len(x) else float("nan")

    point, low, high = bootstrap_ci(positive_rate_defined_only_with_both, labels, n_resamples=200)
    assert point == 0.125 and np.isfinite(low) and np.isfinite(high)
    point, low, high = bootstrap_ci(lambda x: float("nan"), labels, n_resamples=10)
    assert np.isnan(low) and np.isnan(high)


def test_mismatched_lengths_raise():
    with pytest.raises(ValueError, match=r"arrays differ in length: \[3, 2\]"):
        bootstrap_ci(accuracy, np.zeros(3), np.zeros(2))
    with pytest.raises(ValueError, match="groups has 2 entries, the arrays have 3"):
        bootstrap_ci(lambda x: 0.0, np.zeros(3), groups=[1, 2])


def test_several_metrics_resampled_together_match_single_runs():
    rng = np.random.default_rng(2)
    values = rng.random(40)
    both = bootstrap_cis(lambda x: {"mean": x.mean(), "max": x.max()}, values, n_resamples=100, seed=5)
    assert both["mean"] == bootstrap_ci(np.mean, values, n_resamples=100, seed=5)
    assert both["max"] == bootstrap_ci(np.max, values, n_resamples=100, seed=5)


def test_ci_entry_is_the_one_interval_shape():
    assert ci_entry(np.float32(0.5), 0.25, 0.75) == {"value": 0.5, "low": 0.25, "high": 0.75}
    assert ci_entry(float("nan"), float("nan"), float("nan")) == {"value": None, "low": None, "high": None}
    assert ci_entry(3) == {"value": 3.0, "low": None, "high": None}
