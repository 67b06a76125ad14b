"""Threshold selection: hand-computed sweep, the validation-only guard, JSON round trip, plots."""

from __future__ import annotations

import numpy as np
import pytest

from common.thresholds import NoValidationDataError, ThresholdChoice, ThresholdSplitError
from segmentation.thresholds import (
    choose_mask_thresholds,
    plot_choice,
    precision_recall_curve,
    threshold_curve,
)

# One image, 4 pixels: truth (1, 1, 0, 0), probabilities (0.9, 0.6, 0.4, 0.1).
PROBS = np.array([0.9, 0.6, 0.4, 0.1], np.float32).reshape(1, 2, 2, 1)
MASKS = np.array([1, 1, 0, 0], np.uint8).reshape(1, 2, 2, 1)
GRID = (0.05, 0.5, 0.7, 0.95)


def test_curve_and_choice_hand_values():
    # t=0.05: all 4 predicted -> TP 2, FP 2 -> Dice 4/6; t=0.5: exact -> 1; t=0.7: TP 1, FN 1 -> 2/3;
    # t=0.95: nothing predicted, truth non-empty -> 0.
    np.testing.assert_allclose(threshold_curve(PROBS, MASKS, GRID)[:, 0], [2 / 3, 1.0, 2 / 3, 0.0])
    choice = choose_mask_thresholds(PROBS, MASKS, split="val", grid=GRID)
    assert choice.thresholds == (0.5,) and choice.validation_scores == (1.0,)
    assert choice.split == "val" and choice.criterion == "dice" and choice.average == "per_image"
    assert choice.grid == GRID and choice.curves == ((2 / 3, 1.0, 2 / 3, 0.0),)
    np.testing.assert_array_equal(choice.binarize(PROBS), MASKS.astype(bool))


@pytest.mark.parametrize("split", ["test", "train", "Test", "holdout", "fixed"])
def test_choosing_on_a_non_validation_split_raises(split):
    with pytest.raises(ThresholdSplitError):
        choose_mask_thresholds(PROBS, MASKS, split=split, grid=GRID)


def test_a_choice_cannot_claim_a_test_split():
    with pytest.raises(ThresholdSplitError, match="not on 'test'"):
        ThresholdChoice(thresholds=(0.4,), split="test")
    with pytest.raises(ThresholdSplitError):
        ThresholdChoice.from_dict({"thresholds": [0.4], "split": "test"})


def test_fixed_choice_and_json_round_trip(tmp_path):
    fixed = ThresholdChoice.fixed(0.5, num_outputs=2)
    assert fixed.thresholds == (0.5, 0.5) and fixed.split == "fixed"
    choice = choose_mask_thresholds(PROBS, MASKS, split="validation", grid=GRID)
    assert ThresholdChoice.load(choice.save(tmp_path / "threshold.json")) == choice
    with pytest.raises(ValueError, match="1 channels but 2 thresholds"):
        fixed.binarize(PROBS)


def test_ties_go_to_the_lowest_threshold_and_empty_validation_is_refused():
    # Every grid threshold between 0.4 and 0.6 separates the pixels exactly: Dice 1 at 0.45 and 0.55.
    assert choose_mask_thresholds(PROBS, MASKS, split="val", grid=(0.3, 0.55, 0.45)).thresholds == (0.45,)
    with pytest.raises(NoValidationDataError, match="no validation predictions on split 'val'"):
        choose_mask_thresholds(PROBS[:0], MASKS[:0], split="val", grid=GRID)


def test_per_channel_thresholds():
    probs = np.concatenate([PROBS, PROBS * 0.5], axis=-1)  # channel 2: (0.45, 0.3, 0.2, 0.05)
    masks = np.concatenate([MASKS, MASKS], axis=-1)
    assert choose_mask_thresholds(probs, masks, split="val", grid=(0.25, 0.5)).thresholds == (0.5, 0.25)


def test_pr_curve_and_plots(tmp_path):
    precision, recall = precision_recall_curve(PROBS, MASKS, GRID)
    np.testing.assert_allclose(precision[:, 0], [0.5, 1.0, 1.0, np.nan])
    np.testing.assert_allclose(recall[:, 0], [1.0, 1.0, 0.5, 0.0])
    choice = choose_mask_thresholds(PROBS, MASKS, split="val", grid=GRID)
    paths = plot_choice(choice, PROBS, MASKS, tmp_path, ["infection"])
    assert [p.name for p in paths] == ["threshold_curve.png", "pr_curve.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)
