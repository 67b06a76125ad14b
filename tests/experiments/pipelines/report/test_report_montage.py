"""The report montage: orientation letters from the affine, slice choice, and the written figure."""

import numpy as np

from data_prep.io import read_nifti, write_nifti
from experiments.pipelines.report import write_report
from experiments.pipelines.report_montage import montage_slices, orientation_letters
from tests.experiments.pipelines.report.stubs import LPS, encoded_volume


def rotation_z(degrees: float, spacing: float = 0.8) -> np.ndarray:
    angle = np.deg2rad(degrees)
    affine = np.eye(4)
    affine[:2, :2] = spacing * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return affine


def test_letters_of_an_axis_aligned_affine_are_radiological():
    """Patient right on the image's left, anterior up."""
    letters = orientation_letters(np.diag([0.8, 0.8, 2.5, 1.0]))
    assert letters == {"top": "A", "bottom": "P", "left": "R", "right": "L"}


def test_letters_of_an_oblique_affine_name_both_directions():
    """Rotated 30 degrees about z: image up = (-sin, cos) = anterior and a half to the patient's left."""
    letters = orientation_letters(rotation_z(30))
    assert letters == {"top": "AL", "bottom": "PR", "left": "RA", "right": "LP"}


def test_letters_of_an_lps_stored_file_come_from_its_canonical_affine(tmp_path):
    path = tmp_path / "lps.nii.gz"
    write_nifti(path, np.zeros((4, 4, 4), np.int16), LPS)
    assert orientation_letters(read_nifti(path).affine) == {
        "top": "A",
        "bottom": "P",
        "left": "R",
        "right": "L",
    }


def test_slices_by_infection_burden_and_evenly_spaced():
    burden = np.zeros(40, int)
    burden[[10, 11, 25, 30]] = [50, 60, 5, 20]  # 11 and 10 are neighbours: only the larger is taken
    lung = np.zeros(40, bool)
    lung[4:36] = True
    picks = montage_slices(burden, lung, count=8)
    assert [k for k, why in picks if why == "most infection"] == [11, 25, 30]
    assert [k for k, why in picks if why == "evenly spaced"] == [4, 12, 20, 27, 35]


def test_slices_without_infection_are_evenly_spaced_over_the_lungs():
    lung = np.zeros(20, bool)
    lung[5:15] = True
    assert montage_slices(np.zeros(20, int), lung, count=4) == [
        (5, "evenly spaced"),
        (8, "evenly spaced"),
        (11, "evenly spaced"),
        (14, "evenly spaced"),
    ]


def test_the_montage_is_a_png_with_the_figure(tmp_path, report_models):
    path = tmp_path / "scan.nii.gz"
    write_nifti(path, encoded_volume()["image"][::-1, ::-1, :], LPS)
    write_report(path, tmp_path / "report", report_models)
    png = (tmp_path / "report" / "montage.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    # the lungs span slices 1-4: four tiles in one row of 3.2 x 3.4 in, plus title and legend, at 100 dpi
    assert (width, height) == (1280, 430)
