"""Image preprocessing used by the seed pipelines: HU windowing, normalisation, CLAHE, slice trimming,
lung region-of-interest cropping, resizing and multi-class mask conversion.

Every function is pure (numpy / cv2) and works on one 2D image (H, W) unless it says otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping

import cv2
import numpy as np

# Named HU windows as (center, width); "lung" is the default of `window_hu`.
HU_WINDOWS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (40.0, 400.0),
    "soft_tissue": (50.0, 350.0),
    "bone": (400.0, 1800.0),
}
# MedSeg / seed S0 label-map values of the three COVID-19 manifestations.
MANIFESTATION_LABELS: dict[int, str] = {1: "ggo", 2: "consolidation", 3: "effusion"}

Box = tuple[int, int, int, int]  # (y0, y1, x0, x1), ends exclusive, in pixels


def window_hu(
    hu: np.ndarray, center: float = -600.0, width: float = 1500.0, *, preset: str | None = None
) -> np.ndarray:
    """Maps Hounsfield units to display values: [center - width/2, center + width/2] -> [0, 255].

    hu: any shape, any numeric dtype (HU). preset: a name in `HU_WINDOWS`; replaces center and width.
    Returns uint8 of the same shape; values outside the window saturate; halves round up.
    """
    if preset is not None:
        if preset not in HU_WINDOWS:
            raise ValueError(f"unknown HU window {preset!r}; known: {', '.join(HU_WINDOWS)}")
        center, width = HU_WINDOWS[preset]
    if width <= 0:
        raise ValueError(f"window width must be positive, got {width}")
    low = center - width / 2.0
    scaled = (np.asarray(hu, dtype=np.float64) - low) * 255.0 / width
    return np.floor(np.clip(scaled, 0.0, 255.0) + 0.5).astype(np.uint8)


def normalize_minmax(image: np.ndarray) -> np.ndarray:
    """Rescales to [0, 1]: (x - min) / (max - min). Returns float32, all zeros for constant input."""
    values = np.asarray(image, dtype=np.float64)
    low, high = values.min(), values.max()
    if high == low:
        return np.zeros(values.shape, np.float32)
    return ((values - low) / (high - low)).astype(np.float32)


def rescale_to_uint8(image: np.ndarray) -> np.ndarray:
    """`normalize_minmax` mapped to 0-255 display values (halves round up). Returns uint8, all zeros
    for constant input; e.g. to put a non-HU scan into the 8-bit range CLAHE needs."""
    return np.floor(normalize_minmax(image) * 255.0 + 0.5).astype(np.uint8)


def normalize_zscore(image: np.ndarray) -> np.ndarray:
    """Standardises to mean 0 and (population) standard deviation 1. Returns float32, all zeros for
    constant input."""
    values = np.asarray(image, dtype=np.float64)
    std = values.std()
    if std == 0:
        return np.zeros(values.shape, np.float32)
    return ((values - values.mean()) / std).astype(np.float32)


def clahe(image: np.ndarray, clip_limit: float = 2.0, tile_grid: tuple[int, int] = (8, 8)) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation (cv2). image: (H, W) uint8 or uint16, e.g. a
    windowed CT slice (HU must be windowed first). Returns the same dtype and shape."""
    if image.dtype not in (np.uint8, np.uint16):
        raise ValueError(
            f"clahe needs a uint8 or uint16 image, got {image.dtype}; window HU (window_hu) or rescale first"
        )
    if image.ndim != 2:
        raise ValueError(f"clahe needs one 2D (H, W) image, got shape {image.shape}")
    return cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=tile_grid).apply(image)


def trim_slices(n_slices: int, keep_fraction: float = 0.5) -> slice:
    """The middle `keep_fraction` of `n_slices`: drops floor(n * (1 - keep_fraction) / 2) slices at
    each end (seed S3 keeps 0.5, dropping the first and last 25 %). Keeps at least one slice."""
    if not 0.0 < keep_fraction <= 1.0:
        raise ValueError(f"keep_fraction must be in (0, 1], got {keep_fraction}")
    drop = int(n_slices * (1.0 - keep_fraction) / 2.0 + 1e-9)
    drop = min(drop, max((n_slices - 1) // 2, 0))
    return slice(drop, n_slices - drop)


def trim_volume(volume: np.ndarray, keep_fraction: float = 0.5, axis: int = -1) -> np.ndarray:
    """`trim_slices` applied along `axis` of a volume, e.g. (X, Y, Z) with slices on the last axis."""
    index = [slice(None)] * volume.ndim
    index[axis] = trim_slices(volume.shape[axis], keep_fraction)
    return volume[tuple(index)]


def lung_roi_box(
    image: np.ndarray,
    lung_mask: np.ndarray | None = None,
    margin: int = 4,
    threshold: float | None = None,
    min_area_fraction: float = 0.005,
) -> Box:
    """The lung bounding box (y0, y1, x0, x1), ends exclusive, grown by `margin` pixels, clipped to the image.

    With `lung_mask` ((H, W), non-zero = lung) the box bounds the mask. Without it, the lungs are
    found as dark regions: pixels below `threshold` (in the image's units; Otsu's threshold of the
    min-max scaled image when None), minus regions touching the image border (air outside the body),
    keeping the two largest connected components of at least `min_area_fraction` of the image.
    Returns the whole image when nothing is found.
    """
    height, width = image.shape[:2]
    if lung_mask is not None:
        if lung_mask.shape != (height, width):
            raise ValueError(f"lung mask has shape {lung_mask.shape}, image has {(height, width)}")
        lungs = lung_mask > 0
    else:
        lungs = _dark_inner_regions(image, threshold, min_area_fraction)
    rows, cols = np.nonzero(lungs)
    if rows.size == 0:
        return (0, height, 0, width)
    return (
        max(int(rows.min()) - margin, 0),
        min(int(rows.max()) + 1 + margin, height),
        max(int(cols.min()) - margin, 0),
        min(int(cols.max()) + 1 + margin, width),
    )


def _dark_inner_regions(image: np.ndarray, threshold: float | None, min_area_fraction: float) -> np.ndarray:
    """(H, W) bool: the two largest dark connected components that do not touch the border."""
    if image.ndim != 2:
        raise ValueError(f"lung detection needs one 2D (H, W) image, got shape {image.shape}")
    if threshold is None:
        scaled = rescale_to_uint8(image)
        otsu, _ = cv2.threshold(scaled, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        dark = scaled <= otsu
    else:
        dark = image < threshold
    count, labels, stats, _ = cv2.connectedComponentsWithStats(dark.astype(np.uint8), connectivity=8)
    height, width = image.shape
    candidates = []
    for label in range(1, count):
        left, top, box_w, box_h, area = stats[label]
        touches_border = left == 0 or top == 0 or left + box_w == width or top + box_h == height
        if not touches_border and area >= min_area_fraction * height * width:
            candidates.append((int(area), label))
    keep = [label for _, label in sorted(candidates, reverse=True)[:2]]
    return np.isin(labels, keep)


def crop_to_box(array: np.ndarray, box: Box) -> np.ndarray:
    """array[y0:y1, x0:x1] for (H, W) or (H, W, C) arrays."""
    y0, y1, x0, x1 = box
    return array[y0:y1, x0:x1]


_INTERPOLATIONS = {"bilinear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA}


def resize_image(image: np.ndarray, size: tuple[int, int], method: str = "bilinear") -> np.ndarray:
    """Resizes (H, W) or (H, W, C) to size = (height, width) with "bilinear" or "area" (best for
    shrinking) interpolation. Keeps the dtype (integer types are rounded and saturated by cv2)."""
    if method not in _INTERPOLATIONS:
        raise ValueError(f"unknown resize method {method!r}; use one of {', '.join(_INTERPOLATIONS)}")
    height, width = size
    return cv2.resize(image, (width, height), interpolation=_INTERPOLATIONS[method])


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resizes an (H, W) mask or label map to size = (height, width) by nearest neighbour (pixel
    centres), so the output holds only values of the input. Keeps the dtype."""
    height, width = size
    if mask.dtype == bool:
        return resize_mask(mask.astype(np.uint8), size).astype(bool)
    return cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST_EXACT)


def split_multiclass(
    label_map: np.ndarray, names: Mapping[int, str] = MANIFESTATION_LABELS
) -> dict[str, np.ndarray]:
    """Label map (any shape, integer values; 0 = background) -> name -> uint8 {0, 1} mask per label.

    Every name in `names` gets a mask (all zeros when absent). Values that are neither 0 nor in
    `names` raise ValueError.
    """
    unknown = sorted(set(np.unique(label_map).tolist()) - {0} - set(names))
    if unknown:
        raise ValueError(f"label map has values {unknown} outside {{0}} and {sorted(names)}")
    return {name: (label_map == value).astype(np.uint8) for value, name in names.items()}


def merge_to_label_map(
    masks: Mapping[str, np.ndarray], names: Mapping[int, str] = MANIFESTATION_LABELS
) -> np.ndarray:
    """The inverse of `split_multiclass`: name -> {0, 1} masks -> uint8 label map (0 = background).

    Masks of names not in `masks` count as empty; a name outside `names` or overlapping masks raise
    ValueError.
    """
    values = {name: value for value, name in names.items()}
    unknown = sorted(set(masks) - set(values))
    if unknown:
        raise ValueError(f"masks {unknown} have no label value; known: {sorted(values)}")
    if not masks:
        raise ValueError("no masks to merge")
    shape = next(iter(masks.values())).shape
    label_map = np.zeros(shape, np.uint8)
    for name, mask in masks.items():
        inside = np.asarray(mask) > 0
        overlap = inside & (label_map > 0)
        if overlap.any():
            raise ValueError(f"mask {name!r} overlaps {names[int(label_map[overlap][0])]!r}")
        label_map[inside] = values[name]
    return label_map
