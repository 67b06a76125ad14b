from pathlib import Path

import pytest

from common.config import ConfigError, apply_overrides
from experiments.config import load_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "row.yaml"
    path.write_text(text)
    return path


def test_loads_nested_sections_and_applies_typed_overrides(tmp_path):
    path = write(tmp_path, "paper: S3\nrow: lung\ndata: {dataset: zenodo, image_size: 128}\n")
    config = load_config(path, ["training.epochs=2", "training.learning_rate=1e-4", "data.mask_names=[lung]"])
    assert config.name == "row"
    assert config.data.dataset == "zenodo"
    assert config.training.epochs == 2
    assert config.training.learning_rate == pytest.approx(1e-4)
    assert config.data.mask_names == ["lung"]


def test_unknown_key_names_the_key_and_the_allowed_ones(tmp_path):
    path = write(tmp_path, "paper: S3\nrow: lung\ntraining: {epoch: 3}\n")
    with pytest.raises(ConfigError, match=r"config\.training: unknown key\(s\) epoch; allowed: .*epochs"):
        load_config(path)


def test_wrong_type_is_rejected_with_its_path(tmp_path):
    path = write(tmp_path, "paper: S3\nrow: lung\n")
    with pytest.raises(ConfigError, match=r"config\.training\.epochs: expected int, got 'two'"):
        load_config(path, ["training.epochs=two"])


def test_missing_required_field_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="row"):
        load_config(write(tmp_path, "paper: S3\n"))


def test_override_without_equals_sign_is_rejected():
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        apply_overrides({}, ["training.epochs"])
