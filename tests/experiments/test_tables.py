import json
from pathlib import Path

import pytest

from experiments.tables import build_table, format_table, load_published, plot_table


def make_run(root: Path, name: str, started: str, dice: float, published: list[str]) -> Path:
    folder = root / name / started
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(
        json.dumps(
            {
                "name": name,
                "paper": "S3",
                "started": started,
                "published": published,
                "split_type": "volume-wise",
                "data_scale": "subset",
                "hardware": {"summary": "2 CPU cores"},
            }
        )
    )
    (folder / "summary.json").write_text(
        json.dumps({"dice_per_image": {"value": dice, "low": dice - 0.1, "high": dice + 0.1}})
    )
    return folder


def test_published_numbers_carry_the_seed_headlines():
    published = load_published()
    assert published["s3_infection_dice"].value == pytest.approx(0.867)
    assert published["s4_vgg19bn_segmented"].value == pytest.approx(0.99)
    assert published["semi_infnet_dice"].metric == "dice_infnet_mean"
    assert all(number.source and number.split and number.definition for number in published.values())


def test_table_uses_the_newest_run_and_computes_the_difference(tmp_path):
    make_run(tmp_path, "s3_unet_infection_zenodo", "20261101T000000Z", 0.30, ["s3_infection_dice"])
    make_run(tmp_path, "s3_unet_infection_zenodo", "20261102T000000Z", 0.50, ["s3_infection_dice"])
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


def test_missing_metric_shows_as_not_available(tmp_path):
    make_run(tmp_path, "s3_unet_lung_zenodo", "20261101T000000Z", 0.9, ["s3_lung_iou"])
    table = build_table(tmp_path)
    assert table.loc[0, "ours"] is None
    assert "| n/a |" in format_table(table)
