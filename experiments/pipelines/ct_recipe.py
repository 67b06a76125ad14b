"""S3's CT volume preprocessing chain as one named, configurable recipe.

Steps, in S3's order, on the axial slices of each volume:
1. trim: keep the middle `keep_fraction` of every volume's slices (S3: 0.5, dropping the first and
   last 25 %; `data_prep.preprocess.trim_slices` says exactly which);
2. intensity: HU -> uint8 through the `window` (CLAHE needs uint8), "normalized" -> per-slice min-max,
   0-255 "display" images unchanged;
3. CLAHE (`clahe_clip`, `clahe_tiles` x `clahe_tiles` tiles; `clahe_clip=None` skips it);
4. lung ROI crop: the box of the record's lung mask when it has one, else of a lung segmenter's
   predicted mask when one is given, else of the dark inner regions (Otsu threshold + largest
   components), grown by `crop_margin` pixels (`data_prep.preprocess.lung_roi_box`);
5. resize to `image_size` (bilinear image, nearest-neighbour masks).

Records of one volume share `volume_id` and must come one after another in the stream (as adapters
and `data_prep.io.volume_records` yield them); records without a `volume_id` are single images and are
never trimmed. Masks travel with the image through every step.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from data_prep import preprocess
from data_prep.errors import DataError
from data_prep.io import volume_records
from data_prep.records import Record, Volume
from segmentation.predict import Segmenter, binarize, predict_probs, prepare_image

# A lung predictor: one record -> its (H, W) uint8 {0, 1} lung mask at the record's own size.
LungPredictor = Callable[[Record], np.ndarray]


@dataclass(frozen=True)
class CTRecipe:
    """The settings of the chain. window: an `HU_WINDOWS` name or (center, width) in HU;
    clahe_clip: None skips CLAHE; crop: False skips the ROI crop; image_size: None keeps the size."""

    name: str = "s3"
    keep_fraction: float = 0.5
    window: str | tuple[float, float] = "lung"
    clahe_clip: float | None = 2.0
    clahe_tiles: int = 8
    crop: bool = True
    crop_margin: int = 4
    image_size: int | None = 256

    def __post_init__(self) -> None:
        if not 0.0 < self.keep_fraction <= 1.0:
            raise ValueError(f"keep_fraction must be in (0, 1], got {self.keep_fraction}")


S3_RECIPE = CTRecipe()
RECIPES = {"s3": S3_RECIPE}


def recipe_from_config(value: str | Mapping[str, Any]) -> CTRecipe:
    """A recipe by name ("s3"), or a mapping {"name": base recipe (default "s3"), field: value, ...}
    that changes some fields of a named one, e.g. {"keep_fraction": 0.6, "image_size": 128}."""
    values = {"name": value} if isinstance(value, str) else dict(value)
    base = values.get("name", "s3")
    if base not in RECIPES:
        raise ValueError(f"unknown CT recipe {base!r}; known: {', '.join(RECIPES)}")
    known = {f.name for f in dataclasses.fields(CTRecipe)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"CT recipe: unknown field(s) {unknown}; allowed: {sorted(known)}")
    if isinstance(values.get("window"), list):
        values["window"] = tuple(values["window"])
    return dataclasses.replace(RECIPES[base], **values)


def trim_volume(volume: Volume, keep_fraction: float = 0.5) -> Volume:
    """The middle `keep_fraction` of a volume's axial slices (last axis), masks alike; the affine is
    shifted so that every kept voxel keeps its world position."""
    kept = preprocess.trim_slices(volume.image.shape[2], keep_fraction)
    shift = np.eye(4)
    shift[2, 3] = kept.start
    return dataclasses.replace(
        volume,
        image=volume.image[:, :, kept],
        masks={name: mask[:, :, kept] for name, mask in volume.masks.items()},
        affine=volume.affine @ shift,
    )


def _volumes(records: Iterable[Record]) -> Iterator[list[Record]]:
    """Consecutive records of one volume as a list; a record without volume_id is a list of one."""
    finished: set[str] = set()
    for volume_id, group in itertools.groupby(records, key=lambda record: record.volume_id):
        members = list(group)
        if volume_id is None:
            yield from ([record] for record in members)
            continue
        if volume_id in finished:
            raise DataError(members[0].path, f"the slices of volume {volume_id!r} are not consecutive")
        finished.add(volume_id)
        yield members


def trim_records(records: Iterable[Record], keep_fraction: float = 0.5) -> Iterator[Record]:
    """Per volume (consecutive records sharing `volume_id`), the middle `keep_fraction` of its slices
    in `slice_index` order (e.g. 12 slices, 0.5 -> slice indices 3..8). Records keep their
    `slice_index`; DataError when a volume's record has none."""
    for members in _volumes(records):
        if members[0].volume_id is None:
            yield from members
            continue
        missing = [record for record in members if record.slice_index is None]
        if missing:
            raise DataError(missing[0].path, f"record {missing[0].key} of a volume has no slice_index")
        ordered = sorted(members, key=lambda record: record.slice_index)
        yield from ordered[preprocess.trim_slices(len(ordered), keep_fraction)]


def to_uint8(record: Record, window: str | tuple[float, float] = "lung") -> np.ndarray:
    """(H, W) uint8 display values of a grayscale record: HU through `window`, "normalized" by
    min-max, "display" unchanged."""
    image = record.image
    if image.ndim != 2:
        raise DataError(record.path, f"the CT recipe needs (H, W) slices, got shape {image.shape}")
    if record.intensity == "hu":
        if isinstance(window, str):
            return preprocess.window_hu(image, preset=window)
        return preprocess.window_hu(image, *window)
    if record.intensity == "normalized":
        return preprocess.rescale_to_uint8(image)
    if image.dtype != np.uint8:
        raise DataError(record.path, f"a display image must be uint8, got {image.dtype}")
    return image


def enhance(record: Record, recipe: CTRecipe = S3_RECIPE) -> Record:
    """The record as uint8 "display" values, CLAHE applied when `recipe.clahe_clip` is set."""
    image = to_uint8(record, recipe.window)
    if recipe.clahe_clip is not None:
        image = preprocess.clahe(image, recipe.clahe_clip, (recipe.clahe_tiles, recipe.clahe_tiles))
    return dataclasses.replace(record, image=image, intensity="display")


def crop_record(record: Record, box: preprocess.Box) -> Record:
    """Image and masks cut to box = (y0, y1, x0, x1), ends exclusive."""
    return dataclasses.replace(
        record,
        image=preprocess.crop_to_box(record.image, box),
        masks={name: preprocess.crop_to_box(mask, box) for name, mask in record.masks.items()},
    )


def resize_record(record: Record, size: int) -> Record:
    """Image (bilinear) and masks (nearest neighbour) resized to size x size pixels."""
    shape = (size, size)
    return dataclasses.replace(
        record,
        image=preprocess.resize_image(record.image, shape),
        masks={name: preprocess.resize_mask(mask, shape) for name, mask in record.masks.items()},
    )


def lung_channel(segmenter: Segmenter, channel: str = "lung") -> int:
    """The index of `channel` among a sigmoid segmenter's outputs; ValueError otherwise."""
    if segmenter.multiclass or channel not in segmenter.channel_names:
        raise ValueError(
            f"need a sigmoid segmenter with a {channel!r} channel, got {segmenter.channel_names}"
        )
    return segmenter.channel_names.index(channel)


def predicted_masks(
    segmenter: Segmenter, inputs: np.ndarray, native_size: tuple[int, int], channel: str = "lung"
) -> np.ndarray:
    """Model inputs (N, h, w, C) float32 -> (N, H, W) uint8 {0, 1} masks of `channel` at native_size
    (H, W): probabilities resized bilinearly, then binarised with the segmenter's threshold."""
    index = lung_channel(segmenter, channel)
    probs = predict_probs(segmenter.model, inputs, batch_size=len(inputs))
    height, width = native_size
    resized = np.stack(
        [
            cv2.resize(prob, (width, height), interpolation=cv2.INTER_LINEAR).reshape(height, width, -1)
            for prob in probs
        ]
    )
    return binarize(resized, segmenter)[..., index]


def lung_predictor(segmenter: Segmenter, channel: str = "lung") -> LungPredictor:
    """A `LungPredictor` from a trained sigmoid lung segmenter (`segmentation.predict.load_segmenter`):
    the record is preprocessed as the segmenter's training data was (`prepare_image`)."""
    lung_channel(segmenter, channel)

    def predict(record: Record) -> np.ndarray:
        inputs = prepare_image(record.image, segmenter, record.path)[None]
        return predicted_masks(segmenter, inputs, record.image.shape[:2], channel)[0]

    return predict


def _as_predictor(segmenter: Segmenter | LungPredictor) -> LungPredictor:
    return lung_predictor(segmenter) if isinstance(segmenter, Segmenter) else segmenter


def crop_with_lung_model(
    volume_or_records: Volume | Iterable[Record], segmenter: Segmenter | LungPredictor, margin: int = 4
) -> Iterator[Record]:
    """Each slice cut to the box of its PREDICTED lung mask (grown by `margin`; the whole slice when
    nothing is predicted). A `Volume` is first cut into display-orientation records."""
    predict = _as_predictor(segmenter)
    records = (
        volume_records(volume_or_records, ()) if isinstance(volume_or_records, Volume) else volume_or_records
    )
    for record in records:
        box = preprocess.lung_roi_box(record.image, predict(record), margin=margin)
        yield crop_record(record, box)


def apply_recipe(
    records: Iterable[Record],
    recipe: CTRecipe = S3_RECIPE,
    lung_segmenter: Segmenter | LungPredictor | None = None,
) -> Iterator[Record]:
    """The whole chain on a record stream (lazy; one volume in memory at a time).

    The crop box comes from the record's own lung mask, else from `lung_segmenter`'s prediction on the
    record before enhancement (it sees the input it was trained on), else from thresholding.
    """
    predict = None if lung_segmenter is None else _as_predictor(lung_segmenter)
    for record in trim_records(records, recipe.keep_fraction):
        enhanced = enhance(record, recipe)
        if recipe.crop:
            lungs = record.masks.get("lung")
            if lungs is None and predict is not None:
                lungs = predict(record)
            enhanced = crop_record(
                enhanced, preprocess.lung_roi_box(enhanced.image, lungs, margin=recipe.crop_margin)
            )
        yield enhanced if recipe.image_size is None else resize_record(enhanced, recipe.image_size)


def apply_recipe_to_volume(
    volume: Volume,
    recipe: CTRecipe = S3_RECIPE,
    label_names: tuple[str, ...] = (),
    lung_segmenter: Segmenter | LungPredictor | None = None,
) -> Iterator[Record]:
    """`apply_recipe` on a volume's display-orientation axial records (`data_prep.io.volume_records`)."""
    yield from apply_recipe(volume_records(volume, label_names), recipe, lung_segmenter)
