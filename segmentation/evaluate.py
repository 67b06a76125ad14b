"""Evaluating a segmentation model on one split of a TFRecord directory (`python -m segmentation evaluate`).

Writes into `out_dir`:
- `metrics.json`: per mask channel, Dice / IoU / precision / recall / specificity averaged per image,
  pooled and per case, each with a 95% percentile-bootstrap CI (`common.bootstrap`: per-image and
  pooled values resample cases, i.e. patient ids, when the data has them, else images; per-case
  values resample cases); HD95 and normalised surface Dice per image (in mm with a given pixel
  spacing, else in pixels at the evaluated size: the shared sets have no real spacing); the Inf-Net view (`infnet_mean_dice`, `max_dice`); the
  threshold used and where it came from; the definitions.
- `per_image.csv`, `per_case.csv`, and `overlays/` PNGs (image, truth contour green, prediction
  contour red) for the best, median and worst image by Dice.
Metrics are computed at the model's input size (truth masks resized by nearest neighbour).
The threshold must come from validation data (`segmentation.thresholds`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import keras
import numpy as np
import pandas as pd

from common.atomic import atomic_write_bytes
from common.bootstrap import bootstrap_ci
from segmentation import metrics
from segmentation.predict import Segmenter, predict_probs, write_png
from segmentation.thresholds import FIXED, ThresholdChoice, ThresholdSplitError, choose_threshold, plot_choice
from tfrecords.manifest import load_manifest
from tfrecords.read_config import ReadConfig
from tfrecords.reader import make_dataset

DEFINITIONS = {
    "dice": "2TP/(2TP+FP+FN); 1 when prediction and truth are both empty",
    "iou": "TP/(TP+FP+FN); 1 when both are empty",
    "precision": "TP/(TP+FP); undefined (left out) when nothing is predicted",
    "recall": "TP/(TP+FN) (sensitivity); undefined (left out) when the truth is empty",
    "specificity": "TN/(TN+FP); undefined when the truth has no negative pixel",
    "per_image": "mean over images of the per-image value",
    "pooled": "one value from TP/FP/FN/TN summed over all pixels of the split",
    "per_case": "counts summed over the images of each case (patient_id), mean over cases",
    "hd95": "95th-percentile robust Hausdorff distance, DeepMind surface-distance (surfels weighted by "
    "their area): max of the two directed percentiles; undefined if a mask is empty",
    "nsd": "normalised surface Dice at the tolerance, DeepMind surface-distance (area-weighted surfels); "
    "1 if both empty, 0 if one is",
    "infnet_mean_dice": "Inf-Net: per-image Dice at 256 thresholds of min-max scaled probabilities, mean over "
    "images, then mean over thresholds (not Dice at one threshold)",
    "max_dice": "Inf-Net: the same curve's maximum over thresholds (an oracle threshold on this split)",
    "ci95": "2.5th and 97.5th percentiles of 1000 bootstrap resamples",
}
SCORE_NAMES = ("dice", "iou", "precision", "recall", "specificity")


@dataclass
class SplitPredictions:
    """Everything evaluation needs about one split, at the model's input size.

    images: (N, H, W) float32 in [0, 1] (first input channel). probs: (N, H, W, K) float32.
    masks: (N, H, W, M) uint8 truth for the M mask names. keys / case_ids: (N,) str; the case is the
    record's patient_id, or its key when the record has none.
    """

    images: np.ndarray
    probs: np.ndarray
    masks: np.ndarray
    keys: np.ndarray
    case_ids: np.ndarray


def predict_split(
    model: keras.Model,
    data: str | Path,
    split: str,
    mask_names: Sequence[str],
    batch_size: int = 8,
    tta_flips: Sequence[str] = (),
) -> SplitPredictions:
    """Runs `model` over `split` of a TFRecord directory in a fixed order."""
    height, width, channels = model.input_shape[1:]
    read = ReadConfig(
        split,
        task="segmentation",
        batch_size=batch_size,
        image_size=(height, width),
        deterministic=True,
        channels=channels,
        mask_names=mask_names,
        with_meta=True,
    )
    dataset = make_dataset(data, read)
    images, masks, keys, patients = [], [], [], []
    for image, mask, meta in dataset.as_numpy_iterator():
        images.append(image)
        masks.append(mask.astype(np.uint8))
        keys += [key.decode() for key in meta["key"]]
        patients += [patient.decode() for patient in meta["patient_id"]]
    images = np.concatenate(images)
    keys = np.asarray(keys)
    case_ids = np.asarray([patient or key for patient, key in zip(patients, keys, strict=True)])
    probs = predict_probs(model, images, batch_size, tta_flips)
    return SplitPredictions(images[..., 0], probs, np.concatenate(masks), keys, case_ids)


def select_threshold(
    model: keras.Model,
    data: str | Path,
    split: str,
    mask_names: Sequence[str],
    out_dir: str | Path,
    batch_size: int = 8,
    metric: str = "dice",
    average: str = "per_image",
) -> ThresholdChoice:
    """Chooses per-mask thresholds on the VALIDATION `split` maximising `metric` averaged per image,
    pooled or per case (patient / volume); writes threshold.json and its plots."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    predictions = predict_split(model, data, split, mask_names, batch_size)
    choice = choose_threshold(
        predictions.probs,
        predictions.masks,
        split=split,
        metric=metric,
        average=average,
        case_ids=predictions.case_ids,
    )
    choice.save(out_dir / "threshold.json")
    plot_choice(choice, predictions.probs, predictions.masks, out_dir, mask_names)
    return choice


def _label_maps(masks: np.ndarray) -> np.ndarray:
    """(N, H, W, M) binary -> (N, H, W) class ids (0 background, m + 1; the first set mask wins)."""
    background = np.full((*masks.shape[:-1], 1), 0.5)
    return np.argmax(np.concatenate([background, masks], axis=-1), axis=-1)


def _ci(metric_fn, *arrays: np.ndarray, groups: np.ndarray | None, seed: int) -> dict[str, Any]:
    point, low, high = bootstrap_ci(metric_fn, *arrays, groups=groups, seed=seed)
    return {"value": point, "ci95": [low, high]}


def _counts_summary(
    counts: metrics.Counts, case_ids: np.ndarray, groups: np.ndarray | None, seed: int
) -> dict:
    """Every score of one channel (counts (N, 1)) per image, pooled and per case, with CIs."""
    case_counts = counts.by_case(case_ids)[1]
    result = {}
    for score in SCORE_NAMES:
        per_image = metrics.SCORES[score](counts)[:, 0]
        per_case = metrics.SCORES[score](case_counts)[:, 0]

        def pooled(tp, fp, fn, tn, score=score):
            summed = metrics.Counts(*(np.array([[np.sum(value)]]) for value in (tp, fp, fn, tn)))
            return float(metrics.SCORES[score](summed)[0, 0])

        result[score] = {
            "per_image": _ci(metrics.nanmean, per_image, groups=groups, seed=seed),
            "pooled": _ci(
                pooled,
                counts.tp[:, 0],
                counts.fp[:, 0],
                counts.fn[:, 0],
                counts.tn[:, 0],
                groups=groups,
                seed=seed,
            ),
            "per_case": _ci(metrics.nanmean, per_case, groups=None, seed=seed),
        }
        result[score]["per_image"]["n_undefined"] = int(np.isnan(per_image).sum())
    return result


def _surface_summary(
    pred: np.ndarray,
    truth: np.ndarray,
    tolerance: float,
    spacing: tuple[float, float] | None,
    groups: np.ndarray,
    seed: int,
):
    """HD95 and NSD per image (N,) for one channel, and their summaries; mm with `spacing`, else pixels."""
    pairs = list(zip(pred, truth, strict=True))
    hd95 = np.array([metrics.hausdorff95(p, t, spacing) for p, t in pairs])
    nsd = np.array([metrics.normalized_surface_dice(p, t, tolerance, spacing) for p, t in pairs])
    unit = "mm" if spacing is not None else "pixels at the evaluated size"
    summary = {
        "hd95": {
            **_ci(metrics.nanmean, hd95, groups=groups, seed=seed),
            "median": float(np.nanmedian(hd95)) if np.isfinite(hd95).any() else float("nan"),
            "unit": unit,
            "n_undefined": int(np.isnan(hd95).sum()),
        },
        "nsd": {**_ci(metrics.nanmean, nsd, groups=groups, seed=seed), "tolerance": tolerance, "unit": unit},
    }
    return hd95, nsd, summary


def _safe_name(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", key).strip("_")[:80] or "image"


def draw_overlay(image: np.ndarray, truth: np.ndarray, pred: np.ndarray, scale: int = 2) -> np.ndarray:
    """Grayscale image (H, W) in [0, 1] with the truth (green) and prediction (red) contours, BGR uint8."""
    size = (image.shape[1] * scale, image.shape[0] * scale)
    gray = cv2.resize(np.clip(image * 255, 0, 255).astype(np.uint8), size, interpolation=cv2.INTER_LINEAR)
    canvas = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    for mask, colour in ((truth, (0, 200, 0)), (pred, (0, 0, 255))):
        big = cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)
        contours, _ = cv2.findContours(big, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(canvas, contours, -1, colour, 1)
    return canvas


def _write_overlays(
    predictions: SplitPredictions, pred: np.ndarray, truth: np.ndarray, dice: np.ndarray, out_dir: Path
):
    """Best, median and worst image by mean Dice over channels; truth/prediction = any channel."""
    folder = out_dir / "overlays"
    folder.mkdir(parents=True, exist_ok=True)
    order = np.argsort(dice, kind="stable")
    picks = {"worst": order[0], "median": order[len(order) // 2], "best": order[-1]}
    written = {}
    for rank, index in picks.items():
        overlay = draw_overlay(predictions.images[index], truth[index].any(-1), pred[index].any(-1))
        path = folder / f"{rank}_{_safe_name(predictions.keys[index])}.png"
        written[rank] = {
            "key": str(predictions.keys[index]),
            "dice": float(dice[index]),
            "file": str(write_png(path, overlay).name),
        }
    return written


def _write_csv(path: Path, frame: pd.DataFrame) -> Path:
    return atomic_write_bytes(path, frame.to_csv(index=False).encode())


def evaluate_predictions(
    predictions: SplitPredictions,
    segmenter_channels: Sequence[str],
    threshold: ThresholdChoice,
    split: str,
    out_dir: str | Path,
    multiclass: bool = False,
    nsd_tolerance: float = 2.0,
    pixel_spacing_mm: tuple[float, float] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Scores `predictions` of `split`, writes metrics.json, the CSVs and overlays (see the module doc)
    and returns the contents of metrics.json.

    pixel_spacing_mm: (row, column) pixel size in mm at the evaluated size, when known; HD95 and
    the NSD tolerance are then in mm, else in pixels. A threshold chosen on `split` itself, or on any
    non-validation split, raises ThresholdSplitError.
    """
    if threshold.split == split:
        raise ThresholdSplitError(f"the threshold was chosen on {split!r}, the split being evaluated")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    mask_names = [name for name in segmenter_channels if not (multiclass and name == "background")]
    truth = predictions.masks.astype(bool)
    if multiclass:
        labels = np.argmax(predictions.probs, axis=-1)
        pred = metrics.class_channels(labels, len(segmenter_channels))
        truth = metrics.class_channels(_label_maps(predictions.masks), len(segmenter_channels))
    else:
        pred = threshold.binarize(predictions.probs)
    cases = predictions.case_ids
    per_image = pd.DataFrame({"key": predictions.keys, "case_id": cases})
    report: dict[str, Any] = {
        "split": split,
        "n_images": int(len(cases)),
        "n_cases": int(len(np.unique(cases))),
        "case_id": "patient_id (the key where a record has none)",
        "evaluated_size": list(predictions.images.shape[1:3]),
        "threshold": {k: v for k, v in threshold.to_dict().items() if k not in ("grid", "scores")},
        "decision": "argmax over softmax classes" if multiclass else "probability >= threshold per mask",
        "definitions": DEFINITIONS,
        "masks": {},
    }
    counts = metrics.confusion_counts(pred, truth)
    dice_columns = []
    for channel, name in enumerate(mask_names):
        channel_counts = counts.channel(channel)
        summary = _counts_summary(channel_counts, cases, cases, seed)
        hd95, nsd, surface = _surface_summary(
            pred[..., channel], truth[..., channel], nsd_tolerance, pixel_spacing_mm, cases, seed
        )
        summary.update(surface)
        if not multiclass:
            summary["infnet_mean_dice"] = metrics.infnet_mean_dice(
                predictions.probs[..., channel], truth[..., channel]
            )
            summary["max_dice"] = metrics.max_dice(predictions.probs[..., channel], truth[..., channel])
        report["masks"][name] = summary
        for score in SCORE_NAMES:
            per_image[f"{name}_{score}"] = metrics.SCORES[score](channel_counts)[:, 0]
        per_image[f"{name}_hd95"], per_image[f"{name}_nsd"] = hd95, nsd
        per_image[f"{name}_truth_px"], per_image[f"{name}_pred_px"] = (
            truth[..., channel].sum((1, 2)),
            pred[..., channel].sum((1, 2)),
        )
        dice_columns.append(f"{name}_dice")
    if multiclass:
        report["miou"] = metrics.mean_iou(
            np.argmax(predictions.probs, -1), _label_maps(predictions.masks), len(segmenter_channels)
        )
    case_names, case_counts = counts.by_case(cases)
    per_case = pd.DataFrame({"case_id": case_names, "n_images": np.unique(cases, return_counts=True)[1]})
    for channel, name in enumerate(mask_names):
        for score in SCORE_NAMES:
            per_case[f"{name}_{score}"] = metrics.SCORES[score](case_counts)[:, channel]
    mean_dice = per_image[dice_columns].to_numpy().mean(axis=1)
    report["overlays"] = _write_overlays(predictions, pred, truth, mean_dice, out_dir)
    _write_csv(out_dir / "per_image.csv", per_image)
    _write_csv(out_dir / "per_case.csv", per_case)
    text = json.dumps(report, indent=2, default=float)
    atomic_write_bytes(out_dir / "metrics.json", text.encode())
    return json.loads(text)


def evaluate_segmenter(
    segmenter: Segmenter,
    data: str | Path,
    out_dir: str | Path,
    split: str = "test",
    val_split: str | None = "val",
    batch_size: int = 8,
    tta_flips: Sequence[str] = (),
    nsd_tolerance: float = 2.0,
    pixel_spacing_mm: tuple[float, float] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Evaluates on `split`. For a sigmoid model the threshold is `segmenter.threshold` when it came from
    a validation split (or is fixed); with `val_split` given and a fixed threshold, it is chosen on
    `val_split` first (written to out_dir/threshold.json)."""
    mask_names = [n for n in segmenter.channel_names if not (segmenter.multiclass and n == "background")]
    threshold = segmenter.threshold
    has_val = val_split is not None and val_split in load_manifest(data).splits
    if not segmenter.multiclass and threshold.split == FIXED and has_val:
        threshold = select_threshold(segmenter.model, data, val_split, mask_names, out_dir, batch_size)
    predictions = predict_split(segmenter.model, data, split, mask_names, batch_size, tta_flips)
    return evaluate_predictions(
        predictions,
        segmenter.channel_names,
        threshold,
        split,
        out_dir,
        segmenter.multiclass,
        nsd_tolerance,
        pixel_spacing_mm,
        seed,
    )
