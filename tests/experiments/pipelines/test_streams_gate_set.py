"""S0 streams: which manifestations the row keeps (from the training split only) and the gate measured
on a second set with lesion-free slices."""

import dataclasses

import numpy as np
import pytest

from data_prep.splits import load_split
from experiments.pipelines.flops import model_flops
from experiments.pipelines.options import GateSetOptions
from experiments.pipelines.streams import (
    GatedStreams,
    GateSetViews,
    choose_manifestations,
    gate_set_views,
    prepare_gate_set,
    summarise_gate_set,
)
from experiments.registry import get_experiment
from experiments.runner import RunContext
from tests.experiments.pipelines.phantom_rows import phantom_roots, volume_split_file
from tests.experiments.pipelines.streams_models import silent_recogniser, stream
from tfrecords.read_config import ReadConfig
from tfrecords.reader import make_dataset
from tfrecords.writer import write_dataset

MANIFESTATIONS = ("ggo", "consolidation", "effusion")


@pytest.fixture(scope="module")
def medseg(tmp_path_factory):
    """(MedSeg phantom root, its volume split file, split -> its keys)."""
    folder = tmp_path_factory.mktemp("medseg")
    root = phantom_roots(folder / "phantoms")["medseg"]
    split_file = volume_split_file(root, folder / "split.csv")
    table = load_split(split_file)
    return root, split_file, {split: set(keys) for split, keys in table.groupby("split")["key"]}


def _edited_masks(records, keys):
    """No effusion pixel but a 4 x 4 block on the first test record (test pixels must not count);
    consolidation in training only as 3 pixels on the first training record."""
    first_train, first_test = True, True
    for record in records:
        masks = dict(record.masks)
        masks["effusion"] = np.zeros_like(masks["effusion"])
        if record.key in keys["train"]:
            masks["consolidation"] = np.zeros_like(masks["consolidation"])
            if first_train:
                masks["consolidation"][0, :3] = 1
                first_train = False
        elif record.key in keys["test"] and first_test:
            masks["effusion"][10:14, 10:14] = 1
            first_test = False
        yield dataclasses.replace(record, masks=masks)


def _without_effusion(records):
    for record in records:
        yield dataclasses.replace(record, masks={k: v for k, v in record.masks.items() if k != "effusion"})


def test_a_manifestation_the_training_split_lacks_is_dropped_and_named(medseg, tmp_path):
    root, split_file, keys = medseg
    out = tmp_path / "records"
    write_dataset(
        "medseg", root, out, split_file=split_file, records_transform=lambda r: _edited_masks(r, keys)
    )
    read = ReadConfig("test", task="segmentation", batch_size=64, mask_names=["effusion"])
    test_pixels = sum(int(masks.sum()) for _, masks in make_dataset(out, read).as_numpy_iterator())
    assert test_pixels == 16  # present in test, yet decided from training only

    choice = choose_manifestations(out, MANIFESTATIONS, min_pixels=10)
    assert choice.kept == ("ggo",)
    assert choice.dropped == {
        "consolidation": "no training slice with >= 10 pixels (the recogniser's min_pixels; largest 3)",
        "effusion": "no training pixel",
    }
    # At the recogniser's min_pixels of 3 the 3-pixel slice is one positive label: kept.
    assert choose_manifestations(out, MANIFESTATIONS, min_pixels=3).kept == ("ggo", "consolidation")


def test_a_manifestation_without_stored_masks_is_dropped_and_none_left_raises(medseg, tmp_path):
    root, split_file, keys = medseg
    out = tmp_path / "records"
    manifest = write_dataset("medseg", root, out, split_file=split_file, records_transform=_without_effusion)
    count = manifest.split("train").count
    assert count == len(keys["train"])
    choice = choose_manifestations(out, ("effusion", "ggo"), min_pixels=10)
    assert choice.kept == ("ggo",)
    assert choice.dropped == {"effusion": f"mask stored for 0 of {count} training records"}
    with pytest.raises(ValueError, match="no manifestation of \\['effusion'\\]"):
        choose_manifestations(out, ("effusion",), min_pixels=10)


def two_streams(recogniser) -> GatedStreams:
    return GatedStreams(
        recogniser=recogniser,
        streams={"ggo": stream(0.9), "consolidation": stream(0.8)},
        manifestations=("ggo", "consolidation"),
        gate_thresholds={"ggo": 0.5, "consolidation": 0.5},
    )


def test_gate_set_summary_on_hand_made_gates():
    """3 COVID slices (ggo on 2, consolidation on 1) and 2 lesion-free NonCOVID slices (nothing fires)."""
    pipeline = two_streams(silent_recogniser())
    views = GateSetViews(
        keys=np.array(list("abcde")),
        labels=np.array(["COVID", "COVID", "COVID", "NonCOVID", "NonCOVID"]),
        ran={
            "ggo": np.array([True, True, False, False, False]),
            "consolidation": np.array([True, False, False, False, False]),
        },
    )
    summary, table = summarise_gate_set(views, pipeline, lesion_free_class="NonCOVID")
    value = {name: entry["value"] for name, entry in summary.items()}
    r, s = pipeline.recogniser_flops, pipeline.stream_flops["ggo"]
    assert s == model_flops(pipeline.streams["consolidation"]) and r > 0
    assert value["compute_saving_lesion_free"] == pytest.approx(1 - r / (2 * s))
    assert value["compute_saving_covid"] == pytest.approx(1 - (3 * r + 3 * s) / (6 * s))
    assert value["compute_saving_mixed"] == pytest.approx(1 - (5 * r + 3 * s) / (10 * s))
    assert (value["ran_fraction_ggo_covid"], value["ran_fraction_consolidation_covid"]) == (2 / 3, 1 / 3)
    assert (value["ran_fraction_ggo_noncovid"], value["ran_fraction_consolidation_noncovid"]) == (0.0, 0.0)
    assert (value["n_gate_set_covid"], value["n_gate_set_noncovid"]) == (3, 2)
    assert "compute_saving_noncovid" not in value and summary["compute_saving_mixed"]["low"] is None
    assert table.columns.tolist() == ["key", "label", "ran_ggo", "ran_consolidation", "gated_flops"]
    np.testing.assert_array_equal(table["gated_flops"], r + s * np.array([2, 1, 0, 0, 0]))


def _context(tmp_path, *overrides: str) -> RunContext:
    config = get_experiment("s0_streams", ["data.image_size=8", "data.channels=3", *overrides])
    return RunContext(config, tmp_path / "data", tmp_path / "cache", tmp_path / "run", None, None)


def test_a_gate_that_fires_on_nothing_saves_all_but_the_recogniser_on_phantom_gate_set(tmp_path):
    context = _context(tmp_path, "data.phantom=true")
    gate_set = prepare_gate_set(context, GateSetOptions())
    assert gate_set.skipped is None and gate_set.source == {
        "dataset": "image_folder",
        "root": "ct-covid-classification",
    }
    phantom_root = tmp_path / "cache" / "phantoms-seed0" / "image_folder"
    on_disk = {label: len(list((phantom_root / label).iterdir())) for label in ("COVID", "NonCOVID")}

    pipeline = two_streams(silent_recogniser())
    views = gate_set_views(pipeline, gate_set.directory)
    labels, counts = np.unique(views.labels, return_counts=True)
    assert dict(zip(labels.tolist(), counts.tolist(), strict=True)) == on_disk
    assert len(set(views.keys)) == len(views.keys) == sum(on_disk.values())
    summary, _ = summarise_gate_set(views, pipeline, gate_set.lesion_free_class)
    exact = 1 - pipeline.recogniser_flops / (2 * pipeline.stream_flops["ggo"])
    for key in ("compute_saving_mixed", "compute_saving_lesion_free", "compute_saving_covid"):
        assert summary[key]["value"] == pytest.approx(exact, rel=1e-12)
    assert summary["ran_fraction_ggo_noncovid"]["value"] == 0.0


def test_gate_set_skips_with_a_reason_and_rejects_an_unknown_lesion_free_class(tmp_path):
    context = _context(tmp_path, "data.phantom=true")
    assert prepare_gate_set(context, None).skipped == "pipeline_options.gate_set is null"
    no_phantoms = prepare_gate_set(context, GateSetOptions(dataset="covid_ct"))
    assert (no_phantoms.directory, no_phantoms.skipped) == (
        None,
        "data.phantom: no phantoms for dataset 'covid_ct'",
    )
    with pytest.raises(ValueError, match="lesion_free_class 'Healthy' is not a class"):
        prepare_gate_set(context, GateSetOptions(lesion_free_class="Healthy"))
