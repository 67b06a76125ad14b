"""The CT report's numbers against hand counts: lungs, infection inside and outside them, units, refusals.

Band models stand in for trained segmenters (`stubs`), so every predicted voxel is known; the same
volume in HU (the lung window's inverse), from a rescaled file or a DICOM series, must give the same masks.
"""

import hashlib
import json

import nibabel as nib
import numpy as np
import pytest

from data_prep import phantoms
from data_prep.adapters.zenodo import ZenodoCovidCtSeg
from data_prep.dicom import read_scan
from data_prep.errors import DataError
from data_prep.io import write_nifti
from experiments.pipelines.report import (
    OUTSIDE_LUNGS_OFFSET,
    check_intensity,
    load_models,
    measure,
    run_report,
    write_report,
)
from experiments.pipelines.report_cohort import cohort_row
from tests.data_prep.dicom_series import LPS_TO_RAS, axis_aligned_lps, rotation_x, write_series
from tests.experiments.pipelines.report.stubs import (
    LEFT_LESION,
    LEFT_LUNG,
    LPS,
    OUTSIDE_LESION,
    RIGHT_LESION,
    RIGHT_LUNG,
    SHAPE,
    SPACING,
    VOXEL_ML,
    display_to_hu,
    encoded_volume,
    expected_masks,
    nan_volume,
    save_band_model,
)


def check_every_number(summary: dict, unit_ml: float | None) -> None:
    """Asserts each volume, percentage and score of report.json against the hand counts."""

    def amount(voxels: int) -> dict:
        return {"voxels": voxels} | ({"ml": pytest.approx(voxels * unit_ml)} if unit_ml else {})

    lungs = summary["lungs"]
    assert lungs["right"]["volume"] == amount(RIGHT_LUNG)
    assert lungs["left"]["volume"] == amount(LEFT_LUNG)
    assert lungs["total"]["volume"] == amount(RIGHT_LUNG + LEFT_LUNG)
    assert lungs["right"]["infection"] == amount(RIGHT_LESION)
    assert lungs["left"]["infection"] == amount(LEFT_LESION)
    assert lungs["total"]["infection"] == amount(RIGHT_LESION + LEFT_LESION)  # the outside lesion is not in
    assert lungs["right"]["infected_percent"] == pytest.approx(100 * 48 / 1120)  # 4.29% -> score 1
    assert lungs["left"]["infected_percent"] == pytest.approx(100 * 8 / 960)  # 0.83% -> score 1
    assert lungs["total"]["infected_percent"] == pytest.approx(100 * 56 / 2080)  # 2.69% -> mild
    assert (lungs["right"]["severity_score"], lungs["left"]["severity_score"]) == (1, 1)
    assert summary["severity"] == {"score": 2, "grade": "mild"}
    assert summary["outside_lungs"] == {"infection": amount(OUTSIDE_LESION), "counted": False}
    assert summary["manifestations"] == {
        "infection": {
            "right": amount(RIGHT_LESION),
            "left": amount(LEFT_LESION),
            "total": amount(RIGHT_LESION + LEFT_LESION),
            "percent_of_lungs": pytest.approx(100 * 56 / 2080),
            "outside_lungs": amount(OUTSIDE_LESION),
        }
    }
    assert summary["unit"] == ("ml" if unit_ml else "voxels")


def test_every_number_of_an_lps_nifti_report_matches_the_hand_counts(
    tmp_path, report_models, report_model_files
):
    volume = encoded_volume()
    path = tmp_path / "scan.nii.gz"
    write_nifti(path, volume["image"][::-1, ::-1, :], LPS)  # LPS storage of the canonical array
    summary = write_report(path, tmp_path / "report", report_models)
    check_every_number(summary, VOXEL_ML)
    assert summary["voxel_ml"] == pytest.approx(VOXEL_ML) and summary["warnings"] == []
    assert summary["schema"] == "covid-ct-report" and summary["schema_version"] == 1
    assert summary["scan"]["intensity"] == "display" and summary["scan"]["format"] == "nifti"
    assert summary["labels"]["infection_mask"] == {
        "1": "infection (inside the lungs, counted)",
        "11": "infection (outside the lungs, not counted)",
    }
    assert [(m["role"], m["name"], m["sha256"]) for m in summary["models"]] == [
        (role, f"{file.parent.name}/best.keras", hashlib.sha256(file.read_bytes()).hexdigest())
        for role, file in report_model_files.items()
    ]
    assert json.loads((tmp_path / "report" / "report.json").read_text()) == json.loads(json.dumps(summary))

    lung, infection = expected_masks(volume)
    for name, expected in (("lung_mask", lung), ("infection_mask", infection)):
        written = nib.load(tmp_path / "report" / f"{name}.nii.gz")
        np.testing.assert_array_equal(
            written.affine, nib.load(path).affine
        )  # the input's affine, voxel order
        np.testing.assert_array_equal(np.asarray(written.dataobj), expected[::-1, ::-1, :])
    text = (tmp_path / "report" / "report.md").read_text()
    assert f"- Outside the lungs: {36 * VOXEL_ML:.1f} mL, not counted" in text
    assert f"- Infection inside the lungs: {56 * VOXEL_ML:.1f} mL (2.7% of the lungs)" in text


def test_hu_stored_with_only_a_rescale_intercept_is_converted_before_windowing(tmp_path, report_models):
    volume = encoded_volume()
    hu = display_to_hu(volume["image"].astype(float))
    image = nib.Nifti1Image((hu + 1024).astype(np.uint16), np.diag([*SPACING, 1.0]))
    image.header.set_slope_inter(1.0, -1024.0)  # raw 0-4095 values; HU only after scl_inter
    nib.save(image, tmp_path / "hu.nii.gz")
    scan = read_scan(tmp_path / "hu.nii.gz")
    report = run_report(scan, tmp_path / "hu.nii.gz", report_models)
    assert report.summary["scan"]["intensity"] == "hu"
    check_every_number(report.summary, VOXEL_ML)


@pytest.mark.parametrize(
    ("affine", "warning"),
    [
        (np.eye(4), "the affine is the identity"),
        (np.diag([-1.0, -1.0, 1.0, 1.0]), "the spacing is 1 x 1 x 1 mm at origin 0"),
    ],
)
def test_placeholder_spacing_gives_voxel_counts_and_a_warning(tmp_path, report_models, affine, warning):
    volume = encoded_volume()
    path = tmp_path / "scan.nii.gz"
    write_nifti(
        path, volume["image"] if np.allclose(affine, np.eye(4)) else volume["image"][::-1, ::-1], affine
    )
    summary = write_report(path, tmp_path / "report", report_models)
    check_every_number(summary, None)
    assert summary["voxel_ml"] is None and "ml" not in json.dumps(summary["lungs"])
    assert summary["warnings"] == [
        f"{warning}, which looks like a placeholder: volumes are voxel counts, not mL"
    ]
    assert "- Outside the lungs: 36 voxels, not counted" in (tmp_path / "report" / "report.md").read_text()


def test_stored_orientation_takes_each_stored_slice_as_the_display_image(tmp_path, report_models):
    """Re-stacked slices (the shared Zenodo layout): array[:, :, k] is the display image itself."""
    volume = encoded_volume()
    path = tmp_path / "restacked.nii.gz"
    stored = np.ascontiguousarray(
        np.stack([volume["image"][:, :, k].T[::-1, ::-1] for k in range(6)], axis=2)
    )
    write_nifti(path, stored, np.eye(4))
    summary = write_report(path, tmp_path / "report", report_models, orientation="stored")
    check_every_number(summary, None)  # the right lung is still the right one
    lung, _ = expected_masks(volume)
    written = np.asarray(nib.load(tmp_path / "report" / "lung_mask.nii.gz").dataobj)
    np.testing.assert_array_equal(written, np.stack([lung[:, :, k].T[::-1, ::-1] for k in range(6)], axis=2))
    assert summary["warnings"][-1].startswith("orientation assumed")


def test_an_oblique_lps_dicom_series_gives_masks_on_its_own_voxel_grid(tmp_path, report_models):
    volume = encoded_volume()
    affine_lps = rotation_x(20) @ axis_aligned_lps(SPACING)
    # DICOM grid (i, j, k): i towards the patient's left, j posterior = canonical x and y reversed
    write_series(tmp_path / "series", display_to_hu(volume["image"].astype(float))[::-1, ::-1, :], affine_lps)
    summary = write_report(tmp_path / "series", tmp_path / "report", report_models)
    check_every_number(summary, VOXEL_ML)
    assert summary["scan"]["format"] == "dicom" and summary["scan"]["intensity"] == "hu"
    lung, infection = expected_masks(volume)
    for name, expected in (("lung_mask", lung), ("infection_mask", infection)):
        written = nib.load(tmp_path / "report" / f"{name}.nii.gz")
        np.testing.assert_allclose(written.affine, LPS_TO_RAS @ affine_lps, atol=1e-5)
        np.testing.assert_array_equal(np.asarray(written.dataobj), expected[::-1, ::-1, :])


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (nan_volume, "192 "),  # "192 voxels are NaN ..." here, or the NIfTI reader's own "192 of ... NaN"
        (lambda: np.zeros(SHAPE, np.int16), "every voxel is 0; an empty volume, not a CT scan"),
        (
            lambda: expected_masks(encoded_volume())[0],
            "only 3 distinct values (0, 1, 2): a label mask, not a CT scan",
        ),
        (
            lambda: encoded_volume()["image"] / 255.0,
            "values 0.0196078 to 0.960784 are neither Hounsfield units",
        ),
    ],
    ids=["nan", "all-zero", "mask", "0-1 floats"],
)
def test_inputs_that_are_neither_hu_nor_display_values_are_refused(tmp_path, make, problem):
    path = tmp_path / "bad.nii.gz"
    write_nifti(path, make(), np.diag([*SPACING, 1.0]))
    with pytest.raises(DataError) as error:
        check_intensity(read_scan(path).array, path)
    assert str(error.value).startswith(f"{path}: {problem}")
    assert make is not nan_volume or "NaN" in str(error.value)


def test_phantom_lesion_and_lung_volumes_are_recovered_from_its_masks(tmp_path):
    """The report's bookkeeping on a phantom's own masks (read back from NIfTI) recovers the phantom's
    known volumes within 0.01 mL (the phantom records them from the same voxels)."""
    root = phantoms.generate(tmp_path, kinds=("zenodo",), n_cases=1, seed=3, size=64, slices=16)["zenodo"]
    truth = json.loads((root / phantoms.TRUTH_FILE).read_text())["cases"]["phantom_001"]
    (volume,) = ZenodoCovidCtSeg(root).volumes()
    voxel_ml = float(np.prod(volume.spacing_mm)) / 1000
    summary = measure(volume.masks["lung"] > 0, volume.masks["infection"], voxel_ml, ("infection",))
    lungs = summary["lungs"]
    assert lungs["total"]["infection"]["ml"] == pytest.approx(truth["infection_ml"], abs=0.01)
    assert lungs["total"]["volume"]["ml"] == pytest.approx(sum(truth["lung_ml"].values()), abs=0.01)
    assert lungs["left"]["volume"]["ml"] == pytest.approx(truth["lung_ml"]["left"], rel=0.05)
    assert lungs["right"]["volume"]["ml"] == pytest.approx(truth["lung_ml"]["right"], rel=0.05)
    assert summary["outside_lungs"]["infection"]["voxels"] == 0  # phantom infection lies in the lungs


@pytest.mark.shared_data
def test_a_shared_zenodo_volume_is_reported_in_voxels_on_its_own_grid(shared_data, tmp_path):
    path = shared_data / "ct-lung-infection-zenodo" / "ct" / "CC06_part1.nii.gz"
    dark = save_band_model(tmp_path / "dark_run", "lung", -1.0, 0.3, size=(256, 256))  # a crude lung stand-in
    summary = write_report(path, tmp_path / "report", load_models(dark), orientation="stored")
    assert summary["unit"] == "voxels" and summary["scan"]["intensity"] == "display"
    assert summary["warnings"][0] == (
        "the affine is the identity, which looks like a placeholder: volumes are voxel counts, not mL"
    )
    written = nib.load(tmp_path / "report" / "lung_mask.nii.gz")
    source = nib.load(path)
    assert written.shape == source.shape
    np.testing.assert_array_equal(written.affine, source.affine)
    dark_voxels = int((np.asarray(source.dataobj) < 0.3 * 255).sum())  # the stand-in's lung, counted by hand
    assert summary["lungs"]["total"]["volume"] == {"voxels": dark_voxels}


def test_stream_models_give_one_row_per_manifestation_and_outside_labels_10_plus_k(
    tmp_path, report_model_files
):
    """GGO stream: the inside lesions (170-190); consolidation stream: the outside lesion (225-245)."""
    streams = {
        "ggo": save_band_model(tmp_path / "ggo_run", "ggo", 150 / 255, 210 / 255),
        "consolidation": save_band_model(tmp_path / "consolidation_run", "consolidation", 215 / 255, 2.0),
    }
    models = load_models(report_model_files["lung"], streams=streams)
    path = tmp_path / "scan.nii.gz"
    write_nifti(path, encoded_volume()["image"][::-1, ::-1, :], LPS)
    summary = write_report(path, tmp_path / "report", models)
    ggo, consolidation = summary["manifestations"]["ggo"], summary["manifestations"]["consolidation"]
    assert (ggo["right"]["voxels"], ggo["left"]["voxels"], ggo["outside_lungs"]["voxels"]) == (48, 8, 0)
    assert (consolidation["total"]["voxels"], consolidation["outside_lungs"]["voxels"]) == (0, 36)
    assert summary["lungs"]["total"]["infection"]["voxels"] == 56
    assert summary["outside_lungs"]["infection"]["voxels"] == 36
    assert [m["role"] for m in summary["models"]] == ["lung", "stream:ggo", "stream:consolidation"]
    written = to_canonical(np.asarray(nib.load(tmp_path / "report" / "infection_mask.nii.gz").dataobj))
    volume = encoded_volume()
    assert set(np.unique(written[volume["right_lesion"] | volume["left_lesion"]])) == {1}  # ggo, inside
    assert set(np.unique(written[volume["outside"]])) == {OUTSIDE_LUNGS_OFFSET + 2}  # consolidation, outside
    assert summary["labels"]["infection_mask"]["12"] == "consolidation (outside the lungs, not counted)"
    row = cohort_row("scan", summary)
    assert (row["ggo_right_voxels"], row["ggo_left_voxels"], row["consolidation_total_voxels"]) == (48, 8, 0)
    assert row["ggo_total_ml"] == round(56 * VOXEL_ML, 3)


def to_canonical(stored_lps: np.ndarray) -> np.ndarray:
    return stored_lps[::-1, ::-1, :]


def test_an_unknown_stream_manifestation_is_refused(report_model_files):
    with pytest.raises(DataError, match="unknown stream manifestation; known: ggo, consolidation, effusion"):
        load_models(report_model_files["lung"], streams={"nodule": report_model_files["infection"]})
