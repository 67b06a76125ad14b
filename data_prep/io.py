"""Readers for volume and table files (NIfTI, npz, HDF5, CSV) and the CT slice conventions.

Every reader raises `DataError(path, problem)` for a missing, truncated or malformed file, so the
command lines can print one line and exit with status 2.

Orientation. NIfTI volumes are returned in nibabel's canonical RAS+ voxel order (the transform of
`nibabel.as_closest_canonical`): array axis 0 runs from the patient's left to right, axis 1 from
posterior to anterior, axis 2 from inferior to superior. `to_display` turns an axial slice
`volume[:, :, k]` of such a volume into the radiological display orientation the 2D records use
(anterior at the top, the patient's right on the image's left); `from_display` undoes it exactly, and
`write_nifti_like` writes a canonical array back in the voxel order and affine of the file it came from.

The module also holds the checks and conversions the CT adapters share: label-mask values, mask/image
shapes, intensity kinds, and cutting a `Volume` into display-oriented slice `Record`s.
"""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import h5py
import nibabel as nib
import numpy as np
from nibabel import orientations

from common.atomic import atomic_path
from data_prep.errors import DataError
from data_prep.records import Record, Volume

if TYPE_CHECKING:
    import pandas as pd

# Hounsfield units: air is -1000 HU, so real CT reaches far below this; windowed or rescaled data never does.
HU_AIR_LIMIT = -500.0
_INT16 = np.iinfo(np.int16)
NIFTI_SUFFIXES = (".nii.gz", ".nii")
INTENSITY_DTYPES = {"hu": np.int16, "display": np.uint8, "normalized": np.float32}
_CANONICAL = orientations.axcodes2ornt(("R", "A", "S"))


@dataclass(frozen=True)
class NiftiScan:
    """A NIfTI volume reoriented to canonical RAS+.

    array: (X, Y, Z[, ...]) in the stored dtype, or the scaled values when the header sets
        scl_slope / scl_inter (int16/int32 for integral scaling of integer data, float32 otherwise).
    affine: (4, 4) voxel-to-world in mm for `array`.
    spacing_mm: voxel size along X, Y, Z in mm.
    source_affine, source_shape: the file's own affine and array shape, for writing outputs aligned to it.
    """

    array: np.ndarray
    affine: np.ndarray
    spacing_mm: tuple[float, float, float]
    source_affine: np.ndarray
    source_shape: tuple[int, ...]


def _require_file(path: Path) -> None:
    if not path.is_file():
        raise DataError(path, "no such file")


def apply_scaling(raw: np.ndarray, slope: float, inter: float) -> np.ndarray:
    """Applies a rescale slope / intercept (NIfTI scl_slope / scl_inter, DICOM RescaleSlope / RescaleIntercept)
    unless they are the identity, keeping integers integral where possible."""
    if slope == 1.0 and inter == 0.0:
        return raw
    if np.issubdtype(raw.dtype, np.integer) and slope.is_integer() and inter.is_integer():
        scaled = raw.astype(np.int64) * int(slope) + int(inter)
        fits_int16 = scaled.size == 0 or (_INT16.min <= scaled.min() and scaled.max() <= _INT16.max)
        return scaled.astype(np.int16 if fits_int16 else np.int32)
    return (raw.astype(np.float64) * slope + inter).astype(np.float32)


def read_nifti(path: str | Path) -> NiftiScan:
    """Reads a `.nii` / `.nii.gz` file and reorients it to canonical RAS+ (see the module docstring)."""
    path = Path(path)
    _require_file(path)
    try:
        image = nib.load(path)
        proxy = image.dataobj  # nibabel moves scl_slope / scl_inter from the header to the proxy on load
        raw = np.asanyarray(proxy.get_unscaled())
    except (OSError, EOFError, ValueError, zlib.error, nib.filebasedimages.ImageFileError) as error:
        raise DataError(path, f"truncated or corrupt NIfTI ({error})") from error
    if raw.ndim > 3 and all(size == 1 for size in raw.shape[3:]):
        raw = raw.reshape(raw.shape[:3])  # (X, Y, Z, 1): a 3D volume stored with a unit 4th axis
    if raw.ndim != 3:
        raise DataError(path, f"NIfTI has {raw.ndim} dimensions, shape {raw.shape}; expected a 3D volume")
    scaled = apply_scaling(raw, float(proxy.slope), float(proxy.inter))
    return canonical_scan(require_finite(scaled, path), image.affine)


def canonical_scan(array: np.ndarray, affine: np.ndarray) -> NiftiScan:
    """A stored (I, J, K[, ...]) array with its voxel-to-RAS+ mm affine -> `NiftiScan` in canonical RAS+ order
    (the closest axis-aligned reorientation; the affine keeps any obliquity)."""
    ornt = orientations.io_orientation(affine)
    canonical = orientations.apply_orientation(array, ornt)
    canonical_affine = affine @ orientations.inv_ornt_aff(ornt, array.shape)
    spacing = np.sqrt((canonical_affine[:3, :3] ** 2).sum(axis=0))
    return NiftiScan(
        array=np.ascontiguousarray(canonical),
        affine=canonical_affine,
        spacing_mm=(float(spacing[0]), float(spacing[1]), float(spacing[2])),
        source_affine=np.array(affine, dtype=np.float64),
        source_shape=tuple(array.shape),
    )


def require_finite(array: np.ndarray, path: str | Path) -> np.ndarray:
    """Returns `array` unchanged; raises `DataError` naming `path` when it holds NaN or infinite values
    (windowing, resizing and every statistic would silently turn them into garbage)."""
    if np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.complexfloating):
        bad = array.size - int(np.count_nonzero(np.isfinite(array)))
        if bad:
            nan = int(np.count_nonzero(np.isnan(array)))
            raise DataError(
                path, f"{bad} of {array.size} values are not finite ({nan} NaN, {bad - nan} infinite)"
            )
    return array


def find_nifti(folder: Path, stem: str) -> Path | None:
    """`folder/<stem>.nii.gz` or `folder/<stem>.nii`, whichever exists; None if neither."""
    return next((folder / f"{stem}{s}" for s in NIFTI_SUFFIXES if (folder / f"{stem}{s}").is_file()), None)


def require_nifti(folder: Path, stem: str) -> Path:
    """Like `find_nifti`, but a missing file raises `DataError` naming it."""
    path = find_nifti(folder, stem)
    if path is None:
        raise DataError(folder / f"{stem}{NIFTI_SUFFIXES[0]}", "file missing (.nii.gz or .nii)")
    return path


def nifti_files(folder: Path) -> list[Path]:
    """The `.nii` / `.nii.gz` files in a folder, sorted by name; raises when there are none."""
    files = sorted(p for p in folder.iterdir() if p.name.endswith(NIFTI_SUFFIXES))
    if not files:
        raise DataError(folder, "no .nii / .nii.gz files")
    return files


def nifti_stem(path: Path) -> str:
    """The file name without `.nii.gz` / `.nii`."""
    return next(path.name.removesuffix(s) for s in NIFTI_SUFFIXES if path.name.endswith(s))


def to_source_orientation(canonical: np.ndarray, source_affine: np.ndarray) -> np.ndarray:
    """Inverse of the reorientation in `read_nifti`: a canonical (X, Y, Z[, ...]) array in the file's voxel order."""
    back = orientations.ornt_transform(_CANONICAL, orientations.io_orientation(source_affine))
    return np.ascontiguousarray(orientations.apply_orientation(canonical, back))


def write_nifti(path: str | Path, array: np.ndarray, affine: np.ndarray) -> None:
    """Writes `array` with `affine` (qform and sform, code 1) to a `.nii` / `.nii.gz` file, atomically.

    A bool array (a predicted mask) is stored as uint8 {0, 1}; NIfTI has no boolean type.
    """
    path = Path(path)
    suffix = ".nii.gz" if path.name.endswith(".nii.gz") else ".nii"
    image = nib.Nifti1Image(array.astype(np.uint8) if array.dtype == np.bool_ else array, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    with atomic_path(path, suffix=suffix) as temporary:
        nib.save(image, temporary)


def write_nifti_like(path: str | Path, canonical: np.ndarray, scan: NiftiScan) -> None:
    """Writes a canonical array (e.g. a predicted mask) in the voxel order and affine of `scan`'s file."""
    write_nifti(path, to_source_orientation(canonical, scan.source_affine), scan.source_affine)


def to_display(canonical_slice: np.ndarray) -> np.ndarray:
    """(X, Y[, C]) axial slice of a canonical RAS+ volume -> (Y, X[, C]) image, anterior up, patient right on the left."""
    return np.ascontiguousarray(np.flip(np.swapaxes(canonical_slice, 0, 1), axis=(0, 1)))


def from_display(display_image: np.ndarray) -> np.ndarray:
    """Inverse of `to_display`: (rows, cols[, C]) display image -> (X, Y[, C]) canonical slice."""
    return np.ascontiguousarray(np.swapaxes(np.flip(display_image, axis=(0, 1)), 0, 1))


def read_npz(path: str | Path, key: str) -> np.ndarray:
    """The array stored under `key` in a `.npz` file."""
    path = Path(path)
    _require_file(path)
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise DataError(path, "not an npz archive (a single .npy array)")
        with archive:
            if key not in archive.files:
                raise DataError(path, f"no array {key!r} in npz; it holds {sorted(archive.files)}")
            return require_finite(archive[key], path)
    except (OSError, ValueError, EOFError, zlib.error, zipfile.BadZipFile) as error:
        raise DataError(path, f"truncated or corrupt npz ({error})") from error


def read_npy(path: str | Path) -> np.ndarray:
    """The array in a `.npy` file."""
    path = Path(path)
    _require_file(path)
    try:
        return require_finite(np.load(path, allow_pickle=False), path)
    except (OSError, ValueError, EOFError) as error:
        raise DataError(path, f"truncated or corrupt npy ({error})") from error


def read_h5(path: str | Path, key: str) -> np.ndarray:
    """The dataset stored under `key` in an HDF5 file, read whole."""
    path = Path(path)
    _require_file(path)
    try:
        with h5py.File(path, "r") as file:
            if key not in file or not isinstance(file[key], h5py.Dataset):
                raise DataError(path, f"no dataset {key!r} in HDF5 file; it holds {sorted(file.keys())}")
            return require_finite(file[key][()], path)
    except OSError as error:
        raise DataError(path, f"truncated or corrupt HDF5 ({error})") from error


def read_csv(path: str | Path, required_columns: Sequence[str] = ()) -> pd.DataFrame:
    """A CSV table, all columns read as strings; raises when a required column is missing."""
    import pandas as pd  # 0.4 s to import: only for the adapters that read tables, not for inference

    path = Path(path)
    _require_file(path)
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as error:
        raise DataError(path, f"not a readable CSV ({error})") from error
    missing = [column for column in required_columns if column not in table.columns]
    if missing:
        raise DataError(path, f"CSV lacks column(s) {missing}; it has {list(table.columns)}")
    return table


def _is_integral(array: np.ndarray) -> bool:
    return np.issubdtype(array.dtype, np.integer) or bool(np.all(array == np.rint(array)))


def intensity_kind(array: np.ndarray) -> str:
    """What an image's values are: "hu", "display" or "normalized" (see `records.INTENSITY_KINDS`).

    "hu": values reach below -500 (air is -1000 HU) and fit int16, as raw CT does.
    "display": uint8, or integral values within 0-255 reaching above 1 (windowed CT, X-rays).
    "normalized": anything else (0-1 floats, z-scores, dataset-specific scales).
    """
    if array.size == 0:
        raise ValueError("intensity_kind of an empty array")
    low, high = float(array.min()), float(array.max())
    if low < HU_AIR_LIMIT and _INT16.min <= low and high <= _INT16.max:
        return "hu"
    if array.dtype == np.uint8 or (0 <= low and 1 < high <= 255 and _is_integral(array)):
        return "display"
    return "normalized"


def as_intensity(array: np.ndarray, kind: str) -> np.ndarray:
    """Casts an image to the dtype `records` prescribes for its intensity kind (int16 / uint8 / float32)."""
    dtype = INTENSITY_DTYPES[kind]
    if np.issubdtype(dtype, np.integer) and np.issubdtype(array.dtype, np.floating):
        array = np.rint(array)
    return array.astype(dtype)


def check_label_values(array: np.ndarray, largest: int, path: str | Path) -> np.ndarray:
    """A label mask (bool, integer or float) as uint8, checking that every value is an integer in 0..`largest`."""
    if array.dtype == np.bool_:
        return array.astype(np.uint8)
    if array.size and (not _is_integral(array) or array.min() < 0 or array.max() > largest):
        bad = np.unique(array[(array < 0) | (array > largest) | (array != np.rint(array))])
        shown = ", ".join(f"{value:g}" for value in bad[:8].tolist())
        raise DataError(path, f"unexpected mask values [{shown}]; expected {list(range(largest + 1))}")
    return array.astype(np.uint8)


def read_label_volume(path: str | Path, image_shape: tuple[int, ...], largest_label: int) -> np.ndarray:
    """A NIfTI label mask, canonical RAS+ uint8, checked against its image's shape and labels 0..`largest_label`."""
    labels = read_nifti(path).array
    check_same_shape(labels, image_shape, path)
    return check_label_values(labels, largest_label, path)


def check_same_shape(mask: np.ndarray, image_shape: tuple[int, ...], path: str | Path) -> None:
    """Raises when a mask's shape differs from its image's."""
    if tuple(mask.shape) != tuple(image_shape):
        raise DataError(path, f"mask shape {tuple(mask.shape)} differs from its image's {tuple(image_shape)}")


def labels_present(masks: Mapping[str, np.ndarray], label_names: Sequence[str]) -> tuple[str, ...]:
    """The names among `label_names` whose mask is present and not empty, in `label_names` order."""
    return tuple(name for name in label_names if name in masks and bool(masks[name].any()))


def check_split(split: str | None, available: Sequence[str], dataset: str) -> None:
    """Raises ValueError for a split the dataset does not have (None means all)."""
    if split is not None and split not in available:
        raise ValueError(f"{dataset} has no split {split!r}; its splits: {list(available) or 'none'}")


def volume_from_scan(
    scan: NiftiScan, key: str, path: str | Path, masks: dict[str, np.ndarray], **metadata
) -> Volume:
    """A `Volume` of a canonical scan, its intensity kind told by `intensity_kind` and cast accordingly.

    metadata: further `Volume` fields (patient_id, source, split).
    """
    kind = intensity_kind(scan.array)
    return Volume(
        key=key,
        image=as_intensity(scan.array, kind),
        affine=scan.affine,
        intensity=kind,
        path=str(path),
        masks=masks,
        spacing_mm=scan.spacing_mm,
        **metadata,
    )


def volume_records(volume: Volume, label_names: Sequence[str], *, one_scan: bool = True) -> Iterator[Record]:
    """Cuts a canonical RAS+ CT volume into axial records in display orientation, keyed `<key>/<k:04d>`.

    Labels are the `label_names` whose mask is non-empty in the slice. `volume_id` is the volume's key,
    or None when `one_scan` is False (a file that stacks slices of unrelated scans).
    """
    spacing = None if volume.spacing_mm is None else (volume.spacing_mm[1], volume.spacing_mm[0])
    for k in range(volume.image.shape[2]):
        masks = {name: to_display(mask[:, :, k]) for name, mask in volume.masks.items()}
        yield Record(
            key=f"{volume.key}/{k:04d}",
            image=to_display(volume.image[:, :, k]),
            modality="ct",
            intensity=volume.intensity,
            path=volume.path,
            masks=masks,
            labels=labels_present(masks, label_names),
            patient_id=volume.patient_id,
            source=volume.source,
            split=volume.split,
            volume_id=volume.key if one_scan else None,
            slice_index=k,
            spacing_mm=spacing,
            synthetic=volume.synthetic,
        )
