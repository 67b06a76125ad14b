"""S0 nodule-to-COVID transfer on phantoms: pretraining is cached, the transferred weights are the
pretrained ones, a head of another class count stays fresh, and the three rows run end to end."""

import argparse
import json

import keras
import numpy as np
import pytest

from experiments.pipelines.nodule_transfer import (
    pretrain_command,
    pretrain_nodule,
    pretraining_outcome,
    transferred_model,
)
from experiments.pipelines.pretrain_args import add_pretrain_parser
from experiments.pipelines.transfer import _layers_with_weights
from experiments.registry import get_experiment
from experiments.runner import run_experiment
from experiments.tasks import task_config
from segmentation.task import build_model
from tests.experiments.pipelines.phantom_rows import medseg_overrides, phantom_roots, volume_split_file

ROW = "s0_deeplabv3plus_{}_transfer_ggo"


@pytest.fixture(scope="module")
def phantom_row(tmp_path_factory):
    """(overrides reading the phantoms with a tiny model and a 1-epoch LIDC pretraining, folder)."""
    folder = tmp_path_factory.mktemp("nodule_transfer")
    roots = phantom_roots(folder / "phantoms")
    split_file = volume_split_file(roots["medseg"], folder / "split.csv")
    pretrain = f"pipeline_options.pretrain={{dataset: lidc, root: {roots['lidc']}, epochs: 1}}"
    return [*medseg_overrides(roots, split_file), pretrain], folder


def test_transfer_copies_the_pretrained_backbone_and_keeps_a_new_head_fresh(phantom_row):
    overrides, folder = phantom_row
    config = get_experiment(ROW.format("nodule"), overrides)
    cache = folder / "runs" / ".cache" / "chief"  # the runner's cache: the row test reuses this pretraining
    checkpoint = pretrain_nodule(config, folder, cache)
    assert checkpoint.parent.name.startswith("pretrain-") and checkpoint.name == "best.keras"
    stamp = checkpoint.stat().st_mtime_ns
    assert pretrain_nodule(config, folder, cache) == checkpoint  # reused, not retrained
    assert checkpoint.stat().st_mtime_ns == stamp

    # GGO + consolidation: two output channels where the nodule model has one.
    run = task_config(config, ["unused"], **{"data.mask_names": ["ggo", "consolidation"]})
    model, report = transferred_model(run, checkpoint)
    source = _layers_with_weights(keras.saving.load_model(checkpoint, compile=False))
    target = _layers_with_weights(model)
    head = [name for name in target if name not in report.loaded]
    assert len(head) == 1 and report.reshaped == head and report.skipped == []
    assert target[head[0]].weights[0].shape[-1] == 2 and source[head[0]].weights[0].shape[-1] == 1
    backbone = [name for name in report.loaded if name in _layers_with_weights(model.get_layer("encoder"))]
    assert backbone, "no encoder layer was transferred"
    for name in report.loaded:
        for copied, original in zip(target[name].weights, source[name].weights, strict=True):
            np.testing.assert_array_equal(copied.numpy(), original.numpy())
    assert report.loaded_parameters == sum(
        int(np.prod(w.shape)) for name in report.loaded for w in target[name].weights
    )
    fresh = task_config(config, ["unused"], **{"data.mask_names": ["ggo"]})
    untouched = _layers_with_weights(build_model(fresh))
    assert not np.array_equal(
        untouched[backbone[0]].weights[0].numpy(), source[backbone[0]].weights[0].numpy()
    )


def test_pretrain_command_writes_the_cached_checkpoint(phantom_row):
    overrides, folder = phantom_row
    parser = argparse.ArgumentParser()
    add_pretrain_parser(parser.add_subparsers(dest="command"))
    out = folder / "ckpt" / "nodule.keras"
    cache = folder / "runs" / ".cache" / "chief"  # where the other tests pretrained: reused when present
    settings = [item for override in overrides for item in ("--set", override)]
    args = parser.parse_args(
        [
            "pretrain-nodule",
            "--dataset",
            "lidc",
            "--out",
            str(out),
            "--cache-dir",
            str(cache),
            *settings,
        ]
    )
    assert pretrain_command(args) == 0
    cached = next(cache.glob("pretrain-*/best.keras"))
    assert out.read_bytes() == cached.read_bytes()
    assert keras.saving.load_model(out, compile=False).output_shape == (None, 32, 32, 1)
    assert sorted(p.name for p in out.parent.iterdir()) == ["nodule.keras"]  # no temporary left


def run_row(init: str, overrides: list[str], folder, extra: tuple[str, ...] = ()):
    run_dir = run_experiment(
        ROW.format(init),
        data_dir=folder,
        out_dir=folder / "runs",
        overrides=[*overrides, *extra],
        strategy="one_device",
    )
    return run_dir, json.loads((run_dir / "summary.json").read_text())


def test_nodule_row_runs_end_to_end(phantom_row):
    overrides, folder = phantom_row
    run_dir, summary = run_row("nodule", overrides, folder)
    transfer = json.loads((run_dir / "transfer.json").read_text())
    assert transfer["init"] == "nodule" and transfer["reshaped"] == []  # GGO and nodule: one channel each
    assert summary["transfer_loaded_layers"]["value"] == len(transfer["loaded"]) > 0
    assert summary["transfer_loaded_parameters"]["value"] == transfer["loaded_parameters"] > 0
    # the 1-epoch phantom pretraining has no validation Dice, so it is chosen by training loss
    assert transfer["pretraining"]["monitor"] == "loss" and transfer["pretraining"]["chosen_epoch"] == 1
    assert summary["pretrain_best_val_dice"]["value"] == transfer["pretraining"]["best_val_dice"]
    assert {"dice_per_image", "dice_ggo", "iou_per_image"} <= set(summary)
    assert (run_dir / "eval" / "metrics.json").is_file()


@pytest.mark.slow
def test_scratch_row_loads_nothing(phantom_row):
    overrides, folder = phantom_row
    run_dir, summary = run_row("scratch", overrides, folder)
    assert json.loads((run_dir / "transfer.json").read_text())["checkpoint"] is None
    assert summary["transfer_loaded_layers"]["value"] == 0


def test_imagenet_row_fails_fast_for_an_encoder_without_imagenet_weights(phantom_row):
    overrides, folder = phantom_row
    with pytest.raises(ValueError, match="plain: no ImageNet weights exist for this encoder"):
        run_row("imagenet", overrides, folder)


@pytest.mark.slow
def test_xception65_nodule_row_runs_end_to_end(phantom_row):
    overrides, folder = phantom_row
    heavy = ("model.name=deeplabv3plus", "model.encoder=xception65", "model.options={output_stride: 16}")
    run_dir, summary = run_row("nodule", overrides, folder, heavy)
    assert summary["transfer_loaded_layers"]["value"] > 100


def test_pretraining_outcome_names_the_epoch_the_checkpoint_keeps(tmp_path):
    """A held-out Dice that stays 0 ties at every epoch, so "val_dice" keeps epoch 1 (the recorded S0 CPU
    pretraining); "val_loss" keeps the epoch of lowest loss."""
    (tmp_path / "history.csv").write_text(
        "epoch,dice,val_dice,val_loss\n0,0.07,0.0,1.02\n1,0.35,0.0,0.96\n2,0.59,0.0,0.97\n3,0.76,0.0,0.92\n"
    )
    by_dice = pretraining_outcome(tmp_path, "val_dice", "max")
    assert by_dice == {"monitor": "val_dice", "chosen_epoch": 1, "val_dice": [0.0] * 4,
                       "val_loss": [1.02, 0.96, 0.97, 0.92], "best_val_dice": 0.0}  # fmt: skip
    assert pretraining_outcome(tmp_path, "val_loss", "min")["chosen_epoch"] == 4
