"""S3's CT volume preprocessing chain as one named, configurable recipe, shared by writing and inference.

Steps, in S3's order, on the axial slices (display orientation) of each volume:
1. trim: keep the middle `keep_fraction` of every volume's slices (S3: 0.5, dropping the first and
   last 25 %; `data_prep.preprocess.trim_slices` says exactly which). Trimming selects the slices a
   model is trained and validated on; inference segments every slice.
2. intensity: HU -> uint8 through the `window` (CLAHE needs uint8), "normalized" -> per-slice min-max,
   0-255 "display" images unchanged (RGB ones as their luma);
3. CLAHE (`clahe_clip`, `clahe_tiles` x `clahe_tiles` tiles; `clahe_clip=None` skips it);
4. lung ROI crop, by the rule `crop` (see CROP_RULES), grown by `crop_margin` pixels;
5. resize to `image_size` (bilinear image, nearest-neighbour masks).

No label reaches a model input outside training, by construction: `model_inputs` (the function that
makes validation, test and inference inputs) takes images and PREDICTED lung masks only, and
`apply_recipe` hands it the images alone. Only training records (`split == "train"`) may be cropped
to their own lung label, grown by a seeded random jitter.

Records of one volume share `volume_id` and must come one after another in the stream (as adapters
and `data_prep.io.volume_records` yield them); records without a `volume_id` are single images and are
never trimmed. Masks travel with the image through every step, as targets.
"""

from __future__ import annotations

import dataclasses
import itertools
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from data_prep import preprocess
from data_prep.errors import DataError
from data_prep.io import volume_records
from data_prep.records import Record, Volume

# A lung predictor: the (H, W) display slices of one volume, in slice order, and their intensity kind
# -> their (H, W) uint8 {0, 1} predicted lung masks. It never sees a label.
LungPredictor = Callable[[Sequence[np.ndarray], str], list[np.ndarray]]

CROP_RULES = {
    "none": "no crop: the whole slice",
    "threshold": "label-free: the box of the dark inner regions (Otsu threshold, largest components), every split",
    "model": "training: the box of the record's own lung label grown by a random 0..crop_jitter pixels per "
    "side; validation, test and inference: the box of a lung model's PREDICTED mask (a cascade)",
}


@dataclass(frozen=True)
class CTRecipe:
    """The settings of the chain. window: an `HU_WINDOWS` name or (center, width) in HU;
    clahe_clip: None skips CLAHE; crop: a CROP_RULES name; crop_margin / crop_jitter: pixels;
    image_size: None keeps the size. lung_model: for crop "model", the lung model bundle that predicts
    the crop (a `.keras` path, or `run:<row>` for the fold-matched model of that row's latest run)."""

    name: str = "s3"
    keep_fraction: float = 0.5
    window: str | tuple[float, float] = "lung"
    clahe_clip: float | None = 2.0
    clahe_tiles: int = 8
    crop: str = "model"
    crop_margin: int = 4
    crop_jitter: int = 8
    lung_model: str | None = None
    image_size: int | None = 256

    def __post_init__(self) -> None:
        if not 0.0 < self.keep_fraction <= 1.0:
            raise ValueError(f"keep_fraction must be in (0, 1], got {self.keep_fraction}")
        if self.crop not in CROP_RULES:
            raise ValueError(f"crop must be one of {', '.join(CROP_RULES)}; got {self.crop!r}")
        if self.crop_margin < 0 or self.crop_jitter < 0:
            raise ValueError("crop_margin and crop_jitter must be >= 0")
        if self.image_size is not None and self.image_size < 1:
            raise ValueError(f"image_size must be >= 1, got {self.image_size}")

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["window"] = list(self.window) if isinstance(self.window, tuple) else self.window
        return values


S3_RECIPE = CTRecipe()
RECIPES = {"s3": S3_RECIPE}


def recipe_from_config(value: str | Mapping[str, Any]) -> CTRecipe:
    """A recipe by name ("s3"), or a mapping {"name": base recipe (default "s3"), field: value, ...}
    that changes some fields of a named one, e.g. {"keep_fraction": 0.6, "image_size": 128}.
    `crop: false` is read as "none"."""
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
    if values.get("crop") is False:
        values["crop"] = "none"
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


def _in_slice_order(members: list[Record]) -> list[Record]:
    if members[0].volume_id is None:
        return members
    missing = [record for record in members if record.slice_index is None]
    if missing:
        raise DataError(missing[0].path, f"record {missing[0].key} of a volume has no slice_index")
    return sorted(members, key=lambda record: record.slice_index)


def _kept(members: list[Record], keep_fraction: float) -> slice:
    """The trimmed part of one volume's records (in slice order); a single image is kept whole."""
    if members[0].volume_id is None:
        return slice(None)
    return preprocess.trim_slices(len(members), keep_fraction)


def trim_records(records: Iterable[Record], keep_fraction: float = 0.5) -> Iterator[Record]:
    """Per volume (consecutive records sharing `volume_id`), the middle `keep_fraction` of its slices
    in `slice_index` order (e.g. 12 slices, 0.5 -> slice indices 3..8). Records keep their
    `slice_index`; DataError when a volume's record has none."""
    for members in _volumes(records):
        ordered = _in_slice_order(members)
        yield from ordered[_kept(ordered, keep_fraction)]


def to_uint8(image: np.ndarray, intensity: str, window: str | tuple[float, float], path: str) -> np.ndarray:
    """(H, W) uint8 display values of a grayscale slice: HU through `window`, "normalized" by min-max,
    "display" unchanged; an (H, W, 3) RGB display image (CT slices saved in colour) becomes its luma
    (ITU-R BT.601, OpenCV's RGB2GRAY)."""
    if intensity == "display" and image.ndim == 3 and image.shape[-1] == 3 and image.dtype == np.uint8:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    if image.ndim != 2:
        raise DataError(path, f"the CT recipe needs (H, W) slices, got shape {image.shape}")
    if intensity == "hu":
        if isinstance(window, str):
            return preprocess.window_hu(image, preset=window)
        return preprocess.window_hu(image, *window)
    if intensity == "normalized":
        return preprocess.rescale_to_uint8(image)
    if image.dtype != np.uint8:
        raise DataError(path, f"a display image must be uint8, got {image.dtype}")
    return image


def enhance_image(image: np.ndarray, intensity: str, recipe: CTRecipe, path: str = "image") -> np.ndarray:
    """(H, W) slice -> (H, W) uint8 display values, CLAHE applied when `recipe.clahe_clip` is set."""
    enhanced = to_uint8(image, intensity, recipe.window, path)
    if recipe.clahe_clip is not None:
        enhanced = preprocess.clahe(enhanced, recipe.clahe_clip, (recipe.clahe_tiles, recipe.clahe_tiles))
    return enhanced


def enhance(record: Record, recipe: CTRecipe = S3_RECIPE) -> Record:
    """The record as uint8 "display" values, CLAHE applied when `recipe.clahe_clip` is set."""
    image = enhance_image(record.image, record.intensity, recipe, record.path)
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


def label_free_box(
    enhanced: np.ndarray, recipe: CTRecipe, predicted_lungs: np.ndarray | None
) -> preprocess.Box:
    """The crop box of one enhanced (H, W) uint8 slice by the recipe's rule, from the image and (rule
    "model") the PREDICTED lung mask only; the whole slice for rule "none"."""
    height, width = enhanced.shape
    if recipe.crop == "none":
        return (0, height, 0, width)
    if recipe.crop == "model" and predicted_lungs is None:
        raise ValueError('crop rule "model" needs predicted lung masks (a lung model bundle)')
    lungs = predicted_lungs if recipe.crop == "model" else None
    return preprocess.lung_roi_box(enhanced, lungs, margin=recipe.crop_margin)


def jittered_label_box(record: Record, recipe: CTRecipe, seed: int) -> preprocess.Box:
    """TRAINING records only: the box of the record's own lung label grown by `crop_margin` plus a
    random 0..`crop_jitter` pixels per side (seeded by `seed` and the record key)."""
    lungs = record.masks.get("lung")
    if lungs is None:
        raise DataError(record.path, f"crop rule 'model' trains on lung labels; record {record.key} has none")
    y0, y1, x0, x1 = preprocess.lung_roi_box(record.image, lungs, margin=recipe.crop_margin)
    rng = np.random.default_rng([seed, zlib.crc32(record.key.encode())])
    grow = rng.integers(0, recipe.crop_jitter + 1, size=4)
    height, width = record.image.shape[:2]
    return (max(y0 - grow[0], 0), min(y1 + grow[1], height), max(x0 - grow[2], 0), min(x1 + grow[3], width))


def paste_box(
    values: np.ndarray, box: preprocess.Box, shape: tuple[int, int], fill: np.ndarray
) -> np.ndarray:
    """(h, w, K) values of a crop -> (H, W, K) at `shape`, `fill` (K,) outside `box`."""
    out = np.broadcast_to(fill.astype(values.dtype), (*shape, values.shape[-1])).copy()
    y0, y1, x0, x1 = box
    out[y0:y1, x0:x1] = values
    return out


def model_inputs(
    slices: Sequence[np.ndarray],
    intensity: str,
    recipe: CTRecipe,
    predicted_lungs: Sequence[np.ndarray] | None = None,
    path: str = "volume",
) -> tuple[list[np.ndarray], list[preprocess.Box]]:
    """THE validation / test / inference input chain: (H, W) display slices -> (uint8 model inputs at
    `image_size`, their crop boxes). Takes no label: only images and predicted lung masks."""
    inputs, boxes = [], []
    for k, image in enumerate(slices):
        enhanced = enhance_image(image, intensity, recipe, path)
        box = label_free_box(enhanced, recipe, None if predicted_lungs is None else predicted_lungs[k])
        cropped = preprocess.crop_to_box(enhanced, box)
        if recipe.image_size is not None:
            cropped = preprocess.resize_image(cropped, (recipe.image_size, recipe.image_size))
        inputs.append(cropped)
        boxes.append(box)
    return inputs, boxes


def _label_free_volume(
    members: list[Record], recipe: CTRecipe, lung_predictor: LungPredictor | None
) -> Iterator[Record]:
    """Validation/test records through `model_inputs` (the inference chain); masks only as targets.
    Lung masks are predicted on the whole (untrimmed) volume, as inference does."""
    images = [record.image for record in members]
    intensity = members[0].intensity
    predicted = None
    if recipe.crop == "model":
        if lung_predictor is None:
            raise ValueError('crop rule "model" needs a lung model for validation and test records')
        predicted = lung_predictor(images, intensity)
    kept = _kept(members, recipe.keep_fraction)
    for k in range(len(members))[kept]:
        record = members[k]
        lungs = None if predicted is None else predicted[k : k + 1]
        (image,), (box,) = model_inputs([record.image], intensity, recipe, lungs, record.path)
        masks = {name: preprocess.crop_to_box(mask, box) for name, mask in record.masks.items()}
        if recipe.image_size is not None:
            size = (recipe.image_size, recipe.image_size)
            masks = {name: preprocess.resize_mask(mask, size) for name, mask in masks.items()}
        yield dataclasses.replace(record, image=image, intensity="display", masks=masks)


def _training_volume(members: list[Record], recipe: CTRecipe, seed: int) -> Iterator[Record]:
    for record in members[_kept(members, recipe.keep_fraction)]:
        enhanced = enhance(record, recipe)
        if recipe.crop == "model":
            enhanced = crop_record(enhanced, jittered_label_box(enhanced, recipe, seed))
        elif recipe.crop == "threshold":
            enhanced = crop_record(enhanced, label_free_box(enhanced.image, recipe, None))
        yield enhanced if recipe.image_size is None else resize_record(enhanced, recipe.image_size)


def apply_recipe(
    records: Iterable[Record],
    recipe: CTRecipe = S3_RECIPE,
    lung_predictor: LungPredictor | None = None,
    split_of: Mapping[str, str] | None = None,
    seed: int = 0,
) -> Iterator[Record]:
    """The whole chain on a record stream (lazy; one volume in memory at a time).

    split_of: record key -> split ("train", "val", "test", ...); default `Record.split`. Training
    records may be cropped with their lung label (rule "model", jittered); every other record goes
    through `model_inputs` with its image only and the lung predictor's masks.
    """
    for members in _volumes(records):
        members = _in_slice_order(members)
        split = (split_of or {}).get(members[0].key, members[0].split)
        if split == "train":
            yield from _training_volume(members, recipe, seed)
        else:
            yield from _label_free_volume(members, recipe, lung_predictor)


def apply_recipe_to_volume(
    volume: Volume,
    recipe: CTRecipe = S3_RECIPE,
    label_names: tuple[str, ...] = (),
    lung_predictor: LungPredictor | None = None,
    split: str = "test",
) -> Iterator[Record]:
    """`apply_recipe` on a volume's display-orientation axial records (`data_prep.io.volume_records`),
    all treated as `split`."""
    records = (dataclasses.replace(r, split=split) for r in volume_records(volume, label_names))
    yield from apply_recipe(records, recipe, lung_predictor)
