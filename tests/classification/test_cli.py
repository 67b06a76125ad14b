import json

import cv2
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml

from classification.__main__ import main
from tests.classification.tiny_data import tiny_ct


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A run trained through the command line: plain CNN, 2 epochs, tiny bright/dark CT set."""
    root = tmp_path_factory.mktemp("cli")
    config = {
        "data": {"tfrecords": [str(tiny_ct(root))], "image_size": 16, "channels": 1, "batch_size": 8},
        "model": {"name": "plain_cnn", "dropout": 0.5, "options": {"filters": [4, 8]}},
        "training": {"epochs": 1, "learning_rate": 0.01, "verbose": 0, "tensorboard": False},
        "evaluation": {"bootstrap_resamples": 20},
        "runtime": {"deterministic": True, "precision": "float32"},
    }
    (root / "run.yaml").write_text(yaml.safe_dump(config))
    command = ["train", "--config", str(root / "run.yaml"), "--run-dir", str(root / "run")]
    assert main([*command, "--set", "training.epochs=2"]) == 0
    return root


def test_train_then_evaluate_again(trained_run, capsys):
    run = trained_run / "run"
    assert yaml.safe_load((run / "config.yaml").read_text())["training"]["epochs"] == 2
    first = json.loads((run / "eval" / "metrics.json").read_text())
    assert main(["evaluate", "--run", str(run), "--out", str(trained_run / "again")]) == 0
    again = json.loads((trained_run / "again" / "metrics.json").read_text())
    assert again["overall"] == first["overall"]
    assert '"split": "test"' in capsys.readouterr().out


def test_predict_a_folder_and_a_nifti_volume(trained_run):
    folder = trained_run / "mine"
    folder.mkdir()
    cv2.imwrite(str(folder / "bright.png"), np.full((20, 24), 200, np.uint8))
    cv2.imwrite(str(folder / "dark.png"), np.full((20, 24), 60, np.uint8))
    out = trained_run / "folder.csv"
    assert main(["predict", str(trained_run / "run" / "best.keras"), str(folder), str(out)]) == 0
    frame = pd.read_csv(out)
    assert frame["file"].str.endswith(("bright.png", "dark.png")).all() and frame["slice"].tolist() == [
        -1,
        -1,
    ]
    assert frame["threshold_source"].tolist() == ["youden on val"] * 2
    assert frame["probability"].between(0, 1).all()

    volume = np.full((12, 12, 3), -1000, np.int16)  # HU: needs a window to become display values
    nib.save(nib.Nifti1Image(volume, np.eye(4)), trained_run / "scan.nii.gz")
    out = trained_run / "volume.csv"
    scan = str(trained_run / "scan.nii.gz")
    assert (
        main(
            [
                "predict",
                str(trained_run / "run" / "best.keras"),
                scan,
                str(out),
                "--preprocess",
                "window=lung",
            ]
        )
        == 0
    )
    assert pd.read_csv(out)["slice"].tolist() == [0, 1, 2]


def test_mc_dropout_uncertainty_command(trained_run):
    run = trained_run / "run"
    assert main(["uncertainty", "--run", str(run), "--method", "mc_dropout", "--samples", "3"]) == 0
    report = json.loads((run / "uncertainty_mc_dropout" / "metrics.json").read_text())
    assert report["uncertainty"]["method"] == "mc_dropout"


def test_bad_input_is_one_line_and_status_2(trained_run, tmp_path, capsys):
    missing = tmp_path / "nothing"
    assert (
        main(["predict", str(trained_run / "run" / "best.keras"), str(missing), str(tmp_path / "o.csv")]) == 2
    )
    assert capsys.readouterr().err == f"error: {missing}: missing image folder\n"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"data": {"tfrecords": ["y"]}, "trainig": {}}))
    assert main(["train", "--config", str(bad), "--run-dir", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err.startswith(f"error: {bad}: config: unknown key(s) trainig; allowed: data, ")
    assert not (tmp_path / "o.csv").exists()
