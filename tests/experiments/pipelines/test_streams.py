import json

import numpy as np
import pandas as pd
import pytest

from data_prep import phantoms
from experiments.pipelines.flops import model_flops
from experiments.pipelines.streams import (
    MANIFESTATION_ORDER,
    GatedStreams,
    GateSet,
    ManifestationChoice,
    SplitViews,
    combine_streams,
    comparison_metrics,
    manifestation_counts,
    summarise,
    truth_label_map,
    write_outputs,
)
from experiments.runner import run_experiment
from segmentation.evaluate import SplitPredictions
from tests.experiments.pipelines.phantom_rows import medseg_overrides, phantom_roots, volume_split_file
from tests.experiments.pipelines.streams_models import stream, top_left_pixel_recogniser


def test_combiner_takes_the_most_probable_claiming_stream_and_breaks_ties_by_order():
    ggo = np.array([[[0.9, 0.6, 0.2, 0.7]]], dtype=np.float32)
    consolidation = np.array([[[0.8, 0.7, 0.3, 0.7]]], dtype=np.float32)
    effusion = np.array([[[0.1, 0.1, 0.4, 0.1]]], dtype=np.float32)
    label_map = combine_streams(
        {"ggo": ggo, "consolidation": consolidation, "effusion": effusion},
        {"ggo": 0.5, "consolidation": 0.5, "effusion": 0.5},
    )
    # pixel 0: ggo highest; 1: consolidation highest; 2: nothing >= 0.5; 3: tie -> ggo (earlier).
    np.testing.assert_array_equal(label_map, [[[1, 2, 0, 1]]])


def test_gating_skips_exactly_the_streams_the_recogniser_rejects():
    gates = np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [0.7, 0.6, 0.9], [0.0, 0.0, 0.0]], dtype=np.float32)
    images = np.zeros((4, 8, 8, 3), dtype=np.float32)
    images[:, 0, 0, :] = gates
    pipeline = GatedStreams(
        recogniser=top_left_pixel_recogniser(),
        streams={"ggo": stream(0.9), "consolidation": stream(0.8), "effusion": stream(0.7)},
        manifestations=("ggo", "consolidation", "effusion"),
        gate_thresholds={"ggo": 0.5, "consolidation": 0.5, "effusion": 0.5},
    )
    gated = pipeline.predict(images, gated=True)
    np.testing.assert_array_equal(gated.ran["ggo"], [True, False, True, False])
    np.testing.assert_array_equal(gated.ran["consolidation"], [False, True, True, False])
    np.testing.assert_array_equal(gated.ran["effusion"], [False, False, True, False])
    stream_runs = sum(int(r.sum()) for r in gated.ran.values())
    assert stream_runs == 5  # of 12 possible
    # Slices where no stream ran are background; where streams ran, the most probable one wins.
    assert set(np.unique(gated.label_map[3])) == {0}
    assert set(np.unique(gated.label_map[1][1:, 1:])) == {2}
    assert set(np.unique(gated.label_map[2][1:, 1:])) == {1}

    ungated = pipeline.predict(images, gated=False)
    assert all(r.all() for r in ungated.ran.values())
    per_stream = model_flops(pipeline.streams["ggo"])
    assert ungated.flops == 12 * per_stream
    assert gated.flops == 4 * model_flops(pipeline.recogniser) + 5 * per_stream
    assert gated.flops < ungated.flops
    assert pytest.approx(1 - gated.flops / ungated.flops) == 7 / 12


def test_truth_label_map_uses_medseg_values_and_the_first_mask_wins():
    masks = np.zeros((1, 1, 3, 2), dtype=np.uint8)  # channels: ggo, effusion
    masks[0, 0, 0] = [1, 0]
    masks[0, 0, 1] = [1, 1]
    masks[0, 0, 2] = [0, 1]
    np.testing.assert_array_equal(truth_label_map(masks, ("ggo", "effusion")), [[[1, 1, 3]]])


def test_comparison_metrics_on_hand_made_label_maps():
    manifestations = ("ggo", "consolidation")
    truth = np.array([[[1, 1, 2, 0]], [[0, 0, 0, 0]]], dtype=np.uint8)  # 2 images of 1 x 4 pixels
    streams = np.array([[[1, 1, 2, 2]], [[0, 0, 0, 0]]], dtype=np.uint8)
    single = np.array([[[1, 0, 0, 0]], [[1, 0, 0, 0]]], dtype=np.uint8)
    arrays = [
        getattr(manifestation_counts(labels, truth, manifestations), part)
        for labels in (streams, single)
        for part in ("tp", "fp", "fn", "tn")
    ]
    values = comparison_metrics(manifestations)(*arrays, np.array([3, 5]), np.array([10, 10]))
    # streams: ggo Dice 1 and 1 (empty/empty); consolidation 2/3 and 1 -> per-image means 1 and 5/6.
    assert values["dice_ggo_streams"] == 1.0
    assert values["dice_consolidation_streams"] == pytest.approx(5 / 6)
    # single: ggo 2/3 and 0; consolidation 0 and 1 (empty/empty).
    assert values["dice_ggo_single"] == pytest.approx(1 / 3)
    assert values["dice_consolidation_single"] == pytest.approx(0.5)
    assert values["dice_gain"] == pytest.approx((1 + 5 / 6) / 2 - (1 / 3 + 0.5) / 2)
    # pooled IoU, background excluded: streams ggo 2/2, consolidation 1/2; single ggo 1/3, consolidation 0/1.
    assert values["miou_streams"] == pytest.approx(0.75)
    assert values["miou_single"] == pytest.approx(1 / 6)
    assert values["miou_gain"] == pytest.approx(0.75 - 1 / 6)
    assert values["compute_saving"] == pytest.approx(1 - 8 / 20)


def test_summarise_and_write_outputs_on_hand_made_views(tmp_path):
    """4 images, cases a, a, b, b; gates: ggo on 0 and 2, consolidation on 1 and 2; every stream
    claims every pixel and ggo wins overlaps, so the gated label maps are all-ggo, all-consolidation,
    all-ggo and background. Truth: all ggo, all consolidation, empty, empty; the single model is exact."""
    gates = np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [0.7, 0.6, 0.0], [0.0, 0.0, 0.0]], dtype=np.float32)
    images = np.zeros((4, 8, 8, 3), dtype=np.float32)
    images[:, 0, 0, :] = gates
    pipeline = GatedStreams(
        recogniser=top_left_pixel_recogniser(),
        streams={"ggo": stream(0.9), "consolidation": stream(0.8)},
        manifestations=("ggo", "consolidation"),
        gate_thresholds={"ggo": 0.5, "consolidation": 0.5},
    )
    masks = np.zeros((4, 8, 8, 2), np.uint8)
    masks[0, ..., 0] = masks[1, ..., 1] = 1
    truth = truth_label_map(masks, pipeline.manifestations)
    test = SplitPredictions(
        images[..., 0],
        np.zeros((4, 8, 8, 3), np.float32),
        masks,
        np.array(list("wxyz")),
        np.array(list("aabb")),
    )
    gated, ungated = pipeline.predict(images, gated=True), pipeline.predict(images, gated=False)
    views = SplitViews(test, truth, truth.copy(), 2.0, 100, gated, ungated)
    summary, per_image = summarise(views, pipeline, n_resamples=50, seed=0)

    value = {name: entry["value"] for name, entry in summary.items()}
    # streams: ggo Dice 1, 1 (empty/empty), 0, 1; consolidation 1 everywhere.
    assert (value["dice_ggo_streams"], value["dice_consolidation_streams"]) == (0.75, 1.0)
    assert (value["dice_streams"], value["dice_single"], value["dice_gain"]) == (0.875, 1.0, -0.125)
    assert value["miou_streams"] == pytest.approx(0.75)  # ggo 64 / (64 + 64), consolidation 1
    # ungated: every image all ggo -> ggo Dice 1, 0, 0, 0; consolidation 1, 0, 1, 1.
    assert (value["dice_ggo_ungated"], value["dice_consolidation_ungated"], value["dice_ungated"]) == (
        0.25,
        0.75,
        0.5,
    )
    assert summary["dice_ungated"]["low"] is None  # not bootstrapped
    assert summary["dice_gain"]["low"] <= -0.125 <= summary["dice_gain"]["high"]
    per_stream, recogniser = pipeline.stream_flops["ggo"], pipeline.recogniser_flops
    assert per_stream == model_flops(pipeline.streams["consolidation"]) > 0
    np.testing.assert_array_equal(per_image["gated_flops"], recogniser + per_stream * np.array([1, 1, 2, 0]))
    assert value["compute_saving"] == pytest.approx(1 - (4 * recogniser + 4 * per_stream) / (8 * per_stream))
    assert (value["gated_flops"], value["ungated_flops"]) == (gated.flops, ungated.flops)
    assert (value["single_flops"], value["single_seconds"]) == (400, 2.0)
    assert (value["stream_runs"], value["stream_runs_possible"]) == (4, 8)
    assert value["time_ratio"] == pytest.approx(gated.seconds / ungated.seconds)
    assert per_image["key"].tolist() == list("wxyz") and per_image["ran_ggo"].tolist() == [
        True,
        False,
        True,
        False,
    ]
    assert per_image["truth_px_consolidation"].tolist() == [0, 64, 0, 0]
    assert per_image["dice_ggo_ungated"].tolist() == [1.0, 0.0, 0.0, 0.0]

    report = {"threshold": {"thresholds": [0.5, 0.5]}, "overall": {"f1": 1.0}, "x": 0}
    choice = ManifestationChoice(pipeline.manifestations, {"effusion": "no training pixel"})
    skipped = GateSet({}, skipped="pipeline_options.gate_set is null")
    write_outputs(tmp_path, pipeline, report, summary, per_image, choice, skipped)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "per_image.csv"), per_image, check_dtype=False)
    record = json.loads((tmp_path / "streams.json").read_text())
    assert (record["n_test_images"], record["n_test_cases"]) == (4, 2)
    assert record["recogniser"] == {"threshold": {"thresholds": [0.5, 0.5]}, "overall": {"f1": 1.0}}
    assert record["stream_flops_per_image"] == {"ggo": per_stream, "consolidation": per_stream}
    assert record["summary"]["dice_gain"]["value"] == -0.125 and len(record["per_image"]) == 4
    assert record["manifestations"] == ["ggo", "consolidation"]
    assert record["manifestations_dropped"] == {"effusion": "no training pixel"}
    assert record["gate_set"] == {"skipped": "pipeline_options.gate_set is null"}
    assert sorted(path.name for path in tmp_path.iterdir()) == ["per_image.csv", "streams.json"]


def test_s0_streams_row_runs_end_to_end_on_phantoms(tmp_path):
    roots = phantom_roots(tmp_path / "phantoms")
    split_file = volume_split_file(roots["medseg"], tmp_path / "split.csv")
    recogniser = "pipeline_options.recogniser={name: plain_cnn, epochs: 1, options: {filters: [4, 8]}}"
    lesion_free = phantoms.generate(tmp_path / "gate_set", ("image_folder",), n_cases=2, size=64, slices=8)
    gate_set = f"pipeline_options.gate_set={{root: {lesion_free['image_folder']}, preprocess: ''}}"
    run_dir = run_experiment(
        "s0_streams",
        data_dir=tmp_path,
        out_dir=tmp_path / "runs",
        overrides=[*medseg_overrides(roots, split_file), recogniser, gate_set],
        strategy="one_device",
    )
    summary = json.loads((run_dir / "summary.json").read_text())
    record = json.loads((run_dir / "streams.json").read_text())
    published = {"dice_gain", "miou_gain", "compute_saving"}
    views = {f"{score}_{view}" for score in ("dice", "miou") for view in ("streams", "single", "ungated")}
    timing = {"gated_seconds", "ungated_seconds", "time_ratio", "gated_flops", "ungated_flops"}
    kept = record["manifestations"]
    # The config lists all three; the phantoms' training split decides which stay.
    assert sorted(kept + list(record["manifestations_dropped"])) == sorted(MANIFESTATION_ORDER)
    assert kept == [name for name in MANIFESTATION_ORDER if name in kept] and "ggo" in kept
    per_class = {f"dice_{name}_{view}" for name in kept for view in ("streams", "single")}
    assert published | views | timing | per_class <= set(summary)
    assert summary["dice_gain"]["low"] is not None  # bootstrapped

    table = pd.read_csv(run_dir / "per_image.csv")
    assert len(table) == record["n_test_images"] == len(record["per_image"])
    stream_flops = record["stream_flops_per_image"]
    recogniser_flops = summary["recogniser_flops_per_image"]["value"]
    ran = {name: table[f"ran_{name}"].astype(bool) for name in kept}
    expected_gated = len(table) * recogniser_flops + sum(int(ran[n].sum()) * stream_flops[n] for n in ran)
    assert summary["gated_flops"]["value"] == expected_gated
    assert summary["ungated_flops"]["value"] == len(table) * sum(stream_flops.values())
    assert summary["compute_saving"]["value"] == pytest.approx(
        1 - expected_gated / summary["ungated_flops"]["value"]
    )
    assert summary["stream_runs"]["value"] == sum(int(r.sum()) for r in ran.values())
    assert set(record["gate_thresholds"]) == set(kept) == set(stream_flops)

    # The gate set: 6 COVID and 8 lesion-free NonCOVID phantom slices, each gated like the test split.
    gate_table = pd.read_csv(run_dir / "gate_set_per_image.csv")
    assert gate_table["label"].value_counts().to_dict() == {"NonCOVID": 8, "COVID": 6}
    assert record["gate_set"]["n_images"] == 14 and record["gate_set"]["lesion_free_class"] == "NonCOVID"
    gate_ran = sum(gate_table[f"ran_{name}"].astype(int) * stream_flops[name] for name in kept)
    np.testing.assert_array_equal(gate_table["gated_flops"], recogniser_flops + gate_ran)
    ungated_per_image = sum(stream_flops.values())
    assert summary["compute_saving_mixed"]["value"] == pytest.approx(
        1 - gate_table["gated_flops"].sum() / (14 * ungated_per_image)
    )
    lesion_free_rows = gate_table[gate_table["label"] == "NonCOVID"]
    assert summary["compute_saving_lesion_free"]["value"] == pytest.approx(
        1 - lesion_free_rows["gated_flops"].sum() / (8 * ungated_per_image)
    )
    for name in kept:
        fraction = summary[f"ran_fraction_{name}_covid"]["value"]
        assert fraction == pytest.approx(gate_table.loc[gate_table["label"] == "COVID", f"ran_{name}"].mean())
