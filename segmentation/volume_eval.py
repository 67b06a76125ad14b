"""Evaluating a model bundle on a folder of NIfTI volumes with masks (`python -m segmentation evaluate-volumes`).

Inference is the one `segmentation predict` runs on a raw file (`load_segmenter`, `volume_probabilities`,
`binarize`): volumes in any orientation, HU or display values. Images and label files pair by file stem,
else by `data_prep.adapters.zenodo.case_id` (CT `coronacases_org_001.nii.gz` <-> mask `coronacases_001.nii.gz`).
Labels are reoriented like their image; truth = voxels whose label is in `label_values` (default: > 0).

Per case (3-D): Dice (`segmentation.metrics` counts; 1 when prediction and truth are both empty),
normalised surface Dice at `tolerance_mm` and HD95 in mm (`segmentation.metrics`, DeepMind's
surface-distance definitions; NSD 1 both empty / 0 one empty, HD95 undefined if either is empty), predicted
and true volume in mL from the header spacing. Per axial slice `array[:, :, k]`: Dice with the same empty rule.
Default tolerance as in Ma et al.'s benchmark: 1 mm for "lung", 3 mm for lesions and anything else.

Steps (as nnU-Net's / MONAI's evaluation): compute, `evaluate_volumes` (inference, then `score_case`,
pure: per-case and per-slice tables, preview strips); aggregate, `summarize` (per metric the mean over
cases as {"value", "low", "high"} with its bootstrap 95% CI, plus SD, median and n) and
`worst_case_montage`; write, `write_evaluation` (cases.csv, slices.csv, summary.json, worst_cases.png
into OUT, staged beside it and moved in only when all are written: `common.atomic.staged_folder`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import nibabel as nib
import numpy as np
import pandas as pd
from nibabel import orientations

from common.atomic import staged_folder
from common.bootstrap import bootstrap_ci, ci_entry
from data_prep.adapters.zenodo import case_id
from data_prep.errors import DataError
from data_prep.io import (
    NiftiScan,
    check_same_shape,
    nifti_files,
    nifti_stem,
    read_nifti,
    to_display,
    to_source_orientation,
)
from segmentation import metrics
from segmentation.evaluate import draw_overlay
from segmentation.predict import (
    ORIENTATIONS,
    Segmenter,
    binarize,
    load_segmenter,
    volume_probabilities,
)

LUNG_CHANNELS = ("lung", "lungs")
LUNG_TOLERANCE_MM, LESION_TOLERANCE_MM = 1.0, 3.0
SUMMARY_METRICS = ("dice", "nsd", "hd95_mm", "pred_ml", "true_ml")
PREVIEW_SLICES, TILE = 3, 160  # slices per case in the montage, tile size in pixels
CAPTION = 22  # caption band above each montage row, pixels
DEFINITIONS = {
    "dice": "3-D 2TP/(2TP+FP+FN) over the case's voxels; 1 when prediction and truth are both empty",
    "nsd": "normalised surface Dice at tolerance_mm (DeepMind surface-distance: surface-area-weighted "
    "surfels); 1 when both are empty, 0 when exactly one is",
    "hd95_mm": "95th-percentile robust Hausdorff distance in mm (DeepMind surface-distance: the larger of the "
    "two directed area-weighted 95th percentiles); undefined (null, left out) when either mask is empty",
    "pred_ml, true_ml": "voxel count x voxel volume from the image header spacing, in mL",
    "slice_dice": "Dice of each axial slice array[:, :, k], same empty rule as dice; summarised over all "
    "slices, CI resampling cases",
    "value": "the mean over cases (slices for slice_dice) of the defined values",
    "low, high": "2.5th and 97.5th percentiles of the mean over bootstrap resamples of cases",
}


@dataclass(frozen=True)
class VolumePair:
    """One case: its image file and its label file."""

    case: str
    image: Path
    label: Path


@dataclass(frozen=True)
class OrientedVolume:
    """A NIfTI volume as the segmenter sees it.

    array: (X, Y, Z) canonical RAS+ (display=True) or the file's own voxel order (display=False).
    spacing_mm: voxel size along the axes of `array`.
    """

    array: np.ndarray
    spacing_mm: tuple[float, float, float]
    scan: NiftiScan
    display: bool

    def slice_image(self, array: np.ndarray, k: int) -> np.ndarray:
        """Axial slice k of an array on this volume's grid, as shown to the model (display or stored)."""
        return to_display(array[:, :, k]) if self.display else array[:, :, k]


@dataclass
class VolumeEvaluation:
    """cases: one row per case; slices: one row per axial slice; previews: case -> BGR uint8 overlay strip."""

    cases: pd.DataFrame
    slices: pd.DataFrame
    previews: dict[str, np.ndarray] = field(default_factory=dict)


def default_tolerance_mm(channel: str) -> float:
    """NSD tolerance of Ma et al.'s benchmark: 1 mm for lungs, 3 mm for lesions and everything else."""
    return LUNG_TOLERANCE_MM if channel.lower() in LUNG_CHANNELS else LESION_TOLERANCE_MM


def parse_label_values(text: str | None) -> tuple[int, ...] | None:
    """ "1,2" -> (1, 2); None or "" -> None (any value > 0)."""
    if not text:
        return None
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"--label-values: expected integers like 1,2, got {text!r}") from None


def pair_volumes(images_dir: str | Path, labels_dir: str | Path) -> tuple[list[VolumePair], list[Path]]:
    """(pairs sorted by case, unpaired image files). Pairs by file stem, else by Zenodo case id."""
    images_dir, labels_dir = Path(images_dir), Path(labels_dir)
    for folder in (images_dir, labels_dir):
        if not folder.is_dir():
            raise DataError(folder, "no such folder")
    labels = nifti_files(labels_dir)
    by_stem = {nifti_stem(path): path for path in labels}
    by_case = {case_id(path.name): path for path in labels}
    pairs, unpaired, seen = [], [], {}
    for image in nifti_files(images_dir):
        stem = nifti_stem(image)
        if stem in by_stem:
            case, label = stem, by_stem[stem]
        else:
            case = case_id(image.name)
            label = by_case.get(case)
        if label is None:
            unpaired.append(image)
            continue
        if label in seen:
            raise DataError(label, f"matches two images: {seen[label].name} and {image.name}")
        seen[label] = image
        pairs.append(VolumePair(case, image, label))
    if not pairs:
        raise DataError(labels_dir, f"no label file matches an image of {images_dir} by stem or case id")
    return sorted(pairs, key=lambda pair: pair.case), unpaired


def _header_shape(path: Path) -> tuple[int, int, int]:
    """The canonical array shape `read_nifti` will return, from the header only; the file must be 3-D."""
    try:
        image = nib.load(path)
    except (OSError, ValueError, nib.filebasedimages.ImageFileError) as error:
        raise DataError(path, f"unreadable NIfTI header ({error})") from error
    if len(image.shape) != 3:
        raise DataError(path, f"expected a 3-D volume, got shape {image.shape}")
    shape = [0, 0, 0]
    for source, target in enumerate(orientations.io_orientation(image.affine)[:, 0].astype(int)):
        shape[target] = image.shape[source]
    return tuple(shape)


def check_pairs(pairs: Sequence[VolumePair]) -> None:
    """Header-only checks before any inference: 3-D images and labels, each label of its image's shape."""
    for pair in pairs:
        image_shape, label_shape = _header_shape(pair.image), _header_shape(pair.label)
        check_same_shape(np.broadcast_to(np.uint8(0), label_shape), image_shape, pair.label)


def read_oriented(path: str | Path, orientation: str = "display") -> OrientedVolume:
    """A NIfTI image in the orientation `segmentation predict` feeds it ("display" or "stored")."""
    if orientation not in ORIENTATIONS:
        raise ValueError(f"orientation must be one of {ORIENTATIONS}, got {orientation!r}")
    scan = read_nifti(path)
    if scan.array.ndim != 3:
        raise DataError(path, f"expected a 3-D volume, got shape {scan.source_shape}")
    if orientation == "display":
        return OrientedVolume(scan.array, scan.spacing_mm, scan, True)
    spacing = np.sqrt((scan.source_affine[:3, :3] ** 2).sum(axis=0))
    array = to_source_orientation(scan.array, scan.source_affine)
    return OrientedVolume(array, tuple(float(value) for value in spacing), scan, False)


def volume_file_probabilities(
    segmenter: Segmenter,
    path: str | Path,
    batch_size: int = 8,
    tta_flips: Sequence[str] = (),
    orientation: str = "display",
) -> tuple[np.ndarray, OrientedVolume]:
    """A NIfTI file -> (probabilities (X, Y, Z, K) float32 on the grid of `volume.array`, volume)."""
    volume = read_oriented(path, orientation)
    probs = volume_probabilities(segmenter, volume.array, path, batch_size, tta_flips, volume.display)
    return probs, volume


def read_truth(
    label_path: str | Path, volume: OrientedVolume, label_values: Sequence[int] | None
) -> np.ndarray:
    """The label file reoriented like `volume`, bool (X, Y, Z): label in `label_values` (None: > 0)."""
    labels = read_nifti(label_path).array
    if not volume.display:
        labels = to_source_orientation(labels, volume.scan.source_affine)
    check_same_shape(labels, volume.array.shape, label_path)
    return labels > 0 if label_values is None else np.isin(labels, list(label_values))


def channel_index(segmenter: Segmenter, channel: str | None) -> int:
    """Index of `channel` in the model's outputs (a foreground class of a softmax model); None: the only one."""
    names = segmenter.channel_names
    foreground = names[1:] if segmenter.multiclass else names
    if channel is None:
        if len(foreground) != 1:
            raise ValueError(f"the model has channels {list(foreground)}; choose one with --channel")
        channel = foreground[0]
    if channel not in foreground:
        raise ValueError(f"no channel {channel!r}; the model's channels: {', '.join(foreground)}")
    return names.index(channel)


def predicted_mask(segmenter: Segmenter, probs: np.ndarray, index: int) -> np.ndarray:
    """probs (X, Y, Z, K) -> bool (X, Y, Z) mask of output `index` (`segmentation.predict.binarize`)."""
    masks = binarize(probs, segmenter)
    return masks == index if segmenter.multiclass else masks[..., index].astype(bool)


def score_case(
    pred: np.ndarray, truth: np.ndarray, spacing_mm: Sequence[float], tolerance_mm: float
) -> tuple[dict[str, float], pd.DataFrame]:
    """bool (X, Y, Z) prediction and truth -> (case metrics, per-slice table over axis 2); pure.

    Case metrics: dice (1 when both masks are empty), nsd at `tolerance_mm` (1 both empty, 0 exactly
    one empty), hd95_mm (NaN, undefined, when either is empty), pred_ml and true_ml (voxels x voxel
    volume from `spacing_mm`). Per slice: pred_voxels, true_voxels and dice (same empty rule)."""
    counts = metrics.confusion_counts(pred[None, ..., None], truth[None, ..., None])
    voxel_ml = float(np.prod(spacing_mm)) / 1000.0
    case = {
        "dice": float(metrics.dice_from_counts(counts)[0, 0]),
        "nsd": metrics.normalized_surface_dice(pred, truth, tolerance_mm, spacing_mm),
        "hd95_mm": metrics.hausdorff95(pred, truth, spacing_mm),
        "pred_ml": float(pred.sum()) * voxel_ml,
        "true_ml": float(truth.sum()) * voxel_ml,
    }
    by_slice = metrics.confusion_counts(
        np.moveaxis(pred, 2, 0)[..., None], np.moveaxis(truth, 2, 0)[..., None]
    )
    slices = pd.DataFrame(
        {
            "slice": np.arange(pred.shape[2]),
            "pred_voxels": pred.sum(axis=(0, 1)),
            "true_voxels": truth.sum(axis=(0, 1)),
            "dice": metrics.dice_from_counts(by_slice)[:, 0],
        }
    )
    return case, slices


def _display_range(array: np.ndarray) -> tuple[float, float]:
    low, high = np.percentile(array, (0.5, 99.5))
    return float(low), float(max(high, low + 1e-6))


def preview_strip(
    volume: OrientedVolume, truth: np.ndarray, pred: np.ndarray, caption: str, slices: int = PREVIEW_SLICES
) -> np.ndarray:
    """BGR uint8 (CAPTION + TILE, slices * TILE, 3): a caption band over overlays (truth green, prediction
    red) of `slices` axial slices spread over the slices where truth or prediction is present."""
    present = np.flatnonzero((truth | pred).any(axis=(0, 1)))
    present = present if present.size else np.arange(truth.shape[2])
    picks = present[np.linspace(0, present.size - 1, slices + 2)[1:-1].round().astype(int)]
    low, high = _display_range(volume.array)
    tiles = []
    for k in picks:
        image = (volume.slice_image(volume.array, k).astype(np.float32) - low) / (high - low)
        image = cv2.resize(np.clip(image, 0, 1), (TILE, TILE), interpolation=cv2.INTER_AREA)
        masks = [
            cv2.resize(
                volume.slice_image(m, k).astype(np.uint8), (TILE, TILE), interpolation=cv2.INTER_NEAREST
            )
            for m in (truth, pred)
        ]
        tiles.append(draw_overlay(image, *masks, scale=1))
    band = np.zeros((CAPTION, TILE * slices, 3), np.uint8)
    cv2.putText(
        band, caption, (4, CAPTION - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA
    )
    return np.vstack([band, np.hstack(tiles)])


def evaluate_volumes(
    segmenter: Segmenter,
    pairs: Sequence[VolumePair],
    channel: str | None = None,
    tolerance_mm: float | None = None,
    label_values: Sequence[int] | None = None,
    orientation: str = "display",
    batch_size: int = 8,
    tta_flips: Sequence[str] = (),
) -> VolumeEvaluation:
    """Segments every pair's image through the `segmentation predict` path and scores it (see the module
    docstring). channel: the output scored (None: the model's only one); tolerance_mm: NSD tolerance
    (None: `default_tolerance_mm(channel)`). Nothing is written."""
    if not pairs:
        raise ValueError("no volume pairs to evaluate")
    index = channel_index(segmenter, channel)
    name = segmenter.channel_names[index]
    tolerance = default_tolerance_mm(name) if tolerance_mm is None else float(tolerance_mm)
    rows, slice_tables, previews = [], [], {}
    for pair in pairs:
        probs, volume = volume_file_probabilities(segmenter, pair.image, batch_size, tta_flips, orientation)
        truth = read_truth(pair.label, volume, label_values)
        pred = predicted_mask(segmenter, probs, index)
        scores, slices = score_case(pred, truth, volume.spacing_mm, tolerance)
        rows.append(
            {
                "case": pair.case,
                **scores,
                "tolerance_mm": tolerance,
                "spacing_x_mm": volume.spacing_mm[0],
                "spacing_y_mm": volume.spacing_mm[1],
                "spacing_z_mm": volume.spacing_mm[2],
                "shape": "x".join(str(size) for size in volume.array.shape),
                "image": str(pair.image),
                "label": str(pair.label),
            }
        )
        slice_tables.append(slices.assign(case=pair.case)[["case", *slices.columns]])
        previews[pair.case] = preview_strip(volume, truth, pred, f"{pair.case}  Dice {scores['dice']:.3f}")
    cases = pd.DataFrame(rows)
    return VolumeEvaluation(cases, pd.concat(slice_tables, ignore_index=True), previews)


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _describe(
    values: np.ndarray, seed: int, n_resamples: int, groups: np.ndarray | None = None
) -> dict[str, Any]:
    """{"value" (mean), "low", "high" (bootstrap 95% CI of the mean), "sd" (ddof 1), "median", "n"
    (defined values)} of `values`, NaN (undefined) values left out; NaN results are None."""
    defined = values[~np.isnan(values)]
    _, low, high = bootstrap_ci(metrics.nanmean, values, n_resamples=n_resamples, seed=seed, groups=groups)
    return {
        **ci_entry(metrics.nanmean(values), low, high),
        "sd": _finite_or_none(float(np.std(defined, ddof=1))) if defined.size > 1 else None,
        "median": _finite_or_none(float(np.median(defined))) if defined.size else None,
        "n": int(defined.size),
    }


def summarize(
    cases: pd.DataFrame, seed: int = 0, n_resamples: int = 1000, slices: pd.DataFrame | None = None
) -> dict[str, Any]:
    """Per metric of `SUMMARY_METRICS` over cases: the mean with its 95% CI ({"value", "low", "high"},
    bootstrap over cases, `common.bootstrap`), SD, median and n; with `slices`, the same for the
    per-slice Dice, resampling whole cases.
    Undefined values (HD95 of an empty mask) are left out and counted in n; NaN results are None."""
    summary: dict[str, Any] = {
        "n_cases": len(cases),
        "metrics": {
            name: _describe(cases[name].to_numpy(float), seed, n_resamples) for name in SUMMARY_METRICS
        },
        "bootstrap": {"n_resamples": n_resamples, "seed": seed, "resampled": "cases"},
        "definitions": DEFINITIONS,
    }
    if slices is not None and len(slices):
        values, groups = slices["dice"].to_numpy(float), slices["case"].to_numpy()
        summary["metrics"]["slice_dice"] = _describe(values, seed, n_resamples, groups)
    return summary


def worst_case_montage(evaluation: VolumeEvaluation, worst: int) -> np.ndarray | None:
    """The preview strips of the `worst` cases by Dice (lowest first, ties by case), stacked; None if none."""
    ranked = evaluation.cases.sort_values(["dice", "case"], kind="stable")["case"].tolist()[:worst]
    strips = [evaluation.previews[case] for case in ranked if case in evaluation.previews]
    return np.vstack(strips) if strips else None


def write_evaluation(
    out: str | Path,
    cases: pd.DataFrame,
    slices: pd.DataFrame,
    summary: dict[str, Any],
    montage: np.ndarray | None = None,
) -> Path:
    """Writes cases.csv, slices.csv, summary.json and worst_cases.png (BGR uint8 montage, if given) into
    `out` all-or-nothing: staged in a folder beside it, then moved in (files of the same name replaced)."""
    with staged_folder(out) as folder:
        cases.to_csv(folder / "cases.csv", index=False)
        slices.to_csv(folder / "slices.csv", index=False)
        (folder / "summary.json").write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")
        if montage is not None and not cv2.imwrite(str(folder / "worst_cases.png"), montage):
            raise ValueError(f"PNG encoding failed for a montage of shape {montage.shape}")
    return Path(out)


def evaluate_volume_folder(
    model_path: str | Path,
    images_dir: str | Path,
    labels_dir: str | Path,
    out: str | Path,
    channel: str | None = None,
    label_values: Sequence[int] | None = None,
    tolerance_mm: float | None = None,
    orientation: str = "display",
    batch_size: int = 8,
    worst: int = 4,
    seed: int = 0,
) -> dict[str, Any]:
    """The command: pairs, checks every header, evaluates, summarises, writes `out`; returns the summary.
    Bad input raises `DataError` naming the file before anything is written."""
    pairs, unpaired = pair_volumes(images_dir, labels_dir)
    check_pairs(pairs)
    segmenter = load_segmenter(model_path)
    try:
        name = segmenter.channel_names[channel_index(segmenter, channel)]
    except ValueError as error:
        raise DataError(model_path, str(error)) from None
    evaluation = evaluate_volumes(
        segmenter, pairs, name, tolerance_mm, label_values, orientation, batch_size=batch_size
    )
    summary = {
        "model": str(model_path),
        "channel": name,
        "tolerance_mm": float(evaluation.cases["tolerance_mm"].iloc[0]),
        "label_values": list(label_values) if label_values else "any value > 0",
        "orientation": orientation,
        "unpaired_images": [path.name for path in unpaired],
        **summarize(evaluation.cases, seed, slices=evaluation.slices),
    }
    write_evaluation(out, evaluation.cases, evaluation.slices, summary, worst_case_montage(evaluation, worst))
    return summary
