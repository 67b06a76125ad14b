"""Losses against hand-computed values on 4x4 masks (smooth = 1 unless stated)."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from segmentation import losses

TOP = np.zeros((4, 4), np.float32)
TOP[:2] = 1  # 8 truth pixels
BOTTOM = 1.0 - TOP
LEFT = np.zeros((4, 4), np.float32)
LEFT[:, :2] = 1  # overlaps TOP in 4 pixels


def batch(*masks: np.ndarray) -> np.ndarray:
    """(H, W) masks -> (B, H, W, 1)."""
    return np.stack(masks)[..., None].astype(np.float32)


def value(loss: keras.losses.Loss, y_true, y_pred) -> float:
    return float(keras.ops.convert_to_numpy(loss(y_true, y_pred)))


@pytest.mark.parametrize(
    ("pred", "dice", "jaccard", "tversky"),
    [
        (TOP, 0.0, 0.0, 0.0),  # perfect
        (BOTTOM, 16 / 17, 16 / 17, 1 - 1 / (0.3 * 8 + 0.7 * 8 + 1)),  # disjoint: TP 0, FP 8, FN 8
        (LEFT, 1 - 9 / 17, 1 - 5 / 13, 1 - 5 / (4 + 0.3 * 4 + 0.7 * 4 + 1)),  # half overlap: TP 4, FP 4, FN 4
        (np.full((4, 4), 0.5, np.float32), 1 - 9 / 17, 1 - 5 / 13, 1 - 5 / 9),  # soft: same sums as LEFT
    ],
)
def test_region_losses_hand_values(pred, dice, jaccard, tversky):
    y_true, y_pred = batch(TOP), batch(pred)
    assert value(losses.DiceLoss(), y_true, y_pred) == pytest.approx(dice, abs=1e-6)
    assert value(losses.JaccardLoss(), y_true, y_pred) == pytest.approx(jaccard, abs=1e-6)
    assert value(losses.TverskyLoss(alpha=0.3, beta=0.7), y_true, y_pred) == pytest.approx(tversky, abs=1e-6)


def test_empty_prediction_on_empty_truth_is_zero_loss_and_smoothing_is_stated():
    empty = batch(np.zeros((4, 4), np.float32))
    assert value(losses.DiceLoss(), empty, empty) == 0.0
    # Empty truth, one false-positive pixel: 1 - (0 + 1) / (0 + 1 + 0 + 1) = 0.5 with smooth = 1.
    one = np.zeros((4, 4), np.float32)
    one[0, 0] = 1
    assert value(losses.DiceLoss(), empty, batch(one)) == pytest.approx(0.5)
    assert value(losses.DiceLoss(smooth=0.0), batch(TOP), batch(LEFT)) == pytest.approx(0.5)


def test_losses_average_per_image_over_the_batch():
    # Image 1 perfect (0), image 2 disjoint (16/17): mean 8/17.
    assert value(losses.DiceLoss(), batch(TOP, TOP), batch(TOP, BOTTOM)) == pytest.approx(8 / 17, abs=1e-6)


def test_bce_and_focal_hand_values():
    half = batch(np.full((4, 4), 0.5, np.float32))
    assert value(losses.BCELoss(), batch(TOP), half) == pytest.approx(math.log(2), abs=1e-6)
    confident = batch(TOP * 0.9 + 0.05)  # p_t = 0.95 on every pixel
    assert value(losses.BCELoss(), batch(TOP), confident) == pytest.approx(-math.log(0.95), abs=1e-6)
    # alpha 0.25, gamma 2, p = 0.5: positives 0.25 * 0.25 * ln 2, negatives 0.75 * 0.25 * ln 2, half each.
    assert value(losses.FocalLoss(), batch(TOP), half) == pytest.approx(0.125 * math.log(2), abs=1e-6)


LABELS = np.array([[[0, 1], [2, 2]]])  # (1, 2, 2) integer class ids
ONE_HOT = np.eye(3, dtype=np.float32)[LABELS]  # (1, 2, 2, 3)
SOFT = (ONE_HOT * 0.7 + 0.1).astype(np.float32)  # 0.8 on the true class, 0.1 elsewhere


def test_categorical_losses_integer_and_one_hot_targets_agree():
    for loss in (losses.CategoricalCELoss(), losses.DiceLoss(), losses.FocalLoss(multiclass=True)):
        assert value(loss, LABELS, SOFT) == pytest.approx(value(loss, ONE_HOT, SOFT), abs=1e-6)
        assert value(loss, LABELS[..., None], SOFT) == pytest.approx(value(loss, ONE_HOT, SOFT), abs=1e-6)
    assert value(losses.CategoricalCELoss(), LABELS, SOFT) == pytest.approx(-math.log(0.8), abs=1e-6)


def test_class_weights_hand_values():
    # Background weight 0: weights normalised to (0, 0.5, 0.5), times K = 3 -> (0, 1.5, 1.5);
    # three foreground pixels of the four contribute 1.5 * -ln 0.8 each.
    weighted = losses.CategoricalCELoss(class_weights=[0, 1, 1])
    assert value(weighted, LABELS, SOFT) == pytest.approx(3 * 1.5 * -math.log(0.8) / 4, abs=1e-6)
    # Dice per class on SOFT (probabilities of the 4 pixels): class 1 (.1, .8, .1, .1), truth pixel 2:
    # TP .8, FP .3, FN .2 -> (1.6 + 1) / (1.6 + .5 + 1); class 2 (.1, .1, .8, .8), truth pixels 3-4:
    # TP 1.6, FP .2, FN .4 -> (3.2 + 1) / (3.2 + .6 + 1). Background has weight 0.
    dice_1, dice_2 = 2.6 / 3.1, 4.2 / 4.8
    expected = 1 - (dice_1 + dice_2) / 2
    assert value(losses.DiceLoss(class_weights=[0, 1, 1]), LABELS, SOFT) == pytest.approx(expected, abs=1e-6)
    with pytest.raises(ValueError, match="class_weights has 2 entries for 3 output channels"):
        value(losses.DiceLoss(class_weights=[1, 1]), LABELS, SOFT)


def test_combined_loss_is_the_weighted_sum():
    y_true, y_pred = batch(TOP), batch(LEFT * 0.8 + 0.1)
    combined = losses.CombinedLoss([(losses.BCELoss(), 1.0), (losses.DiceLoss(), 0.5)])
    expected = value(losses.BCELoss(), y_true, y_pred) + 0.5 * value(losses.DiceLoss(), y_true, y_pred)
    assert value(combined, y_true, y_pred) == pytest.approx(expected, abs=1e-6)
    assert value(losses.get_loss("bce_dice"), y_true, y_pred) == pytest.approx(
        value(losses.BCELoss(), y_true, y_pred) + value(losses.DiceLoss(), y_true, y_pred), abs=1e-6
    )


def test_get_loss_unknown_name_lists_known():
    with pytest.raises(ValueError, match="unknown loss 'dicee'; known: bce, cce, dice"):
        losses.get_loss("dicee")


def test_model_with_combined_loss_saves_and_reloads(tmp_path):
    inputs = keras.Input((4, 4, 1))
    outputs = keras.layers.Conv2D(1, 1, activation="sigmoid")(inputs)
    model = keras.Model(inputs, outputs)
    loss = losses.CombinedLoss(
        [(losses.FocalLoss(gamma=1.5), 2.0), (losses.TverskyLoss(alpha=0.2, beta=0.8), 1.0)]
    )
    model.compile(optimizer="adam", loss=loss)
    model.fit(batch(TOP), batch(TOP), epochs=1, verbose=0)
    model.save(tmp_path / "model.keras")
    reloaded = keras.saving.load_model(tmp_path / "model.keras")
    terms = reloaded.loss.terms
    assert [type(term).__name__ for term, _ in terms] == ["FocalLoss", "TverskyLoss"]
    assert [weight for _, weight in terms] == [2.0, 1.0]
    assert (terms[0][0].gamma, terms[1][0].alpha, terms[1][0].beta) == (1.5, 0.2, 0.8)
    y_pred = batch(LEFT * 0.8 + 0.1)
    assert value(reloaded.loss, batch(TOP), y_pred) == pytest.approx(
        value(loss, batch(TOP), y_pred), abs=1e-6
    )
