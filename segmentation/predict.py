"""Applying a trained segmentation model to PNG/JPEG folders and NIfTI volumes (`python -m segmentation predict`).

A model is applied through its bundle (`segmentation.bundle`: `bundle.json` beside the `.keras` file),
which replays the preprocessing its training data had:
- a CT recipe (`data_prep.ct_recipe`): window, CLAHE, the lung ROI crop by its label-free rule (for
  rule "model", the crop box comes from the bundle's own lung model, applied first as a cascade),
  resize; probabilities of the crop are resized back and pasted into the slice (0 outside the box);
- else the manifest's write-time preprocessing spec, minus its geometric steps: intensity steps run at
  the native size, then the image is resized to the model input (bilinear).
Inputs are scaled to [0, 1] by their stored bit depth. Probabilities are resized back (bilinear) to
the native size before they are binarised, so every output mask has exactly its input's size.
Run folders without a bundle (older runs) are read from their config.json / threshold.json.

Outputs (written atomically)
- 2D images: `<stem>_<mask>.png` per sigmoid channel (0 / 255), or `<stem>_labels.png` (class ids
  0..K) for a softmax model.
- NIfTI volumes: `<stem>_<mask>.nii.gz` (uint8 {0, 1}) or `<stem>_labels.nii.gz`, with the input's
  voxel order, shape and affine. Slices are the axial slices of the canonical RAS+ volume in display
  orientation (`data_prep.io.to_display`), the orientation the 2D training records use; or, with
  orientation="stored", the file's own `array[:, :, k]` (for files with a placeholder affine).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import keras
import numpy as np

import segmentation.models  # noqa: F401  (registers the models' custom layers for loading)
from common.atomic import atomic_write_bytes
from common.model_input import model_input
from data_prep import preprocess
from data_prep.ct_recipe import LungPredictor, model_inputs, paste_box
from data_prep.errors import DataError
from data_prep.imageio import list_image_files, read_image
from data_prep.io import (
    as_intensity,
    from_display,
    intensity_kind,
    read_nifti,
    to_display,
    to_source_orientation,
    write_nifti,
    write_nifti_like,
)
from data_prep.records import Record
from segmentation.bundle import Segmenter, load_segmenter  # noqa: F401  (load_segmenter: re-exported)

TTA_FLIPS = {"lr": 2, "ud": 1}  # flip name -> image axis of a (N, H, W, C) batch
NIFTI_SUFFIXES = (".nii", ".nii.gz")
ORIENTATIONS = ("display", "stored")


def predict_probs(
    model: keras.Model, images: np.ndarray, batch_size: int = 8, tta_flips: Sequence[str] = ()
) -> np.ndarray:
    """images (N, H, W, C) float32 -> probabilities (N, H, W, K) float32.

    tta_flips: test-time augmentation, any of "lr" (left-right) and "ud" (up-down): the prediction is
    the mean of the plain one and the flipped-back prediction of each flipped input.
    """
    unknown = sorted(set(tta_flips) - set(TTA_FLIPS))
    if unknown:
        raise ValueError(f"unknown TTA flips {unknown}; known: {sorted(TTA_FLIPS)}")
    probs = _forward(model, images, batch_size)
    for flip in tta_flips:
        axis = TTA_FLIPS[flip]
        probs += np.flip(_forward(model, np.flip(images, axis), batch_size), axis)
    return probs / (1 + len(tta_flips))


def _forward(model: keras.Model, images: np.ndarray, batch_size: int) -> np.ndarray:
    """images (N, H, W, C) -> model outputs (N, H, W, K) float32: one `predict_on_batch` call per batch
    of `batch_size` (no `model.predict` data pipeline; the same batches, so the same numbers)."""
    batches = [images[start : start + batch_size] for start in range(0, len(images), batch_size)]
    return np.concatenate([np.asarray(model.predict_on_batch(batch), np.float32) for batch in batches])


def binarize(probs: np.ndarray, segmenter: Segmenter) -> np.ndarray:
    """probs (..., H, W, K) -> uint8 (..., H, W, K) {0, 1} masks (sigmoid) or (..., H, W) class ids (softmax)."""
    if segmenter.multiclass:
        return np.argmax(probs, axis=-1).astype(np.uint8)
    return segmenter.threshold.binarize(probs).astype(np.uint8)


def prepare_image(image: np.ndarray, segmenter: Segmenter, path: str | Path) -> np.ndarray:
    """A native image (H, W) or (H, W, 3) -> model input (h, w, C) float32 in [0, 1] (no recipe)."""
    record = Record(
        key=str(path), image=image, modality="ct", intensity=intensity_kind(image), path=str(path)
    )
    stored, _ = segmenter.preprocess.apply(record)
    return model_input(stored, segmenter.input_size, segmenter.channels)


def segmenter_inputs(
    segmenter: Segmenter, slices: Sequence[np.ndarray], intensity: str | None, path: str | Path
) -> tuple[np.ndarray, list[preprocess.Box]]:
    """Native (H, W) slices -> (model inputs (N, h, w, C) float32, the box of each slice they show).

    The one input chain of prediction, evaluation and the report. intensity: the volume's intensity
    kind (`data_prep.io.intensity_kind`), or None to tell it per image. No label is involved.
    """
    if segmenter.recipe is None:
        inputs = [prepare_image(image, segmenter, path) for image in slices]
        return np.stack(inputs), [(0, image.shape[0], 0, image.shape[1]) for image in slices]
    kinds = [intensity or intensity_kind(image) for image in slices]
    if len(set(kinds)) > 1:
        return _stacked(
            [segmenter_inputs(segmenter, [s], k, path) for s, k in zip(slices, kinds, strict=True)]
        )
    kind = kinds[0]
    images = [as_intensity(image, kind) for image in slices]
    lungs = lung_predictor(segmenter.lung)(images, kind) if segmenter.recipe.crop == "model" else None
    stored, boxes = model_inputs(images, kind, segmenter.recipe, lungs, str(path))
    return np.stack([model_input(image, segmenter.input_size, segmenter.channels) for image in stored]), boxes


def _stacked(parts: list[tuple[np.ndarray, list[preprocess.Box]]]) -> tuple[np.ndarray, list[preprocess.Box]]:
    return np.concatenate([inputs for inputs, _ in parts]), [box for _, boxes in parts for box in boxes]


def slice_probabilities(
    segmenter: Segmenter,
    slices: Sequence[np.ndarray],
    intensity: str | None,
    path: str | Path,
    batch_size: int = 8,
    tta_flips: Sequence[str] = (),
) -> list[np.ndarray]:
    """Native (H, W) slices (of one volume, in order) -> their (H, W, K) float32 probabilities."""
    inputs, boxes = segmenter_inputs(segmenter, slices, intensity, path)
    return _restored(segmenter, predict_probs(segmenter.model, inputs, batch_size, tta_flips), boxes, slices)


def _restored(
    segmenter: Segmenter, probs: np.ndarray, boxes: Sequence[preprocess.Box], natives: Sequence[np.ndarray]
) -> list[np.ndarray]:
    """Probabilities (N, h, w, K) of the model inputs -> each native image's (H, W, K) float32: resized
    into its box (bilinear), background (softmax) or 0 (sigmoid) outside it."""
    outside = np.zeros(probs.shape[-1], np.float32)
    if segmenter.multiclass:
        outside[0] = 1.0  # background
    restored = []
    for prob, (y0, y1, x0, x1), image in zip(probs, boxes, natives, strict=True):
        restored.append(
            paste_box(_resize_probs(prob, (y1 - y0, x1 - x0)), (y0, y1, x0, x1), image.shape[:2], outside)
        )
    return restored


def lung_channel(segmenter: Segmenter, channel: str = "lung") -> int:
    """The index of `channel` among a sigmoid segmenter's outputs; ValueError otherwise."""
    if segmenter is None or segmenter.multiclass or channel not in segmenter.channel_names:
        names = None if segmenter is None else segmenter.channel_names
        raise ValueError(f"need a sigmoid segmenter with a {channel!r} channel, got {names}")
    return segmenter.channel_names.index(channel)


def lung_predictor(segmenter: Segmenter, channel: str = "lung", batch_size: int = 8) -> LungPredictor:
    """A `data_prep.ct_recipe.LungPredictor` from a sigmoid lung segmenter: slices -> binarised masks."""
    index = lung_channel(segmenter, channel)

    def predict(slices: Sequence[np.ndarray], intensity: str) -> list[np.ndarray]:
        probs = slice_probabilities(segmenter, slices, intensity, "lung model", batch_size)
        return [binarize(prob, segmenter)[..., index] for prob in probs]

    return predict


def predicted_masks(
    segmenter: Segmenter, inputs: np.ndarray, native_size: tuple[int, int], channel: str = "lung"
) -> np.ndarray:
    """Model inputs (N, h, w, C) float32 -> (N, H, W) uint8 {0, 1} masks of `channel` at native_size
    (H, W): probabilities resized bilinearly, then binarised with the segmenter's threshold."""
    index = lung_channel(segmenter, channel)
    probs = predict_probs(segmenter.model, inputs, batch_size=len(inputs))
    resized = np.stack([_resize_probs(prob, native_size) for prob in probs])
    return binarize(resized, segmenter)[..., index]


def _resize_probs(probs: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w, K) -> (H, W, K) bilinear."""
    resized = cv2.resize(probs, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    return resized.reshape(*size, probs.shape[-1])


def write_png(path: Path, image: np.ndarray) -> Path:
    """uint8 (H, W) or (H, W, 3) BGR -> PNG file, atomically."""
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise ValueError(f"{path}: PNG encoding failed for an array of shape {image.shape}")
    return atomic_write_bytes(path, encoded.tobytes())


def _output_names(stem: str, segmenter: Segmenter, suffix: str) -> list[str]:
    if segmenter.multiclass:
        return [f"{stem}_labels{suffix}"]
    return [f"{stem}_{name}{suffix}" for name in segmenter.channel_names]


def predict_images(
    segmenter: Segmenter,
    paths: Sequence[Path],
    out_dir: str | Path,
    batch_size: int = 8,
    tta_flips: Sequence[str] = (),
) -> list[Path]:
    """Segments 2D image files (read with `data_prep.imageio.read_image`); returns the written PNGs."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for start in range(0, len(paths), batch_size):
        chunk = paths[start : start + batch_size]
        natives = [read_image(path) for path in chunk]
        pairs = zip(natives, chunk, strict=True)
        inputs, boxes = _stacked([segmenter_inputs(segmenter, [image], None, path) for image, path in pairs])
        probs = predict_probs(segmenter.model, inputs, batch_size, tta_flips)  # one pass for the chunk
        for path, prob in zip(chunk, _restored(segmenter, probs, boxes, natives), strict=True):
            masks = binarize(prob, segmenter)
            names = _output_names(path.stem, segmenter, ".png")
            if segmenter.multiclass:
                written.append(write_png(out_dir / names[0], masks))
            else:
                for channel, name in enumerate(names):
                    written.append(write_png(out_dir / name, masks[..., channel] * 255))
    return written


def volume_probabilities(
    segmenter: Segmenter,
    volume: np.ndarray,
    path: str | Path,
    batch_size: int = 8,
    tta_flips: Sequence[str] = (),
    display: bool = True,
) -> np.ndarray:
    """Probabilities (X, Y, Z, K) float32 of a volume (X, Y, Z), segmented slice by slice (batched).

    display: slices `volume[:, :, k]` of a canonical RAS+ volume are shown to the model in display
    orientation (`data_prep.io.to_display`), as the 2D training records are; False feeds them as stored.
    """
    slices = [to_display(volume[:, :, k]) if display else volume[:, :, k] for k in range(volume.shape[2])]
    kind = intensity_kind(volume)
    probs = slice_probabilities(segmenter, slices, kind, path, batch_size, tta_flips)
    return np.stack([from_display(prob) if display else prob for prob in probs], axis=2)


def _predict_volume(
    segmenter: Segmenter,
    path: Path,
    out_dir: str | Path,
    batch_size: int,
    tta_flips: Sequence[str],
    display: bool,
) -> list[Path]:
    """Segments a NIfTI volume slice by slice (batched); writes masks aligned to the input file.
    display: the slices as `predict_path`'s orientation "display" (True) or "stored" (False) gives them."""
    scan = read_nifti(path)
    volume = scan.array if display else to_source_orientation(scan.array, scan.source_affine)
    if volume.ndim != 3:
        raise DataError(path, f"expected a 3D volume, got shape {scan.source_shape}")
    probs = volume_probabilities(segmenter, volume, path, batch_size, tta_flips, display)
    stacked = binarize(probs, segmenter)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = Path(path).name.removesuffix(".gz").removesuffix(".nii")
    names = _output_names(stem, segmenter, ".nii.gz")
    arrays = [stacked] if segmenter.multiclass else [stacked[..., c] for c in range(stacked.shape[-1])]
    written = []
    for name, array in zip(names, arrays, strict=True):
        array = np.ascontiguousarray(array, np.uint8)
        if display:
            write_nifti_like(out_dir / name, array, scan)
        else:
            write_nifti(out_dir / name, array, scan.source_affine)
        written.append(out_dir / name)
    return written


def predict_path(
    segmenter: Segmenter,
    input_path: str | Path,
    out_dir: str | Path,
    batch_size: int = 8,
    tta_flips: Sequence[str] = (),
    orientation: str = "display",
) -> list[Path]:
    """Segments the input: a NIfTI file, a folder (images and/or NIfTI files) or one image file; returns
    the written masks (PNGs beside 2D images' names, NIfTI masks aligned to each volume's file).

    orientation (volumes): "display" (default) feeds the axial slices of the canonical RAS+ volume in
    display orientation (`data_prep.io.to_display`), as the 2D training records are. "stored" feeds
    `array[:, :, k]` of the file's own voxel order unchanged, for files whose affine is a placeholder
    (e.g. the re-stacked Zenodo slices, whose `array[:, :, k]` is the original PNG).
    """
    if orientation not in ORIENTATIONS:
        raise ValueError(f"orientation must be one of {ORIENTATIONS}, got {orientation!r}")
    display = orientation == "display"
    input_path = Path(input_path)
    if input_path.is_dir():
        files = list_image_files(input_path)
        volumes = [p for p in files if p.name.endswith(NIFTI_SUFFIXES)]
        images = [p for p in files if not p.name.endswith(NIFTI_SUFFIXES)]
        written = predict_images(segmenter, images, out_dir, batch_size, tta_flips) if images else []
        for volume in volumes:
            written += _predict_volume(segmenter, volume, out_dir, batch_size, tta_flips, display)
        return written
    if not input_path.is_file():
        raise DataError(input_path, "no such file or folder")
    if input_path.name.endswith(NIFTI_SUFFIXES):
        return _predict_volume(segmenter, input_path, out_dir, batch_size, tta_flips, display)
    return predict_images(segmenter, [input_path], out_dir, batch_size, tta_flips)
