"""Tests for data_prep.io: NIfTI / npz / npy / HDF5 / CSV readers, orientation helpers, intensity kinds."""

from __future__ import annotations

import h5py
import nibabel as nib
import numpy as np
import pytest

from data_prep.errors import DataError
from data_prep.io import (
    as_intensity,
    check_label_values,
    check_split,
    from_display,
    intensity_kind,
    read_csv,
    read_h5,
    read_nifti,
    read_npy,
    read_npz,
    to_display,
    volume_records,
    write_nifti,
    write_nifti_like,
)
from data_prep.records import Volume

# Stored in LPS+ order (DICOM-like): axis 0 towards the patient's left, axis 1 towards posterior.
LPS_AFFINE = np.array([[-0.7, 0, 0, 90.0], [0, -0.8, 0, 100.0], [0, 0, 2.5, -50.0], [0, 0, 0, 1]])
# Axes permuted as well: stored axis 0 runs anterior -> posterior, axis 1 right -> left.
PERMUTED_AFFINE = np.array([[0, -0.8, 0, 5.0], [-0.7, 0, 0, 6.0], [0, 0, 2.5, 7.0], [0, 0, 0, 1]])


def asymmetric(shape: tuple[int, ...], dtype=np.int16) -> np.ndarray:
    """An array whose every element differs, so any flip or transpose shows."""
    return (np.arange(np.prod(shape)) - 1000).reshape(shape).astype(dtype)


def save(path, array, affine=None):
    nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), path)
    return path


def save_scaled(path, array, slope, inter):
    """An uncompressed NIfTI whose header sets scl_slope / scl_inter over the raw `array`."""
    save(path, array)
    raw = bytearray(path.read_bytes())
    raw[112:120] = np.array([slope, inter], "<f4").tobytes()  # NIfTI-1 header offsets of scl_slope, scl_inter
    path.write_bytes(bytes(raw))
    return path


# --- read_nifti -------------------------------------------------------------------------------------


def test_read_nifti_reorients_lps_to_canonical_like_nibabel(tmp_path):
    stored = asymmetric((4, 3, 2))
    path = save(tmp_path / "lps.nii.gz", stored, LPS_AFFINE)
    scan = read_nifti(path)
    np.testing.assert_array_equal(scan.array, stored[::-1, ::-1, :])
    assert scan.array.dtype == np.int16
    np.testing.assert_allclose(scan.affine[:3, :3], np.diag([0.7, 0.8, 2.5]))
    # voxel (0, 0, 0) of the canonical array is stored voxel (3, 2, 0): world x = 90 - 0.7 * 3.
    np.testing.assert_allclose(scan.affine[:3, 3], [90 - 0.7 * 3, 100 - 0.8 * 2, -50])
    assert scan.spacing_mm == pytest.approx((0.7, 0.8, 2.5))
    reference = nib.as_closest_canonical(nib.load(path))
    np.testing.assert_array_equal(scan.array, np.asanyarray(reference.dataobj))
    np.testing.assert_allclose(scan.affine, reference.affine)
    assert scan.source_shape == (4, 3, 2)
    np.testing.assert_allclose(scan.source_affine, LPS_AFFINE)


def test_read_nifti_permuted_axes_match_nibabel(tmp_path):
    path = save(tmp_path / "permuted.nii.gz", asymmetric((4, 3, 2)), PERMUTED_AFFINE)
    scan = read_nifti(path)
    reference = nib.as_closest_canonical(nib.load(path))
    assert scan.array.shape == (3, 4, 2)
    np.testing.assert_array_equal(scan.array, np.asanyarray(reference.dataobj))
    assert scan.spacing_mm == pytest.approx((0.8, 0.7, 2.5))  # canonical X is stored axis 1


def test_read_nifti_applies_integral_scaling_and_keeps_integers(tmp_path):
    stored = np.array([[[0, 1000], [2000, 3000]]], dtype=np.int16)  # (1, 2, 2)
    scan = read_nifti(save_scaled(tmp_path / "ct.nii", stored, 1, -1024))
    assert scan.array.dtype == np.int16
    np.testing.assert_array_equal(scan.array, [[[-1024, -24], [976, 1976]]])


def test_read_nifti_fractional_scaling_gives_float32(tmp_path):
    stored = np.array([[[0, 1], [2, 3]]], dtype=np.int16)
    scan = read_nifti(save_scaled(tmp_path / "scaled.nii", stored, 0.5, 1))
    assert scan.array.dtype == np.float32
    np.testing.assert_array_equal(scan.array, [[[1.0, 1.5], [2.0, 2.5]]])


def test_read_nifti_unscaled_keeps_stored_dtype(tmp_path):
    stored = asymmetric((2, 2, 2), np.uint8)
    assert read_nifti(save(tmp_path / "u8.nii", stored)).array.dtype == np.uint8


def test_truncated_nifti_raises_one_line_data_error(tmp_path):
    rng = np.random.default_rng(0)
    path = save(tmp_path / "cut.nii.gz", rng.integers(-1000, 1000, (32, 32, 8)).astype(np.int16))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError) as raised:
        read_nifti(path)
    assert str(raised.value) == (
        f"{path}: truncated or corrupt NIfTI "
        "(Compressed file ended before the end-of-stream marker was reached)"
    )


def test_garbage_and_missing_nifti(tmp_path):
    garbage = tmp_path / "garbage.nii.gz"
    garbage.write_bytes(b"not a nifti" * 40)
    with pytest.raises(DataError, match=r"garbage\.nii\.gz: truncated or corrupt NIfTI \(") as raised:
        read_nifti(garbage)
    assert "\n" not in str(raised.value)
    with pytest.raises(DataError) as raised:
        read_nifti(tmp_path / "absent.nii.gz")
    assert str(raised.value) == f"{tmp_path / 'absent.nii.gz'}: no such file"


def test_two_dimensional_nifti_is_rejected(tmp_path):
    path = save(tmp_path / "flat.nii.gz", np.zeros((3, 4), np.uint8))
    with pytest.raises(DataError) as raised:
        read_nifti(path)
    assert str(raised.value) == f"{path}: NIfTI has 2 dimensions, shape (3, 4); expected a 3D volume"


# --- orientation -----------------------------------------------------------------------------------


def test_to_display_hand_computed():
    canonical = np.array([[0, 1, 2], [3, 4, 5]])  # (X=2, Y=3)
    np.testing.assert_array_equal(to_display(canonical), [[5, 2], [4, 1], [3, 0]])


def test_display_puts_anterior_up_and_patient_right_on_the_left(tmp_path):
    stored = np.zeros((5, 4, 1), np.uint8)
    stored[0, 0, 0] = 1  # LPS storage: index 0 on axis 0 = patient right, on axis 1 = anterior
    stored[4, 3, 0] = 2  # patient left, posterior
    display = to_display(read_nifti(save(tmp_path / "lps.nii.gz", stored, LPS_AFFINE)).array[:, :, 0])
    assert display.shape == (4, 5)
    assert display[0, 0] == 1 and display[3, 4] == 2


def test_display_round_trip_is_exact():
    canonical = asymmetric((5, 3, 2))  # trailing axis carried along
    np.testing.assert_array_equal(from_display(to_display(canonical)), canonical)
    display = asymmetric((3, 5))
    np.testing.assert_array_equal(to_display(from_display(display)), display)


@pytest.mark.parametrize("affine", [LPS_AFFINE, PERMUTED_AFFINE], ids=["lps", "permuted"])
def test_prediction_written_like_the_input_aligns_voxel_for_voxel(tmp_path, affine):
    stored = asymmetric((4, 3, 2))
    scan = read_nifti(save(tmp_path / "ct.nii.gz", stored, affine))
    # A "prediction" made slice by slice in display orientation, then put back into the canonical volume.
    display_slices = [to_display(scan.array[:, :, k]) > -990 for k in range(scan.array.shape[2])]
    canonical = np.stack([from_display(s) for s in display_slices], axis=2).astype(np.uint8)
    out = tmp_path / "pred.nii.gz"
    write_nifti_like(out, canonical, scan)
    written = nib.load(out)
    np.testing.assert_array_equal(np.asanyarray(written.dataobj), (stored > -990).astype(np.uint8))
    np.testing.assert_allclose(written.affine, affine)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct.nii.gz", "pred.nii.gz"]  # no temporary left


def test_write_nifti_round_trip(tmp_path):
    array = asymmetric((3, 2, 2))
    write_nifti(tmp_path / "a.nii", array, LPS_AFFINE)
    loaded = nib.load(tmp_path / "a.nii")
    np.testing.assert_array_equal(np.asanyarray(loaded.dataobj), array)
    assert loaded.header["qform_code"] == 1 and loaded.header["sform_code"] == 1
    write_nifti(tmp_path / "mask.nii.gz", array > 0, LPS_AFFINE)
    mask = np.asanyarray(nib.load(tmp_path / "mask.nii.gz").dataobj)
    assert mask.dtype == np.uint8 and mask.tolist() == (array > 0).astype(np.uint8).tolist()


# --- npz / npy / h5 / csv --------------------------------------------------------------------------


def test_read_npz(tmp_path):
    path = tmp_path / "slice.npz"
    np.savez_compressed(path, image=np.eye(2, dtype=np.float32))
    np.testing.assert_array_equal(read_npz(path, "image"), np.eye(2))
    with pytest.raises(DataError) as raised:
        read_npz(path, "mask")
    assert str(raised.value) == f"{path}: no array 'mask' in npz; it holds ['image']"


def test_read_npz_rejects_npy_and_corrupt(tmp_path):
    npy_named_npz = tmp_path / "single.npz"
    with open(npy_named_npz, "wb") as file:
        np.save(file, np.zeros(2))
    with pytest.raises(DataError) as raised:
        read_npz(npy_named_npz, "image")
    assert str(raised.value) == f"{npy_named_npz}: not an npz archive (a single .npy array)"
    corrupt = tmp_path / "corrupt.npz"
    np.savez_compressed(corrupt, image=np.zeros((64, 64)))
    corrupt.write_bytes(corrupt.read_bytes()[:40])
    with pytest.raises(DataError, match=r"corrupt\.npz: truncated or corrupt npz \("):
        read_npz(corrupt, "image")


def test_read_npy(tmp_path):
    path = tmp_path / "mask.npy"
    np.save(path, np.array([True, False]))
    np.testing.assert_array_equal(read_npy(path), [True, False])
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(DataError, match=r"mask\.npy: truncated or corrupt npy \("):
        read_npy(path)


def test_read_h5(tmp_path):
    path = tmp_path / "patches.h5"
    with h5py.File(path, "w") as file:
        file["images"] = np.arange(6, dtype=np.float32).reshape(1, 1, 2, 3)
        file.create_group("meta")
    np.testing.assert_array_equal(read_h5(path, "images")[0, 0], [[0, 1, 2], [3, 4, 5]])
    for key in ("labels", "meta"):
        with pytest.raises(DataError) as raised:
            read_h5(path, key)
        assert str(raised.value) == f"{path}: no dataset {key!r} in HDF5 file; it holds ['images', 'meta']"
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 10)
    with pytest.raises(DataError, match=r"patches\.h5: truncated or corrupt HDF5 \("):
        read_h5(path, "images")


def test_read_csv(tmp_path):
    path = tmp_path / "meta.csv"
    path.write_text("patient_id,malignancy\n0001,5\n0002,\n")
    table = read_csv(path, ["patient_id"])
    assert table["patient_id"].tolist() == ["0001", "0002"]  # strings: leading zeros kept
    assert table["malignancy"].tolist() == ["5", ""]
    with pytest.raises(DataError) as raised:
        read_csv(path, ["patient_id", "is_cancer"])
    assert (
        str(raised.value) == f"{path}: CSV lacks column(s) ['is_cancer']; it has ['patient_id', 'malignancy']"
    )


# --- intensities and masks -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("array", "kind"),
    [
        (np.array([-1024, -600, 40, 3000], np.int16), "hu"),
        (np.array([-2048.0, 0.0, 1200.5]), "hu"),  # float HU with padding value
        (np.array([0, 17, 255], np.uint8), "display"),
        (np.array([0.0, 128.0, 255.0], np.float32), "display"),  # windowed, stored as float
        (np.array([3, 200], np.int32), "display"),
        (np.array([0.0, 0.25, 1.0], np.float32), "normalized"),  # 0-1 scaled (MSD patches)
        (np.array([-0.33, 0.0, 4.93], np.float32), "normalized"),  # LIDC pipeline scale
        (np.array([0.0, 12.5, 200.0]), "normalized"),  # non-integral, not display
        (np.array([0, 4095], np.uint16), "normalized"),  # raw scanner values without intercept
        (np.array([-400, 300], np.int16), "normalized"),  # no air: not recognisable as HU
    ],
)
def test_intensity_kind(array, kind):
    assert intensity_kind(array) == kind


def test_intensity_kind_of_empty_array():
    with pytest.raises(ValueError, match="empty"):
        intensity_kind(np.zeros((0, 3)))


def test_as_intensity_rounds_and_casts():
    hu = as_intensity(np.array([-1000.4, 39.6]), "hu")
    assert hu.dtype == np.int16 and hu.tolist() == [-1000, 40]
    display = as_intensity(np.array([0.0, 254.6]), "display")
    assert display.dtype == np.uint8 and display.tolist() == [0, 255]
    assert as_intensity(np.array([1, 2], np.int64), "normalized").dtype == np.float32


def test_check_label_values(tmp_path):
    path = tmp_path / "tr_mask.nii.gz"
    converted = check_label_values(np.array([0.0, 1.0, 3.0]), 3, path)
    assert converted.dtype == np.uint8 and converted.tolist() == [0, 1, 3]
    assert check_label_values(np.array([True, False]), 1, path).tolist() == [1, 0]
    with pytest.raises(DataError) as raised:
        check_label_values(np.array([0, 7, 2, 7], np.int16), 3, path)
    assert str(raised.value) == f"{path}: unexpected mask values [7]; expected [0, 1, 2, 3]"
    with pytest.raises(DataError) as raised:
        check_label_values(np.array([0.0, 0.5, -1.0]), 1, path)
    assert str(raised.value) == f"{path}: unexpected mask values [-1, 0.5]; expected [0, 1]"


def test_check_split():
    check_split(None, (), "zenodo")
    check_split("train", ("train", "test"), "medseg")
    with pytest.raises(ValueError) as raised:
        check_split("val", ("train", "test"), "medseg")
    assert str(raised.value) == "medseg has no split 'val'; its splits: ['train', 'test']"


def test_volume_records_cut_display_slices_with_labels():
    image = asymmetric((3, 2, 2))
    infection = np.zeros((3, 2, 2), np.uint8)
    infection[0, 1, 1] = 1  # slice 1 only
    volume = Volume(
        key="case_7",
        image=image,
        affine=np.eye(4),
        intensity="hu",
        path="/data/case_7.nii.gz",
        masks={"infection": infection},
        spacing_mm=(0.7, 0.8, 5.0),
        patient_id="p7",
        source="coronacases",
        split="train",
    )
    records = list(volume_records(volume, ("infection",)))
    assert [r.key for r in records] == ["case_7/0000", "case_7/0001"]
    assert [r.labels for r in records] == [(), ("infection",)]
    np.testing.assert_array_equal(records[1].image, to_display(image[:, :, 1]))
    # canonical voxel (0, 1) -> display row Y-1-1 = 0, column X-1-0 = 2
    assert records[1].masks["infection"].tolist() == [[0, 0, 1], [0, 0, 0]]
    first = records[0]
    assert (first.volume_id, first.slice_index, first.patient_id, first.split) == ("case_7", 0, "p7", "train")
    assert first.spacing_mm == (0.8, 0.7)  # (row, column) = (Y, X)
    assert first.modality == "ct" and first.intensity == "hu" and first.source == "coronacases"
    unrelated = list(volume_records(volume, ("infection",), one_scan=False))
    assert unrelated[0].volume_id is None and unrelated[0].slice_index == 0
