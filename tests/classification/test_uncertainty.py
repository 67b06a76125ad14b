import json
import math

import keras
import numpy as np
import pytest

from classification.uncertainty import (
    coverage_accuracy,
    ensemble_predict_fn,
    evaluate_uncertainty,
    mc_dropout_predict_fn,
    predictive_entropy,
    uncertainty_summary,
)
from tests.classification.tiny_data import classification_inputs, tiny_ct

ENTROPY_09 = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1))  # 0.325083


def test_entropy_hand_values():
    np.testing.assert_allclose(
        predictive_entropy([[0.5], [1.0], [0.9], [0.0]]), [math.log(2), 0.0, ENTROPY_09, 0.0]
    )
    np.testing.assert_allclose(
        predictive_entropy([[1 / 3, 1 / 3, 1 / 3], [0.0, 1.0, 0.0]]), [math.log(3), 0.0]
    )


def test_disagreeing_members_give_mutual_information():
    summary = uncertainty_summary(np.array([[[0.9]], [[0.1]]]))  # T = 2 members, N = 1 image
    np.testing.assert_allclose(summary["probability"], [[0.5]])
    np.testing.assert_allclose(summary["entropy"], [math.log(2)])
    np.testing.assert_allclose(summary["expected_entropy"], [ENTROPY_09])
    np.testing.assert_allclose(summary["mutual_information"], [math.log(2) - ENTROPY_09])


def test_coverage_accuracy_rejects_the_most_uncertain_first():
    correct = np.array([True, False, True, True, False])
    uncertainty = np.array([0.1, 0.9, 0.2, 0.3, 0.8])
    rows = coverage_accuracy(correct, uncertainty, reject_fractions=(0.0, 0.2, 0.4, 1.0))
    assert [row["kept"] for row in rows] == [5, 4, 3, 0]
    assert [row["accuracy"] for row in rows[:3]] == [0.6, 0.75, 1.0]
    assert math.isnan(rows[3]["accuracy"])


def constant_model(probability: float, dropout: float = 0.0) -> keras.Model:
    """(B, 16, 16, 1) -> sigmoid of a fixed bias: P = probability for every image (zero kernel)."""
    inputs = keras.Input((16, 16, 1))
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Dropout(dropout)(x)
    bias = math.log(probability / (1 - probability))
    outputs = keras.layers.Dense(
        1,
        activation="sigmoid",
        kernel_initializer="zeros",
        bias_initializer=keras.initializers.Constant(bias),
    )(x)
    return keras.Model(inputs, outputs)


def test_ensemble_of_two_opposite_models_is_maximally_uncertain():
    predict = ensemble_predict_fn([constant_model(0.9), constant_model(0.1)])
    result = predict(np.zeros((3, 16, 16, 1), np.float32))
    np.testing.assert_allclose(result["probability"], [[0.5]] * 3, rtol=1e-6)
    np.testing.assert_allclose(result["entropy"], [math.log(2)] * 3, rtol=1e-6)
    with pytest.raises(ValueError, match="an ensemble needs at least 2 models, got 1"):
        ensemble_predict_fn([constant_model(0.9)])


def test_mc_dropout_samples_differ_and_batchnorm_is_untouched():
    inputs = keras.Input((4,))
    x = keras.layers.BatchNormalization()(inputs)
    x = keras.layers.Dropout(0.5)(x)
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid", kernel_initializer="ones")(x))
    batchnorm = model.layers[1]
    moving_mean = keras.ops.convert_to_numpy(batchnorm.moving_mean)
    images = np.random.default_rng(0).normal(3.0, 1.0, (8, 4)).astype("float32")
    result = mc_dropout_predict_fn(model, samples=10)(images)
    assert np.all(result["mutual_information"] > 0)  # the passes disagree
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(batchnorm.moving_mean), moving_mean)
    assert batchnorm.trainable
    with pytest.raises(ValueError, match="no dropout layer with rate > 0"):
        mc_dropout_predict_fn(constant_model(0.9), samples=3)


def test_evaluate_uncertainty_writes_coverage_curve(tmp_path):
    config = classification_inputs(tiny_ct(tmp_path), image_size=16, channels=1, batch_size=8)
    report = evaluate_uncertainty(
        [constant_model(0.7, 0.5), constant_model(0.4, 0.5)], config, tmp_path / "eval", n_resamples=20
    )
    section = report["uncertainty"]
    assert section["method"] == "ensemble" and len(section["coverage_accuracy"]) == 11
    assert section["mean_entropy"] == pytest.approx(predictive_entropy([[0.55]])[0], rel=1e-5)
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved["uncertainty"]["coverage_accuracy"][0]["coverage"] == 1.0
    assert (tmp_path / "eval" / "coverage_accuracy.png").is_file()
    header = (tmp_path / "eval" / "predictions.csv").read_text().splitlines()[0]
    assert header.endswith("entropy,expected_entropy,mutual_information")
