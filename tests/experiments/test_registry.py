import pytest

from experiments.config import ExperimentConfig
from experiments.registry import get_experiment, list_experiments
from experiments.tables import load_published

REQUIRED_ROWS = [
    "s0_inceptionv3_multimodal",
    "s0_deeplabv3plus_nodule_transfer_ggo",
    "s0_streams",
    "s2_unet_resnet34_medseg",
    "s2_fpn_densenet121_medseg",
    "s3_unet_infection_zenodo",
    "s3_unet_lung_zenodo",
    "s4_fpn_densenet121_lung_cxr",
    "s4_vgg19bn_segmented_lung",
    "demo",
]


def test_the_issue_rows_are_registered():
    assert set(REQUIRED_ROWS) <= set(list_experiments())


@pytest.mark.parametrize("name", list_experiments())
def test_every_config_validates_and_names_known_published_numbers(name):
    config = get_experiment(name)
    assert isinstance(config, ExperimentConfig)
    assert config.name == name
    assert config.model.task in ("binary", "multiclass", "multilabel", "segmentation")
    assert set(config.evaluation.published) <= set(load_published())


def test_unknown_experiment_names_the_list_command():
    with pytest.raises(KeyError, match="python -m experiments list"):
        get_experiment("s9_missing")
