import os
import subprocess
import sys
from pathlib import Path

import pytest

from data_prep import phantoms, splits

REPO_ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(
        [sys.executable, "-m", "data_prep", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def phantom_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "phantoms"
    result = _run(
        "phantom",
        str(out),
        "--cases",
        "2",
        "--size",
        "64",
        "--slices",
        "8",
        "--kinds",
        "zenodo",
        "covid_qu_ex",
        "medseg",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"SYNTHETIC PHANTOM zenodo: {out / 'zenodo'}",
        f"SYNTHETIC PHANTOM covid_qu_ex: {out / 'covid_qu_ex'}",
        f"SYNTHETIC PHANTOM medseg: {out / 'medseg'}",
    ]
    return out


def test_phantom_writes_marked_roots(phantom_dir):
    assert sorted(p.name for p in phantom_dir.iterdir()) == ["covid_qu_ex", "medseg", "zenodo"]
    assert phantoms.is_synthetic(phantom_dir / "zenodo")
    assert len(list((phantom_dir / "zenodo" / "COVID-19-CT-Seg_20cases").iterdir())) == 2


def test_phantom_into_existing_root_fails_with_one_line(phantom_dir):
    result = _run("phantom", str(phantom_dir), "--kinds", "zenodo")
    assert result.returncode == 2
    assert (
        result.stderr
        == f"error: {phantom_dir / 'zenodo'}: already exists; remove it or pass overwrite (--force)\n"
    )


def test_split_patient_wise_on_zenodo_phantom(phantom_dir, tmp_path):
    out = tmp_path / "split.csv"
    result = _run("split", "zenodo", str(phantom_dir / "zenodo"), str(out), "--folds", "2", "--seed", "1")
    assert result.returncode == 0, result.stderr
    assert "warning:" not in result.stderr
    table = splits.load_split(out)
    assert len(table) == 2 * 8 and set(table["group_kind"]) == {"patient"}
    # two cases, two folds: each case is one fold
    assert table.groupby("patient_id")["fold"].agg(set).to_dict() in (
        {"phantom_001": {0}, "phantom_002": {1}},
        {"phantom_001": {1}, "phantom_002": {0}},
    )


def test_split_without_patient_ids_warns_and_records_image_groups(phantom_dir, tmp_path):
    out = tmp_path / "split.csv"
    result = _run(
        "split", "covid_qu_ex", str(phantom_dir / "covid_qu_ex"), str(out), "--val", "0.25", "--test", "0.25"
    )
    assert result.returncode == 0, result.stderr
    warning = (
        "warning: 24 of 24 records have no patient id; they are split image by image (group_kind=image), "
        "so images of one patient may land in different splits"
    )
    assert warning in result.stderr.splitlines()
    table = splits.load_split(out)
    assert set(table["group_kind"]) == {"image"}
    # 8 images per class: 2 test, 2 val, 4 train each
    assert table.groupby(["label", "split"]).size().to_dict() == {
        (label, split): n
        for label in phantoms.XRAY_CLASSES
        for split, n in (("test", 2), ("train", 4), ("val", 2))
    }


def test_split_keeps_slices_of_one_volume_together_without_patient_ids(phantom_dir, tmp_path):
    out = tmp_path / "split.csv"
    result = _run("split", "medseg", str(phantom_dir / "medseg"), str(out), "--seed", "3")
    assert result.returncode == 0, result.stderr
    table = splits.load_split(out)
    volumes = table[table["key"].str.startswith("rp_")]
    # MedSeg has no patient ids; the Radiopaedia volumes group by volume id, the stacked slices by image
    assert len(volumes) == 2 * 8 and set(volumes["group_kind"]) == {"inferred"}
    assert volumes.groupby("patient_id")["split"].nunique().to_dict() == {"rp_1": 1, "rp_2": 1}
    slices = table[~table["key"].str.startswith("rp_")]
    assert set(slices["group_kind"]) == {"image"} and slices["patient_id"].isna().all()


def test_split_on_a_bad_path_exits_2_with_one_line_and_no_output(tmp_path):
    out = tmp_path / "split.csv"
    missing = tmp_path / "no_such_folder"
    result = _run("split", "zenodo", str(missing), str(out))
    assert result.returncode == 2
    assert result.stderr == f"error: {missing}: not a folder; expected the zenodo dataset root\n"
    assert list(tmp_path.iterdir()) == []


def test_unknown_dataset_exits_2_with_one_line(tmp_path):
    result = _run("inspect", "no_such_set", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.startswith("error: unknown dataset 'no_such_set'; known: ")
    assert result.stderr.count("\n") == 1


def test_list_and_inspect(phantom_dir):
    listed = _run("list")
    assert listed.returncode == 0
    assert {"covid_qu_ex", "lidc", "medseg", "zenodo"} <= set(listed.stdout.split())
    inspected = _run("inspect", "covid_qu_ex", str(phantom_dir / "covid_qu_ex"))
    assert inspected.returncode == 0, inspected.stderr
    assert inspected.stdout.startswith(f"dataset covid_qu_ex at {phantom_dir / 'covid_qu_ex'}: 24 records")
