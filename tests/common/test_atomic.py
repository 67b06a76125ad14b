"""`common.atomic`: all-or-nothing files and folders."""

import json

import pytest

from common.atomic import atomic_path, atomic_write_json, atomic_write_text, replace_folder, staged_folder


def test_atomic_write_text_replaces_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out" / "a.txt"
    atomic_write_text(target, "first")
    atomic_write_text(target, "second")
    assert target.read_text() == "second"
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.txt"]


def test_atomic_path_keeps_old_file_when_the_block_raises(tmp_path):
    target = tmp_path / "a.json"
    atomic_write_json(target, {"n": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as temporary:
        temporary.write_text("half")
        raise RuntimeError("crash")
    assert json.loads(target.read_text()) == {"n": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_atomic_path_suffix_and_folder(tmp_path):
    with atomic_path(tmp_path / "scan.nii.gz", suffix=".nii.gz") as temporary:
        assert temporary.name.endswith(".nii.gz") and not temporary.exists()
        temporary.write_bytes(b"x")
    with atomic_path(tmp_path / "folder") as temporary:
        temporary.mkdir()
        (temporary / "f").write_text("1")
    assert (tmp_path / "folder" / "f").read_text() == "1"


def test_staged_folder_publishes_only_on_success(tmp_path):
    out = tmp_path / "out"
    with staged_folder(out) as staging:
        (staging / "a").write_text("1")
    with pytest.raises(ValueError), staged_folder(out) as staging:
        (staging / "b").write_text("2")
        raise ValueError
    assert sorted(p.name for p in out.iterdir()) == ["a"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_replace_folder_swaps_whole_folder(tmp_path):
    out, staging = tmp_path / "out", tmp_path / "new"
    out.mkdir()
    (out / "old").write_text("o")
    staging.mkdir()
    (staging / "new").write_text("n")
    replace_folder(staging, out)
    assert sorted(p.name for p in out.iterdir()) == ["new"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
