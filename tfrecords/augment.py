"""In-graph augmentation that moves an image and all its masks by the same geometric transform.

The transform maps every output pixel to a source position: optional flips, a rotation and scale
about the image centre, a shift, and an optional elastic displacement (a smooth random field). The
image is sampled bilinearly; masks by nearest neighbour, or bilinearly and then thresholded at 0.5.
Brightness, contrast and gamma change the image only. Everything is drawn with stateless random ops
from one `seed` (shape (2,) int), so the same seed always gives the same result.

Left-right flips are off by default: the left and right lungs are different anatomy (the left has two
lobes and the heart), and CT/CXR are shown in a fixed orientation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import tensorflow as tf

MASK_INTERPOLATIONS = ("nearest", "bilinear")


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the random transforms; every range is sampled uniformly.

    flip_left_right / flip_up_down: flip with probability 0.5 when True.
    rotation_degrees: angle in [-r, r] degrees. scale_range: zoom factor (>1 = zoom in, crops the border).
    translate_fraction: shift in [-t, t] of the image height/width.
    elastic_alpha: largest elastic displacement in pixels (0 = off); elastic_grid: the random field is
    drawn on a (grid + 1) x (grid + 1) lattice and upsampled bicubically (smaller = smoother).
    brightness: additive delta in [-b, b]; contrast: factor about the image mean; gamma: exponent.
    Intensities assume images scaled to [0, 1] and are clipped back to [0, 1].
    fill_value: image value outside the source image (masks get 0).
    """

    flip_left_right: bool = False
    flip_up_down: bool = False
    rotation_degrees: float = 10.0
    scale_range: tuple[float, float] = (0.9, 1.1)
    translate_fraction: float = 0.05
    elastic_alpha: float = 0.0
    elastic_grid: int = 4
    brightness: float = 0.1
    contrast: tuple[float, float] = (0.9, 1.1)
    gamma: tuple[float, float] = (0.9, 1.1)
    mask_interpolation: str = "nearest"
    fill_value: float = 0.0

    def __post_init__(self) -> None:
        if self.mask_interpolation not in MASK_INTERPOLATIONS:
            raise ValueError(f"mask_interpolation must be one of {MASK_INTERPOLATIONS}")
        for name in ("scale_range", "contrast", "gamma"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise ValueError(f"{name} must satisfy 0 < low <= high, got {(low, high)}")
        if self.elastic_grid < 1:
            raise ValueError(f"elastic_grid must be >= 1, got {self.elastic_grid}")

    @classmethod
    def off(cls) -> AugmentConfig:
        """No transform at all (the identity)."""
        return cls(
            rotation_degrees=0.0,
            scale_range=(1.0, 1.0),
            translate_fraction=0.0,
            brightness=0.0,
            contrast=(1.0, 1.0),
            gamma=(1.0, 1.0),
        )


def _uniform(seed: tf.Tensor, low: float, high: float, shape: tuple[int, ...] | tf.Tensor = ()) -> tf.Tensor:
    return tf.random.stateless_uniform(shape, seed, minval=low, maxval=high, dtype=tf.float32)


def _source_coordinates(
    height: tf.Tensor, width: tf.Tensor, config: AugmentConfig, seeds: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """(ys, xs), each (H, W) float32: the source position of every output pixel."""
    h, w = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    ys, xs = tf.meshgrid(tf.range(h), tf.range(w), indexing="ij")
    if config.flip_up_down:
        ys = tf.where(_uniform(seeds[0], 0.0, 1.0) < 0.5, h - 1.0 - ys, ys)
    if config.flip_left_right:
        xs = tf.where(_uniform(seeds[1], 0.0, 1.0) < 0.5, w - 1.0 - xs, xs)
    angle = _uniform(seeds[2], -1.0, 1.0) * (config.rotation_degrees * math.pi / 180.0)
    scale = _uniform(seeds[3], *config.scale_range)
    shift = _uniform(seeds[4], -config.translate_fraction, config.translate_fraction, (2,)) * tf.stack([h, w])
    cy, cx = (h - 1.0) / 2.0, (w - 1.0) / 2.0
    dy, dx = ys - cy - shift[0], xs - cx - shift[1]
    cos, sin = tf.cos(angle) / scale, tf.sin(angle) / scale
    ys, xs = cy + cos * dy - sin * dx, cx + sin * dy + cos * dx
    if config.elastic_alpha > 0:
        lattice = _uniform(seeds[5], -1.0, 1.0, (1, config.elastic_grid + 1, config.elastic_grid + 1, 2))
        field = tf.image.resize(lattice, tf.stack([height, width]), method="bicubic")[0]
        ys += config.elastic_alpha * field[..., 0]
        xs += config.elastic_alpha * field[..., 1]
    return ys, xs


def _sample(values: tf.Tensor, ys: tf.Tensor, xs: tf.Tensor, fill: float, nearest: bool) -> tf.Tensor:
    """values (H, W, C) read at (ys, xs) (H, W); positions outside the image read `fill`."""
    height, width = tf.shape(values)[0], tf.shape(values)[1]
    if nearest:
        corners = [(tf.floor(ys + 0.5), tf.floor(xs + 0.5), tf.ones_like(ys))]
    else:
        y0, x0 = tf.floor(ys), tf.floor(xs)
        fy, fx = ys - y0, xs - x0
        corners = [
            (y0, x0, (1 - fy) * (1 - fx)),
            (y0, x0 + 1, (1 - fy) * fx),
            (y0 + 1, x0, fy * (1 - fx)),
            (y0 + 1, x0 + 1, fy * fx),
        ]
    result = tf.zeros(tf.concat([tf.shape(ys), tf.shape(values)[2:]], 0), values.dtype)
    for cy, cx, weight in corners:
        iy, ix = tf.cast(cy, tf.int32), tf.cast(cx, tf.int32)
        inside = (iy >= 0) & (iy < height) & (ix >= 0) & (ix < width)
        index = tf.stack([tf.clip_by_value(iy, 0, height - 1), tf.clip_by_value(ix, 0, width - 1)], -1)
        read = tf.where(inside[..., None], tf.gather_nd(values, index), fill)
        result += weight[..., None] * read
    return result


def _adjust_intensity(image: tf.Tensor, config: AugmentConfig, seeds: tf.Tensor) -> tf.Tensor:
    image = tf.clip_by_value(image, 0.0, 1.0) ** _uniform(seeds[6], *config.gamma)
    mean = tf.reduce_mean(image)
    image = (image - mean) * _uniform(seeds[7], *config.contrast) + mean
    image += _uniform(seeds[8], -config.brightness, config.brightness)
    return tf.clip_by_value(image, 0.0, 1.0)


def augment(
    image: tf.Tensor, masks: tf.Tensor | None, seed: tf.Tensor, config: AugmentConfig
) -> tuple[tf.Tensor, tf.Tensor | None]:
    """Augments one example: image (H, W, C) float32 in [0, 1], masks (H, W, K) float32 {0, 1} or None.

    seed: (2,) int32/int64, e.g. (global seed, element index). Returns the same shapes and dtypes;
    masks stay in {0, 1}.
    """
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=9)
    ys, xs = _source_coordinates(tf.shape(image)[0], tf.shape(image)[1], config, seeds)
    moved = _sample(image, ys, xs, config.fill_value, nearest=False)
    if config.brightness or config.contrast != (1.0, 1.0) or config.gamma != (1.0, 1.0):
        moved = _adjust_intensity(moved, config, seeds)
    if masks is None:
        return moved, None
    nearest = config.mask_interpolation == "nearest"
    moved_masks = _sample(masks, ys, xs, 0.0, nearest=nearest)
    if not nearest:
        moved_masks = tf.cast(moved_masks >= 0.5, masks.dtype)
    return moved, moved_masks
