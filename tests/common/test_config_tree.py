"""The one config tree: strict loading, `base:` inheritance, and every setting read by something."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from common.config import ConfigError, DataConfig, TaskConfig, from_dict, replaced, to_dict
from experiments.config import ExperimentConfig, load_config
from experiments.registry import CONFIG_DIR, get_experiment, list_experiments

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("classification", "segmentation", "data_prep", "tfrecords", "experiments", "common")
# Read by the loader itself rather than by a run: the row's identity and its scale variants.
READ_BY_THE_LOADER = {"name", "scales", "scale", "description"}


def test_a_row_inherits_its_base_and_fills_the_placeholders(tmp_path):
    (tmp_path / "_family.yaml").write_text(
        "paper: S2\nrow: '{model.name} classifier'\ndata: {image_size: 224, channels: 3}\n"
        "model: {name: vgg16, options: {a: 1}}\n"
        "scales: {cpu: {reason: 'small {model.name}', set: [data.image_size=64]}}\n"
    )
    (tmp_path / "row.yaml").write_text("{base: _family, model: {name: resnet50, options: {b: 2}}}\n")
    config = load_config(tmp_path / "row.yaml", scale="cpu")
    assert (config.name, config.row, config.model.name) == ("row", "resnet50 classifier", "resnet50")
    assert config.model.options == {"a": 1, "b": 2}  # mappings merge key by key
    assert (config.data.image_size, config.data.channels) == (64, 3)
    assert config.scales["cpu"]["reason"] == "small resnet50"


def test_a_base_cycle_and_a_missing_base_are_errors(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b\n")
    (tmp_path / "b.yaml").write_text("base: a\n")
    with pytest.raises(ConfigError, match="inherits from itself"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("base: nowhere\n")
    with pytest.raises(ConfigError, match=r"base 'nowhere': no such file"):
        load_config(tmp_path / "c.yaml")


def test_every_s2_ct_row_but_one_is_a_one_line_file():
    rows = sorted(CONFIG_DIR.glob("s2_*_ct.yaml"))
    one_line = [path.stem for path in rows if len(path.read_text().strip().splitlines()) == 1]
    assert len(rows) == 12 and len(one_line) == 11  # NASNetLarge has its own CPU variant
    assert "_s2_ct" not in list_experiments()
    config = get_experiment("s2_resnet101_ct", scale="cpu")
    assert (config.paper, config.row, config.model.name) == ("S2", "resnet101 classifier, CT", "resnet101")
    assert (config.data.image_size, config.model.weights, config.training.epochs) == (128, None, 5)


def test_replaced_changes_nested_fields_without_touching_the_original():
    config = TaskConfig(data=DataConfig(batch_size=4))
    changed = replaced(config, **{"data.batch_size": 8, "model.name": "unet"})
    assert (changed.data.batch_size, changed.model.name, config.data.batch_size) == (8, "unet", 4)
    assert from_dict(TaskConfig, to_dict(changed)) == changed


def _fields(config: object, prefix: str = "") -> list[tuple[str, str]]:
    """(dotted path, field name) of every leaf setting of a config dataclass instance."""
    out = []
    for item in dataclasses.fields(config):
        value = getattr(config, item.name)
        if dataclasses.is_dataclass(value):
            out += _fields(value, f"{prefix}{item.name}.")
        else:
            out.append((f"{prefix}{item.name}", item.name))
    return out


def test_every_setting_of_the_tree_is_read_outside_the_config_modules():
    """A setting nothing reads is a setting a user changes in vain: each leaf of the tree must be read
    as an attribute (`.name`) by production code other than the config modules themselves."""
    sources = [
        path.read_text()
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if path.name not in ("config.py", "config_checks.py", "training_config.py")
    ]
    text = "\n".join(sources)
    unread = [
        dotted
        for dotted, name in _fields(ExperimentConfig())
        if name not in READ_BY_THE_LOADER and not re.search(rf"\.{name}\b", text)
    ]
    assert len(_fields(ExperimentConfig())) > 60 and unread == []


def test_pipeline_options_are_typed_and_checked_when_the_row_loads(tmp_path):
    from experiments.pipelines.options import NoduleTransferOptions, pipeline_options

    row = "paper: S0\nrow: transfer\npipeline: nodule_transfer\n"
    (tmp_path / "ok.yaml").write_text(row + "pipeline_options: {init: scratch, pretrain: {epochs: 3}}\n")
    options = pipeline_options(load_config(tmp_path / "ok.yaml"))
    assert isinstance(options, NoduleTransferOptions) and (options.init, options.pretrain.epochs) == ("scratch", 3)
    assert options.pretrain.dataset == "lidc"  # the default
    (tmp_path / "typo.yaml").write_text(row + "pipeline_options: {int: scratch}\n")
    with pytest.raises(ConfigError, match=r"pipeline_options: unknown key\(s\) int; allowed: init, pretrain"):
        load_config(tmp_path / "typo.yaml")
    (tmp_path / "value.yaml").write_text(row + "pipeline_options: {init: nodules}\n")
    with pytest.raises(ConfigError, match="pipeline_options.init: must be one of nodule, imagenet, scratch"):
        load_config(tmp_path / "value.yaml")
