"""Cohort reports: finding scans, one folder and one cohort.csv row per scan, error rows, re-runs, exit status."""

import csv
import subprocess
import sys

import numpy as np
import pytest

from data_prep.errors import DataError
from data_prep.io import write_nifti
from experiments.pipelines.report import load_models
from experiments.pipelines.report_cohort import find_scans, run_cohort
from tests.conftest import REPO_ROOT
from tests.data_prep.dicom_series import axis_aligned_lps, write_series
from tests.experiments.pipelines.report import stubs


def write_cohort(root):
    """cohort/: a good LPS NIfTI, a DICOM series, a placeholder-affine NIfTI, an all-zero one, a text file."""
    image = stubs.encoded_volume()["image"]
    (root / "patient3").mkdir(parents=True)
    write_nifti(root / "good.nii.gz", image[::-1, ::-1, :], stubs.LPS)
    write_series(
        root / "patient2" / "series",
        stubs.display_to_hu(image.astype(float))[::-1, ::-1, :],
        axis_aligned_lps(stubs.SPACING),
    )
    write_nifti(root / "patient3" / "restacked.nii", image, np.eye(4))
    write_nifti(root / "zeros.nii.gz", np.zeros_like(image), stubs.LPS)
    (root / "notes.txt").write_text("not a scan")
    return root


def read_rows(path):
    with open(path, newline="") as stream:
        return {row["scan"]: row for row in csv.DictReader(stream)}


def test_find_scans_walks_folders_expands_globs_and_keeps_names_apart(tmp_path):
    root = write_cohort(tmp_path / "cohort")
    (tmp_path / "other").mkdir()
    write_nifti(tmp_path / "other" / "good.nii.gz", np.zeros((2, 2, 2), np.int16), stubs.LPS)
    scans = find_scans([root, str(tmp_path / "other" / "*.nii.gz")])
    assert {name: path.relative_to(tmp_path).as_posix() for name, path in scans.items()} == {
        "good": "cohort/good.nii.gz",
        "series": "cohort/patient2/series",  # a DICOM folder is one scan, not searched further
        "restacked": "cohort/patient3/restacked.nii",
        "zeros": "cohort/zeros.nii.gz",
        "good-2": "other/good.nii.gz",
    }
    assert find_scans([root / "patient2" / "series"]) == {"series": root / "patient2" / "series"}
    with pytest.raises(DataError, match="matches no file or folder"):
        find_scans([str(tmp_path / "nothing*.nii.gz")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no .nii / .nii.gz file or DICOM series"):
        find_scans([tmp_path / "empty"])


def test_a_cohort_gives_a_row_per_scan_an_error_row_for_a_bad_one_and_skips_done_scans(
    tmp_path, report_models, report_model_files, capsys
):
    scans = find_scans([write_cohort(tmp_path / "cohort")])
    result = run_cohort(scans, tmp_path / "out", report_models, progress=False)
    assert (result.failed, result.skipped) == (1, 0)
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {scans['zeros']}: every voxel is 0; an empty volume, not a CT scan"]

    rows = read_rows(tmp_path / "out" / "cohort.csv")
    assert list(rows) == ["good", "series", "restacked", "zeros"]
    for name in ("good", "series"):  # real spacing: mL and voxels, hand counts of the encoded volume
        row = rows[name]
        assert (row["status"], row["unit"], row["warnings"], row["error"]) == ("ok", "ml", "", "")
        assert float(row["lung_right_ml"]) == pytest.approx(
            1120 * stubs.VOXEL_ML, abs=5e-4
        )  # rounded to 3 decimals
        assert (row["lung_right_voxels"], row["lung_left_voxels"], row["lung_total_voxels"]) == (
            "1120",
            "960",
            "2080",
        )
        assert (
            row["infection_right_voxels"],
            row["infection_left_voxels"],
            row["infection_total_voxels"],
        ) == (
            "48",
            "8",
            "56",
        )
        assert (row["infection_total_voxels"], row["outside_lungs_not_counted_voxels"]) == ("56", "36")
        assert float(row["infection_total_ml"]) == pytest.approx(56 * stubs.VOXEL_ML, abs=5e-4)
        assert float(row["infected_percent_total"]) == pytest.approx(100 * 56 / 2080, abs=1e-3)
        assert (row["severity_right"], row["severity_left"], row["severity_score"], row["grade"]) == (
            "1",
            "1",
            "2",
            "mild",
        )
        assert row["model_lung_sha256"] == report_models.records[0]["sha256"]
        assert row["model_infection_sha256"] == report_models.records[1]["sha256"]
    placeholder = rows["restacked"]
    assert (placeholder["unit"], placeholder["lung_right_ml"], placeholder["lung_total_voxels"]) == (
        "voxels",
        "",
        "2080",
    )
    assert placeholder["warnings"].startswith("the affine is the identity, which looks like a placeholder")
    assert rows["zeros"]["status"] == "error" and rows["zeros"]["lung_right_ml"] == ""
    assert "every voxel is 0" in rows["zeros"]["error"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "cohort.csv",
        "good",
        "restacked",
        "series",
    ]

    report_json = tmp_path / "out" / "good" / "report.json"
    written_at = report_json.stat().st_mtime_ns
    again = run_cohort(scans, tmp_path / "out", report_models, progress=False)
    assert (again.failed, again.skipped) == (1, 3)  # the bad scan is tried again
    assert report_json.stat().st_mtime_ns == written_at
    assert read_rows(tmp_path / "out" / "cohort.csv") == rows

    other = stubs.save_band_model(tmp_path / "other_run", "infection", 160 / 255, 2.0)
    changed = run_cohort(
        scans, tmp_path / "out", load_models(report_model_files["lung"], other), progress=False
    )
    assert changed.skipped == 0  # other models: every scan is reported again
    assert report_json.stat().st_mtime_ns != written_at


def run_report_command(*arguments):
    return subprocess.run(
        [sys.executable, "-m", "experiments", "report", *map(str, arguments)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_command_refuses_nan_zero_and_mask_scans_in_one_line_each_and_reports_the_rest(
    tmp_path, report_model_files
):
    cohort = tmp_path / "cohort"
    cohort.mkdir()
    write_nifti(cohort / "a_good.nii.gz", stubs.encoded_volume()["image"][::-1, ::-1, :], stubs.LPS)
    write_nifti(cohort / "b_mask.nii.gz", stubs.expected_masks(stubs.encoded_volume())[0], stubs.LPS)
    write_nifti(cohort / "c_nan.nii.gz", stubs.nan_volume(), stubs.LPS)
    write_nifti(cohort / "d_zeros.nii.gz", np.zeros((40, 32, 6), np.int16), stubs.LPS)
    result = run_report_command(
        cohort,
        "--lung-model",
        report_model_files["lung"],
        "--infection-model",
        report_model_files["infection"],
        "--out",
        tmp_path / "out",
    )
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 3
    assert (
        errors[0]
        == f"error: {cohort / 'b_mask.nii.gz'}: only 3 distinct values (0, 1, 2): a label mask, not a CT scan"
    )
    assert errors[1].startswith(f"error: {cohort / 'c_nan.nii.gz'}: 192 ") and "NaN" in errors[1]
    assert (
        errors[2] == f"error: {cohort / 'd_zeros.nii.gz'}: every voxel is 0; an empty volume, not a CT scan"
    )
    lines = result.stdout.splitlines()
    assert lines[0] == (
        f"a_good: lungs {2080 * stubs.VOXEL_ML:.1f} mL, infection {56 * stubs.VOXEL_ML:.1f} mL (2.7% of the lungs), "
        f"grade mild; outside the lungs: {36 * stubs.VOXEL_ML:.1f} mL, not counted"
    )
    assert lines[-1] == f"4 scan(s): 1 reported, 0 already done, 3 failed; {tmp_path / 'out' / 'cohort.csv'}"
    statuses = {name: row["status"] for name, row in read_rows(tmp_path / "out" / "cohort.csv").items()}
    assert statuses == {"a_good": "ok", "b_mask": "error", "c_nan": "error", "d_zeros": "error"}


def test_the_command_rejects_a_missing_model_in_one_line_and_writes_nothing(tmp_path):
    result = run_report_command(
        tmp_path / "missing.nii.gz", "--lung-model", tmp_path / "lung.keras", "--out", tmp_path / "out"
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == f"error: {tmp_path / 'lung.keras'}: no such model file"
    assert not (tmp_path / "out").exists()
