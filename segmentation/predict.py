"""Applying a trained segmentation model to PNG/JPEG folders and NIfTI volumes (`python -m segmentation predict`).

Input images get the preprocessing the training data had at write time (the manifest's spec, saved
by `segmentation.train` in the run folder's config.json), minus its geometric steps: intensity steps
run at the native size, then the image is resized to the model input (bilinear) and scaled to [0, 1]
by its stored bit depth. Probabilities are resized back (bilinear) to the native size before they
are binarised, so every output mask has exactly its input's size.

Outputs (written atomically)
- 2D images: `<stem>_<mask>.png` per sigmoid channel (0 / 255), or `<stem>_labels.png` (class ids
  0..K) for a softmax model.
- NIfTI volumes: `<stem>_<mask>.nii.gz` (uint8 {0, 1}) or `<stem>_labels.nii.gz`, with the input's
  voxel order, shape and affine. Slices are the axial slices of the canonical RAS+ volume in display
  orientation (`data_prep.io.to_display`), the orientation the 2D training records use; or, with
  orientation="stored", the file's own `array[:, :, k]` (for files with a placeholder affine).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import keras
import numpy as np

import segmentation.models  # noqa: F401  (registers the models' custom layers for loading)
from data_prep.errors import DataError
from data_prep.imageio import list_image_files, read_image
from data_prep.io import (
    from_display,
    intensity_kind,
    read_nifti,
    to_display,
    to_source_orientation,
    write_nifti,
    write_nifti_like,
)
from data_prep.records import Record
from segmentation.thresholds import ThresholdChoice
from tfrecords.spec import PreprocessSpec

TTA_FLIPS = {"lr": 2, "ud": 1}  # flip name -> image axis of a (N, H, W, C) batch
NIFTI_SUFFIXES = (".nii", ".nii.gz")
GEOMETRIC_STEPS = ("resize",)
ORIENTATIONS = ("display", "stored")


@dataclass(frozen=True)
class Segmenter:
    """A trained model with what is needed to apply it.

    channel_names: one per output channel ("background" first for softmax models).
    threshold: per-channel thresholds for sigmoid outputs (ignored for softmax: argmax).
    preprocess: the write-time preprocessing spec of the training data.
    """

    model: keras.Model
    channel_names: tuple[str, ...]
    multiclass: bool
    threshold: ThresholdChoice
    preprocess: PreprocessSpec

    @property
    def input_size(self) -> tuple[int, int]:
        return tuple(self.model.input_shape[1:3])

    @property
    def channels(self) -> int:
        return int(self.model.input_shape[-1])


def load_segmenter(
    model_path: str | Path,
    threshold: ThresholdChoice | str | Path | None = None,
    preprocess: str | None = None,
) -> Segmenter:
    """Loads a `.keras` model and the run folder's config.json / threshold.json beside it.

    threshold: a choice, a threshold.json path, or None for the run's threshold.json (else fixed 0.5).
    preprocess: a spec string replacing the one in config.json.
    """
    model_path = Path(model_path)
    if not model_path.is_file():
        raise DataError(model_path, "no such model file")
    model = keras.saving.load_model(model_path)
    run_dir = model_path.parent
    config = json.loads((run_dir / "config.json").read_text()) if (run_dir / "config.json").is_file() else {}
    outputs = int(model.output_shape[-1])
    names = tuple(config.get("channel_names", [f"channel{k}" for k in range(outputs)]))
    multiclass = bool(config.get("multiclass", False))
    foreground = outputs - 1 if multiclass else outputs
    if threshold is None:
        saved = run_dir / "threshold.json"
        threshold = ThresholdChoice.load(saved) if saved.is_file() else ThresholdChoice.fixed(0.5, foreground)
    elif not isinstance(threshold, ThresholdChoice):
        threshold = ThresholdChoice.load(threshold)
    spec = PreprocessSpec.parse(config.get("preprocess", "") if preprocess is None else preprocess)
    if any(step.name == "lungcrop" for step in spec.steps):
        raise ValueError(f"preprocess {spec} crops to the lungs; predict supports whole images only")
    spec = PreprocessSpec(tuple(step for step in spec.steps if step.name not in GEOMETRIC_STEPS))
    return Segmenter(model, names, multiclass, threshold, spec)


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
    probs = model.predict(images, batch_size=batch_size, verbose=0).astype(np.float32)
    for flip in tta_flips:
        axis = TTA_FLIPS[flip]
        flipped = model.predict(np.flip(images, axis), batch_size=batch_size, verbose=0)
        probs += np.flip(flipped, axis).astype(np.float32)
    return probs / (1 + len(tta_flips))


def binarize(probs: np.ndarray, segmenter: Segmenter) -> np.ndarray:
    """probs (..., H, W, K) -> uint8 (..., H, W, K) {0, 1} masks (sigmoid) or (..., H, W) class ids (softmax)."""
    if segmenter.multiclass:
        return np.argmax(probs, axis=-1).astype(np.uint8)
    return segmenter.threshold.binarize(probs).astype(np.uint8)


def prepare_image(image: np.ndarray, segmenter: Segmenter, path: str | Path) -> np.ndarray:
    """A native image (H, W) or (H, W, 3) -> model input (h, w, C) float32 in [0, 1]."""
    record = Record(
        key=str(path), image=image, modality="ct", intensity=intensity_kind(image), path=str(path)
    )
    stored, _ = segmenter.preprocess.apply(record)
    scaled = stored.astype(np.float32) / float(np.iinfo(stored.dtype).max)
    height, width = segmenter.input_size
    resized = cv2.resize(scaled, (width, height), interpolation=cv2.INTER_LINEAR)
    return np.repeat(resized[..., None], segmenter.channels, axis=-1)


def _resize_probs(probs: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w, K) -> (H, W, K) bilinear."""
    resized = cv2.resize(probs, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    return resized.reshape(*size, probs.shape[-1])


def write_bytes_atomic(path: Path, data: bytes) -> Path:
    """Writes `data` to a temporary file beside `path`, then renames it into place."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def write_png(path: Path, image: np.ndarray) -> Path:
    """uint8 (H, W) or (H, W, 3) BGR -> PNG file, atomically."""
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise ValueError(f"{path}: PNG encoding failed for an array of shape {image.shape}")
    return write_bytes_atomic(path, encoded.tobytes())


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
        inputs = np.stack(
            [prepare_image(image, segmenter, path) for image, path in zip(natives, chunk, strict=True)]
        )
        probs = predict_probs(segmenter.model, inputs, batch_size, tta_flips)
        for path, native, prob in zip(chunk, natives, probs, strict=True):
            masks = binarize(_resize_probs(prob, native.shape[:2]), segmenter)
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
    inputs = np.stack([prepare_image(image, segmenter, path) for image in slices])
    probs = predict_probs(segmenter.model, inputs, batch_size, tta_flips)
    size = slices[0].shape[:2]
    resized = [_resize_probs(prob, size) for prob in probs]
    return np.stack([from_display(prob) if display else prob for prob in resized], axis=2)


def predict_volume(
    segmenter: Segmenter,
    path: str | Path,
    out_dir: str | Path,
    batch_size: int = 8,
    tta_flips: Sequence[str] = (),
    orientation: str = "display",
) -> list[Path]:
    """Segments a NIfTI volume slice by slice (batched); writes masks aligned to the input file.

    orientation: "display" (default) feeds the axial slices of the canonical RAS+ volume in display
    orientation (`data_prep.io.to_display`), as the 2D training records are. "stored" feeds
    `array[:, :, k]` of the file's own voxel order unchanged, for files whose affine is a placeholder
    (e.g. the re-stacked Zenodo slices, whose `array[:, :, k]` is the original PNG).
    """
    if orientation not in ORIENTATIONS:
        raise ValueError(f"orientation must be one of {ORIENTATIONS}, got {orientation!r}")
    scan = read_nifti(path)
    display = orientation == "display"
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
    """Dispatches on the input: a NIfTI file, a folder (images and/or NIfTI files) or one image file."""
    input_path = Path(input_path)
    if input_path.is_dir():
        files = list_image_files(input_path)
        volumes = [p for p in files if p.name.endswith(NIFTI_SUFFIXES)]
        images = [p for p in files if not p.name.endswith(NIFTI_SUFFIXES)]
        written = predict_images(segmenter, images, out_dir, batch_size, tta_flips) if images else []
        for volume in volumes:
            written += predict_volume(segmenter, volume, out_dir, batch_size, tta_flips, orientation)
        return written
    if not input_path.is_file():
        raise DataError(input_path, "no such file or folder")
    if input_path.name.endswith(NIFTI_SUFFIXES):
        return predict_volume(segmenter, input_path, out_dir, batch_size, tta_flips, orientation)
    return predict_images(segmenter, [input_path], out_dir, batch_size, tta_flips)
