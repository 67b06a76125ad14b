"""`common.bundle`: the one run-folder format, written and read back for both kinds."""

from __future__ import annotations

import json

import pytest

from common.bundle import BUNDLE_NAME, checked_dependency, dependency, read_bundle, write_bundle
from data_prep.errors import DataError
from tests.segmentation.seg_helpers import write_disks
from tfrecords.manifest import load_manifest, sha256_file


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return load_manifest(write_disks(tmp_path_factory.mktemp("disks")))


def test_a_bundle_round_trips_and_names_its_kind(tmp_path, manifest):
    model = tmp_path / "best.keras"
    model.write_bytes(b"weights")
    threshold = {"thresholds": [0.3], "split": "val"}
    write_bundle(model, (64, 48, 1), "classifier", threshold, manifest, {"task": "binary"})
    bundle = read_bundle(model, "classifier")
    assert bundle["kind"] == "classifier" and bundle["task"] == "binary" and bundle["threshold"] == threshold
    assert bundle["model"] == {"file": "best.keras", "sha256": sha256_file(model)}
    assert bundle["input"] == {"height": 64, "width": 48, "channels": 1, "scaling": "stored / dtype max"}
    assert bundle["training_data"]["tfrecords"] == str(manifest.directory)
    with pytest.raises(DataError, match="is the bundle of a classifier, not of a segmenter"):
        read_bundle(model, "segmenter")
    assert read_bundle(tmp_path / "elsewhere" / "m.keras", "classifier") is None


def test_a_version_one_segmenter_bundle_still_reads_and_a_foreign_file_does_not(tmp_path):
    model = tmp_path / "best.keras"
    (tmp_path / BUNDLE_NAME).write_text(json.dumps({"format": "covid-repro segmenter bundle", "version": 1}))
    assert read_bundle(model, "segmenter")["kind"] == "segmenter"
    (tmp_path / BUNDLE_NAME).write_text(json.dumps({"format": "something else"}))
    with pytest.raises(DataError, match="not a model bundle"):
        read_bundle(model, "segmenter")


def test_a_dependency_whose_checksum_changed_is_refused(tmp_path):
    lung = tmp_path / "lung" / "best.keras"
    lung.parent.mkdir()
    lung.write_bytes(b"lung weights")
    entry = dependency(lung, tmp_path / "infection")
    assert entry["path"] == "../lung/best.keras"
    bundle_path = tmp_path / "infection" / BUNDLE_NAME
    assert checked_dependency(bundle_path, entry) == lung.resolve()
    lung.write_bytes(b"retrained")
    with pytest.raises(DataError, match="whose SHA-256 differs from the recorded one"):
        checked_dependency(bundle_path, entry)
