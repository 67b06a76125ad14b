"""Writes small CT DICOM series with a known voxel grid (a test helper, not a DICOM writer for users).

The grid: voxel (i = column, j = row, k = slice) sits at LPS position `affine_lps @ (i, j, k, 1)`;
`volume[i, j, k]` holds its Hounsfield units. Files get shuffled names and InstanceNumbers so that a
reader has to sort by position.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def axis_aligned_lps(spacing_mm: tuple[float, float, float], origin=(-100.0, -120.0, 50.0)) -> np.ndarray:
    """The usual axial grid: i towards the patient's left, j posterior, k superior."""
    affine = np.diag([*spacing_mm, 1.0])
    affine[:3, 3] = origin
    return affine


def rotation_x(degrees: float) -> np.ndarray:
    """(4, 4) rotation about the LPS x axis (a gantry-tilt-like oblique axial grid)."""
    angle = np.deg2rad(degrees)
    rotation = np.eye(4)
    rotation[1:3, 1:3] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    return rotation


def write_series(
    folder: Path,
    volume: np.ndarray,
    affine_lps: np.ndarray,
    *,
    series_uid: str | None = None,
    description: str = "phantom series",
    slope: float = 1.0,
    intercept: float = -1024.0,
    seed: int = 0,
    prefix: str = "IM",
) -> Path:
    """volume (I, J, K) HU -> one file per slice in `folder`, stored as uint16 (HU - intercept) / slope."""
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid(entropy_srcs=[str(folder), description])
    row_direction = affine_lps[:3, 0] / np.linalg.norm(affine_lps[:3, 0])
    column_direction = affine_lps[:3, 1] / np.linalg.norm(affine_lps[:3, 1])
    pixel_spacing = [float(np.linalg.norm(affine_lps[:3, 1])), float(np.linalg.norm(affine_lps[:3, 0]))]
    shuffled = np.random.default_rng(seed).permutation(volume.shape[2])
    for k in range(volume.shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[series_uid, str(k)])
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        dataset = Dataset()
        dataset.file_meta = meta
        dataset.SOPClassUID = CTImageStorage
        dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        dataset.Modality = "CT"
        dataset.PatientID = "PHANTOM"
        dataset.StudyInstanceUID = generate_uid(entropy_srcs=[str(folder)])
        dataset.SeriesInstanceUID = series_uid
        dataset.SeriesDescription = description
        dataset.InstanceNumber = int(shuffled[k]) + 1
        dataset.ImageOrientationPatient = [*row_direction.tolist(), *column_direction.tolist()]
        dataset.ImagePositionPatient = (affine_lps @ [0, 0, k, 1])[:3].tolist()
        dataset.PixelSpacing = pixel_spacing
        dataset.SliceThickness = float(np.linalg.norm(affine_lps[:3, 2]))
        dataset.RescaleSlope = slope
        dataset.RescaleIntercept = intercept
        dataset.SamplesPerPixel = 1
        dataset.PhotometricInterpretation = "MONOCHROME2"
        dataset.Rows, dataset.Columns = volume.shape[1], volume.shape[0]
        dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 16, 16, 15
        dataset.PixelRepresentation = 0
        raw = np.rint((volume[:, :, k].T - intercept) / slope).astype(np.uint16)
        dataset.PixelData = raw.tobytes()
        dataset.save_as(folder / f"{prefix}{shuffled[k]:04d}.dcm", enforce_file_format=True)
    return folder
