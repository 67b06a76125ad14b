"""Evaluating a segmentation model on one split of a TFRecord directory (`python -m segmentation evaluate`).

Writes into `out_dir`:
- `metrics.json`: per mask channel, Dice / IoU / precision / recall / specificity averaged per image,
  pooled and per case, each with a 95% percentile-bootstrap CI ({"value", "low", "high"},
  `common.bootstrap`: per-image and
  pooled values resample cases, i.e. patient ids, when the data has them, else images; per-case
  values resample cases); HD95 and normalised surface Dice per image (in mm with a given pixel
  spacing, else in pixels at the evaluated size: the shared sets have no real spacing); the Inf-Net view (`infnet_mean_dice`, `max_dice`); the
  threshold used and where it came from; the definitions.
- `per_image.csv`, `per_case.csv`, and `overlays/` PNGs (image, truth contour green, prediction
  contour red) for the best, median and worst image by Dice.
Metrics are computed at the model's input size (truth masks resized by nearest neighbour).
The threshold must come from validation data (`common.thresholds`); it is chosen at the end of
training (`select_threshold`, threshold.json in the run folder) or, for a model without one, on the
validation split here.

Steps (as nnU-Net's / MONAI's evaluation): `score_predictions` (compute: per-image and per-case
scores, pure), `summarize_scores` (aggregate: means and bootstrap CIs as {"value", "low", "high"}),
`write_report` (write: every file all-or-nothing); `evaluate_predictions` runs the three.
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

from common.atomic import atomic_write_text
from common.bootstrap import bootstrap_ci, ci_entry
from common.thresholds import FIXED, THRESHOLD_FILE, ThresholdChoice
from segmentation import metrics
from segmentation.predict import Segmenter, predict_probs, write_png
from segmentation.thresholds import choose_mask_thresholds, plot_choice
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
    "low, high": "2.5th and 97.5th percentiles of 1000 bootstrap resamples of cases",
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
    criterion: str = "dice",
    average: str = "per_image",
) -> ThresholdChoice:
    """Chooses per-mask thresholds on the VALIDATION `split` maximising `criterion` averaged per image,
    pooled or per case (patient / volume); writes threshold.json and its plots."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    predictions = predict_split(model, data, split, mask_names, batch_size)
    choice = choose_mask_thresholds(
        predictions.probs,
        predictions.masks,
        split=split,
        criterion=criterion,
        average=average,
        case_ids=predictions.case_ids,
    )
    choice.save(out_dir / THRESHOLD_FILE)
    plot_choice(choice, predictions.probs, predictions.masks, out_dir, mask_names)
    return choice


def _label_maps(masks: np.ndarray) -> np.ndarray:
    """(N, H, W, M) binary -> (N, H, W) class ids (0 background, m + 1; the first set mask wins)."""
    background = np.full((*masks.shape[:-1], 1), 0.5)
    return np.argmax(np.concatenate([background, masks], axis=-1), axis=-1)


@dataclass
class SplitScores:
    """The per-image and per-case scores of one split (the compute step; see the module docstring).

    mask_names: the M scored masks. keys / case_ids: (N,) str. pred / truth: bool (N, H, W, M), the
    decisions (threshold or argmax) and the truth. counts: confusion counts (N, M) per image.
    hd95 / nsd: float (N, M) per image (HD95 NaN where either mask is empty; NSD 1 both empty, 0 one
    empty), in `surface_unit`, NSD at `nsd_tolerance`. per_image / per_case: the CSV tables.
    infnet: mask -> {"infnet_mean_dice", "max_dice"} (sigmoid models only). miou: pooled mIoU over
    the softmax classes, background included (softmax models only, else None).
    """

    mask_names: list[str]
    keys: np.ndarray
    case_ids: np.ndarray
    pred: np.ndarray
    truth: np.ndarray
    counts: metrics.Counts
    hd95: np.ndarray
    nsd: np.ndarray
    surface_unit: str
    nsd_tolerance: float
    per_image: pd.DataFrame
    per_case: pd.DataFrame
    infnet: dict[str, dict[str, float]]
    miou: float | None


def _per_mask_image(score, pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """float (N, M): score(pred[i, ..., c], truth[i, ..., c]) of every image i and mask c."""
    values = [
        [score(pred[i, ..., c], truth[i, ..., c]) for c in range(pred.shape[-1])] for i in range(len(pred))
    ]
    return np.asarray(values, dtype=np.float64).reshape(len(pred), pred.shape[-1])


def score_predictions(
    predictions: SplitPredictions,
    segmenter_channels: Sequence[str],
    threshold: ThresholdChoice,
    multiclass: bool = False,
    nsd_tolerance: float = 2.0,
    pixel_spacing_mm: tuple[float, float] | None = None,
) -> SplitScores:
    """Compute: binarises `predictions` (probability >= threshold per mask, or the argmax of a
    softmax model) and scores every image and case against the truth; nothing is written.

    Empty-mask rules (`segmentation.metrics`): Dice and IoU are 1 when prediction and truth are both
    empty; precision, recall and specificity are NaN (undefined) when their denominator is 0; HD95 is
    NaN when either mask is empty; NSD is 1 when both are empty, 0 when exactly one is.
    pixel_spacing_mm: (row, column) pixel size in mm at the evaluated size; HD95 and the NSD
    tolerance are then in mm, else in pixels.
    """
    mask_names = [name for name in segmenter_channels if not (multiclass and name == "background")]
    truth = predictions.masks.astype(bool)
    if multiclass:
        pred = metrics.class_channels(np.argmax(predictions.probs, axis=-1), len(segmenter_channels))
        truth = metrics.class_channels(_label_maps(predictions.masks), len(segmenter_channels))
    else:
        pred = threshold.binarize(predictions.probs)
    counts = metrics.confusion_counts(pred, truth)
    hd95 = _per_mask_image(lambda p, t: metrics.hausdorff95(p, t, pixel_spacing_mm), pred, truth)
    nsd = _per_mask_image(
        lambda p, t: metrics.normalized_surface_dice(p, t, nsd_tolerance, pixel_spacing_mm), pred, truth
    )
    per_image = pd.DataFrame({"key": predictions.keys, "case_id": predictions.case_ids})
    for channel, name in enumerate(mask_names):
        for score in SCORE_NAMES:
            per_image[f"{name}_{score}"] = metrics.SCORES[score](counts.channel(channel))[:, 0]
        per_image[f"{name}_hd95"], per_image[f"{name}_nsd"] = hd95[:, channel], nsd[:, channel]
        per_image[f"{name}_truth_px"] = truth[..., channel].sum((1, 2))
        per_image[f"{name}_pred_px"] = pred[..., channel].sum((1, 2))
    case_names, case_counts = counts.by_case(predictions.case_ids)
    per_case = pd.DataFrame(
        {"case_id": case_names, "n_images": np.unique(predictions.case_ids, return_counts=True)[1]}
    )
    for channel, name in enumerate(mask_names):
        for score in SCORE_NAMES:
            per_case[f"{name}_{score}"] = metrics.SCORES[score](case_counts)[:, channel]
    infnet = {}
    if not multiclass:
        infnet = {
            name: {
                "infnet_mean_dice": metrics.infnet_mean_dice(predictions.probs[..., c], truth[..., c]),
                "max_dice": metrics.max_dice(predictions.probs[..., c], truth[..., c]),
            }
            for c, name in enumerate(mask_names)
        }
    miou = None
    if multiclass:
        miou = metrics.mean_iou(
            np.argmax(predictions.probs, -1), _label_maps(predictions.masks), len(segmenter_channels)
        )
    return SplitScores(
        mask_names,
        predictions.keys,
        predictions.case_ids,
        pred,
        truth,
        counts,
        hd95,
        nsd,
        "mm" if pixel_spacing_mm is not None else "pixels at the evaluated size",
        nsd_tolerance,
        per_image,
        per_case,
        infnet,
        miou,
    )


def _ci(metric_fn, *arrays: np.ndarray, groups: np.ndarray | None, seed: int, n_resamples: int) -> dict:
    return ci_entry(*bootstrap_ci(metric_fn, *arrays, groups=groups, seed=seed, n_resamples=n_resamples))


def _counts_summary(counts: metrics.Counts, case_ids: np.ndarray, seed: int, n_resamples: int) -> dict:
    """Every score of one channel (counts (N, 1)) per image, pooled and per case, with CIs: per-image
    and pooled values resample cases (whole groups of images), per-case values resample cases."""
    case_counts = counts.by_case(case_ids)[1]
    result = {}
    for score in SCORE_NAMES:
        per_image = metrics.SCORES[score](counts)[:, 0]
        per_case = metrics.SCORES[score](case_counts)[:, 0]

        def pooled(tp, fp, fn, tn, score=score):
            summed = metrics.Counts(*(np.array([[np.sum(value)]]) for value in (tp, fp, fn, tn)))
            return float(metrics.SCORES[score](summed)[0, 0])

        options = {"seed": seed, "n_resamples": n_resamples}
        result[score] = {
            "per_image": _ci(metrics.nanmean, per_image, groups=case_ids, **options),
            "pooled": _ci(
                pooled,
                counts.tp[:, 0],
                counts.fp[:, 0],
                counts.fn[:, 0],
                counts.tn[:, 0],
                groups=case_ids,
                **options,
            ),
            "per_case": _ci(metrics.nanmean, per_case, groups=None, **options),
        }
        result[score]["per_image"]["n_undefined"] = int(np.isnan(per_image).sum())
    return result


def _surface_summary(
    hd95: np.ndarray, nsd: np.ndarray, scores: SplitScores, seed: int, n_resamples: int
) -> dict[str, Any]:
    """HD95 and NSD of one channel: the mean over images with a CI resampling cases, plus the HD95
    median and the number of images where it is undefined (left out of the mean)."""
    options = {"groups": scores.case_ids, "seed": seed, "n_resamples": n_resamples}
    return {
        "hd95": {
            **_ci(metrics.nanmean, hd95, **options),
            "median": float(np.nanmedian(hd95)) if np.isfinite(hd95).any() else None,
            "unit": scores.surface_unit,
            "n_undefined": int(np.isnan(hd95).sum()),
        },
        "nsd": {
            **_ci(metrics.nanmean, nsd, **options),
            "tolerance": scores.nsd_tolerance,
            "unit": scores.surface_unit,
        },
    }


def _safe_name(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", key).strip("_")[:80] or "image"


def overlay_picks(scores: SplitScores) -> dict[str, int]:
    """The best, median and worst image (index) by the per-image Dice averaged over the masks."""
    mean_dice = scores.per_image[[f"{name}_dice" for name in scores.mask_names]].to_numpy().mean(axis=1)
    order = np.argsort(mean_dice, kind="stable")
    return {"worst": int(order[0]), "median": int(order[len(order) // 2]), "best": int(order[-1])}


def overlay_file(rank: str, key: str) -> str:
    """The overlays/ file name of an image picked as `rank`."""
    return f"{rank}_{_safe_name(key)}.png"


def summarize_scores(
    scores: SplitScores,
    threshold: ThresholdChoice,
    split: str,
    multiclass: bool = False,
    seed: int = 0,
    n_resamples: int = 1000,
) -> dict[str, Any]:
    """Aggregate: the contents of metrics.json from the per-image scores. Means per image, pooled and
    per case with 95% bootstrap CIs ({"value", "low", "high"}, `common.bootstrap.ci_entry`; NaN
    means, e.g. precision with nothing predicted anywhere, are null), the Inf-Net view, mIoU, the
    threshold and the overlay picks."""
    report: dict[str, Any] = {
        "split": split,
        "n_images": int(len(scores.case_ids)),
        "n_cases": int(len(np.unique(scores.case_ids))),
        "case_id": "patient_id (the key where a record has none)",
        "evaluated_size": list(scores.pred.shape[1:3]),
        "threshold": threshold.summary(),
        "decision": "argmax over softmax classes" if multiclass else "probability >= threshold per mask",
        "definitions": DEFINITIONS,
        "masks": {},
    }
    for channel, name in enumerate(scores.mask_names):
        summary = _counts_summary(scores.counts.channel(channel), scores.case_ids, seed, n_resamples)
        summary.update(
            _surface_summary(scores.hd95[:, channel], scores.nsd[:, channel], scores, seed, n_resamples)
        )
        summary.update(scores.infnet.get(name, {}))
        report["masks"][name] = summary
    if scores.miou is not None:
        report["miou"] = scores.miou
    dice = scores.per_image[[f"{name}_dice" for name in scores.mask_names]].to_numpy().mean(axis=1)
    report["overlays"] = {
        rank: {
            "key": str(scores.keys[index]),
            "dice": float(dice[index]),
            "file": overlay_file(rank, str(scores.keys[index])),
        }
        for rank, index in overlay_picks(scores).items()
    }
    return report


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


def write_report(
    out_dir: str | Path, report: dict[str, Any], scores: SplitScores, images: np.ndarray
) -> dict[str, Any]:
    """Write: metrics.json (`report`), per_image.csv, per_case.csv and overlays/ (image (N, H, W) in
    [0, 1], truth contour green, prediction red; truth / prediction = any mask) into `out_dir`, each
    file all-or-nothing. Returns the report as written (JSON round trip)."""
    out_dir = Path(out_dir)
    folder = out_dir / "overlays"
    folder.mkdir(parents=True, exist_ok=True)
    for rank, index in overlay_picks(scores).items():
        overlay = draw_overlay(images[index], scores.truth[index].any(-1), scores.pred[index].any(-1))
        write_png(folder / report["overlays"][rank]["file"], overlay)
    atomic_write_text(out_dir / "per_image.csv", scores.per_image.to_csv(index=False))
    atomic_write_text(out_dir / "per_case.csv", scores.per_case.to_csv(index=False))
    text = json.dumps(report, indent=2, default=float)
    atomic_write_text(out_dir / "metrics.json", text)
    return json.loads(text)


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
    n_resamples: int = 1000,
) -> dict[str, Any]:
    """`score_predictions`, `summarize_scores`, `write_report`: scores `predictions` of `split`, writes
    metrics.json, the CSVs and overlays into `out_dir` and returns the contents of metrics.json.
    A threshold chosen on `split` itself raises ThresholdSplitError. n_resamples: of the bootstrap CIs."""
    threshold.check_applicable_to(split)
    scores = score_predictions(
        predictions, segmenter_channels, threshold, multiclass, nsd_tolerance, pixel_spacing_mm
    )
    report = summarize_scores(scores, threshold, split, multiclass, seed, n_resamples)
    return write_report(out_dir, report, scores, predictions.images)


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
    n_resamples: int = 1000,
) -> dict[str, Any]:
    """Evaluates on `split` (bootstrap CIs from `n_resamples` resamples by case). For a sigmoid model the threshold is `segmenter.threshold` when it came from
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
        n_resamples,
    )
