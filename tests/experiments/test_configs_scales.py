"""Every results-table row declares a CPU-scale variant that builds, says why, and needs no download."""

import pytest
import yaml

from common.config import ConfigError, to_dict
from experiments.registry import get_experiment, list_experiments
from experiments.tables import initialisation

ROWS = [name for name in list_experiments() if name != "demo"]


def test_there_are_rows_to_check():
    assert len(ROWS) >= 40


@pytest.mark.parametrize("name", ROWS)
def test_every_row_builds_at_both_scales_and_the_cpu_variant_says_why(name):
    full = get_experiment(name)
    cpu = get_experiment(name, scale="cpu")
    assert (full.scale, cpu.scale) == ("full", "cpu")
    assert to_dict(full) != {**to_dict(cpu), "scale": "full"}  # the variant changes something
    variant = cpu.scales["cpu"]  # the row's own or its base's
    assert isinstance(variant["reason"], str) and len(variant["reason"].split()) >= 10
    assert 64 <= cpu.data.image_size <= 144
    # ImageNet weights cannot be downloaded here: a CPU variant never asks for them
    assert initialisation(to_dict(cpu)) in ("random", "nodule")


def test_initialisation_reads_weights_and_the_transfer_init():
    assert initialisation(to_dict(get_experiment("s2_vgg16_ct"))) == "imagenet"
    assert initialisation(to_dict(get_experiment("s2_vgg16_ct", scale="cpu"))) == "random"
    assert (
        initialisation(to_dict(get_experiment("s0_deeplabv3plus_nodule_transfer_ggo", scale="cpu")))
        == "nodule"
    )
    assert initialisation(to_dict(get_experiment("s0_deeplabv3plus_imagenet_transfer_ggo"))) == "imagenet"
    assert (
        initialisation(to_dict(get_experiment("s0_deeplabv3plus_imagenet_transfer_ggo", scale="cpu")))
        == "random"
    )
    assert initialisation({"model": {"weights": "None"}}) == "random"
    assert initialisation({"model": {"weights": "lung.weights.h5"}}) == "lung.weights.h5"


def test_a_variant_applies_its_overrides_before_the_sets():
    config = get_experiment("s2_vgg16_ct", ["training.epochs=2"], scale="cpu")
    assert (config.data.image_size, config.model.weights, config.training.epochs) == (128, None, 2)


def test_the_s4_rows_share_one_lung_segmenter_at_cpu_scale():
    segmenters = {
        yaml.safe_dump(get_experiment(name, scale="cpu").pipeline_options["lung_segmenter"])
        for name in ROWS
        if get_experiment(name).pipeline == "lung_then_classify"
    }
    assert len(segmenters) == 1


def test_an_unknown_scale_names_the_known_ones():
    with pytest.raises(ConfigError, match=r"no scale 'tiny'; this row has: full, cpu"):
        get_experiment("s2_vgg16_ct", scale="tiny")


@pytest.mark.shared_data
def test_every_cpu_variant_finds_its_inputs_in_the_shared_subsets(shared_data):
    from data_prep.errors import DataError
    from experiments.run_start import check_inputs

    missing = {}
    for name in ROWS:
        try:
            check_inputs(get_experiment(name, scale="cpu"), shared_data)
        except (ConfigError, DataError) as error:
            missing[name] = str(error)
    assert missing == {}
