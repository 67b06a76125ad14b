"""CT volume report: lungs and infection on a whole NIfTI scan, volumes in mL, severity, montage.

`python -m experiments report VOLUME.nii.gz --lung-model L.keras [--infection-model I.keras |
--stream-model ggo=G.keras ...] --out DIR` writes, into DIR:
- `lung_mask.nii.gz`, `infection_mask.nii.gz`: uint8 masks in the input file's voxel order and affine
  (infection is a label map 1 = GGO, 2 = consolidation, 3 = effusion when stream models are given);
- `report.json` and `report.md`: lung volume (mL), infection volume and percentage per lung and per
  manifestation, and the severity score;
- `montage.png`: evenly spaced slices with lung (green) and infection (red) contours.

Rules stated here:
- Models are `segmentation.predict.Segmenter`s: each sees every axial slice in display orientation
  through its own training-time preprocessing (HU volumes get the lung window unless that says
  otherwise; other float scales are min-max rescaled to 0-255 first), resized to its input size, and
  is binarised at its validation-chosen threshold (`threshold.json` beside the model; else 0.5).
- Left and right lung: lung voxels on the patient-right half of the lung mask's extent along the
  canonical x axis (RAS+: x grows towards the patient's right) are the right lung.
- Infected percentage of a lung = infection voxels inside that lung / that lung's voxels.
- Severity per lung (0-5, the per-lobe CT severity score of Chung et al. 2020 applied per lung):
  0 = 0%, 1 = <5%, 2 = 5-25%, 3 = 25-50%, 4 = 50-75%, 5 = >75%. Overall grade from the total infected
  percentage: none (0%), mild (<25%), moderate (25-50%), severe (>50%).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from data_prep.io import NiftiScan, intensity_kind, read_nifti, to_display, write_nifti_like
from data_prep.preprocess import normalize_minmax, window_hu
from experiments.pipelines.streams import MANIFESTATION_ORDER, combine_streams
from segmentation.predict import Segmenter, binarize, volume_probabilities

SEVERITY_BOUNDS = (0.0, 5.0, 25.0, 50.0, 75.0)  # percent; score = number of bounds exceeded


def to_display_uint8(scan_array: np.ndarray) -> np.ndarray:
    """A canonical CT volume of any intensity kind -> uint8 display values, same shape (for montages)."""
    kind = intensity_kind(scan_array)
    if kind == "hu":
        return window_hu(scan_array, preset="lung")
    if kind == "display":
        return np.clip(scan_array, 0, 255).astype(np.uint8)
    return np.rint(normalize_minmax(scan_array) * 255).astype(np.uint8)


def model_input_volume(scan_array: np.ndarray) -> np.ndarray:
    """The volume the segmenters see: HU and display volumes as they are, other scales as uint8."""
    return scan_array if intensity_kind(scan_array) in ("hu", "display") else to_display_uint8(scan_array)


def segment(segmenter: Segmenter, volume: np.ndarray, path: Path) -> np.ndarray:
    """Canonical (X, Y, Z) volume -> (X, Y, Z) uint8 mask (label map for softmax models)."""
    masks = binarize(volume_probabilities(segmenter, volume, path), segmenter)
    return masks if segmenter.multiclass else masks[..., 0]


def severity_score(percent: float) -> int:
    return int(sum(percent > bound for bound in SEVERITY_BOUNDS))


def overall_grade(percent: float) -> str:
    if percent <= 0.0:
        return "none"
    if percent < 25.0:
        return "mild"
    return "moderate" if percent <= 50.0 else "severe"


def split_lungs(lung: np.ndarray) -> dict[str, np.ndarray]:
    """Canonical lung mask -> {"right": ..., "left": ...} by the midpoint of its x extent."""
    xs = np.flatnonzero(lung.any(axis=(1, 2)))
    middle = (xs.min() + xs.max() + 1) / 2.0 if xs.size else lung.shape[0] / 2.0
    right_half = (np.arange(lung.shape[0]) >= middle)[:, None, None]
    return {"right": lung & right_half, "left": lung & ~right_half}


@dataclass
class VolumeReport:
    summary: dict
    lung: np.ndarray  # canonical uint8 {0, 1}
    infection: np.ndarray  # canonical uint8 label map


def measure(
    lung: np.ndarray,
    infection: np.ndarray,
    spacing_mm: tuple[float, float, float],
    manifestations: tuple[str, ...] = ("infection",),
) -> dict:
    """Volumes (mL), infected percentages per lung and per manifestation, severity scores."""
    millilitres_per_voxel = float(np.prod(spacing_mm)) / 1000.0
    lung = lung.astype(bool)
    lungs = split_lungs(lung)
    infected = infection > 0
    summary = {
        "voxel_volume_ml": millilitres_per_voxel,
        "lung_volume_ml": float(lung.sum() * millilitres_per_voxel),
        "infection_volume_ml": float(infected.sum() * millilitres_per_voxel),
        "lungs": {},
    }
    for side, mask in lungs.items():
        voxels = int(mask.sum())
        percent = 100.0 * float((infected & mask).sum()) / voxels if voxels else 0.0
        summary["lungs"][side] = {
            "volume_ml": voxels * millilitres_per_voxel,
            "infection_volume_ml": float((infected & mask).sum() * millilitres_per_voxel),
            "infected_percent": percent,
            "severity_score": severity_score(percent),
        }
    summary["manifestations"] = {
        name: {
            "volume_ml": float((infection == value).sum() * millilitres_per_voxel),
            "percent_of_lung": 100.0 * float(((infection == value) & lung).sum()) / max(int(lung.sum()), 1),
        }
        for value, name in enumerate(manifestations, start=1)
    }
    total = 100.0 * float((infected & lung).sum()) / max(int(lung.sum()), 1)
    summary["infected_percent"] = total
    summary["severity_score"] = sum(side["severity_score"] for side in summary["lungs"].values())
    summary["grade"] = overall_grade(total)
    return summary


def run_report(
    scan: NiftiScan,
    path: Path,
    lung: Segmenter,
    infection: Segmenter | None = None,
    streams: dict[str, Segmenter] | None = None,
) -> VolumeReport:
    """Segments a scan and measures it; give either one infection segmenter or per-manifestation streams."""
    volume = model_input_volume(scan.array)
    lung_mask = segment(lung, volume, path)
    if streams:
        names = tuple(name for name in MANIFESTATION_ORDER if name in streams)
        probabilities = {
            name: np.moveaxis(volume_probabilities(streams[name], volume, path)[..., 0], 2, 0)
            for name in names
        }
        thresholds = {name: streams[name].threshold.thresholds[0] for name in names}
        label_map = np.moveaxis(combine_streams(probabilities, thresholds), 0, 2)
        # combine_streams numbers by MANIFESTATION_ORDER; renumber to the order of `names`.
        infection_mask = np.zeros_like(label_map)
        for value, name in enumerate(names, start=1):
            infection_mask[label_map == MANIFESTATION_ORDER.index(name) + 1] = value
    elif infection is not None:
        names, infection_mask = ("infection",), segment(infection, volume, path)
    else:
        names, infection_mask = ("infection",), np.zeros_like(lung_mask)
    summary = measure(lung_mask, infection_mask, scan.spacing_mm, names)
    summary["intensity"] = intensity_kind(scan.array)
    summary["shape"] = list(scan.source_shape)
    summary["spacing_mm"] = list(scan.spacing_mm)
    return VolumeReport(summary, lung_mask, infection_mask)


def montage(volume_uint8: np.ndarray, lung: np.ndarray, infection: np.ndarray, count: int = 8) -> np.ndarray:
    """RGB uint8 grid of `count` evenly spaced axial slices with lung and infection contours."""
    indices = (
        np.linspace(0, volume_uint8.shape[2] - 1, num=min(count, volume_uint8.shape[2])).round().astype(int)
    )
    tiles = []
    for k in indices:
        tile = cv2.cvtColor(to_display(volume_uint8[:, :, k]), cv2.COLOR_GRAY2RGB)
        for mask, colour in ((lung, (0, 200, 0)), (infection > 0, (230, 0, 0))):
            contours, _ = cv2.findContours(
                to_display(mask[:, :, k].astype(np.uint8)), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE
            )
            cv2.drawContours(tile, contours, -1, colour, 1)
        tiles.append(tile)
    columns = 4
    while len(tiles) % columns:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.concatenate(tiles[i : i + columns], axis=1) for i in range(0, len(tiles), columns)]
    return np.concatenate(rows, axis=0)


def markdown(summary: dict, source: str) -> str:
    lines = [
        f"# CT volume report: {source}",
        "",
        f"- Lung volume: {summary['lung_volume_ml']:.1f} mL",
        f"- Infection volume: {summary['infection_volume_ml']:.1f} mL "
        f"({summary['infected_percent']:.1f}% of the lungs)",
        f"- Severity score: {summary['severity_score']} / 10; grade: {summary['grade']}",
        "",
        "| lung | volume (mL) | infection (mL) | infected % | score (0-5) |",
        "|---|---|---|---|---|",
    ]
    for side, values in summary["lungs"].items():
        lines.append(
            f"| {side} | {values['volume_ml']:.1f} | {values['infection_volume_ml']:.1f} | "
            f"{values['infected_percent']:.1f} | {values['severity_score']} |"
        )
    lines += ["", "| manifestation | volume (mL) | % of lung |", "|---|---|---|"]
    lines += [
        f"| {name} | {values['volume_ml']:.1f} | {values['percent_of_lung']:.1f} |"
        for name, values in summary["manifestations"].items()
    ]
    lines += [
        "",
        "Rules: see `experiments/pipelines/report.py` (severity per lung after Chung et al. 2020).",
        "",
    ]
    return "\n".join(lines)


def write_report(
    volume_path: str | Path,
    out_dir: str | Path,
    lung: Segmenter,
    infection: Segmenter | None = None,
    streams: dict[str, Segmenter] | None = None,
) -> dict:
    """Runs `run_report` on a file and writes all outputs into `out_dir` atomically; returns the summary."""
    volume_path, out_dir = Path(volume_path), Path(out_dir)
    scan = read_nifti(volume_path)
    report = run_report(scan, volume_path, lung, infection, streams)
    report.summary["source"] = str(volume_path)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    write_nifti_like(staging / "lung_mask.nii.gz", report.lung, scan)
    write_nifti_like(staging / "infection_mask.nii.gz", report.infection, scan)
    (staging / "report.json").write_text(json.dumps(report.summary, indent=2))
    (staging / "report.md").write_text(markdown(report.summary, volume_path.name))
    image = montage(to_display_uint8(scan.array), report.lung, report.infection)
    cv2.imwrite(str(staging / "montage.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old")
        os.replace(out_dir, old)
        os.replace(staging, out_dir)
        shutil.rmtree(old)
    else:
        os.replace(staging, out_dir)
    return report.summary
