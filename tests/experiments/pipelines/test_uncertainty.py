"""S1 uncertainty pipeline: coverage points by hand, member configs, and a 2-member phantom run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from common.config import ConfigError, DataConfig, ModelConfig, TaskConfig, from_dict
from experiments.pipelines.options import UncertaintyOptions
from experiments.pipelines.uncertainty import coverage_metrics, member_configs
from experiments.runner import run_experiment
from tests.experiments.pipelines.phantom_rows import TINY_CLASSIFIER

TINY = [
    "data.phantom=true",
    "data.dataset=covid_qu_ex",
    "data.root=cxr-covid-qu-ex",
    "data.split=publisher",
    "data.label_names=[COVID, NonCOVID]",
    "data.label_map={COVID-19: COVID, Non-COVID: NonCOVID, Normal: NonCOVID}",
    *TINY_CLASSIFIER,
    "pipeline_options={members: [plain_cnn], seeds: [0, 1], mc_dropout_samples: 3}",
]


def test_coverage_metrics_reject_the_most_uncertain_first():
    correct = np.array([1, 1, 0, 1, 0, 1, 1, 1, 1, 1], bool)
    entropy = np.array([0.1, 0.2, 0.9, 0.3, 0.8, 0.1, 0.2, 0.3, 0.4, 0.5])
    points = coverage_metrics(correct, entropy)
    assert points == {
        "accuracy_at_coverage_100": 0.8,
        "accuracy_at_coverage_90": 8 / 9,  # the 0.9 case (wrong) rejected
        "accuracy_at_coverage_80": 1.0,  # both wrong cases rejected
        "accuracy_at_coverage_70": 1.0,
        "accuracy_at_coverage_60": 1.0,
        "accuracy_at_coverage_50": 1.0,
    }
    confident_but_wrong = coverage_metrics(correct, 1.0 - entropy)
    assert confident_but_wrong["accuracy_at_coverage_80"] == 6 / 8


def test_member_configs_cross_members_and_seeds(tmp_path, phantom_tfrecords):
    base = TaskConfig(data=DataConfig(tfrecords=[phantom_tfrecords]), model=ModelConfig(task="multiclass"))
    configs = member_configs(base, ["resnet50", "inceptionresnetv2"], [0, 1], tmp_path)
    assert [(c.model.name, c.runtime.seed, folder.name) for c, folder in configs] == [
        ("resnet50", 0, "resnet50-seed0"),
        ("resnet50", 1, "resnet50-seed1"),
        ("inceptionresnetv2", 0, "inceptionresnetv2-seed0"),
        ("inceptionresnetv2", 1, "inceptionresnetv2-seed1"),
    ]
    assert all(folder.parent == tmp_path / "members" for _, folder in configs)


def test_options_need_two_models_and_known_keys():
    def options(values):
        return from_dict(UncertaintyOptions, values, "pipeline_options")

    assert options({"members": ["a", "b"]}) == UncertaintyOptions(["a", "b"], [0], 20)
    with pytest.raises(ConfigError, match=r"an ensemble needs at least 2 members x seeds, got members \['a'\]"):
        options({"members": ["a"], "seeds": [3]})
    with pytest.raises(ConfigError, match=r"pipeline_options: unknown key\(s\) samples; allowed: "):
        options({"members": ["a", "b"], "samples": 3})


@pytest.fixture(scope="module")
def phantom_tfrecords(tmp_path_factory):
    from common.config import DataConfig as ExperimentData
    from experiments.data import prepare_data

    data = ExperimentData(phantom=True, image_size=32)
    cache = tmp_path_factory.mktemp("cache")
    return str(prepare_data(data, Path("/nonexistent"), cache, seed=0).manifests[0].directory)


def test_ensemble_and_mc_dropout_end_to_end(tmp_path):
    run_dir = run_experiment("s1_ensemble_uncertainty_ct", Path("/nonexistent"), tmp_path, TINY)
    summary = json.loads((run_dir / "summary.json").read_text())
    for prefix in ("", "mc_dropout_"):
        for percent in (100, 90, 80, 70, 60, 50):
            entry = summary[f"{prefix}accuracy_at_coverage_{percent}"]
            assert entry["low"] <= entry["value"] <= entry["high"]
        assert 0.0 <= summary[f"{prefix}mean_entropy"]["value"] <= np.log(2)
    # All cases kept: the plain test accuracy at the validation threshold.
    assert summary["accuracy_at_coverage_100"]["value"] == pytest.approx(summary["accuracy"]["value"])
    assert {"member_plain_cnn_seed0_accuracy", "member_plain_cnn_seed1_roc_auc", "roc_auc"} <= set(summary)
    # 90 % coverage by hand from the ensemble's predictions: drop the round(0.1 N) highest entropies.
    frame = pd.read_csv(run_dir / "ensemble" / "predictions.csv")
    kept = frame.sort_values("entropy", kind="stable").iloc[: len(frame) - round(0.1 * len(frame))]
    by_hand = float((kept["label"] == kept["predicted"]).mean())
    assert summary["accuracy_at_coverage_90"]["value"] == pytest.approx(by_hand)
    assert (run_dir / "coverage_accuracy.png").stat().st_size > 0
    assert (run_dir / "members" / "plain_cnn-seed1" / "best.keras").is_file()
    assert (
        json.loads((run_dir / "mc_dropout" / "metrics.json").read_text())["uncertainty"]["method"]
        == "mc_dropout"
    )
