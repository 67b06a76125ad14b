"""The pipeline registry: every declared name resolves to its module's `run`, unknown names are config
errors naming the known ones, and the demo runs its parts through `context.run_task`."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.config import ConfigError
from experiments import runner
from experiments.pipelines import PIPELINE_NAMES, demo, pipeline_run, register_pipeline
from experiments.registry import get_experiment


def test_every_declared_pipeline_is_registered_by_its_module():
    modules = {
        "demo": runner.demo,
        "lung_then_classify": runner.lung_then_classify,
        "nodule_transfer": runner.nodule_transfer,
        "streams": runner.streams,
        "uncertainty": runner.uncertainty,
    }
    assert sorted(modules) == sorted(PIPELINE_NAMES)
    for name, module in modules.items():
        assert pipeline_run(name) is module.run


def test_unknown_pipelines_are_config_errors_naming_the_known_ones():
    known = "demo, lung_then_classify, nodule_transfer, streams, uncertainty"
    with pytest.raises(ConfigError, match=f"^pipeline: unknown pipeline 'nope'; known: {known}$"):
        pipeline_run("nope")
    with pytest.raises(ConfigError, match="unknown pipeline 'nope'"):
        register_pipeline("nope")
    with pytest.raises(ConfigError, match="unknown pipeline 'nope'"):
        get_experiment("demo", ["pipeline=nope"])


def test_a_second_function_under_one_name_is_refused():
    with pytest.raises(ValueError, match="pipeline 'streams' is registered twice"):
        register_pipeline("streams")(lambda context, prepared: {})
    assert pipeline_run("streams") is runner.streams.run


def test_the_demo_runs_each_part_through_the_context(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "prepare_data", lambda data, *args: data.dataset)
    calls = []

    def run_task(context, prepared):
        calls.append((context.config.name, context.config.pipeline, prepared, context.run_dir))
        return {"accuracy": {"value": len(calls) / 4, "low": None, "high": None}}

    config = get_experiment("demo")
    context = runner.RunContext(config, tmp_path, tmp_path / "cache", tmp_path / "run", None, run_task)
    summary = demo.run(context, None)
    assert calls == [
        ("demo_classifier", None, "covid_qu_ex", tmp_path / "run" / "classifier"),
        ("demo_segmenter", None, "medseg", tmp_path / "run" / "segmenter"),
        ("demo_streams", "streams", "medseg", tmp_path / "run" / "streams"),
    ]
    assert {key: entry["value"] for key, entry in summary.items()} == {
        "classifier_accuracy": 0.25,
        "segmenter_accuracy": 0.5,
        "streams_accuracy": 0.75,
    }
    assert all(Path(call[3]).is_dir() for call in calls)
