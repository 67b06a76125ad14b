"""HD95 and normalised surface Dice against DeepMind's reference package and hand-computed surfel areas."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import surface_distance
from scipy import ndimage

from segmentation import metrics


def blobs(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """A random bool mask of smooth blobs (smoothed noise above a random level), never empty."""
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=1.5)
    mask = noise > rng.uniform(0.0, 0.15)
    mask.flat[rng.integers(mask.size)] = True
    return mask


def reference(pred: np.ndarray, truth: np.ndarray, spacing: tuple[float, ...], tolerance: float):
    """(HD95, NSD) straight from `surface_distance`, ground truth first as its API expects."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the package's deprecated scipy imports
        distances = surface_distance.compute_surface_distances(truth, pred, spacing)
    return (
        surface_distance.compute_robust_hausdorff(distances, 95),
        surface_distance.compute_surface_dice_at_tolerance(distances, tolerance),
    )


@pytest.mark.parametrize("shape", [(40, 36), (14, 20, 18)])
def test_random_masks_agree_with_the_reference_package(shape):
    rng = np.random.default_rng(len(shape))
    for _ in range(6):
        spacing = tuple(float(v) for v in rng.uniform(0.3, 3.0, len(shape)))  # anisotropic
        tolerance = float(rng.uniform(0.5, 3.0))
        pred, truth = blobs(rng, shape), blobs(rng, shape)
        hd95, nsd = reference(pred, truth, spacing, tolerance)
        assert metrics.hausdorff95(pred, truth, spacing) == pytest.approx(hd95, abs=1e-6)
        assert metrics.normalized_surface_dice(pred, truth, tolerance, spacing) == pytest.approx(
            nsd, abs=1e-6
        )
    # Without a spacing the unit is the pixel: spacing 1 on every axis.
    pred, truth = blobs(rng, shape), blobs(rng, shape)
    ones = (1.0,) * len(shape)
    assert metrics.hausdorff95(pred, truth) == pytest.approx(reference(pred, truth, ones, 1.0)[0], abs=1e-6)


def test_a_square_shifted_by_one_row_hand_values():
    # Truth: 6 x 6 pixels; prediction: the same square one row down. Spacing (rows, cols) = (0.5, 2) mm.
    # Surfels sit on the pixel-corner grid: the contour has n - 1 = 5 straight elements per side (length
    # s1 on the top and bottom sides, s0 on the left and right sides) and 4 corner elements of length
    # sqrt(s0^2 + s1^2) / 2 (marching squares).
    n, (s0, s1) = 6, (0.5, 2.0)
    truth = np.zeros((10, 10), bool)
    truth[2 : 2 + n, 2 : 2 + n] = True
    pred = np.roll(truth, 1, axis=0)
    diagonal = math.hypot(s0, s1) / 2
    total = 2 * (n - 1) * (s0 + s1) + 4 * diagonal  # one contour's length
    # At distance s0 from the other contour: the whole top row of corner points (5 x s1 + 2 corners) and
    # the inner part of the bottom row (5 x s1); every other surfel lies on the other contour (distance 0).
    far = 2 * (n - 1) * s1 + 2 * diagonal
    assert metrics.hausdorff95(pred, truth, (s0, s1)) == pytest.approx(s0)  # far share 0.55 > 5%
    assert metrics.normalized_surface_dice(pred, truth, 0.49, (s0, s1)) == pytest.approx(1 - far / total)
    assert metrics.normalized_surface_dice(pred, truth, 0.5, (s0, s1)) == 1.0


def shifted_cube_nsd(n: int, spacing: tuple[float, float, float]) -> float:
    """Hand value: NSD at a tolerance below s0 of an n^3 cube against the same cube one voxel further along
    axis 0, where s0 = spacing[0] is the smallest spacing (so every surfel is at distance 0 or s0).

    Marching-cubes surfels on the voxel-corner grid: a face element normal to axis a has area prod(s) / s_a;
    an edge element along axis a is a chamfer s_a x (the half-diagonal of the two other axes); a corner
    element is the triangle through three half-edges. At distance s0 from the other surface: the first layer
    of corner points (a face, its 4 edges, 4 corners) and the inner part of the opposite face.
    """
    s = np.asarray(spacing, float)
    face = s.prod() / s
    edge = np.array([s[a] * math.hypot(*np.delete(s, a)) / 2 for a in range(3)])
    corner = np.linalg.norm(face / 4) / 2
    total = 2 * (n - 1) ** 2 * face.sum() + 4 * (n - 1) * edge.sum() + 8 * corner
    far = 2 * (n - 1) ** 2 * face[0] + 2 * (n - 1) * (edge[1] + edge[2]) + 4 * corner
    return float(1 - far / total)


def test_a_cube_shifted_by_one_slice_hand_values():
    n, spacing = 6, (0.5, 1.0, 2.0)
    truth = np.zeros((11, 11, 11), bool)
    truth[2 : 2 + n, 2 : 2 + n, 2 : 2 + n] = True
    pred = np.roll(truth, 1, axis=0)
    assert metrics.hausdorff95(pred, truth, spacing) == pytest.approx(0.5)
    assert metrics.normalized_surface_dice(pred, truth, 0.49, spacing) == pytest.approx(
        shifted_cube_nsd(n, spacing)
    )
    assert metrics.normalized_surface_dice(pred, truth, 0.5, spacing) == 1.0
    # Identical masks: every distance 0.
    assert metrics.hausdorff95(truth, truth, spacing) == 0.0
    assert metrics.normalized_surface_dice(truth, truth, 0.0, spacing) == 1.0


@pytest.mark.parametrize("shape", [(5, 5), (4, 5, 5)])
def test_empty_rules(shape):
    empty, full = np.zeros(shape, bool), np.ones(shape, bool)
    assert math.isnan(metrics.hausdorff95(full, empty))
    assert math.isnan(metrics.hausdorff95(empty, full))
    assert math.isnan(metrics.hausdorff95(empty, empty))
    assert metrics.normalized_surface_dice(empty, empty, 1.0) == 1.0
    assert metrics.normalized_surface_dice(full, empty, 1.0) == 0.0
    assert metrics.normalized_surface_dice(empty, full, 1.0) == 0.0


def test_bad_shapes_and_spacings_are_refused():
    mask = np.ones((3, 3), bool)
    with pytest.raises(ValueError, match="one value per axis"):
        metrics.hausdorff95(mask, mask, (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="2-D or 3-D masks of one shape"):
        metrics.normalized_surface_dice(mask, np.ones((3, 4), bool), 1.0)
    with pytest.raises(ValueError, match="2-D or 3-D"):
        metrics.hausdorff95(np.ones((2, 2, 2, 2), bool), np.ones((2, 2, 2, 2), bool))
