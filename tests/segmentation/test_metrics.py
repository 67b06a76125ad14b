"""Metrics against hand-made masks with hand-computed values."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from segmentation import metrics

TOP = np.zeros((4, 4), bool)
TOP[:2] = True  # 8 pixels
LEFT = np.zeros((4, 4), bool)
LEFT[:, :2] = True  # overlaps TOP in 4
EMPTY = np.zeros((4, 4), bool)


def stack(*masks: np.ndarray) -> np.ndarray:
    """(H, W) bool masks -> channel stack (N, H, W, 1)."""
    return np.stack(masks)[..., None]


@pytest.mark.parametrize(
    ("pred", "truth", "dice", "iou"),
    [
        (TOP, TOP, 1.0, 1.0),  # perfect
        (EMPTY, EMPTY, 1.0, 1.0),  # empty prediction on empty truth
        (TOP, EMPTY, 0.0, 0.0),  # empty truth, non-empty prediction
        (EMPTY, TOP, 0.0, 0.0),  # missed everything
        (~TOP, TOP, 0.0, 0.0),  # disjoint
        (LEFT, TOP, 0.5, 1 / 3),  # half overlap: TP 4, FP 4, FN 4
    ],
)
def test_dice_iou_single_image(pred, truth, dice, iou):
    for average in metrics.AVERAGES:
        kwargs = {"case_ids": ["a"]} if average == "per_case" else {}
        assert metrics.dice(stack(pred), stack(truth), average, **kwargs) == pytest.approx(dice)
        assert metrics.iou(stack(pred), stack(truth), average, **kwargs) == pytest.approx(iou)


def test_per_image_pooled_and_per_case_differ_as_hand_computed():
    big = np.zeros((4, 4), bool)
    big[:2] = True  # image A: truth 8 px, prediction identical -> Dice 1
    small_truth, small_pred = np.zeros((4, 4), bool), np.zeros((4, 4), bool)
    small_truth[0, :2], small_pred[3, :2] = True, True  # image B: 2 px each, disjoint -> Dice 0
    mid_truth, mid_pred = np.zeros((4, 4), bool), np.zeros((4, 4), bool)
    mid_truth[0] = True
    mid_pred[0, :2] = mid_pred[1, :2] = True  # image C: TP 2, FP 2, FN 2 -> Dice 0.5
    pred, truth = stack(big, small_pred, mid_pred), stack(big, small_truth, mid_truth)
    cases = np.array(["x", "x", "y"])
    assert metrics.dice(pred, truth, "per_image") == pytest.approx((1 + 0 + 0.5) / 3)
    # Pooled: TP 8 + 0 + 2, FP 0 + 2 + 2, FN 0 + 2 + 2 -> 20 / 28.
    assert metrics.dice(pred, truth, "pooled") == pytest.approx(20 / 28)
    # Case x = A + B: TP 8, FP 2, FN 2 -> 16 / 20; case y = C -> 0.5; mean 0.65.
    assert metrics.dice(pred, truth, "per_case", case_ids=cases) == pytest.approx(0.65)
    assert metrics.iou(pred, truth, "pooled") == pytest.approx(10 / 18)
    with pytest.raises(ValueError, match='average="per_case" needs case_ids'):
        metrics.dice(pred, truth, "per_case")


def test_label_maps_background_excluded_unless_asked():
    truth = np.array([[[0, 1], [2, 2]]])
    pred = np.array([[[0, 1], [1, 2]]])
    # class 1: TP 1, FP 1 -> Dice 2/3; class 2: TP 1, FN 1 -> 2/3; background: perfect -> 1.
    assert metrics.dice(pred, truth) == pytest.approx(2 / 3)
    assert metrics.dice(pred, truth, include_background=True) == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    # mIoU (pooled, background included): IoU 1, 1/2, 1/2.
    assert metrics.mean_iou(pred, truth, num_classes=3) == pytest.approx(2 / 3)
    # The same stack with a background channel: "no channel set".
    # class 1: TP 1, FP 1 -> 2/3; background: TP 2, FN 1 -> 4/5.
    stacked = metrics.dice((pred == 1)[..., None], (truth == 1)[..., None], include_background=True)
    assert stacked == pytest.approx((0.8 + 2 / 3) / 2)
    with pytest.raises(ValueError, match=r"channel stacks must be \(N, H, W, C\) or"):
        metrics.dice(pred == 1, truth == 1)
    with pytest.raises(ValueError, match="binarise probabilities first"):
        metrics.dice(np.full((1, 2, 2, 1), 0.7), np.ones((1, 2, 2, 1)))


def test_per_class_dice_for_manifestations():
    truth = np.zeros((2, 4, 4), np.uint8)
    truth[0, :2] = 1  # GGO in image 1
    truth[1, :, :2] = 2  # consolidation in image 2
    pred = truth.copy()
    pred[1, :, 0] = 3  # half of the consolidation called effusion
    result = metrics.per_class_dice(pred, truth)
    # GGO perfect in both (image 2 empty/empty = 1); consolidation: image 1 empty/empty = 1,
    # image 2 TP 4 FN 4 -> 2/3; effusion: image 1 = 1, image 2 empty truth with prediction -> 0.
    assert result == pytest.approx({"ggo": 1.0, "consolidation": (1 + 2 / 3) / 2, "effusion": 0.5})
    pooled = metrics.per_class_dice(pred, truth, average="pooled")
    assert pooled == pytest.approx({"ggo": 1.0, "consolidation": 2 / 3, "effusion": 0.0})


def test_precision_recall_specificity_and_undefined_rule():
    pred, truth = stack(LEFT), stack(TOP)  # TP 4, FP 4, FN 4, TN 4
    assert metrics.precision(pred, truth) == 0.5
    assert metrics.recall(pred, truth) == 0.5
    assert metrics.specificity(pred, truth) == 0.5
    counts = metrics.confusion_counts(stack(EMPTY, TOP), stack(TOP, EMPTY))
    assert np.isnan(metrics.precision_from_counts(counts)[0, 0])  # nothing predicted
    assert np.isnan(metrics.recall_from_counts(counts)[1, 0])  # empty truth
    # NaN images are left out of the per-image mean: image 1 precision NaN, image 2 precision 0.
    assert metrics.precision(stack(EMPTY, TOP), stack(TOP, EMPTY)) == 0.0
    assert np.isnan(metrics.specificity(stack(np.ones((4, 4), bool)), stack(np.ones((4, 4), bool))))


def test_hausdorff95_hand_values():
    pred, truth = np.zeros((8, 8), bool), np.zeros((8, 8), bool)
    pred[0, 0], truth[3, 4] = True, True
    assert metrics.hausdorff95(pred, truth) == pytest.approx(5.0)
    assert metrics.hausdorff95(pred, truth, spacing=(2.0, 1.0)) == pytest.approx(math.sqrt(6**2 + 4**2))
    assert metrics.hausdorff95(TOP, TOP) == 0.0
    assert math.isnan(metrics.hausdorff95(TOP, EMPTY))
    assert math.isnan(metrics.hausdorff95(EMPTY, EMPTY))
    # A 3D volume works the same way (distances in mm along each axis).
    vol_pred, vol_truth = np.zeros((4, 4, 4), bool), np.zeros((4, 4, 4), bool)
    vol_pred[0, 0, 0], vol_truth[0, 0, 3] = True, True
    assert metrics.hausdorff95(vol_pred, vol_truth, spacing=(1.0, 1.0, 2.5)) == pytest.approx(7.5)


def test_normalized_surface_dice_hand_values():
    pred, truth = np.zeros((10, 10), bool), np.zeros((10, 10), bool)
    pred[0, 0] = pred[9, 9] = True
    truth[0, 3] = True
    # DeepMind surfels: each pixel contributes its 4 corner points, all of equal contour length. Corners of
    # pred (0, 0) are 2, 2, 3, 3 from the truth corners, those of pred (9, 9) over 8; truth corners are 2, 2,
    # 3, 3 from pred's. Within 3: (4 + 4) / (8 + 4); within 2.9: (2 + 2) / 12; within 1.9: none.
    assert metrics.normalized_surface_dice(pred, truth, tolerance_mm=3.0) == pytest.approx(2 / 3)
    assert metrics.normalized_surface_dice(pred, truth, tolerance_mm=2.9) == pytest.approx(1 / 3)
    assert metrics.normalized_surface_dice(pred, truth, tolerance_mm=1.9) == 0.0
    assert metrics.normalized_surface_dice(
        pred, truth, tolerance_mm=1.0, spacing=(1.0, 0.3)
    ) == pytest.approx(2 / 3)
    assert metrics.normalized_surface_dice(EMPTY, EMPTY, 1.0) == 1.0
    assert metrics.normalized_surface_dice(TOP, EMPTY, 1.0) == 0.0


def test_infnet_mean_and_max_dice_hand_values():
    probs = np.array([[[0.2, 0.8]]])  # after per-image min-max scaling: (0, 1 - 1e-8)
    truth = np.array([[[0, 1]]])
    curve = metrics.infnet_dice_curve(probs, truth)
    # t = 0: both pixels predicted -> 2 / 3; 0 < t < 1: only the true pixel -> 1; t = 1: none -> 0.
    assert curve[0] == pytest.approx(2 / 3)
    assert np.all(curve[1:255] == 1.0) and curve[255] == 0.0
    assert metrics.infnet_mean_dice(probs, truth) == pytest.approx((2 / 3 + 254) / 256)
    assert metrics.max_dice(probs, truth) == 1.0


def test_keras_metrics_pool_over_batches_and_reload():
    dice, iou = metrics.DiceCoefficient(), metrics.IoUScore()
    for metric in (dice, iou):
        metric.update_state(stack(TOP).astype("float32"), stack(LEFT).astype("float32") * 0.9)
        metric.update_state(stack(TOP).astype("float32"), stack(TOP).astype("float32") * 0.6)
    # Pooled: TP 4 + 8, FP 4, FN 4 -> Dice 24 / 32, IoU 12 / 20.
    assert float(dice.result()) == pytest.approx(0.75)
    assert float(iou.result()) == pytest.approx(0.6)
    dice.reset_state()
    assert float(dice.result()) == 1.0
    # Softmax outputs with integer targets: argmax, background channel left out.
    labels = np.array([[[0, 1], [2, 2]]])
    probs = np.eye(3, dtype="float32")[np.array([[[0, 1], [1, 2]]])]
    multi = metrics.DiceCoefficient(num_classes=3, multiclass=True)
    multi.update_state(labels, probs)
    assert float(multi.result()) == pytest.approx(2 / 3)
    config = keras.saving.serialize_keras_object(multi)
    restored = keras.saving.deserialize_keras_object(config)
    assert (restored.num_classes, restored.multiclass, restored.name) == (3, True, "dice")


def test_infnet_curve_equals_thresholding_at_every_one_of_the_256_thresholds():
    rng = np.random.default_rng(0)
    probs, truth = rng.random((4, 8, 8)), rng.random((4, 8, 8)) > 0.6
    truth[2] = False  # an empty truth: Dice 0 until nothing is predicted (t = 1), then 1
    scaled = probs.reshape(4, -1)
    scaled = (scaled - scaled.min(1, keepdims=True)) / (np.ptp(scaled, axis=1, keepdims=True) + 1e-8)
    expected = [
        metrics.dice((scaled >= t).reshape(4, 8, 8, 1), truth[..., None]) for t in metrics.INFNET_THRESHOLDS
    ]
    np.testing.assert_allclose(metrics.infnet_dice_curve(probs, truth), expected, atol=1e-12)
