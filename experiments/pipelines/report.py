"""CT report: lungs and infection on whole scans (NIfTI files or DICOM series), one folder per scan, a cohort CSV.

This module reports one scan; `report_cohort` runs many and writes cohort.csv, `report_montage` draws.

`python -m experiments report SCAN [SCAN ...] --lung-model L.keras [--infection-model I.keras |
--stream-model ggo=G.keras ...] --out DIR`; a SCAN is a `.nii` / `.nii.gz` file, a DICOM series
folder, a folder of those (searched recursively) or a glob pattern. DIR gets `cohort.csv` (one row
per scan) and, per scan, `DIR/<scan>/` with:
- `lung_mask.nii.gz`: uint8, 1 = left lung, 2 = right lung (the report's split, below);
- `infection_mask.nii.gz`: uint8, k = manifestation k inside the lungs (counted), 10 + k = the same
  prediction outside the lungs (not counted); `report.json` names the values;
- `report.json` (schema `covid-ct-report` version 1, see README "The CT report"), `report.md`;
- `montage.png`: axial slices with the most infection and evenly spaced ones, contours and legend.
Both masks have the input's voxel grid and affine (a DICOM series: its columns, rows and slices, the
LPS geometry converted to RAS+). Re-running skips a scan whose report.json has the same source, schema
version, model checksums and orientation; a scan that fails gets an error row and the others go on.

Rules stated here:
- Inference is `segmentation.predict`'s: `volume_probabilities` on the canonical RAS+ volume's axial
  slices in display orientation, each model through its own preprocessing, then `binarize` at its
  validation threshold. `orientation="stored"` instead takes the file's `array[:, :, k]` as the display
  image (for re-stacked slices with a placeholder affine, e.g. the shared Zenodo volumes).
- Scans must be Hounsfield units (NIfTI scl_slope / scl_inter and DICOM RescaleSlope / RescaleIntercept
  applied) or display values 0-255; NaN, constant volumes, label masks and other scales are refused.
- Infection is counted inside the predicted lungs only; the total is the sum over the two lungs;
  percentages and scores use the same voxel counts. Predictions outside the lungs are reported apart.
- Volumes are in mL only when the spacing is real: an identity affine, or unit spacing at origin 0,
  is a placeholder; such reports give voxel counts (`voxels`, no `ml`) and a warning.
- Left and right lung: lung voxels on the patient-right half of the lung mask's extent along the
  canonical x axis (RAS+: x grows towards the patient's right) are the right lung.
- Infected percentage of a lung = counted infection voxels in that lung / that lung's voxels.
- Severity per lung (0-5, the per-lobe CT severity score of Chung et al. 2020 applied per lung):
  0 = 0%, 1 = <5%, 2 = 5-25%, 3 = 25-50%, 4 = 50-75%, 5 = >75%; the scan's score is their sum (0-10).
  Grade from the total infected percentage: none (0%), mild (<25%), moderate (25-50%), severe (>50%).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from common.atomic import replace_folder
from common.bundle import read_bundle
from data_prep.dicom import read_scan
from data_prep.errors import DataError
from data_prep.io import (
    NIFTI_SUFFIXES,
    NiftiScan,
    from_display,
    intensity_kind,
    nifti_stem,
    to_display,
    to_source_orientation,
    write_nifti,
)
from data_prep.phantoms import is_synthetic
from experiments.pipelines.report_montage import montage
from experiments.pipelines.streams import MANIFESTATION_ORDER, combine_streams
from segmentation.predict import Segmenter, binarize, load_segmenter, volume_probabilities
from tfrecords.manifest import sha256_file

SCHEMA, SCHEMA_VERSION = "covid-ct-report", 1
SEVERITY_BOUNDS = (0.0, 5.0, 25.0, 50.0, 75.0)  # percent; score = number of bounds exceeded
LUNG_LABELS = {"left": 1, "right": 2}
OUTSIDE_LUNGS_OFFSET = 10  # infection_mask value 10 + k: manifestation k predicted outside the lungs
MASK_LEVELS = 16  # a volume with at most this many distinct values is a label mask, not a scan
ORIENTATIONS = ("display", "stored")


# ---- models -------------------------------------------------------------------------------------


def bundle_checksum(path: Path) -> str:
    """SHA-256 of a model bundle's `.keras` file: its identity in report.json and cohort.csv."""
    return sha256_file(path)


@dataclass(frozen=True)
class ReportModels:
    """The segmenters of a report and where they came from; give `infection` or `streams`, not both."""

    lung: Segmenter
    files: dict[str, Path]  # role ("lung", "infection", "stream:ggo", ...) -> model file
    infection: Segmenter | None = None
    streams: dict[str, Segmenter] = field(default_factory=dict)

    @cached_property
    def records(self) -> list[dict]:
        """JSON-ready model entries: role, bundle name (run folder/file), path, SHA-256, decision rule, and
        the models its bundle depends on (e.g. the lung model of a crop cascade, with their SHA-256)."""
        segmenters = {"lung": self.lung, "infection": self.infection}
        segmenters |= {f"stream:{name}": model for name, model in self.streams.items()}
        return [
            {
                "role": role,
                "name": f"{path.parent.name}/{path.name}",
                "path": str(path.resolve()),
                "sha256": bundle_checksum(path),
                "decision": _decision(segmenters[role]),
                "depends": (read_bundle(path, "segmenter") or {}).get("depends", {}),
            }
            for role, path in self.files.items()
        ]


def _decision(segmenter: Segmenter) -> dict:
    if segmenter.multiclass:
        return {"rule": "argmax"}
    choice = segmenter.threshold
    return {"rule": "threshold", "thresholds": list(choice.thresholds), "chosen_on": choice.split}


def _load(path: Path) -> Segmenter:
    try:
        return load_segmenter(path)
    except DataError:
        raise
    except Exception as error:  # Keras raises several types for unreadable files
        raise DataError(path, f"not a usable segmentation model ({type(error).__name__}: {error})") from error


def load_models(
    lung: Path, infection: Path | None = None, streams: dict[str, Path] | None = None
) -> ReportModels:
    """Loads the report's segmenters (each with its validation threshold); bad files are DataErrors."""
    streams = streams or {}
    unknown = sorted(set(streams) - set(MANIFESTATION_ORDER))
    if unknown:
        raise DataError(unknown[0], f"unknown stream manifestation; known: {', '.join(MANIFESTATION_ORDER)}")
    if infection is not None and streams:
        raise DataError(infection, "give --infection-model or --stream-model, not both")
    files = {"lung": Path(lung)}
    if infection is not None:
        files["infection"] = Path(infection)
    files |= {f"stream:{name}": Path(path) for name, path in streams.items()}
    loaded = {role: _load(path) for role, path in files.items()}
    return ReportModels(
        lung=loaded["lung"],
        files=files,
        infection=loaded.get("infection"),
        streams={name: loaded[f"stream:{name}"] for name in streams},
    )


# ---- input checks and geometry ------------------------------------------------------------------


def check_intensity(array: np.ndarray, path: str | Path) -> str:
    """ "hu" or "display" for a CT volume; raises DataError for NaN, constant, mask-like or other values."""
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise DataError(path, f"{int((~np.isfinite(array)).sum())} voxels are NaN or infinite; not a CT scan")
    low, high = float(array.min()), float(array.max())
    if low == high:
        raise DataError(path, f"every voxel is {low:g}; an empty volume, not a CT scan")
    sample = array.ravel()[:: max(1, array.size // 1_000_000)]
    if np.unique(sample).size <= MASK_LEVELS and (levels := np.unique(array)).size <= MASK_LEVELS:
        shown = ", ".join(f"{value:g}" for value in levels.tolist())
        raise DataError(path, f"only {levels.size} distinct values ({shown}): a label mask, not a CT scan")
    kind = intensity_kind(array)
    if kind not in ("hu", "display"):
        raise DataError(
            path,
            f"values {low:g} to {high:g} are neither Hounsfield units (air near -1000) nor display values "
            "0-255; convert to HU or set the rescale slope / intercept in the header",
        )
    return kind


def placeholder_geometry(scan: NiftiScan) -> str | None:
    """Why the scan's spacing is not physical (a placeholder), or None when it is taken as real."""
    if np.allclose(scan.source_affine, np.eye(4)):
        return "the affine is the identity"
    if np.allclose(scan.spacing_mm, 1.0) and np.allclose(scan.source_affine[:3, 3], 0.0):
        return "the spacing is 1 x 1 x 1 mm at origin 0"
    return None


def stored_as_display(scan: NiftiScan) -> NiftiScan:
    """The scan with each stored slice `array[:, :, k]` taken as a display image (anterior up, patient
    right on the image left): canonical array `from_display(stored)`, a diagonal affine of that assumption."""
    stored = to_source_orientation(scan.array, scan.source_affine)
    rows, columns, slices = np.sqrt((scan.source_affine[:3, :3] ** 2).sum(axis=0))
    spacing = (float(columns), float(rows), float(slices))
    return NiftiScan(
        from_display(stored), np.diag([*spacing, 1.0]), spacing, scan.source_affine, scan.source_shape
    )


def to_file_order(canonical: np.ndarray, scan: NiftiScan, orientation: str) -> np.ndarray:
    """A canonical (X, Y, Z) array in the voxel order of the scan's file (or DICOM grid)."""
    if orientation == "stored":
        return to_display(canonical)
    return to_source_orientation(canonical, scan.source_affine)


# ---- segmentation and measurement ---------------------------------------------------------------


def segment(segmenter: Segmenter, volume: np.ndarray, path: str | Path) -> np.ndarray:
    """Canonical (X, Y, Z) volume -> (X, Y, Z) uint8 label map: softmax class ids, or for sigmoid
    models 1 + the first channel claiming the voxel (0 where none does)."""
    masks = binarize(volume_probabilities(segmenter, volume, path), segmenter)
    if segmenter.multiclass:
        return masks
    return np.where(masks.any(axis=-1), np.argmax(masks, axis=-1) + 1, 0).astype(np.uint8)


def manifestation_names(segmenter: Segmenter) -> tuple[str, ...]:
    """Label k of `segment(segmenter, ...)` is manifestation k (1-based) of this tuple."""
    return segmenter.channel_names[1:] if segmenter.multiclass else segmenter.channel_names


def segment_streams(streams: dict[str, Segmenter], volume: np.ndarray, path: str | Path) -> tuple:
    """Per-manifestation stream models -> ((X, Y, Z) label map numbered by the returned names, names)."""
    names = tuple(name for name in MANIFESTATION_ORDER if name in streams)
    probabilities = {
        name: np.moveaxis(volume_probabilities(streams[name], volume, path)[..., 0], 2, 0) for name in names
    }
    thresholds = {name: streams[name].threshold.thresholds[0] for name in names}
    label_map = np.moveaxis(combine_streams(probabilities, thresholds), 0, 2)
    renumbered = np.zeros_like(label_map)  # combine_streams numbers by MANIFESTATION_ORDER
    for value, name in enumerate(names, start=1):
        renumbered[label_map == MANIFESTATION_ORDER.index(name) + 1] = value
    return renumbered, names


def severity_score(percent: float) -> int:
    return int(sum(percent > bound for bound in SEVERITY_BOUNDS))


def overall_grade(percent: float) -> str:
    if percent <= 0.0:
        return "none"
    if percent < 25.0:
        return "mild"
    return "moderate" if percent <= 50.0 else "severe"


def split_lungs(lung: np.ndarray) -> dict[str, np.ndarray]:
    """Canonical bool lung mask -> {"right": ..., "left": ...} by the midpoint of its x extent."""
    xs = np.flatnonzero(lung.any(axis=(1, 2)))
    middle = (xs.min() + xs.max() + 1) / 2.0 if xs.size else lung.shape[0] / 2.0
    right_half = (np.arange(lung.shape[0]) >= middle)[:, None, None]
    return {"right": lung & right_half, "left": lung & ~right_half}


def _percent(part: int, whole: int) -> float:
    return 100.0 * int(part) / int(whole) if whole else 0.0


def measure(
    lung: np.ndarray, infection: np.ndarray, voxel_ml: float | None, manifestations: Sequence[str]
) -> dict:
    """The report's numbers from canonical masks: lung (bool) and infection (label map, k = manifestation k,
    anywhere). Every volume is {"voxels": n} plus "ml" when `voxel_ml` (the real voxel volume) is given."""

    def amount(mask: np.ndarray) -> dict:
        voxels = int(np.count_nonzero(mask))
        return {"voxels": voxels} | ({"ml": voxels * voxel_ml} if voxel_ml else {})

    lung = lung.astype(bool)
    sides = split_lungs(lung) | {"total": lung}
    counted = (infection > 0) & lung
    lungs = {}
    for side, mask in sides.items():
        percent = _percent(np.count_nonzero(counted & mask), np.count_nonzero(mask))
        lungs[side] = {
            "volume": amount(mask),
            "infection": amount(counted & mask),
            "infected_percent": percent,
        }
        if side != "total":
            lungs[side]["severity_score"] = severity_score(percent)
    lungs["total"]["severity_score"] = lungs["right"]["severity_score"] + lungs["left"]["severity_score"]
    per_manifestation = {}
    for value, name in enumerate(manifestations, start=1):
        found = infection == value
        per_manifestation[name] = {side: amount(found & mask) for side, mask in sides.items()} | {
            "percent_of_lungs": _percent(np.count_nonzero(found & lung), np.count_nonzero(lung)),
            "outside_lungs": amount(found & ~lung),
        }
    return {
        "unit": "ml" if voxel_ml else "voxels",
        "voxel_ml": voxel_ml,
        "lungs": lungs,
        "manifestations": per_manifestation,
        "outside_lungs": {"infection": amount((infection > 0) & ~lung), "counted": False},
        "severity": {
            "score": lungs["total"]["severity_score"],
            "grade": overall_grade(lungs["total"]["infected_percent"]),
        },
    }


def output_masks(lung: np.ndarray, infection: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Canonical masks as written: lung 1 = left / 2 = right; infection k inside, 10 + k outside the lungs."""
    sides = split_lungs(lung.astype(bool))
    lung_labels = (sides["left"] * LUNG_LABELS["left"] + sides["right"] * LUNG_LABELS["right"]).astype(
        np.uint8
    )
    outside = (infection > 0) & ~lung.astype(bool)
    return lung_labels, np.where(outside, infection + OUTSIDE_LUNGS_OFFSET, infection).astype(np.uint8)


@dataclass
class VolumeReport:
    summary: dict
    scan: NiftiScan  # the geometry the masks are in (canonical RAS+)
    lung: np.ndarray  # canonical bool
    infection: np.ndarray  # canonical uint8 label map, k = summary's manifestation k, anywhere


def run_report(
    scan: NiftiScan, path: str | Path, models: ReportModels, orientation: str = "display"
) -> VolumeReport:
    """Checks, segments and measures one scan (read with `data_prep.dicom.read_scan`)."""
    if orientation not in ORIENTATIONS:
        raise ValueError(f"orientation must be one of {ORIENTATIONS}, got {orientation!r}")
    if scan.array.ndim != 3:
        raise DataError(path, f"expected a 3D volume, got shape {scan.source_shape}")
    kind = check_intensity(scan.array, path)
    warnings = []
    placeholder = placeholder_geometry(scan)
    if placeholder:
        warnings.append(f"{placeholder}, which looks like a placeholder: volumes are voxel counts, not mL")
    if orientation == "stored":
        scan = stored_as_display(scan)
        warnings.append(
            "orientation assumed: each stored slice is taken as a display image (--orientation stored)"
        )
    lung = segment(models.lung, scan.array, path) > 0
    if models.streams:
        infection, names = segment_streams(models.streams, scan.array, path)
    elif models.infection is not None:
        infection, names = segment(models.infection, scan.array, path), manifestation_names(models.infection)
    else:
        infection, names = np.zeros(lung.shape, np.uint8), ()
    if not lung.any():
        warnings.append("no lung predicted: infection percentages are 0")
    voxel_ml = None if placeholder else float(np.prod(scan.spacing_mm)) / 1000.0
    summary = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION}
    summary["scan"] = {
        "source": str(Path(path).resolve()),
        "format": "dicom" if Path(path).is_dir() else "nifti",
        "shape": list(scan.source_shape),
        "spacing_mm": list(scan.spacing_mm),
        "intensity": kind,
        "orientation": orientation,
        "synthetic": any(is_synthetic(parent) for parent in list(Path(path).resolve().parents)[:3]),
    }
    summary |= measure(lung, infection, voxel_ml, names)
    summary["labels"] = {
        "lung_mask": {str(value): f"{side} lung" for side, value in LUNG_LABELS.items()},
        "infection_mask": {str(k): f"{name} (inside the lungs, counted)" for k, name in enumerate(names, 1)}
        | {
            str(OUTSIDE_LUNGS_OFFSET + k): f"{name} (outside the lungs, not counted)"
            for k, name in enumerate(names, 1)
        },
    }
    summary["models"] = models.records
    summary["warnings"] = warnings
    return VolumeReport(summary, scan, lung, infection)


# ---- outputs ------------------------------------------------------------------------------------


def format_amount(amount: dict) -> str:
    return f"{amount['ml']:.1f} mL" if "ml" in amount else f"{amount['voxels']} voxels"


def headline(summary: dict) -> str:
    """One line: lungs, counted infection, grade, and what lies outside the lungs."""
    total = summary["lungs"]["total"]
    return (
        f"lungs {format_amount(total['volume'])}, infection {format_amount(total['infection'])} "
        f"({total['infected_percent']:.1f}% of the lungs), grade {summary['severity']['grade']}; "
        f"outside the lungs: {format_amount(summary['outside_lungs']['infection'])}, not counted"
    )


def markdown(summary: dict, name: str) -> str:
    lungs, unit = summary["lungs"], "mL" if summary["unit"] == "ml" else "voxels"
    synthetic = " (SYNTHETIC phantom)" if summary["scan"]["synthetic"] else ""
    lines = [
        f"# CT report: {name}{synthetic}",
        "",
        f"- Lungs: {format_amount(lungs['total']['volume'])} (right {format_amount(lungs['right']['volume'])}, "
        f"left {format_amount(lungs['left']['volume'])})",
        f"- Infection inside the lungs: {format_amount(lungs['total']['infection'])} "
        f"({lungs['total']['infected_percent']:.1f}% of the lungs) = right "
        f"{format_amount(lungs['right']['infection'])} + left {format_amount(lungs['left']['infection'])}",
        f"- Outside the lungs: {format_amount(summary['outside_lungs']['infection'])}, not counted",
        f"- Severity score: {summary['severity']['score']} / 10; grade: {summary['severity']['grade']}",
        *[f"- Warning: {warning}" for warning in summary["warnings"]],
        "",
        f"| lung | volume ({unit}) | infection ({unit}) | infected % | score (0-5) |",
        "|---|---|---|---|---|",
    ]
    for side in ("right", "left"):
        values = lungs[side]
        lines.append(
            f"| {side} | {_number(values['volume'])} | {_number(values['infection'])} | "
            f"{values['infected_percent']:.1f} | {values['severity_score']} |"
        )
    lines += [
        "",
        f"| manifestation | right ({unit}) | left ({unit}) | total ({unit}) | % of lungs | outside the lungs ({unit}, not counted) |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {name} | {_number(v['right'])} | {_number(v['left'])} | {_number(v['total'])} | "
        f"{v['percent_of_lungs']:.1f} | {_number(v['outside_lungs'])} |"
        for name, v in summary["manifestations"].items()
    ]
    lines += ["", "| model | file | SHA-256 |", "|---|---|---|"]
    lines += [f"| {m['role']} | {m['name']} | `{m['sha256'][:16]}...` |" for m in summary["models"]]
    lines += ["", "Rules: `experiments/pipelines/report.py` (severity per lung after Chung et al. 2020).", ""]
    return "\n".join(lines)


def _number(amount: dict) -> str:
    return f"{amount['ml']:.1f}" if "ml" in amount else str(amount["voxels"])


def montage_title(summary: dict, name: str) -> str:
    """The montage's title: SYNTHETIC mark, scan name, spacing (or placeholder), and the headline."""
    spacing = summary["scan"]["spacing_mm"]
    if summary["unit"] == "ml":
        geometry = f"spacing {spacing[0]:.2f} x {spacing[1]:.2f} x {spacing[2]:.2f} mm"
    else:
        geometry = "placeholder spacing: volumes in voxels"
    if summary["scan"]["orientation"] == "stored":
        geometry += "; orientation assumed"
    prefix = "SYNTHETIC phantom - " if summary["scan"]["synthetic"] else ""
    return f"{prefix}{name}  ({geometry})\n{headline(summary)}"


def write_report(
    scan_path: str | Path, out_dir: str | Path, models: ReportModels, orientation: str = "display"
) -> dict:
    """Reports one scan (NIfTI file or DICOM series folder) into `out_dir`, atomically; returns report.json."""
    scan_path, out_dir = Path(scan_path), Path(out_dir)
    scan = read_scan(scan_path)
    report = run_report(scan, scan_path, models, orientation)
    name = scan_name(scan_path)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        lung_labels, infection_labels = output_masks(report.lung, report.infection)
        for file_name, mask in (
            ("lung_mask.nii.gz", lung_labels),
            ("infection_mask.nii.gz", infection_labels),
        ):
            write_nifti(
                staging / file_name, to_file_order(mask, report.scan, orientation), scan.source_affine
            )
        (staging / "report.json").write_text(json.dumps(report.summary, indent=2) + "\n")
        (staging / "report.md").write_text(markdown(report.summary, name))
        figure = montage(
            report.scan,
            report.summary["scan"]["intensity"],
            report.lung,
            report.infection,
            montage_title(report.summary, name),
        )
        figure.savefig(staging / "montage.png", dpi=100, facecolor="black")
        replace_folder(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return report.summary


def scan_name(path: Path) -> str:
    """A scan's name: the NIfTI file name without its suffix, or the DICOM folder's name."""
    return nifti_stem(path) if path.name.endswith(NIFTI_SUFFIXES) else path.name
