"""DICOM series folders read into the same `NiftiScan` as NIfTI files, and the one entry point for CT scans.

`read_dicom_series(folder)` reads one CT series with pydicom:
- every DICOM file of the folder (other files are ignored) must belong to one series; a folder with
  several series is refused, naming each (SeriesInstanceUID, description, slice count);
- slices are sorted by their position along the slice normal (ImagePositionPatient projected on
  row x column direction), not by file name or InstanceNumber; duplicate or unevenly spaced
  positions are refused (a missing slice cannot be placed on one voxel grid);
- RescaleSlope / RescaleIntercept are applied per slice (`data_prep.io.apply_scaling`), so CT comes
  back in Hounsfield units;
- the stored voxel order is (column i, row j, slice k) with the affine built from ImageOrientationPatient,
  PixelSpacing and the slice positions, converted from DICOM's LPS to RAS+ (NIfTI's convention). That
  is `source_affine` / `source_shape`: a mask written with `data_prep.io.write_nifti_like` lies on the
  DICOM's own voxel grid. `array` / `affine` are the canonical RAS+ reorientation, as for NIfTI.

`read_scan(path)` takes a `.nii` / `.nii.gz` file or a DICOM series folder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from data_prep.errors import DataError
from data_prep.io import NIFTI_SUFFIXES, NiftiScan, apply_scaling, canonical_scan, read_nifti

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
SPACING_TOLERANCE = 0.01  # relative spread of slice gaps accepted as one spacing


def is_dicom_file(path: Path) -> bool:
    """True for a file with the DICOM preamble ("DICM" at byte 128)."""
    return path.is_file() and pydicom.misc.is_dicom(path)


def dicom_files(folder: Path) -> list[Path]:
    """The DICOM files directly inside `folder`, sorted by name (no recursion)."""
    return sorted(path for path in folder.iterdir() if not path.name.startswith(".") and is_dicom_file(path))


def is_dicom_series_folder(path: Path) -> bool:
    """True for a folder holding at least one DICOM file directly."""
    return path.is_dir() and any(is_dicom_file(p) for p in path.iterdir() if not p.name.startswith("."))


def _image_datasets(folder: Path) -> list[tuple[Path, pydicom.Dataset]]:
    """Every DICOM image (a file with pixel data) in the folder, headers and pixels read."""
    datasets = []
    for path in dicom_files(folder):
        try:
            dataset = pydicom.dcmread(path)
        except (InvalidDicomError, OSError, ValueError, EOFError) as error:
            raise DataError(path, f"unreadable DICOM file ({error})") from error
        if "PixelData" in dataset:
            datasets.append((path, dataset))
    if not datasets:
        raise DataError(folder, "no DICOM images (files with pixel data) in this folder")
    return datasets


def _one_series(folder: Path, datasets: list[tuple[Path, pydicom.Dataset]]) -> None:
    """Raises, listing the series, when the images belong to more than one SeriesInstanceUID."""
    series: dict[str, list[pydicom.Dataset]] = {}
    for _, dataset in datasets:
        series.setdefault(str(dataset.get("SeriesInstanceUID", "<no SeriesInstanceUID>")), []).append(dataset)
    if len(series) > 1:
        listed = "; ".join(
            f"{uid} ({members[0].get('SeriesDescription', '') or 'no description'}, {len(members)} slices)"
            for uid, members in sorted(series.items())
        )
        raise DataError(folder, f"holds {len(series)} DICOM series, give one series per folder: {listed}")


def _geometry(path: Path, dataset: pydicom.Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row direction, column direction, position) in LPS mm, and (row spacing, column spacing)."""
    missing = [
        key
        for key in ("ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing")
        if key not in dataset
    ]
    if missing:
        raise DataError(path, f"DICOM header lacks {', '.join(missing)}: no voxel geometry")
    orientation = np.array([float(v) for v in dataset.ImageOrientationPatient])
    position = np.array([float(v) for v in dataset.ImagePositionPatient])
    spacing = np.array([float(v) for v in dataset.PixelSpacing])
    if orientation.shape != (6,) or position.shape != (3,) or spacing.shape != (2,) or (spacing <= 0).any():
        raise DataError(path, "malformed ImageOrientationPatient / ImagePositionPatient / PixelSpacing")
    return orientation, position, spacing


def _pixels(path: Path, dataset: pydicom.Dataset) -> np.ndarray:
    """(rows, columns) values after RescaleSlope / RescaleIntercept."""
    if int(dataset.get("SamplesPerPixel", 1)) != 1:
        raise DataError(
            path, f"{dataset.get('PhotometricInterpretation', 'colour')} image; CT slices are grey"
        )
    try:
        raw = dataset.pixel_array
    except Exception as error:  # pydicom raises several types for transfer syntaxes it cannot decode
        syntax = dataset.file_meta.get("TransferSyntaxUID", "unknown")
        raise DataError(path, f"cannot decode pixel data (transfer syntax {syntax}): {error}") from error
    if raw.ndim != 2:
        raise DataError(path, f"pixel data of shape {raw.shape}; expected one 2D slice per file")
    slope = float(dataset.get("RescaleSlope", 1.0))
    intercept = float(dataset.get("RescaleIntercept", 0.0))
    return apply_scaling(raw, slope, intercept)


def _slice_step(
    folder: Path, positions: np.ndarray, normal: np.ndarray, dataset: pydicom.Dataset
) -> np.ndarray:
    """The LPS vector from one slice to the next (positions sorted along `normal`)."""
    if len(positions) == 1:
        thickness = float(dataset.get("SpacingBetweenSlices", 0) or dataset.get("SliceThickness", 0) or 0)
        if thickness <= 0:
            raise DataError(folder, "one slice without SliceThickness: no slice spacing")
        return normal * thickness
    gaps = np.diff(positions @ normal)
    if gaps.min() <= 0:
        raise DataError(folder, "two slices at the same position: several acquisitions in one series?")
    if gaps.max() - gaps.min() > SPACING_TOLERANCE * np.median(gaps):
        raise DataError(
            folder,
            f"uneven slice spacing ({gaps.min():.3f} to {gaps.max():.3f} mm): missing slices?",
        )
    return (positions[-1] - positions[0]) / (len(positions) - 1)


def read_dicom_series(folder: str | Path) -> NiftiScan:
    """One DICOM series folder -> canonical RAS+ `NiftiScan` (see the module docstring)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, "no such folder")
    datasets = _image_datasets(folder)
    _one_series(folder, datasets)
    geometries = [_geometry(path, dataset) for path, dataset in datasets]
    orientation, _, spacing = geometries[0]
    for (path, dataset), (other_orientation, _, other_spacing) in zip(datasets, geometries, strict=True):
        if not np.allclose(other_orientation, orientation, atol=1e-4) or not np.allclose(
            other_spacing, spacing
        ):
            raise DataError(path, "slice orientation or pixel spacing differs from the series' first slice")
        if (dataset.Rows, dataset.Columns) != (datasets[0][1].Rows, datasets[0][1].Columns):
            raise DataError(path, "slice size differs from the series' first slice")
    row_direction, column_direction = orientation[:3], orientation[3:]
    normal = np.cross(row_direction, column_direction)
    order = np.argsort([position @ normal for _, position, _ in geometries], kind="stable")
    positions = np.array([geometries[k][1] for k in order])
    step = _slice_step(folder, positions, normal, datasets[0][1])
    # voxel (i = column, j = row, k = slice): i moves along the row direction by the column spacing.
    affine_lps = np.eye(4)
    affine_lps[:3, 0] = row_direction * spacing[1]
    affine_lps[:3, 1] = column_direction * spacing[0]
    affine_lps[:3, 2] = step
    affine_lps[:3, 3] = positions[0]
    volume = np.stack([_pixels(*datasets[k]).T for k in order], axis=2)
    return canonical_scan(volume, LPS_TO_RAS @ affine_lps)


def read_scan(path: str | Path) -> NiftiScan:
    """A CT scan from a `.nii` / `.nii.gz` file or a DICOM series folder, canonical RAS+."""
    path = Path(path)
    if path.is_dir():
        return read_dicom_series(path)
    if path.name.endswith(NIFTI_SUFFIXES) or not path.exists():
        return read_nifti(path)
    raise DataError(path, "not a scan: expected a .nii / .nii.gz file or a DICOM series folder")
