import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from experiments.tables import build_table, format_table, load_published, plot_table


def make_run(
    root: Path,
    name: str,
    started: str,
    summary: dict,
    published: list[str],
    config: dict | None = None,
    paper: str = "S3",
    **record,
) -> Path:
    folder = root / name / started
    folder.mkdir(parents=True)
    run = {
        "name": name,
        "paper": paper,
        "started": started,
        "published": published,
        "split_type": "volume-wise",
        "data_scale": "subset",
        "hardware": {"summary": "2 CPU cores"},
        **record,
    }
    (folder / "run.json").write_text(json.dumps(run))
    (folder / "summary.json").write_text(json.dumps(summary))
    if config is not None:
        (folder / "experiment.yaml").write_text(yaml.safe_dump(config))
    return folder


def dice(value: float) -> dict:
    return {"dice_per_image": {"value": value, "low": value - 0.1, "high": value + 0.1}}


SEGMENTER_128 = {
    "data": {"image_size": 128},
    "model": {"task": "segmentation", "name": "unet", "encoder": "plain", "weights": None},
}


def test_published_numbers_carry_the_seed_headlines():
    published = load_published()
    assert published["s3_infection_dice"].value == pytest.approx(0.867)
    assert published["s4_vgg19bn_segmented"].value == pytest.approx(0.99)
    assert published["semi_infnet_dice"].metric == "dice_infnet_mean"
    assert all(number.source and number.split and number.definition for number in published.values())


def test_s0_gains_and_saving_are_labelled_as_our_definitions_with_the_paper_quoted():
    published = load_published()
    for key, claim in (
        ("s0_streams_dice_gain", "+4% Dice"),
        ("s0_streams_miou_gain", "+7% mIoU"),
        ("s0_streams_compute_saving", "60% reduction in computational time"),
    ):
        assert published[key].definition.startswith("OUR definition, not the paper's:")
        assert (
            claim in published[key].paper_says
            and "compared to the recent literature" in published[key].paper_says
        )


def test_table_uses_the_newest_run_and_computes_the_difference(tmp_path):
    make_run(tmp_path, "s3_unet_infection_zenodo", "20261101T000000Z", dice(0.30), ["s3_infection_dice"])
    make_run(tmp_path, "s3_unet_infection_zenodo", "20261102T000000Z", dice(0.50), ["s3_infection_dice"])
    table = build_table(tmp_path)
    assert len(table) == 1
    assert table.loc[0, "ours"] == pytest.approx(0.50)
    assert table.loc[0, "difference"] == pytest.approx(0.50 - 0.867)
    markdown = format_table(table, "md")
    assert "### S3" in markdown
    assert (
        "| s3_unet_infection_zenodo | dice_per_image vs s3_infection_dice | 0.500 (0.400-0.600) | 0.867 | -0.367 |"
        in markdown
    )
    assert format_table(table, "csv").splitlines()[0].startswith("paper,row,metric,ours")
    assert "\\begin{tabular}" in format_table(table, "latex")
    plot_table(table, tmp_path / "comparison.png")
    assert (tmp_path / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_side_by_side_checks_under_an_underscore_folder_are_not_table_rows(tmp_path):
    make_run(tmp_path, "s3_unet_infection_zenodo", "20261101T000000Z", dice(0.30), ["s3_infection_dice"])
    make_run(tmp_path / "_float32", "s3_unet_infection_zenodo", "20261102T000000Z", dice(0.50), ["s3_infection_dice"])
    table = build_table(tmp_path)
    assert len(table) == 1 and table.loc[0, "ours"] == pytest.approx(0.30)


def test_each_line_names_split_data_size_init_and_both_metric_definitions(tmp_path):
    make_run(
        tmp_path,
        "s3_unet_infection_zenodo",
        "20261101T000000Z",
        dice(0.5),
        ["s3_infection_dice"],
        SEGMENTER_128,
        initialisation="random",
    )
    line = format_table(build_table(tmp_path)).splitlines()[-1]
    assert line == (
        "| s3_unet_infection_zenodo | dice_per_image vs s3_infection_dice | 0.500 (0.400-0.600) | 0.867 | -0.367 | "
        "split: volume-wise / image-level; data: subset / Zenodo 3757476 (20 CT volumes); "
        "size: 128 px (full-scale row 256 px); init: not pretrained (full-scale row not pretrained); "
        "metric: Dice per test slice at the validation threshold, mean (1 where both masks are empty) / "
        "infection Dice, mean over test slices | 2 CPU cores |"
    )


def test_the_initialisation_of_an_older_record_comes_from_its_config(tmp_path):
    config = {"data": {"image_size": 224}, "model": {"task": "binary", "weights": "imagenet"}}
    summary = {"accuracy": {"value": 0.9, "low": 0.8, "high": 0.95}}
    make_run(tmp_path, "s1_resnet50_xray", "20261101T000000Z", summary, ["s1_xray_accuracy"], config, "S1")
    table = build_table(tmp_path)
    assert table.loc[0, "our_init"] == "imagenet"
    cell = format_table(table).splitlines()[-1]
    assert "| 0.900 (0.800-0.950) | 0.997 | -0.097 |" in cell  # S1's X-ray accuracy fills
    assert (
        "size: 224 px (full-scale row 224 px); init: pretrained: imagenet (full-scale row pretrained: imagenet)"
        in cell
    )
    assert (
        "metric: test accuracy at the validation-chosen threshold / test accuracy, X-ray classifier" in cell
    )


def test_a_comparison_without_our_value_says_why(tmp_path):
    make_run(tmp_path, "s3_unet_lung_zenodo", "20261101T000000Z", dice(0.9), ["s3_lung_iou"], SEGMENTER_128)
    summary = {"dice_per_image": {"value": 0.6, "low": 0.5, "high": 0.7}, "max_dice": {"value": None}}
    make_run(
        tmp_path,
        "s1_unet_infection_medseg",
        "20261101T000000Z",
        summary,
        ["s1_segmentation_accuracy"],
        SEGMENTER_128,
        "S1",
    )
    make_run(
        tmp_path,
        "s2_vgg16_ct",
        "20261101T000000Z",
        {"roc_auc": {"value": None}},
        ["s3_classifier_auc"],
        paper="S2",
    )
    table = build_table(tmp_path)
    reasons = dict(zip(table["row"], table["why_missing"], strict=True))
    assert reasons["s3_unet_lung_zenodo"] == "this run's summary.json has no iou_per_image"
    assert reasons["s1_unet_infection_medseg"].startswith(
        "pixel accuracy is not computed: our evaluation reports Dice"
    )
    assert reasons["s2_vgg16_ct"] == "roc_auc is undefined on this test split (null in summary.json)"
    markdown = format_table(table)
    assert "| n/a: this run's summary.json has no iou_per_image | 0.958 | n/a |" in markdown
    assert all("n/a: " in line for line in markdown.splitlines() if "n/a" in line)  # each says why
    assert "metric: none / average (pixel) accuracy of the U-Net segmentation" in markdown
    assert (
        "size: 128 px (full-scale row 256 px)" in markdown and "size: ? (full-scale row 224 px)" in markdown
    )


def test_s0_lines_say_whose_definition_they_compare(tmp_path):
    summary = {"dice_gain": {"value": 0.02, "low": -0.01, "high": 0.05}}
    make_run(
        tmp_path, "s0_streams", "20261101T000000Z", summary, ["s0_streams_dice_gain"], SEGMENTER_128, "S0"
    )
    line = format_table(build_table(tmp_path)).splitlines()[-1]
    assert (
        "metric: per-slice Dice of the gated streams minus that of one multi-class model, same test slices / "
        in line
    )
    assert "OUR definition, not the paper's: Dice of specialized" in line
    assert "(the paper: +4% Dice 'compared to the recent literature')" in line


def test_a_smaller_model_than_the_full_scale_row_is_named(tmp_path):
    config = {
        "data": {"image_size": 128},
        "model": {"task": "binary", "name": "efficientnetb0", "weights": None},
    }
    summary = {"accuracy": {"value": 0.8, "low": 0.7, "high": 0.9}}
    make_run(
        tmp_path,
        "s4_efficientnetb7_original",
        "20261101T000000Z",
        summary,
        ["s4_efficientnetb7_original"],
        config,
        "S4",
        initialisation="random",
    )
    line = format_table(build_table(tmp_path)).splitlines()[-1]
    assert (
        "init: not pretrained (full-scale row pretrained: imagenet); "
        "model: efficientnetb0 (full-scale row efficientnetb7); metric: test accuracy" in line
    )


def test_a_row_with_no_published_number_shows_its_headline_metric(tmp_path):
    accuracy = {"accuracy": {"value": 0.7, "low": 0.6, "high": 0.8}, "roc_auc": {"value": 0.75}}
    make_run(tmp_path, "s2_vgg16_ct", "20261101T000000Z", accuracy, [], paper="S2")
    table = build_table(tmp_path)
    assert table.loc[0, "metric"] == "accuracy" and pd.isna(table.loc[0, "published"])
    line = format_table(table, "md").splitlines()[-1]
    assert line.startswith("| s2_vgg16_ct | accuracy | 0.700 (0.600-0.800) | none published | - | ")
    assert "the seed publishes no number for this row" in line


def test_another_dataset_than_the_full_scale_rows_is_named(tmp_path):
    config = {
        "data": {"dataset": "image_folder", "root": "ct-covid-classification", "image_size": 128},
        "model": {"task": "binary", "name": "plain_cnn", "weights": None},
    }
    summary = {"precision": {"value": 0.8, "low": 0.7, "high": 0.9}}
    make_run(tmp_path, "s3_cnn_slice_classifier_zenodo", "20261101T000000Z", summary,
             ["s3_classifier_precision"], config, initialisation="random")  # fmt: skip
    line = format_table(build_table(tmp_path)).splitlines()[-1]
    assert (
        "data: subset of image_folder ct-covid-classification (full-scale row zenodo COVID-19-CT-Seg) / "
        "Zenodo 3757476 slices (infected vs not)" in line
    )
    same = {**config, "data": {"dataset": "medseg", "root": "ct-infection-medseg", "image_size": 128}}
    make_run(tmp_path, "s2_fpn_resnet34_medseg", "20261101T000000Z", dice(0.6), [], same, "S2")
    assert "data: subset / -" in format_table(build_table(tmp_path))  # same dataset as the full row: not named
