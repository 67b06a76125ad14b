"""`python -m segmentation`: success paths on synthetic data and one-line errors with exit status 2."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml

from segmentation.__main__ import main
from tests.segmentation.seg_helpers import bright_pixel_model, write_disks


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    bright_pixel_model(32).save(folder / "best.keras")
    (folder / "config.json").write_text(json.dumps({"channel_names": ["infection"], "multiclass": False}))
    return folder


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("error: ")
    return err


def test_evaluate_command(tmp_path, run_dir, capsys):
    disks = write_disks(tmp_path)
    assert main(["evaluate", str(run_dir / "best.keras"), str(disks), str(tmp_path / "eval")]) == 0
    out = capsys.readouterr().out
    assert "infection: Dice per image 1.0000, pooled 1.0000, per case 1.0000 (4 images, 2 cases)" in out
    assert "threshold from val" in out
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["split"] == "test"


def test_predict_command(tmp_path, run_dir, capsys):
    (tmp_path / "in").mkdir()
    cv2.imwrite(str(tmp_path / "in" / "x.png"), np.full((32, 32), 200, np.uint8))
    assert (
        main(
            [
                "predict",
                str(run_dir / "best.keras"),
                str(tmp_path / "in"),
                str(tmp_path / "out"),
                "--tta",
                "lr",
            ]
        )
        == 0
    )
    assert "wrote 1 file(s)" in capsys.readouterr().out
    assert (tmp_path / "out" / "x_infection.png").is_file()


def test_errors_are_one_line_with_status_2(tmp_path, run_dir, capsys):
    missing = tmp_path / "nope.keras"
    assert main(["evaluate", str(missing), str(tmp_path), str(tmp_path / "o")]) == 2
    assert one_line_error(capsys) == f"error: {missing}: no such model file"
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"\x1f\x8b\x08\x00truncated")
    assert main(["predict", str(run_dir / "best.keras"), str(broken), str(tmp_path / "o")]) == 2
    assert one_line_error(capsys).startswith(f"error: {broken}: truncated or corrupt NIfTI")
    config = tmp_path / "run.yaml"
    config.write_text("data: {tfrecords: [/d]}\nepochz: 3\n")
    run = ["--run-dir", str(tmp_path / "r")]
    assert main(["train", "--config", str(config), *run]) == 2
    assert one_line_error(capsys).startswith(f"error: {config}: config: unknown key(s) epochz; allowed: data, ")
    assert main(["train", "--config", str(tmp_path / "absent.yaml"), *run]) == 2
    assert one_line_error(capsys) == f"error: {tmp_path / 'absent.yaml'}: no such config file"
    assert main(["train", "--epochs", "1", *run]) == 2
    assert one_line_error(capsys) == "error: data.tfrecords: a segmenter reads one TFRecord folder, got []"


def test_train_then_evaluate_a_registry_unet(tmp_path, capsys):
    disks = write_disks(tmp_path)
    config = tmp_path / "run.json"
    config.write_text(
        json.dumps(
            {
                "model": {"name": "unet", "encoder": "plain", "options": {"encoder_kwargs": {"filters": [4, 8]}}},
                "data": {"image_size": 32, "batch_size": 4},
                "training": {"tensorboard": False, "verbose": 0, "learning_rate": 0.01},
                "runtime": {"deterministic": True, "precision": "float32"},
            }
        )
    )
    run = tmp_path / "run"
    args = ["train", "--config", str(config), "--data", str(disks), "--run-dir", str(run), "--epochs", "2"]
    assert main(args) == 0
    assert f"best model: {run / 'best.keras'}" in capsys.readouterr().out
    assert len((run / "history.csv").read_text().splitlines()) == 3
    assert yaml.safe_load((run / "config.yaml").read_text())["training"]["epochs"] == 2
    assert main(["evaluate", str(run / "best.keras"), str(disks), str(tmp_path / "eval")]) == 0
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert (
        report["threshold"]["split"] == "val"
        and 0.0 <= report["masks"]["infection"]["dice"]["pooled"]["value"] <= 1.0
    )


@pytest.mark.slow
@pytest.mark.shared_data
def test_medseg_unet_learns_infection(tmp_path, shared_data, capsys):
    """Real data, a few CPU minutes: a small plain U-Net on MedSeg (Inf-Net's 48 test slices; 10 of the
    50 training slices as validation) reaches a test Dice clearly above 0."""
    from data_prep.adapters import open_dataset
    from data_prep.splits import save_split
    from tfrecords.writer import write_dataset

    root = shared_data / "ct-infection-medseg"
    keys = sorted((r.key, r.split) for r in open_dataset("medseg", root).records())
    train_keys = [key for key, split in keys if split == "train"]
    val = set(np.random.default_rng(0).choice(train_keys, 10, replace=False))
    rows = [(key, None, "", "image", "val" if key in val else split) for key, split in keys]
    save_split(
        pd.DataFrame(rows, columns=["key", "patient_id", "label", "group_kind", "split"]),
        tmp_path / "split.csv",
    )
    data = tmp_path / "tfrecords"
    write_dataset("medseg", root, data, split_file=tmp_path / "split.csv", image_size=128, shards=4)
    config = tmp_path / "run.json"
    config.write_text(
        json.dumps(
            {
                "data": {"mask_names": ["infection"], "batch_size": 4, "steps_per_epoch": 25},
                "model": {"options": {"encoder_kwargs": {"filters": [8, 16, 32, 64, 128]}}},
                "training": {
                    "epochs": 8,
                    "monitor": "val_dice",
                    "mode": "max",
                    "lr_schedule": "cosine",
                    "tensorboard": False,
                    "verbose": 0,
                },
                "runtime": {"precision": "mixed_bfloat16"},
            }
        )
    )
    run = tmp_path / "run"
    assert main(["train", "--config", str(config), "--data", str(data), "--run-dir", str(run)]) == 0
    assert main(["evaluate", str(run / "best.keras"), str(data), str(tmp_path / "eval")]) == 0
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert report["n_images"] == 48 and report["threshold"]["split"] == "val"
    assert report["masks"]["infection"]["dice"]["pooled"]["value"] > 0.2
