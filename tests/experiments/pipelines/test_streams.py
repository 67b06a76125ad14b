import json

import keras
import numpy as np
import pandas as pd
import pytest
from keras import layers

from experiments.pipelines.flops import model_flops
from experiments.pipelines.streams import (
    GatedStreams,
    combine_streams,
    comparison_metrics,
    manifestation_counts,
    truth_label_map,
)
from experiments.runner import run_experiment
from tests.experiments.pipelines.phantom_rows import medseg_overrides, phantom_roots, volume_split_file


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


def top_left_pixel_recogniser() -> keras.Model:
    """A recogniser whose output is the image's top-left pixel value per channel (hand-made gates)."""
    inputs = keras.Input((8, 8, 3))
    outputs = layers.Lambda(lambda x: x[:, 0, 0, :])(inputs)
    return keras.Model(inputs, outputs)


def stream(value: float) -> keras.Model:
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(1, 1, kernel_initializer="zeros", bias_initializer=keras.initializers.Constant(value))(
        inputs
    )
    return keras.Model(inputs, layers.Activation("linear")(x))


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


def test_s0_streams_row_runs_end_to_end_on_phantoms(tmp_path):
    roots = phantom_roots(tmp_path / "phantoms")
    split_file = volume_split_file(roots["medseg"], tmp_path / "split.csv")
    recogniser = "pipeline_options.recogniser={name: plain_cnn, epochs: 1, options: {filters: [4, 8]}}"
    run_dir = run_experiment(
        "s0_streams",
        data_dir=tmp_path,
        out_dir=tmp_path / "runs",
        overrides=[*medseg_overrides(roots, split_file), recogniser],
        strategy="one_device",
    )
    summary = json.loads((run_dir / "summary.json").read_text())
    record = json.loads((run_dir / "streams.json").read_text())
    published = {"dice_gain", "miou_gain", "compute_saving"}
    views = {f"{score}_{view}" for score in ("dice", "miou") for view in ("streams", "single", "ungated")}
    timing = {"gated_seconds", "ungated_seconds", "time_ratio", "gated_flops", "ungated_flops"}
    per_class = {f"dice_{name}_{view}" for name in ("ggo", "consolidation") for view in ("streams", "single")}
    assert published | views | timing | per_class <= set(summary)
    assert summary["dice_gain"]["low"] is not None  # bootstrapped

    table = pd.read_csv(run_dir / "per_image.csv")
    assert len(table) == record["n_test_images"] == len(record["per_image"])
    stream_flops = record["stream_flops_per_image"]
    recogniser_flops = summary["recogniser_flops_per_image"]["value"]
    ran = {name: table[f"ran_{name}"].astype(bool) for name in ("ggo", "consolidation")}
    expected_gated = len(table) * recogniser_flops + sum(int(ran[n].sum()) * stream_flops[n] for n in ran)
    assert summary["gated_flops"]["value"] == expected_gated
    assert summary["ungated_flops"]["value"] == len(table) * sum(stream_flops.values())
    assert summary["compute_saving"]["value"] == pytest.approx(
        1 - expected_gated / summary["ungated_flops"]["value"]
    )
    assert summary["stream_runs"]["value"] == sum(int(r.sum()) for r in ran.values())
    assert set(record["gate_thresholds"]) == {"ggo", "consolidation"}
