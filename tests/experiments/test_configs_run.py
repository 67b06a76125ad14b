"""Every named config runs end to end for one epoch on synthetic phantoms (tiny sizes).

The default suite runs a cheap row per task kind; the heavy backbones and the composed pipelines'
full rows are marked slow (their pipelines have their own phantom tests under pipelines/).
"""

import json

import pytest

from classification.models import smallest_input_size
from experiments.registry import get_experiment, list_experiments
from experiments.runner import run_experiment

FAST = {"demo", "ours_mobilenetv2_ct_patientwise", "s3_unet_lung_zenodo", "s1_unet_infection_medseg"}


def tiny_overrides(name: str) -> list[str]:
    config = get_experiment(name)
    overrides = [
        "data.phantom=true",
        "data.batch_size=4",
        "training.epochs=1",
        "training.verbose=0",
        "training.tensorboard=false",
        "model.weights=null",
        "evaluation.bootstrap_resamples=20",
    ]
    if config.training.fine_tune_epochs:
        overrides.append("training.fine_tune_epochs=1")
    if config.model.task == "segmentation":
        overrides.append("data.image_size=64" if config.model.name == "pspnet" else "data.image_size=32")
        if config.model.encoder == "plain":
            overrides.append("model.options={encoder_kwargs: {filters: [4, 8, 16]}}")
    else:
        size = max(32, smallest_input_size(config.model.name))
        overrides.append(f"data.image_size={size}")
    return overrides


PARAMS = [pytest.param(name, marks=() if name in FAST else pytest.mark.slow) for name in list_experiments()]


@pytest.mark.parametrize("name", PARAMS)
def test_config_runs_one_epoch_on_phantoms(name, tmp_path):
    run_dir = run_experiment(
        name,
        data_dir=tmp_path / "unused",
        out_dir=tmp_path / "runs",
        overrides=tiny_overrides(name),
        strategy="one_device",
    )
    record = json.loads((run_dir / "run.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert record["name"] == name
    assert record["data_scale"] == "synthetic"
    assert summary, "the run produced no metrics"
    assert all(set(entry) == {"value", "low", "high"} for entry in summary.values())
    assert (run_dir.parent / "latest").resolve() == run_dir
