import keras
import numpy as np
import pytest
import yaml

from classification.task import CLASSIFICATION_TASKS, task_of
from classification.train import train_classifier
from common.config import ConfigError, TaskConfig, from_dict, load_task_config, replaced
from common.thresholds import ThresholdChoice
from tests.classification.tiny_data import tiny_ct


def run_config(tmp_path, tfrecords, **training) -> TaskConfig:
    return from_dict(
        TaskConfig,
        {
            "data": {"tfrecords": [str(tfrecords)], "image_size": 16, "channels": 1, "batch_size": 8},
            "model": {"name": "plain_cnn", "options": {"filters": [4, 8]}, "dropout": 0.0},
            "training": {"epochs": 1, "learning_rate": 0.01, "verbose": 0, "tensorboard": False, **training},
            "evaluation": {"bootstrap_resamples": 50},
            "runtime": {"deterministic": True, "precision": "float32"},
        },
    )


BINARY = CLASSIFICATION_TASKS["binary"]


def backbone_weights(model: keras.Model) -> list[np.ndarray]:
    return [np.array(w) for w in model.get_layer("backbone").get_weights()]


def test_stage_one_freezes_the_backbone_and_stage_two_fine_tunes_its_top_block(tmp_path):
    config = run_config(tmp_path, tiny_ct(tmp_path), fine_tune_epochs=1, unfreeze_top_blocks=1)
    keras.utils.set_random_seed(0)
    initial = BINARY.build_model(config)
    result = train_classifier(config, tmp_path / "run", evaluate=False)
    assert result["epochs"] == 2 and result["history"]["loss"]

    after_head = BINARY.build_model(config)
    after_head.load_weights(str(tmp_path / "run" / "stages" / "head.weights.h5"))
    for before, after in zip(backbone_weights(initial), backbone_weights(after_head), strict=True):
        np.testing.assert_array_equal(before, after)
    assert not np.allclose(
        initial.get_layer("logits").get_weights()[0], after_head.get_layer("logits").get_weights()[0]
    )

    final = BINARY.build_model(config)
    final.load_weights(str(tmp_path / "run" / "stages" / "fine_tune.weights.h5"))
    backbone_initial, backbone_final = initial.get_layer("backbone"), final.get_layer("backbone")
    # block1 stays frozen; block2's convolution moves (its BN moving statistics too).
    np.testing.assert_array_equal(
        backbone_initial.get_layer("block1_conv1").get_weights()[0],
        backbone_final.get_layer("block1_conv1").get_weights()[0],
    )
    assert not np.allclose(
        backbone_initial.get_layer("block2_conv1").get_weights()[0],
        backbone_final.get_layer("block2_conv1").get_weights()[0],
    )


def test_single_stage_run_writes_model_history_and_evaluation(tmp_path):
    config = run_config(tmp_path, tiny_ct(tmp_path), epochs=3, class_weight="balanced")
    result = train_classifier(config, tmp_path / "run")
    run = tmp_path / "run"
    assert result["epochs"] == 3
    assert (run / "best.keras").is_file() and (run / "config.yaml").is_file()
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model"]["name"] == "plain_cnn" and saved["training"]["class_weight"] == "balanced"
    metrics = result["metrics"]
    assert metrics["split"] == "test" and metrics["threshold"]["split"] == "val"
    assert ThresholdChoice.load(run / "threshold.json").summary() == metrics["threshold"]  # chosen in training
    # Bright vs dark images: a 3-epoch CNN separates the 8 test images.
    assert metrics["overall"]["roc_auc"]["value"] >= 0.9
    for name in (
        "metrics.json",
        "predictions.csv",
        "roc.png",
        "pr.png",
        "confusion_matrix.png",
        "training_curves.png",
    ):
        assert (run / "eval" / name).is_file(), name


def test_balanced_class_weights_follow_the_positive_label(tmp_path):
    data = tiny_ct(tmp_path)
    config = run_config(tmp_path, data, class_weight="balanced")
    assert BINARY.class_weight(config) == {0: 1.0, 1: 1.0}  # 12 COVID, 12 NonCOVID training images
    assert BINARY.class_weight(replaced(config, **{"data.balanced_sampling": True})) is None


def test_load_task_config_with_overrides_and_unknown_keys(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"data": {"tfrecords": [str(tiny_ct(tmp_path))]}}))
    config = load_task_config(path, ["training.epochs=7", "model.name=plain_cnn"])
    assert config.training.epochs == 7 and config.model.name == "plain_cnn"
    assert task_of(config).inputs(config).positive_label == "COVID"
    with pytest.raises(ConfigError, match=r"config.model: unknown key\(s\) size; allowed: .*dropout"):
        load_task_config(path, ["model.size=3"])


@pytest.mark.slow
@pytest.mark.shared_data
def test_real_ct_subset_trains_and_evaluates_patient_disjoint(shared_data, tmp_path):
    from classification.evaluate import collect_predictions, model_predict_fn
    from tfrecords.writer import write_dataset

    folder = tmp_path / "ct"
    write_dataset("image_folder", shared_data / "ct-covid-classification", folder, preprocess="resize=64")
    config = run_config(tmp_path, folder, epochs=2, monitor="val_auc", mode="max")
    config.model.batchnorm_momentum = 0.9
    metrics = train_classifier(config, tmp_path / "run")["metrics"]
    assert metrics["n"] == 192 and 0.0 <= metrics["overall"]["roc_auc"]["value"] <= 1.0
    model = keras.models.load_model(tmp_path / "run" / "best.keras")
    patients = {
        split: set(collect_predictions(model_predict_fn(model), task_of(config).inputs(config), split).meta["patient_id"])
        for split in ("train", "test")
    }
    # Records without any id are stored with "" and form one-image groups; every id must stay on one side.
    assert patients["train"] & patients["test"] == {""}
