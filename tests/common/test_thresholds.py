"""The one threshold rule of both packages: validation splits, the tie rule, the fallback, the record."""

from __future__ import annotations

import json

import numpy as np
import pytest

from common.thresholds import (
    FALLBACK_THRESHOLD,
    THRESHOLD_FILE,
    NoValidationDataError,
    ThresholdChoice,
    ThresholdSplitError,
    best_candidate,
    choose_threshold,
    is_validation_split,
)


@pytest.mark.parametrize("candidates", [[0.2, 0.4, 0.6, 0.8], [0.8, 0.6, 0.4, 0.2]])
def test_ties_go_to_the_lowest_threshold_in_any_candidate_order(candidates):
    values = {0.2: 0.1, 0.4: 0.7, 0.6: 0.7, 0.8: np.nan}
    assert best_candidate(np.array(candidates), np.array([values[c] for c in candidates])) == (0.4, 0.7)


def test_an_undefined_criterion_everywhere_falls_back_to_the_stated_constant():
    threshold, value = best_candidate(np.array([0.3, 0.6]), np.array([np.nan, np.nan]))
    assert threshold == FALLBACK_THRESHOLD == 0.5 and np.isnan(value)


@pytest.mark.parametrize(
    ("split", "valid"), [("val", True), ("Validation", True), ("dev", True), ("test", False)]
)
def test_one_rule_for_validation_split_names(split, valid):
    assert is_validation_split(split) is valid


def test_choice_over_outputs_with_and_without_a_shared_grid():
    grid = np.array([0.25, 0.5, 0.75])
    choice = choose_threshold(
        [grid, grid],
        [np.array([0.1, 0.9, 0.9]), np.array([0.8, 0.2, 0.1])],
        "val",
        "dice",
        "per_image",
        keep_sweep=True,
    )
    assert choice.thresholds == (0.5, 0.25) and choice.validation_scores == (0.9, 0.8)
    assert choice.grid == (0.25, 0.5, 0.75) and choice.curves == ((0.1, 0.9, 0.9), (0.8, 0.2, 0.1))
    with pytest.raises(ValueError, match="one grid shared by every output"):
        choose_threshold([grid, grid[:2]], [grid, grid[:2]], "val", "f1", keep_sweep=True)
    with pytest.raises(ThresholdSplitError, match="not on 'test'"):
        choose_threshold([grid], [grid], "test", "f1")
    with pytest.raises(NoValidationDataError, match="no validation predictions on split 'val'"):
        choose_threshold([np.empty(0)], [np.empty(0)], "val", "f1")


def test_record_round_trip_and_refusals(tmp_path):
    choice = ThresholdChoice((0.3, 0.6), "val", "youden", "pooled", (0.5, float("nan")))
    path = choice.save(tmp_path / THRESHOLD_FILE)
    saved = json.loads(path.read_text())
    assert saved["thresholds"] == [0.3, 0.6] and saved["validation_scores"] == [0.5, None]
    loaded = ThresholdChoice.load(path)
    assert loaded.thresholds == (0.3, 0.6) and loaded.validation_scores[0] == 0.5
    assert np.isnan(loaded.validation_scores[1])
    assert "grid" not in choice.summary() and choice.summary()["criterion"] == "youden"
    with pytest.raises(ValueError, match="not a threshold record"):
        ThresholdChoice.from_dict({"thresholds": [0.5], "split": "val", "metric": "dice"})
    with pytest.raises(ThresholdSplitError):
        ThresholdChoice((0.5,), "test")
    with pytest.raises(ThresholdSplitError, match="chosen on split 'VAL', the split being evaluated"):
        choice.check_applicable_to("VAL")
    fixed = ThresholdChoice.fixed(0.5, num_outputs=2)
    fixed.check_applicable_to("test")
    np.testing.assert_array_equal(fixed.binarize(np.array([[0.5, 0.49]])), [[True, False]])
