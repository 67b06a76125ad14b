"""DICOM series reading against known answers: phantom HU, spacing, orientation and world positions."""

import nibabel as nib
import numpy as np
import pydicom
import pytest

from data_prep import phantoms
from data_prep.dicom import read_dicom_series, read_scan
from data_prep.errors import DataError
from data_prep.io import write_nifti
from tests.data_prep.dicom_series import LPS_TO_RAS, axis_aligned_lps, rotation_x, write_series

SPACING = (0.7, 0.9, 2.5)  # i (column), j (row), k (slice) in mm


@pytest.fixture(scope="module")
def phantom() -> phantoms.CTPhantom:
    return phantoms.ct_volume(seed=1, size=32, slices=6)


def lps_stored(canonical: np.ndarray) -> np.ndarray:
    """A canonical RAS+ array in the usual DICOM voxel order (i to the patient's left, j posterior)."""
    return canonical[::-1, ::-1, :]


def test_an_axial_series_comes_back_as_the_phantom_in_hu_with_its_spacing(tmp_path, phantom):
    write_series(tmp_path / "series", lps_stored(phantom.hu), axis_aligned_lps(SPACING))
    scan = read_dicom_series(tmp_path / "series")
    assert scan.array.dtype == np.int16  # uint16 storage + intercept -1024 -> integral HU
    np.testing.assert_array_equal(scan.array, phantom.hu)  # slices sorted by position, not file name
    assert scan.spacing_mm == pytest.approx(SPACING)
    assert scan.source_shape == phantom.hu.shape
    assert nib.aff2axcodes(scan.affine) == ("R", "A", "S")
    assert nib.aff2axcodes(scan.source_affine) == ("L", "P", "S")
    # voxel (0, 0, 0) of the DICOM grid is at LPS (-100, -120, 50) = RAS (100, 120, 50)
    np.testing.assert_allclose(scan.source_affine @ [0, 0, 0, 1], [100, 120, 50, 1])


def test_an_oblique_series_keeps_world_positions_of_every_voxel(tmp_path, phantom):
    affine_lps = rotation_x(20) @ axis_aligned_lps(SPACING)
    stored = lps_stored(phantom.hu).copy()
    marker = (3, 20, 4)  # one bright voxel, at a known place in the DICOM grid
    stored[marker] = 3000
    write_series(tmp_path / "series", stored, affine_lps)
    scan = read_dicom_series(tmp_path / "series")
    np.testing.assert_allclose(scan.source_affine, LPS_TO_RAS @ affine_lps, atol=1e-5)
    found = np.unravel_index(np.argmax(scan.array), scan.array.shape)
    expected_ras = LPS_TO_RAS @ affine_lps @ [*marker, 1]
    np.testing.assert_allclose(scan.affine @ [*found, 1], expected_ras, atol=1e-4)
    assert scan.spacing_mm == pytest.approx(SPACING)


def test_slices_stored_in_descending_position_are_sorted_up(tmp_path, phantom):
    """A grid whose k runs inferior (negative z step): the reader's k axis still follows position."""
    affine_lps = axis_aligned_lps(SPACING) @ np.diag([1, 1, -1, 1])
    write_series(tmp_path / "series", lps_stored(phantom.hu)[:, :, ::-1], affine_lps)
    scan = read_dicom_series(tmp_path / "series")
    np.testing.assert_array_equal(scan.array, phantom.hu)


def test_a_fractional_rescale_gives_float_hu(tmp_path, phantom):
    write_series(tmp_path / "series", lps_stored(phantom.hu), axis_aligned_lps(SPACING), slope=0.5)
    scan = read_dicom_series(tmp_path / "series")
    assert scan.array.dtype == np.float32
    np.testing.assert_allclose(scan.array, phantom.hu, atol=0.25)


def test_a_folder_with_two_series_is_refused_naming_both(tmp_path, phantom):
    folder, grid = tmp_path / "mixed", axis_aligned_lps(SPACING)
    write_series(folder, lps_stored(phantom.hu), grid, series_uid="1.2.3.1", description="lung kernel")
    write_series(folder, lps_stored(phantom.hu), grid, series_uid="1.2.3.2", description="soft", prefix="B")
    with pytest.raises(DataError, match=r"holds 2 DICOM series") as error:
        read_dicom_series(folder)
    assert "1.2.3.1 (lung kernel, 6 slices)" in str(error.value) and "1.2.3.2 (soft, 6 slices)" in str(
        error.value
    )


def test_a_missing_middle_slice_is_refused(tmp_path, phantom):
    folder = tmp_path / "gap"
    write_series(folder, lps_stored(phantom.hu), axis_aligned_lps(SPACING))
    by_height = {
        float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]): p
        for p in folder.iterdir()
    }
    by_height[sorted(by_height)[2]].unlink()
    with pytest.raises(DataError, match=r"uneven slice spacing \(2.500 to 5.000 mm\)"):
        read_dicom_series(folder)


def test_read_scan_takes_nifti_files_and_dicom_folders_and_ignores_other_files(tmp_path, phantom):
    write_series(tmp_path / "series", lps_stored(phantom.hu), axis_aligned_lps(SPACING))
    (tmp_path / "series" / "README.txt").write_text("not DICOM")
    write_nifti(tmp_path / "scan.nii.gz", phantom.hu, phantom.affine)
    np.testing.assert_array_equal(
        read_scan(tmp_path / "series").array, read_scan(tmp_path / "scan.nii.gz").array
    )
    with pytest.raises(DataError, match="not a scan"):
        read_scan(tmp_path / "series" / "README.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no DICOM images"):
        read_scan(tmp_path / "empty")
