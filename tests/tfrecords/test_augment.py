from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from tfrecords.augment import AugmentConfig, augment

SIZE = 24


def _blob() -> np.ndarray:
    """(24, 24, 1) float32 {0, 1}: an asymmetric L shape, so flips and rotations are visible."""
    mask = np.zeros((SIZE, SIZE, 1), np.float32)
    mask[4:18, 5:9] = 1.0
    mask[14:18, 5:16] = 1.0
    return mask


def _run(image: np.ndarray, masks: np.ndarray | None, seed: tuple[int, int], config: AugmentConfig):
    moved, moved_masks = augment(
        tf.constant(image), None if masks is None else tf.constant(masks), tf.constant(seed, tf.int64), config
    )
    return moved.numpy(), None if moved_masks is None else moved_masks.numpy()


def test_defaults_keep_left_and_right() -> None:
    config = AugmentConfig()
    assert (config.flip_left_right, config.flip_up_down, config.elastic_alpha) == (False, False, 0.0)


def test_off_is_the_identity() -> None:
    image = np.random.default_rng(0).random((SIZE, SIZE, 1)).astype(np.float32)
    moved, masks = _run(image, _blob(), (1, 2), AugmentConfig.off())
    np.testing.assert_array_equal(moved, image)
    np.testing.assert_array_equal(masks, _blob())


@pytest.mark.parametrize("seed", [(0, 0), (0, 1), (7, 3), (11, 12)])
def test_image_and_mask_move_together(seed: tuple[int, int]) -> None:
    # An image equal to its mask, moved with rotation, zoom, shift and elastic deformation: thresholding
    # the bilinearly moved image gives exactly the (bilinear, re-thresholded) moved mask.
    config = AugmentConfig(
        rotation_degrees=25.0,
        scale_range=(0.8, 1.2),
        translate_fraction=0.1,
        elastic_alpha=2.0,
        brightness=0.0,
        contrast=(1.0, 1.0),
        gamma=(1.0, 1.0),
        mask_interpolation="bilinear",
    )
    moved, masks = _run(_blob(), _blob(), seed, config)
    assert not np.array_equal(masks, _blob())
    np.testing.assert_array_equal((moved >= 0.5).astype(np.float32), masks)


def test_nearest_masks_stay_binary_and_aligned() -> None:
    config = AugmentConfig(rotation_degrees=20.0, brightness=0.0, contrast=(1.0, 1.0), gamma=(1.0, 1.0))
    moved, masks = _run(_blob(), _blob(), (5, 5), config)
    assert set(np.unique(masks)) <= {0.0, 1.0}
    # Nearest and bilinear sampling of one shape differ at most along its edge.
    assert np.mean((moved >= 0.5) != (masks >= 0.5)) < 0.05


def test_flips_are_exact_and_shared() -> None:
    config = dataclasses.replace(AugmentConfig.off(), flip_left_right=True, flip_up_down=True)
    seen = set()
    for index in range(12):
        moved, masks = _run(_blob(), _blob(), (0, index), config)
        np.testing.assert_array_equal(moved, masks)
        for up_down in (False, True):
            for left_right in (False, True):
                expected = _blob()
                expected = expected[::-1] if up_down else expected
                expected = expected[:, ::-1] if left_right else expected
                if np.array_equal(masks, expected):
                    seen.add((up_down, left_right))
    assert seen == {(False, False), (False, True), (True, False), (True, True)}


def test_intensity_changes_the_image_only() -> None:
    config = AugmentConfig(
        rotation_degrees=0.0,
        scale_range=(1.0, 1.0),
        translate_fraction=0.0,
        brightness=0.2,
        contrast=(0.5, 1.5),
        gamma=(0.5, 2.0),
    )
    image = np.linspace(0.0, 1.0, SIZE * SIZE, dtype=np.float32).reshape(SIZE, SIZE, 1)
    moved, masks = _run(image, _blob(), (2, 9), config)
    np.testing.assert_array_equal(masks, _blob())
    assert not np.allclose(moved, image)
    assert moved.min() >= 0.0 and moved.max() <= 1.0
    # Gamma, contrast and brightness are monotonic: the order of pixel values is kept.
    assert np.all(np.diff(moved.ravel()) >= 0)


def test_same_seed_same_result_other_seed_differs() -> None:
    image = np.random.default_rng(1).random((SIZE, SIZE, 1)).astype(np.float32)
    first, _ = _run(image, None, (4, 4), AugmentConfig())
    again, _ = _run(image, None, (4, 4), AugmentConfig())
    other, _ = _run(image, None, (4, 5), AugmentConfig())
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_bad_config_is_refused() -> None:
    with pytest.raises(ValueError, match="mask_interpolation must be one of"):
        AugmentConfig(mask_interpolation="cubic")
    with pytest.raises(ValueError, match=r"gamma must satisfy 0 < low <= high, got \(2.0, 1.0\)"):
        AugmentConfig(gamma=(2.0, 1.0))
