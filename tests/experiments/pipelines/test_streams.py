import keras
import numpy as np
import pytest
from keras import layers

from experiments.pipelines.flops import model_flops
from experiments.pipelines.streams import GatedStreams, combine_streams


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
