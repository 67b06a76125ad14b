"""Fixtures of the CT report tests: band models saved as model bundles, loaded as the command loads them."""

import pytest

from experiments.pipelines.report import load_models
from tests.experiments.pipelines.report.stubs import save_band_model


@pytest.fixture(scope="session")
def report_model_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {
        "lung": save_band_model(root / "lung_run", "lung", 70 / 255, 210 / 255),
        "infection": save_band_model(root / "infection_run", "infection", 150 / 255, 2.0),
    }


@pytest.fixture(scope="session")
def report_models(report_model_files):
    return load_models(report_model_files["lung"], report_model_files["infection"])
