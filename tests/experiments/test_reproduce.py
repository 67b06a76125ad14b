"""`experiments reproduce` with a stubbed runner: progress lines, skip by config hash, resume, --only."""

import json
from pathlib import Path

import pytest
import yaml

from common.config import to_dict
from experiments import reproduce as reproduce_module
from experiments.__main__ import main
from experiments.registry import get_experiment
from experiments.reproduce import config_hash, reproduce, select_rows
from experiments.run_start import point_latest


class StubRunner:
    """Writes a run folder as the runner would (run.json first, summary.json when finished)."""

    def __init__(self, interrupt: str | None = None, fail: str | None = None):
        self.calls: list[tuple[str, bool, str]] = []
        self.interrupt, self.fail = interrupt, fail

    def __call__(self, name, data_dir, out_dir, resume=False, scale="full"):
        self.calls.append((name, resume, scale))
        if name == self.fail:
            raise RuntimeError("the data root is missing")
        if resume:
            folder = (Path(out_dir) / name / "latest").resolve()
        else:
            folder = Path(out_dir) / name / f"2026120{len(self.calls)}T000000Z"
            folder.mkdir(parents=True)
            point_latest(folder)
            digest = config_hash(get_experiment(name, scale=scale))
            (folder / "run.json").write_text(
                json.dumps({"name": name, "config_hash": digest, "scale": scale})
            )
            (folder / "best.keras").write_bytes(b"weights")
        if name == self.interrupt and not resume:
            raise KeyboardInterrupt
        (folder / "summary.json").write_text(
            json.dumps({"accuracy": {"value": 0.75, "low": 0.7, "high": 0.8}})
        )
        return folder


def run_rows(tmp_path, stub, monkeypatch, pattern="s2_vgg1*"):
    monkeypatch.setattr(reproduce_module, "run_experiment", stub)
    lines: list[str] = []
    results = reproduce(
        "cpu", tmp_path / "data", tmp_path / "runs", tmp_path / "results", pattern, lines.append
    )
    return results, lines


def test_each_row_runs_once_prints_one_line_and_its_record_lands_in_results(tmp_path, monkeypatch):
    stub = StubRunner()
    results, lines = run_rows(tmp_path, stub, monkeypatch)
    assert stub.calls == [("s2_vgg16_ct", False, "cpu"), ("s2_vgg19_ct", False, "cpu")]
    record = tmp_path / "results" / "s2_vgg16_ct" / "20261201T000000Z"
    assert lines[0] == f"[1/2] s2_vgg16_ct: ran in 0 s, accuracy 0.750 -> {record.resolve()}"
    assert lines[1].startswith("[2/2] s2_vgg19_ct: ran in 0 s, accuracy 0.750 -> ")
    assert sorted(path.name for path in record.iterdir()) == ["run.json", "summary.json"]  # no weights
    assert [result.status for result in results] == ["ran", "ran"]


def test_a_row_with_a_record_of_the_same_config_hash_is_skipped(tmp_path, monkeypatch):
    run_rows(tmp_path, StubRunner(), monkeypatch)
    again = StubRunner()
    results, lines = run_rows(tmp_path, again, monkeypatch)
    assert again.calls == []
    assert [result.status for result in results] == ["skipped", "skipped"]
    assert lines[0].startswith("[1/2] s2_vgg16_ct: skipped in 0 s, accuracy 0.750 -> ")
    # records of another config (a changed hash) do not count
    for root in ("results", "runs"):
        run_json = tmp_path / root / "s2_vgg16_ct" / "20261201T000000Z" / "run.json"
        run_json.write_text(
            json.dumps({**json.loads(run_json.read_text()), "config_hash": "an older config"})
        )
    changed = StubRunner()
    run_rows(tmp_path, changed, monkeypatch)
    assert changed.calls == [("s2_vgg16_ct", False, "cpu")]


def test_a_finished_run_only_under_out_is_copied_into_results_not_rerun(tmp_path, monkeypatch):
    StubRunner()("s2_vgg16_ct", tmp_path / "data", tmp_path / "runs", scale="cpu")
    stub = StubRunner()
    results, _ = run_rows(tmp_path, stub, monkeypatch, "s2_vgg16_ct")
    assert stub.calls == [] and results[0].status == "skipped"
    assert (tmp_path / "results" / "s2_vgg16_ct" / "20261201T000000Z" / "summary.json").is_file()


def test_an_interrupted_sequence_resumes_the_unfinished_row_and_skips_the_finished(tmp_path, monkeypatch):
    with pytest.raises(KeyboardInterrupt):
        run_rows(tmp_path, StubRunner(interrupt="s2_vgg19_ct"), monkeypatch)
    assert (tmp_path / "results" / "s2_vgg16_ct").is_dir()
    assert not (tmp_path / "results" / "s2_vgg19_ct").exists()
    rerun = StubRunner()
    results, lines = run_rows(tmp_path, rerun, monkeypatch)
    assert rerun.calls == [("s2_vgg19_ct", True, "cpu")]
    assert [result.status for result in results] == ["skipped", "resumed"]
    assert lines[1].startswith("[2/2] s2_vgg19_ct: resumed in 0 s, accuracy 0.750 -> ")
    assert (tmp_path / "results" / "s2_vgg19_ct" / "20261202T000000Z" / "summary.json").is_file()


def test_a_failed_row_is_reported_and_the_next_one_runs(tmp_path, monkeypatch):
    stub = StubRunner(fail="s2_vgg16_ct")
    results, lines = run_rows(tmp_path, stub, monkeypatch)
    assert lines[0] == "[1/2] s2_vgg16_ct: FAILED in 0 s: RuntimeError: the data root is missing"
    assert [result.status for result in results] == ["FAILED", "ran"]


def test_only_selects_by_pattern_and_puts_a_cascade_after_the_row_it_reads():
    configs = {
        name: get_experiment(name, scale="cpu") for name in ("s2_vgg16_ct", "s2_vgg19_ct", "s2_resnet50_ct")
    }
    assert select_rows(configs, "s2_vgg*") == ["s2_vgg16_ct", "s2_vgg19_ct"]
    assert select_rows(configs) == ["s2_resnet50_ct", "s2_vgg16_ct", "s2_vgg19_ct"]
    s3 = {
        name: get_experiment(name, scale="cpu")
        for name in ("s3_unet_infection_zenodo", "s3_unet_lung_zenodo")
    }
    assert select_rows(s3, "s3_unet_*") == ["s3_unet_lung_zenodo", "s3_unet_infection_zenodo"]


def test_only_matching_nothing_is_one_error_line(tmp_path, capsys):
    status = main(
        ["reproduce", "--only", "nothing*", "--out", str(tmp_path / "runs"), "--results", str(tmp_path)]
    )
    assert status == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: --only 'nothing*' matches no row; `python -m experiments list` shows them"
    ]


def test_config_hash_ignores_what_the_runner_fills_in_and_sees_real_changes():
    config = get_experiment("s2_vgg16_ct", scale="cpu")
    written = to_dict(config)
    written["training"].update(seed=0, mixed_precision="mixed_bfloat16")  # as older runners wrote it
    written["evaluation"]["threshold"] = "val"  # a key older configs had
    assert config_hash(yaml.safe_load(yaml.safe_dump(written))) == config_hash(config)
    # a record written before a field with a default existed
    del written["runtime"]["deterministic"], written["data"]["cv_protocol"]
    assert config_hash(written) == config_hash(config)
    written["runtime"]["deterministic"] = True
    assert config_hash(written) != config_hash(config)
    assert config_hash(get_experiment("s2_vgg16_ct", ["training.epochs=7"], scale="cpu")) != config_hash(
        config
    )
    assert config_hash(get_experiment("s2_vgg16_ct")) != config_hash(config)
    assert len(config_hash(config)) == 64


@pytest.mark.slow
def test_the_runner_records_the_hash_reproduce_looks_for(tmp_path):
    from experiments.reproduce import record_hash
    from experiments.runner import run_experiment

    overrides = [
        "data.phantom=true",
        "training.epochs=1",
        "data.steps_per_epoch=2",
        "data.image_size=32",
        "model.options={encoder_kwargs: {filters: [4, 8, 16]}}",
        "evaluation.bootstrap_resamples=20",
    ]
    name = "s1_unet_infection_medseg"
    run_dir = run_experiment(name, tmp_path / "unused", tmp_path / "runs", overrides, scale="cpu")
    record = json.loads((run_dir / "run.json").read_text())
    assert record["config_hash"] == config_hash(get_experiment(name, overrides, scale="cpu"))
    assert (record["initialisation"], record["pretrained"], record["scale"]) == ("random", False, "cpu")
    record.pop("config_hash")  # an older record: the hash comes from its experiment.yaml
    (run_dir / "run.json").write_text(json.dumps(record))
    assert record_hash(run_dir) == config_hash(get_experiment(name, overrides, scale="cpu"))


def test_the_cascade_prefix_is_the_one_cross_validation_resolves():
    from experiments.cross_validation import RUN_PREFIX

    assert reproduce_module.RUN_PREFIX == RUN_PREFIX
