"""Tests for the CT / nodule / tumour adapters: medseg, zenodo, lidc, msd_patches.

Synthetic files written in tmp_path cover the published layouts that are not in the shared data and the
bad-input paths; the shared_data tests check the real subsets against the counts in their READMEs.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator

import cv2
import h5py
import nibabel as nib
import numpy as np
import pytest

from data_prep.adapters.lidc import LidcNoduleSlices
from data_prep.adapters.medseg import MedSegCovidCt
from data_prep.adapters.msd import MsdLungPatches
from data_prep.adapters.zenodo import ZenodoCovidCtSeg, case_id
from data_prep.errors import DataError
from data_prep.imageio import read_image
from data_prep.io import read_csv, to_display

LPS_AFFINE = np.diag([-0.7, -0.7, 5.0, 1.0])


def save_nifti(path, array, affine=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), path)
    return path


def save_png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cv2.imencode(".png", array)[1].tobytes())
    return path


def error_text(callable_, *args):
    """The one-line message of the DataError raised by `callable_(*args)`; generators are drained."""
    with pytest.raises(DataError) as raised:
        result = callable_(*args)
        if isinstance(result, Iterator):
            list(result)
    assert "\n" not in str(raised.value)
    return str(raised.value)


# --- medseg: the MedSeg download layout (synthetic) -------------------------------------------------

HU = np.arange(6 * 5 * 3, dtype=np.int16).reshape(6, 5, 3) * 10 - 1000  # (X, Y, slices), -1000..-110 HU


def medseg_download(root, tr_mask=None):
    """tr_im (3 slices), tr_mask, val_im (2 slices), one Radiopaedia volume (2 slices) with lung mask."""
    if tr_mask is None:
        tr_mask = np.zeros((6, 5, 3), np.float32)  # MedSeg masks are stored as float
        tr_mask[1, 1, 0] = 1  # slice 0: GGO
        tr_mask[2, 2, 1], tr_mask[3, 3, 1] = 1, 2  # slice 1: GGO + consolidation
        tr_mask[0, 4, 2] = 3  # slice 2: pleural effusion only
    save_nifti(root / "tr_im.nii.gz", HU.astype(np.float32))
    save_nifti(root / "tr_mask.nii.gz", tr_mask)
    save_nifti(root / "val_im.nii.gz", HU[:, :, :2])
    rp_mask = np.zeros((6, 5, 2), np.uint8)
    rp_mask[4, 0, 1] = 2
    save_nifti(root / "rp_im" / "1.nii.gz", HU[:, :, 1:], LPS_AFFINE)
    save_nifti(root / "rp_msk" / "1.nii.gz", rp_mask, LPS_AFFINE)
    save_nifti(root / "rp_lung_msk" / "1.nii.gz", np.full((6, 5, 2), 2, np.uint8), LPS_AFFINE)
    return root


def test_medseg_download_layout(tmp_path):
    adapter = MedSegCovidCt(medseg_download(tmp_path))
    assert adapter.layout == "medseg" and adapter.splits() == ("train", "unlabelled")
    records = list(adapter.records())
    assert [r.key for r in records] == ["rp_1/0000", "rp_1/0001", "tr/0000", "tr/0001", "tr/0002"]
    unlabelled = list(adapter.records("unlabelled"))
    assert [r.key for r in unlabelled] == ["val/0000", "val/0001"]
    by_key = {r.key: r for r in records + unlabelled}
    assert [by_key[f"tr/000{k}"].labels for k in range(3)] == [
        ("ggo",),
        ("ggo", "consolidation"),
        ("effusion",),
    ]
    tr1 = by_key["tr/0001"]
    assert tr1.image.dtype == np.int16 and tr1.intensity == "hu"
    np.testing.assert_array_equal(tr1.image, to_display(HU[:, :, 1]))
    assert tr1.image.shape == (5, 6)
    assert tr1.masks["infection"].sum() == 2 and tr1.masks["ggo"][5 - 1 - 2, 6 - 1 - 2] == 1
    assert by_key["tr/0002"].masks["infection"].sum() == 0  # effusion is not lung infection
    assert (tr1.split, tr1.patient_id, tr1.volume_id, tr1.slice_index) == ("train", None, None, 1)
    assert tr1.source == "medseg"
    assert by_key["val/0001"].masks == {} and by_key["val/0001"].split == "unlabelled"
    rp = by_key["rp_1/0001"]
    assert (rp.volume_id, rp.source, rp.split, rp.labels) == (
        "rp_1",
        "radiopaedia",
        "train",
        ("consolidation",),
    )
    # LPS storage: canonical = stored[::-1, ::-1]; stored voxel (4, 0) -> canonical (1, 4) -> display (0, 4)
    assert rp.masks["consolidation"][0, 4] == 1 and rp.masks["consolidation"].sum() == 1
    assert rp.masks["lung"].all() and rp.spacing_mm == pytest.approx((0.7, 0.7))
    (volume,) = adapter.volumes()
    assert volume.key == "rp_1" and volume.image.shape == (6, 5, 2) and sorted(volume.masks) == [
        "consolidation", "effusion", "ggo", "infection", "lung",
    ]  # fmt: skip


def test_medseg_unexpected_mask_value(tmp_path):
    mask = np.zeros((6, 5, 3), np.float32)
    mask[0, 0, 0] = 7
    adapter = MedSegCovidCt(medseg_download(tmp_path, tr_mask=mask))
    assert error_text(adapter.records, "train") == (
        f"{tmp_path / 'tr_mask.nii.gz'}: unexpected mask values [7]; expected [0, 1, 2, 3]"
    )


def test_medseg_mask_shape_mismatch(tmp_path):
    adapter = MedSegCovidCt(medseg_download(tmp_path, tr_mask=np.zeros((6, 5, 2), np.uint8)))
    assert error_text(adapter.records) == (
        f"{tmp_path / 'tr_mask.nii.gz'}: mask shape (6, 5, 2) differs from its image's (6, 5, 3)"
    )


def test_medseg_truncated_volume(tmp_path):
    medseg_download(tmp_path)
    rng = np.random.default_rng(0)
    path = save_nifti(tmp_path / "tr_im.nii.gz", rng.integers(-1000, 1000, (64, 64, 3)).astype(np.int16))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert error_text(MedSegCovidCt(tmp_path).records, "train").startswith(
        f"{path}: truncated or corrupt NIfTI ("
    )


def test_medseg_wrong_and_missing_folders(tmp_path):
    (tmp_path / "something").mkdir()
    assert error_text(MedSegCovidCt, tmp_path).startswith(f"{tmp_path}: not a MedSeg layout: expected tr_im")
    assert error_text(MedSegCovidCt, tmp_path / "absent") == (
        f"{tmp_path / 'absent'}: not a folder; expected the medseg dataset root"
    )


def test_medseg_invalid_split(tmp_path):
    with pytest.raises(ValueError, match="medseg has no split 'val'"):
        list(MedSegCovidCt(medseg_download(tmp_path)).records("val"))


# --- medseg: Inf-Net COVID-SemiSeg layout (synthetic, for exact pixels and bad input) --------------

SEMISEG_TRAIN = "Dataset/TrainingSet/LungInfection-Train/Doctor-label"


def semiseg_slice(root, palette=None):
    """One SemiSeg training slice `3.jpg` (PNG bytes: lossless), 4 x 6, with its two GT files."""
    image = np.arange(24, dtype=np.uint8).reshape(4, 6) * 10
    if palette is None:
        palette = np.zeros((4, 6), np.uint8)
        palette[0, 5], palette[3, 0] = 1, 2
    save_png(root / SEMISEG_TRAIN / "Imgs" / "3.jpg", image)
    save_png(root / SEMISEG_TRAIN / "GT" / "3.png", (palette > 0).astype(np.uint8) * 255)
    save_png(root / "Dataset/TrainingSet/MultiClassInfection-Train/GT/3.png", palette)
    return image


def test_semiseg_slices_are_transposed_to_display_orientation(tmp_path):
    image = semiseg_slice(tmp_path)
    adapter = MedSegCovidCt(tmp_path)
    assert adapter.layout == "semiseg" and adapter.splits() == ("train",)
    (record,) = adapter.records()
    np.testing.assert_array_equal(record.image, image.T)
    assert record.key == "tr/0003" and record.slice_index == 3 and record.labels == ("ggo", "consolidation")
    assert record.masks["ggo"][5, 0] == 1 and record.masks["consolidation"][0, 3] == 1
    assert record.masks["infection"].sum() == 2 and "effusion" not in record.masks


def test_semiseg_unexpected_palette_value(tmp_path):
    palette = np.zeros((4, 6), np.uint8)
    palette[1, 1] = 3
    semiseg_slice(tmp_path, palette)
    path = tmp_path / "Dataset/TrainingSet/MultiClassInfection-Train/GT/3.png"
    (tmp_path / SEMISEG_TRAIN / "GT" / "3.png").write_bytes(
        cv2.imencode(".png", np.zeros((4, 6), np.uint8))[1]
    )
    assert (
        error_text(MedSegCovidCt(tmp_path).records)
        == f"{path}: unexpected mask values [3]; expected [0, 1, 2]"
    )


def test_semiseg_mask_shape_mismatch(tmp_path):
    semiseg_slice(tmp_path)
    path = save_png(tmp_path / SEMISEG_TRAIN / "GT" / "3.png", np.zeros((6, 4), np.uint8))
    assert (
        error_text(MedSegCovidCt(tmp_path).records)
        == f"{path}: mask shape (6, 4) differs from its image's (4, 6)"
    )


def test_semiseg_empty_image_folder(tmp_path):
    folder = tmp_path / SEMISEG_TRAIN / "Imgs"
    folder.mkdir(parents=True)
    assert error_text(MedSegCovidCt(tmp_path).records) == f"{folder}: no image files"


# --- zenodo: the published 20-case layout (synthetic) ----------------------------------------------

CORONACASES_CT = "coronacases_org_001.nii.gz"
RADIOPAEDIA_CT = "radiopaedia_org_covid-19-pneumonia-7_85703_0-dcm.nii.gz"


def zenodo_download(root, with_infection_folder=True):
    """Two cases: coronacases in HU (int16, LPS-stored), radiopaedia already 0-255 (RAS-stored)."""
    hu = (np.arange(4 * 3 * 2, dtype=np.int16).reshape(4, 3, 2) * 100) - 1024
    save_nifti(root / "COVID-19-CT-Seg_20cases" / CORONACASES_CT, hu, LPS_AFFINE)
    save_nifti(root / "COVID-19-CT-Seg_20cases" / RADIOPAEDIA_CT, np.full((4, 3, 2), 200, np.int16))
    lungs = np.zeros((4, 3, 2), np.uint8)
    lungs[0], lungs[3] = 2, 1  # stored axis 0 = patient right .. left for the LPS case
    infection = np.zeros((4, 3, 2), np.uint8)
    infection[0, 0, 1] = 1
    for case, affine in (("coronacases_001", LPS_AFFINE), ("radiopaedia_7_85703_0", np.eye(4))):
        save_nifti(root / "Lung_Mask" / f"{case}.nii.gz", lungs, affine)
        if with_infection_folder:
            save_nifti(root / "Infection_Mask" / f"{case}.nii.gz", infection, affine)
        save_nifti(root / "Lung_and_Infection_Mask" / f"{case}.nii.gz", np.where(infection, 3, lungs), affine)
    return hu


def test_zenodo_case_ids():
    assert case_id(CORONACASES_CT) == "coronacases_001"
    assert case_id(RADIOPAEDIA_CT) == "radiopaedia_7_85703_0"
    assert case_id("coronacases_org_010.nii") == "coronacases_010"


@pytest.mark.parametrize("with_infection_folder", [True, False], ids=["infection-folder", "combined-only"])
def test_zenodo_published_layout(tmp_path, with_infection_folder):
    hu = zenodo_download(tmp_path, with_infection_folder)
    adapter = ZenodoCovidCtSeg(tmp_path)
    assert adapter.layout == "published" and adapter.patient_ids == "real" and adapter.splits() == ()
    records = list(adapter.records())
    assert [r.key for r in records] == [
        "coronacases_001/0000", "coronacases_001/0001", "radiopaedia_7_85703_0/0000", "radiopaedia_7_85703_0/0001",
    ]  # fmt: skip
    cc0, cc1, rp0, _ = records
    assert cc0.intensity == "hu" and cc0.image.dtype == np.int16
    np.testing.assert_array_equal(cc0.image, to_display(hu[::-1, ::-1, 0]))
    assert rp0.intensity == "display" and rp0.image.dtype == np.uint8 and (rp0.image == 200).all()
    assert (cc0.patient_id, cc0.source, cc0.volume_id) == (
        "coronacases_001",
        "coronacases",
        "coronacases_001",
    )
    # a Radiopaedia patient's series share one patient id (`patient_of`); the volume is the series
    assert (rp0.patient_id, rp0.source, rp0.volume_id) == ("radiopaedia_7", "radiopaedia", "radiopaedia_7_85703_0")
    assert cc0.labels == () and cc1.labels == ("infection",)
    # LPS: stored voxel (0, 0) is patient right-anterior -> display top-left corner.
    assert cc1.masks["infection"][0, 0] == 1 and cc1.masks["infection"].sum() == 1
    assert cc1.masks["lung"].sum() == 2 * 3  # two rows of lung (labels 1 and 2 merged), 3 voxels each
    assert cc0.spacing_mm == pytest.approx((0.7, 0.7))
    volume = next(adapter.volumes())
    assert volume.key == "coronacases_001" and volume.spacing_mm == pytest.approx((0.7, 0.7, 5.0))


def test_zenodo_published_mask_missing(tmp_path):
    zenodo_download(tmp_path)
    (tmp_path / "Lung_Mask" / "radiopaedia_7_85703_0.nii.gz").unlink()
    assert error_text(ZenodoCovidCtSeg(tmp_path).records) == (
        f"{tmp_path / 'Lung_Mask' / 'radiopaedia_7_85703_0.nii.gz'}: file missing (.nii.gz or .nii)"
    )


def test_zenodo_published_lung_label_out_of_range(tmp_path):
    zenodo_download(tmp_path)
    path = save_nifti(
        tmp_path / "Lung_Mask" / "coronacases_001.nii.gz", np.full((4, 3, 2), 5, np.uint8), LPS_AFFINE
    )
    assert (
        error_text(ZenodoCovidCtSeg(tmp_path).records)
        == f"{path}: unexpected mask values [5]; expected [0, 1, 2]"
    )


def test_zenodo_empty_ct_folder_and_wrong_folder(tmp_path):
    (tmp_path / "COVID-19-CT-Seg_20cases").mkdir()
    assert error_text(ZenodoCovidCtSeg(tmp_path).records) == (
        f"{tmp_path / 'COVID-19-CT-Seg_20cases'}: no .nii / .nii.gz files"
    )
    other = tmp_path / "other"
    other.mkdir()
    assert error_text(ZenodoCovidCtSeg, other).startswith(f"{other}: not a Zenodo 3757476 layout")


# --- zenodo: the re-stacked layout (synthetic) ------------------------------------------------------


def restacked(root, block, slice_counts):
    """Parts `<block>_part<k>` (k = 1..n), slice j of the block filled with j; masks from slice parity."""
    start = 0
    for part, count in enumerate(slice_counts, start=1):
        values = np.arange(start, start + count, dtype=np.uint8)
        ct = np.broadcast_to(values, (4, 3, count)).copy()
        ct[0, 0, :] = 255  # a marker in the top-left pixel of every stored slice
        save_nifti(root / "ct" / f"{block}_part{part}.nii.gz", ct)
        save_nifti(root / "lung_mask" / f"{block}_part{part}.nii.gz", (ct == 255).astype(np.uint8))
        infection = np.broadcast_to(values % 2, ct.shape).astype(np.uint8)  # odd slices
        save_nifti(root / "infection_mask" / f"{block}_part{part}.nii.gz", infection)
        start += count


def test_restacked_parts_in_numeric_order_and_rp_flipped(tmp_path):
    restacked(tmp_path, "RP1", [1] * 10 + [2])  # parts 1..11: lexical order would put part10 before part2
    restacked(tmp_path, "CC01", [2])
    adapter = ZenodoCovidCtSeg(tmp_path)
    assert adapter.layout == "restacked" and adapter.patient_ids == "inferred"
    records = list(adapter.records())
    assert [r.key for r in records][:3] == ["CC01/0000", "CC01/0001", "RP1/0000"] and len(records) == 14
    rp = [r for r in records if r.volume_id == "RP1"]
    assert [int(r.image[1, 1]) for r in rp] == list(range(12))
    assert all(r.image[3, 0] == 255 and r.image[0, 0] != 255 for r in rp)  # RP: flipped along rows
    assert records[0].image[0, 0] == 255  # CC: stored as is
    assert [r.labels for r in rp[:2]] == [(), ("infection",)]
    assert (rp[0].patient_id, rp[0].source, rp[0].spacing_mm) == ("RP1", "radiopaedia", None)
    volume = next(v for v in adapter.volumes() if v.key == "RP1")
    assert volume.image.shape == (3, 4, 12)  # canonical (X, Y, Z) of 4-row, 3-column display slices
    np.testing.assert_array_equal(to_display(volume.image[:, :, 5]), rp[5].image)


def test_restacked_truncated_part(tmp_path):
    restacked(tmp_path, "CC02", [2, 2])
    rng = np.random.default_rng(0)
    path = save_nifti(
        tmp_path / "ct" / "CC02_part2.nii.gz", rng.integers(0, 255, (64, 64, 4)).astype(np.uint8)
    )
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert error_text(ZenodoCovidCtSeg(tmp_path).records).startswith(f"{path}: truncated or corrupt NIfTI (")


def test_restacked_mask_shape_mismatch_and_bad_name(tmp_path):
    restacked(tmp_path, "CC03", [2])
    path = save_nifti(tmp_path / "infection_mask" / "CC03_part1.nii.gz", np.zeros((4, 3, 3), np.uint8))
    assert error_text(ZenodoCovidCtSeg(tmp_path).records) == (
        f"{path}: mask shape (4, 3, 3) differs from its image's (4, 3, 2)"
    )
    stray = save_nifti(tmp_path / "ct" / "CC03.nii.gz", np.zeros((4, 3, 1), np.uint8))
    assert error_text(ZenodoCovidCtSeg(tmp_path).records) == (
        f"{stray}: unexpected file name; expected <block>_part<k>.nii.gz"
    )


# --- lidc and msd_patches (synthetic bad input) ----------------------------------------------------


def lidc_slice(root, mask_shape=(8, 8)):
    image = root / "Image" / "LIDC-IDRI-0009" / "0009_NI001_slice002.npz"
    image.parent.mkdir(parents=True)
    np.savez_compressed(image, image=np.full((8, 8), 0.5, np.float32))
    mask = np.zeros(mask_shape, np.uint8)
    mask[2, 3] = 255
    save_png(root / "Mask" / "LIDC-IDRI-0009" / "0009_MA001_slice002.png", mask)
    return image


def test_lidc_synthetic_slice_with_rating(tmp_path):
    lidc_slice(tmp_path)
    (tmp_path / "meta_info.csv").write_text(
        "patient_id,nodule_no,slice_no,original_image,mask_image,malignancy,is_cancer,is_clean\n"
        "0009,1,002,LIDC-IDRI-0009/0009_NI001_slice002,LIDC-IDRI-0009/0009_MA001_slice002,4,True,False\n"
    )
    (record,) = LidcNoduleSlices(tmp_path).records()
    assert record.key == "LIDC-IDRI-0009/0009_NI001_slice002" and record.labels == ("malignancy_4",)
    assert record.masks["nodule"].sum() == 1 and record.masks["nodule"][2, 3] == 1
    assert record.intensity == "normalized" and record.image.dtype == np.float32


def test_lidc_pipeline_npy_layout(tmp_path):
    """The pipeline's own output: float64 `.npy` images, bool `.npy` masks, no meta table."""
    for patient, name in (
        ("LIDC-IDRI-0012", "0012_NI000_slice001"),
        ("LIDC-IDRI-0011", "0011_NI002_slice000"),
    ):
        (tmp_path / "Image" / patient).mkdir(parents=True)
        (tmp_path / "Mask" / patient).mkdir(parents=True)
        np.save(tmp_path / "Image" / patient / f"{name}.npy", np.full((4, 4), -0.25))
        mask = np.zeros((4, 4), bool)
        mask[1:3, 2] = True
        np.save(tmp_path / "Mask" / patient / f"{name.replace('_NI', '_MA')}.npy", mask)
    records = list(LidcNoduleSlices(tmp_path).records())
    assert [r.key for r in records] == [
        "LIDC-IDRI-0011/0011_NI002_slice000",
        "LIDC-IDRI-0012/0012_NI000_slice001",
    ]
    assert records[0].image.dtype == np.float32 and records[0].image[0, 0] == -0.25
    assert records[0].masks["nodule"].tolist()[1] == [0, 0, 1, 0] and records[0].labels == ()
    assert (records[0].patient_id, records[0].volume_id) == ("LIDC-IDRI-0011", "LIDC-IDRI-0011")


def test_lidc_bad_inputs(tmp_path):
    assert error_text(LidcNoduleSlices, tmp_path) == (
        f"{tmp_path}: not a LIDC-IDRI-Preprocessing layout: expected Image/ and Mask/ folders"
    )
    image = lidc_slice(tmp_path, mask_shape=(8, 9))
    mask = tmp_path / "Mask" / "LIDC-IDRI-0009" / "0009_MA001_slice002.png"
    assert (
        error_text(LidcNoduleSlices(tmp_path).records)
        == f"{mask}: mask shape (8, 9) differs from its image's (8, 8)"
    )
    mask.unlink()
    assert error_text(LidcNoduleSlices(tmp_path).records) == (
        f"{image}: no paired mask {mask.with_suffix('')}{{.png,.npy}}"
    )
    (tmp_path / "meta_info.csv").write_text("original_image,malignancy\nLIDC-IDRI-0009/x,9\n")
    assert error_text(LidcNoduleSlices(tmp_path).malignancy) == (
        f"{tmp_path / 'meta_info.csv'}: malignancy '9' of LIDC-IDRI-0009/x is not a rating 1-5"
    )


def write_patches(path, labels, images=None):
    with h5py.File(path, "w") as file:
        file["images"] = np.zeros(labels.shape, np.float32) if images is None else images
        file["labels"] = labels


def test_msd_synthetic_and_bad_inputs(tmp_path):
    assert error_text(MsdLungPatches, tmp_path).startswith(f"{tmp_path}: no .h5 patch files")
    labels = np.zeros((2, 1, 4, 4))
    labels[1, 0, 2, 2] = 1
    write_patches(tmp_path / "val_patches.h5", labels)
    write_patches(tmp_path / "extra.h5", np.zeros((1, 1, 4, 4)))
    adapter = MsdLungPatches(tmp_path)
    assert adapter.splits() == ("val",)
    records = list(adapter.records())
    assert [(r.key, r.split, r.patient_id, r.labels) for r in records] == [
        ("extra/0000", None, "extra", ()),
        ("val_patches/0000", "val", "val_patches", ()),
        ("val_patches/0001", "val", "val_patches", ("tumour",)),
    ]
    labels[0, 0, 0, 0] = 2
    write_patches(tmp_path / "val_patches.h5", labels)
    assert error_text(adapter.records, "val") == (
        f"{tmp_path / 'val_patches.h5'}: unexpected mask values [2]; expected [0, 1]"
    )
    write_patches(tmp_path / "val_patches.h5", np.zeros((2, 1, 4, 4)), np.zeros((2, 4, 4), np.float32))
    assert error_text(adapter.records, "val") == (
        f"{tmp_path / 'val_patches.h5'}: images have shape (2, 4, 4); expected (N, 1, H, W)"
    )


# --- real subsets -----------------------------------------------------------------------------------

ZENODO_BLOCKS = {"CC01": 159, "CC02": 120, "CC03": 118, "CC04": 113, "CC05": 116, "CC06": 70,
                 "RP1": 129, "RP2": 66, "RP3": 68}  # fmt: skip


@pytest.fixture(scope="module")
def zenodo_summary(shared_data):
    """One pass over the re-stacked Zenodo subset: per-record facts, and the RP2 / CC06 records in full."""
    root = shared_data / "ct-lung-infection-zenodo"
    facts, kept = [], {}
    for record in ZenodoCovidCtSeg(root).records():
        lung, infection = record.masks["lung"], record.masks["infection"]
        facts.append(
            dict(
                key=record.key,
                block=record.volume_id,
                slice_index=record.slice_index,
                patient_id=record.patient_id,
                source=record.source,
                labels=record.labels,
                shapes={record.image.shape, lung.shape, infection.shape},
                dtype=record.image.dtype,
                mask_values=set(np.unique(lung)) | set(np.unique(infection)),
                lung_px=int(lung.sum()),
                infection_px=int(infection.sum()),
            )
        )
        if record.volume_id in ("RP2", "CC06"):
            kept[record.key] = record
    return root, facts, kept


@pytest.mark.shared_data
def test_zenodo_subset_counts_ids_and_masks(zenodo_summary):
    _, facts, _ = zenodo_summary
    assert collections.Counter(f["block"] for f in facts) == ZENODO_BLOCKS
    assert collections.Counter(f["source"] for f in facts) == {"coronacases": 696, "radiopaedia": 263}
    assert [f["key"] for f in facts] == sorted(f["key"] for f in facts)
    assert all(f["patient_id"] == f["block"] for f in facts)
    assert all(f["shapes"] == {(256, 256)} and f["dtype"] == np.uint8 for f in facts)
    assert set().union(*(f["mask_values"] for f in facts)) == {0, 1}
    assert all(f["labels"] == ("infection",) for f in facts)  # the source kept infected slices only


@pytest.mark.shared_data
def test_zenodo_subset_mask_areas_match_slices_csv(zenodo_summary):
    root, facts, _ = zenodo_summary
    table = read_csv(root / "slices.csv", ("block", "slice_index", "lung_px", "infection_px"))
    expected = {
        (b, int(k)): (int(lung), int(inf))
        for b, k, lung, inf in zip(
            table["block"], table["slice_index"], table["lung_px"], table["infection_px"], strict=True
        )
    }
    assert {(f["block"], f["slice_index"]): (f["lung_px"], f["infection_px"]) for f in facts} == expected


@pytest.mark.shared_data
@pytest.mark.parametrize(("block", "flipped"), [("RP2", True), ("CC06", False)])
def test_zenodo_subset_rp_blocks_flipped(zenodo_summary, block, flipped):
    root, _, kept = zenodo_summary
    files = sorted((root / "ct").glob(f"{block}_part*.nii.gz"))
    raw = np.concatenate([np.asanyarray(nib.load(f).dataobj) for f in files], axis=2)
    expected = np.flip(raw, axis=0) if flipped else raw
    for k in range(ZENODO_BLOCKS[block]):
        np.testing.assert_array_equal(kept[f"{block}/{k:04d}"].image, expected[:, :, k])


@pytest.fixture(scope="module")
def medseg_records(shared_data):
    return list(MedSegCovidCt(shared_data / "ct-infection-medseg").records())


@pytest.mark.shared_data
def test_medseg_semiseg_counts_and_labels(medseg_records):
    by_split = collections.defaultdict(list)
    for record in medseg_records:
        by_split[record.split].append(record)
    assert {s: len(r) for s, r in by_split.items()} == {"train": 50, "test": 48}
    train_indices = [
        *range(0, 6),
        *range(10, 18),
        19,
        20,
        *range(23, 36),
        37,
        *range(39, 48),
        *range(49, 59),
        67,
    ]
    assert [r.slice_index for r in by_split["train"]] == train_indices
    keys = [r.key for r in medseg_records]
    assert keys == sorted(keys) and len(set(keys)) == 98
    assert 22 not in {r.slice_index for r in medseg_records}
    for split, (ggo, consolidation) in {"train": (48, 39), "test": (48, 38)}.items():
        assert sum("ggo" in r.labels for r in by_split[split]) == ggo
        assert sum("consolidation" in r.labels for r in by_split[split]) == consolidation


@pytest.mark.shared_data
def test_medseg_semiseg_masks_align(medseg_records):
    for record in medseg_records:
        assert record.image.dtype == np.uint8 and record.intensity == "display"
        assert set(record.masks) == {"infection", "ggo", "consolidation"}
        for mask in record.masks.values():
            assert mask.shape == record.image.shape and set(np.unique(mask)) <= {0, 1}
        # README: binary GT == (multi-class GT > 0) on all 98 slices.
        np.testing.assert_array_equal(
            record.masks["infection"], record.masks["ggo"] | record.masks["consolidation"]
        )
        assert record.patient_id is None and record.volume_id is None
    first = medseg_records[0]
    np.testing.assert_array_equal(first.image, read_image(first.path).T)


@pytest.mark.shared_data
def test_lidc_subset(shared_data):
    records = list(LidcNoduleSlices(shared_data / "nodule-lidc").records())
    assert [r.key for r in records] == sorted(r.key for r in records)
    per_patient = collections.Counter(r.patient_id for r in records)
    assert per_patient == {
        f"LIDC-IDRI-000{k}": n for k, n in zip(range(1, 9), [8, 28, 24, 4, 7, 9, 24, 4], strict=True)
    }
    assert sum(bool(r.labels) for r in records) == 92
    ratings = collections.defaultdict(set)
    for record in records:
        ratings[record.patient_id] |= {int(label.split("_")[1]) for label in record.labels}
        assert record.image.shape == (512, 512) and record.masks["nodule"].shape == (512, 512)
    assert {p[-1]: r for p, r in ratings.items()} == {
        "1": {5}, "2": {5}, "7": {5}, "3": {2, 4, 5}, "4": {1}, "5": {2, 3}, "6": {2, 3}, "8": {3},
    }  # fmt: skip
    areas = [int(r.masks["nodule"].sum()) for r in records]
    assert min(areas) == 10 and max(areas) == 924


@pytest.mark.shared_data
def test_msd_subset(shared_data):
    records = list(MsdLungPatches(shared_data / "tumour-msd-patches").records())
    assert collections.Counter(r.split for r in records) == {"val": 130, "test": 130}
    assert collections.Counter(r.patient_id for r in records if r.labels) == {
        "val_patches": 111,
        "test_patches": 117,
    }
    assert {r.image.shape for r in records} == {(48, 48)} and {r.image.dtype for r in records} == {
        np.dtype(np.float32)
    }
    assert all(set(np.unique(r.masks["tumour"])) <= {0, 1} for r in records)


def _msd_layout(root):
    write_patches(root / "val_patches.h5", np.zeros((1, 1, 4, 4)))


@pytest.mark.parametrize(
    ("adapter", "write_layout"),
    [
        (MedSegCovidCt, medseg_download),
        (ZenodoCovidCtSeg, zenodo_download),
        (LidcNoduleSlices, lidc_slice),
        (MsdLungPatches, _msd_layout),
    ],
    ids=["medseg", "zenodo", "lidc", "msd_patches"],
)
def test_phantom_marker_sets_synthetic(tmp_path, adapter, write_layout):
    write_layout(tmp_path)
    assert not next(adapter(tmp_path).records()).synthetic
    (tmp_path / "SYNTHETIC.txt").write_text("SYNTHETIC PHANTOM\n")
    assert all(record.synthetic for record in adapter(tmp_path).records())


def test_zenodo_radiopaedia_series_of_one_patient_share_a_patient_id():
    from data_prep.adapters.zenodo import patient_of

    assert patient_of("radiopaedia_10_85902_1") == patient_of("radiopaedia_10_85902_3") == "radiopaedia_10"
    assert patient_of("radiopaedia_29_86490_1") == patient_of("radiopaedia_29_86491_1") == "radiopaedia_29"
    assert patient_of("radiopaedia_4_85506_1") != patient_of("radiopaedia_40_86625_0")
    assert patient_of("coronacases_001") == "coronacases_001"
