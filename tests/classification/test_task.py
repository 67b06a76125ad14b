import numpy as np
import pandas as pd
import pytest

from classification.data import load_split
from classification.evaluate import Predictions
from classification.predict import RunInfo, model_task
from classification.task import CLASSIFICATION_TASKS, task_of
from common.config import ModelConfig, TaskConfig
from common.thresholds import ThresholdChoice
from tests.classification.tiny_data import classification_inputs, tiny_xray

BINARY, MULTICLASS, MULTILABEL = (
    CLASSIFICATION_TASKS[name] for name in ("binary", "multiclass", "multilabel")
)


def test_one_folder_gives_each_task_its_targets(tmp_path):
    folder = tiny_xray(tmp_path)  # val: 2 images of each of COVID-19, Non-COVID, Normal
    multiclass = classification_inputs(folder, "multiclass", image_size=16, batch_size=4)
    binary = classification_inputs(
        folder,
        label_names=["COVID", "NonCOVID"],
        label_map={"COVID-19": "COVID", "Non-COVID": "NonCOVID", "Normal": "NonCOVID"},
        image_size=16,
        batch_size=4,
    )
    indices = np.concatenate([t for _, t in load_split(multiclass, "val").as_numpy_iterator()])
    positives = np.concatenate([t for _, t in load_split(binary, "val").as_numpy_iterator()])
    assert indices.dtype == np.int32 and sorted(indices.tolist()) == [0, 0, 1, 1, 2, 2]
    assert positives.dtype == np.float32 and positives.shape == (6, 1)
    np.testing.assert_array_equal(positives[:, 0], indices == 0)  # same record order; COVID-19 -> COVID
    assert (binary.output_names, multiclass.output_names) == (["COVID"], ["COVID-19", "Non-COVID", "Normal"])


def test_prediction_columns_of_each_task():
    probabilities = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    binary = BINARY.prediction_columns(probabilities[:, :1], ["COVID"], (0.5,), "NonCOVID")
    assert list(binary) == ["probability", "predicted"] and binary["predicted"].tolist() == [
        "COVID",
        "NonCOVID",
    ]
    multiclass = MULTICLASS.prediction_columns(probabilities, ["a", "b", "c"], (), "")
    assert list(multiclass) == ["probability_a", "probability_b", "probability_c", "predicted"]
    assert multiclass["predicted"].tolist() == ["a", "c"]
    multilabel = MULTILABEL.prediction_columns(probabilities[:, :2], ["a", "b"], (0.5, 0.25), "")
    assert list(multilabel) == ["probability_a", "predicted_a", "probability_b", "predicted_b"]
    assert (multilabel["predicted_a"].tolist(), multilabel["predicted_b"].tolist()) == ([1, 0], [0, 1])


def test_a_model_without_a_bundle_is_binary_with_one_unit_else_multilabel():
    assert model_task(RunInfo(), 1) is BINARY and model_task(RunInfo(), 3) is MULTILABEL
    assert model_task(RunInfo(task="multiclass"), 3) is MULTICLASS


def test_correct_cases_for_coverage_accuracy():
    meta = pd.DataFrame({column: ["", ""] for column in ("key", "patient_id", "modality", "source", "path")})
    binary = Predictions("test", BINARY, ["P"], ["P", "N"], np.array([[0.8], [0.4]]), np.array([0, 0]), meta)
    assert BINARY.correct(binary, ThresholdChoice.fixed(0.5)).tolist() == [False, True]
    multiclass = Predictions(
        "test", MULTICLASS, ["a", "b"], ["a", "b"], np.array([[0.8, 0.2], [0.6, 0.4]]), np.array([0, 1]), meta
    )
    assert MULTICLASS.correct(multiclass, None).tolist() == [True, False]
    multilabel = Predictions(
        "test", MULTILABEL, ["a"], ["a"], np.array([[0.8], [0.4]]), np.array([[1], [0]]), meta
    )
    with pytest.raises(
        ValueError, match="coverage-accuracy is defined for binary and multiclass predictions"
    ):
        MULTILABEL.correct(multilabel, ThresholdChoice.fixed(0.5))


def test_unknown_task_names_the_known_ones():
    with pytest.raises(
        ValueError, match=r"model.task 'regression' is not one of \['binary', 'multiclass', 'multilabel'\]"
    ):
        task_of(TaskConfig(model=ModelConfig(task="regression")))
