"""Wrong input is refused with one line, and nothing half-written (issue 14, patterns 2 to 5 and 9).

Everything here is SYNTHETIC: hand-made volumes, the disk TFRecords of the segmentation tests and
two-layer models.
"""

from __future__ import annotations

import json
import re

import cv2
import h5py
import keras
import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from classification.__main__ import main as classification_main
from common.shard_checks import verify_shards
from data_prep.errors import DataError
from data_prep.io import read_h5, read_nifti, read_npy, read_npz
from segmentation.__main__ import main as segmentation_main
from tests.segmentation.seg_helpers import bright_pixel_model, write_disks
from tfrecords.manifest import load_manifest


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    return err.strip()


@pytest.fixture(scope="module")
def disks(tmp_path_factory):
    return write_disks(tmp_path_factory.mktemp("disks"))


@pytest.fixture(scope="module")
def classifier_file(tmp_path_factory):
    inputs = keras.Input((32, 32, 1))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(pooled))
    path = tmp_path_factory.mktemp("classifier") / "classifier.keras"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def segmenter_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("segmenter") / "best.keras"
    bright_pixel_model(32).save(path)
    (path.parent / "config.json").write_text(
        json.dumps({"channel_names": ["infection"], "multiclass": False})
    )
    return path


def test_every_array_reader_refuses_nan_and_inf(tmp_path):
    volume = np.zeros((4, 4, 3), np.float32)
    volume[1, 2, 0], volume[0, 0, 2] = np.nan, np.inf
    nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / "ct.nii.gz")
    np.savez(tmp_path / "a.npz", image=volume)
    np.save(tmp_path / "a.npy", volume)
    with h5py.File(tmp_path / "a.h5", "w") as file:
        file["image"] = volume
    message = "2 of 48 values are not finite (1 NaN, 1 infinite)"
    for read, path in (
        (read_nifti, tmp_path / "ct.nii.gz"),
        (lambda p: read_npz(p, "image"), tmp_path / "a.npz"),
        (read_npy, tmp_path / "a.npy"),
        (lambda p: read_h5(p, "image"), tmp_path / "a.h5"),
    ):
        with pytest.raises(DataError, match=f"^{re.escape(f'{path}: {message}')}$"):
            read(path)
    volume[1, 2, 0] = volume[0, 0, 2] = 0.5
    nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / "ct.nii.gz")
    assert read_nifti(tmp_path / "ct.nii.gz").array.shape == (4, 4, 3)


def test_a_4d_volume_is_named_as_such_and_a_unit_4th_axis_is_accepted(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 3, 2), np.int16), np.eye(4)), tmp_path / "ct.nii.gz")
    with pytest.raises(
        DataError, match=re.escape("NIfTI has 4 dimensions, shape (4, 4, 3, 2); expected a 3D")
    ):
        read_nifti(tmp_path / "ct.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 3, 1), np.int16), np.eye(4)), tmp_path / "ct.nii.gz")
    assert read_nifti(tmp_path / "ct.nii.gz").array.shape == (4, 4, 3)


def test_a_corrupt_shard_is_named_before_evaluation_reads_it(tmp_path, disks, segmenter_file, capsys):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(disks, data)
    shard = load_manifest(data).shard_paths("test")[0]
    blob = bytearray(shard.read_bytes())
    blob[len(blob) // 2] ^= 0xFF  # same size: only the checksum tells
    shard.write_bytes(bytes(blob))
    with pytest.raises(DataError, match="shard SHA-256 differs from manifest.json"):
        verify_shards([data])
    assert verify_shards([data], ["train"]).startswith("verified 2 shards")
    argv = ["evaluate", str(segmenter_file), str(data), str(tmp_path / "eval")]
    assert segmentation_main(argv) == 2
    assert (
        _error_line(capsys)
        == f"error: {shard}: shard SHA-256 differs from manifest.json: the file is corrupt or replaced"
    )
    assert not (tmp_path / "eval").exists()


def test_bad_json_in_a_manifest_names_the_file(tmp_path, disks, segmenter_file, capsys):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(disks, data)
    (data / "manifest.json").write_text('{"schema_version": 2,\n')
    assert segmentation_main(["evaluate", str(segmenter_file), str(data), str(tmp_path / "eval")]) == 2
    assert _error_line(capsys).startswith(
        f"error: {data / 'manifest.json'}: not a readable TFRecord manifest"
    )


def test_a_model_must_fit_the_command(tmp_path, classifier_file, segmenter_file, capsys):
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "a.png"), np.full((32, 32), 200, np.uint8))
    assert segmentation_main(["predict", str(classifier_file), str(images), str(tmp_path / "masks")]) == 2
    assert _error_line(capsys) == (
        f"error: {classifier_file}: this is a classifier (output: batch x classes); "
        "the command needs a segmenter (output: batch x H x W x masks)"
    )
    assert classification_main(["predict", str(segmenter_file), str(images), str(tmp_path / "p.csv")]) == 2
    assert (
        "this is a segmenter (output: batch x H x W x masks); the command needs a classifier"
        in _error_line(capsys)
    )
    not_a_model = tmp_path / "notes.keras"
    not_a_model.write_text("hello")
    assert classification_main(["predict", str(not_a_model), str(images), str(tmp_path / "p.csv")]) == 2
    assert _error_line(capsys).startswith(f"error: {not_a_model}: not a usable Keras model file")
    assert not (tmp_path / "masks").exists() and not (tmp_path / "p.csv").exists()


def test_segmentation_predict_on_a_folder_writes_all_or_nothing(tmp_path, segmenter_file, capsys):
    images = tmp_path / "images"
    images.mkdir()
    for index in range(3):
        cv2.imwrite(str(images / f"img{index}.png"), np.full((32, 32), 200, np.uint8))
    (images / "img9.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)  # the last one is cut short
    out = tmp_path / "masks"
    assert segmentation_main(["predict", str(segmenter_file), str(images), str(out)]) == 2
    assert "img9.png: not a readable image" in _error_line(capsys)
    assert not out.exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    (images / "img9.png").unlink()
    assert segmentation_main(["predict", str(segmenter_file), str(images), str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [f"img{k}_infection.png" for k in range(3)]


def test_classification_predict_reads_class_folders_and_skips_stray_files(tmp_path, classifier_file):
    images = tmp_path / "images"
    for folder, value in (("COVID", 200), ("NonCOVID", 40)):
        (images / folder).mkdir(parents=True)
        for index in range(2):
            cv2.imwrite(str(images / folder / f"{folder}{index}.png"), np.full((32, 32), value, np.uint8))
    (images / "mapping.csv").write_text("file,label\n")
    (images / "COVID" / "Thumbs.db").write_bytes(b"\x00\x01")
    (images / "NonCOVID" / "notes.txt").write_text("scanner B")
    out = tmp_path / "predictions.csv"
    skipped = (
        f"{images}: skipped 3 file(s) that are not images: COVID/Thumbs.db, NonCOVID/notes.txt, mapping.csv"
    )
    with pytest.warns(UserWarning, match=f"^{re.escape(skipped)}$"):
        assert classification_main(["predict", str(classifier_file), str(images), str(out)]) == 0
    table = pd.read_csv(out, keep_default_na=False)
    assert list(table["folder"]) == ["COVID", "COVID", "NonCOVID", "NonCOVID"]
    assert [p.rsplit("/", 1)[-1] for p in table["file"]] == [
        "COVID0.png",
        "COVID1.png",
        "NonCOVID0.png",
        "NonCOVID1.png",
    ]
