"""Reliability of `python -m experiments run` (issue 14): bad input leaves nothing, a run folder appears
only once the run has started, and `--resume` continues the run as it was configured."""

from __future__ import annotations

import json
import os

import pytest
import yaml

from common.config import ConfigError, to_dict
from data_prep.errors import DataError
from experiments.__main__ import main
from experiments.registry import get_experiment
from experiments.run_start import PENDING_PREFIX, check_run, start_run


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    return err.strip()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--set", "data.image_size=0"], "data.image_size: must be at least 8, got 0"),
        (["--set", "training.epochs=-1"], "training.epochs: must be at least 1, got -1"),
        (["--set", "data.batch_size=0"], "data.batch_size: must be at least 1, got 0"),
        (["--set", "data.val_fraction=1.5"], "data.val_fraction: must be in [0, 1), got 1.5"),
        (["--set", "data.dataset=nope"], "data.dataset: unknown dataset 'nope'; known: covid_chestxray"),
        (["--set", "data.phantom=false"], "dataset folder of data.root not found"),
        (["--set", "data.image_size=[1"], "--set 'data.image_size=[1': not valid YAML"),
        (["--set", "pipeline=nope"], "pipeline: unknown pipeline 'nope'"),
        (["--set", "model.weights=/no/such.h5"], "/no/such.h5: model.weights: no such weights file"),
        (["--resume"], "no earlier run of demo to resume"),
    ],
)
def test_bad_configs_and_inputs_fail_before_a_run_folder_exists(tmp_path, capsys, extra, message):
    out = tmp_path / "runs"
    argv = ["run", "demo", "--out", str(out), "--data-dir", str(tmp_path / "absent"), *extra]
    assert main(argv) == 2
    assert message in _one_line_error(capsys)
    assert not (out / "demo").exists()


def test_a_run_folder_is_published_only_once_started(tmp_path):
    start = start_run("demo", tmp_path, tmp_path)
    assert start.folder.name.startswith(PENDING_PREFIX) and start.folder.is_dir()
    assert not (tmp_path / "demo" / "latest").exists()
    (start.folder / "run.json").write_text("{}")
    published = start.publish()
    assert published.name[:8].isdigit() and (published / "run.json").is_file()
    assert (tmp_path / "demo" / "latest").resolve() == published
    second = start_run("demo", tmp_path, tmp_path)
    second.discard()  # failed before it started: gone, latest unchanged
    assert sorted(p.name for p in (tmp_path / "demo").iterdir()) == sorted([published.name, "latest"])


def test_a_failure_while_preparing_data_leaves_nothing(tmp_path, monkeypatch):
    from experiments import runner

    def broken(*args, **kwargs):
        raise DataError(tmp_path / "scan.nii.gz", "3 of 64 values are not finite (3 NaN, 0 infinite)")

    monkeypatch.setattr(runner, "prepare_data", broken)
    with pytest.raises(DataError, match="not finite"):
        runner.run_experiment(
            "demo", tmp_path, tmp_path / "runs", ["training.verbose=0"], strategy="one_device"
        )
    assert list((tmp_path / "runs" / "demo").iterdir()) == []


@pytest.fixture
def earlier_run(tmp_path):
    """A run folder of `demo` as the runner leaves it, made with --set training.epochs=20 and a
    smaller model; `latest` points at it."""
    config = get_experiment(
        "demo", ["training.epochs=20", "model.options={encoder_kwargs: {filters: [4, 8]}}"]
    )
    folder = tmp_path / "runs" / "demo" / "20260101T000000Z"
    folder.mkdir(parents=True)
    (folder / "experiment.yaml").write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
    os.symlink(folder.name, folder.parent / "latest")
    return folder


def test_resume_continues_from_the_runs_own_config(earlier_run, tmp_path):
    config, folder, changes = check_run("demo", tmp_path / "runs", tmp_path, [], resume=True)
    assert folder == earlier_run and changes == {}
    assert config.training.epochs == 20  # not the YAML's 10: the --set of the original command holds
    assert config.model.options == {"encoder_kwargs": {"filters": [4, 8]}}


def test_resume_may_extend_the_epochs_and_says_so(earlier_run, tmp_path):
    config, _, changes = check_run("demo", tmp_path / "runs", tmp_path, ["training.epochs=30"], resume=True)
    assert config.training.epochs == 30
    assert changes == {"training.epochs": {"was": 20, "now": 30}}
    _, _, unchanged = check_run("demo", tmp_path / "runs", tmp_path, ["training.epochs=20"], resume=True)
    assert unchanged == {}


def test_resume_refuses_a_change_of_model_or_data(earlier_run, tmp_path, capsys):
    with pytest.raises(ConfigError, match="only training.epochs, training.fine_tune_epochs"):
        check_run("demo", tmp_path / "runs", tmp_path, ["data.image_size=128"], resume=True)
    argv = ["run", "demo", "--resume", "--out", str(tmp_path / "runs"), "--set", "model.name=fpn"]
    assert main(argv) == 2
    assert "a resumed run keeps its config" in _one_line_error(capsys)
    assert sorted(p.name for p in earlier_run.iterdir()) == ["experiment.yaml"]  # untouched


TINY_DETERMINISTIC = [
    "data.phantom=true",
    "data.batch_size=4",
    "data.image_size=32",
    "data.steps_per_epoch=4",
    "model.options={encoder_kwargs: {filters: [4, 8, 16]}}",
    "training.epochs=2",
    "training.verbose=0",
    "training.tensorboard=false",
    "evaluation.bootstrap_resamples=20",
    "runtime.deterministic=true",
]


def test_two_deterministic_runs_give_identical_metrics(tmp_path, capsys):
    """runtime.deterministic: the same command twice gives the same numbers, to the last bit."""
    argv = ["run", "s1_unet_infection_medseg", "--out", str(tmp_path / "runs"), "--strategy", "one_device"]
    for override in TINY_DETERMINISTIC:
        argv += ["--set", override]
    assert main(argv) == 0
    assert main(argv) == 0
    first, second = sorted((tmp_path / "runs" / "s1_unet_infection_medseg").glob("2*"))
    summaries = [json.loads((run / "summary.json").read_text()) for run in (first, second)]
    assert summaries[0] == summaries[1]
    assert summaries[0]["dice_per_image"]["value"] is not None
    histories = [(run / "history.csv").read_text() for run in (first, second)]
    assert histories[0] == histories[1]
    assert "verified" in capsys.readouterr().out  # shard checksums were checked before training


@pytest.mark.slow
def test_the_demo_prints_the_same_table_twice_and_its_classifier_learns(tmp_path, capsys):
    """The README's demo, twice from scratch (phantoms, TFRecords, training): one table, ROC-AUC >= 0.9."""
    tables = []
    for attempt in ("a", "b"):
        assert main(["run", "demo", "--out", str(tmp_path / attempt)]) == 0
        out = capsys.readouterr().out
        tables.append(out[out.index("Demo on SYNTHETIC phantoms") : out.index("\ndemo: ")])
        summary = json.loads((tmp_path / attempt / "demo" / "latest" / "summary.json").read_text())
        assert summary["classifier_roc_auc"]["value"] >= 0.9
    assert tables[0] == tables[1]
