"""`experiments compare`: the paired per-image difference of two records, on known tables."""

import pytest

from data_prep.errors import DataError
from experiments.compare import paired_difference


def _record(root, name, rows, columns="key,case_id,ggo_dice"):
    folder = root / name
    (folder / "eval").mkdir(parents=True)
    (folder / "eval" / "per_image.csv").write_text(columns + "\n" + "\n".join(rows) + "\n")
    return folder


def test_difference_is_taken_on_the_images_both_scored(tmp_path):
    a = _record(tmp_path, "a", ["s1,c,0.5", "s2,c,0.2", "s3,c,0.9"])
    b = _record(tmp_path, "b", ["s2,c,0.4", "s1,c,0.6", "s4,c,0.0"])  # s3 / s4 are in one record only
    result = paired_difference(a, b)
    assert (result.column, result.images) == ("ggo_dice", 2)
    assert result.difference == pytest.approx(0.15)  # (0.6 - 0.5 + 0.4 - 0.2) / 2
    assert result.low == pytest.approx(0.1) and result.high == pytest.approx(0.2)  # the two deltas' range
    assert (result.mean_a, result.mean_b) == (pytest.approx(0.35), pytest.approx(0.5))
    assert "B - A = +0.150 (+0.100 to +0.200, paired bootstrap 95% CI over 2 images)" in result.line()


def test_an_ambiguous_or_missing_column_and_no_shared_image_are_errors(tmp_path):
    two = _record(tmp_path, "two", ["s1,c,0.5,0.4"], columns="key,case_id,ggo_dice,consolidation_dice")
    with pytest.raises(DataError, match="2 Dice columns .*say which with --column"):
        paired_difference(two, two)
    assert paired_difference(two, two, column="consolidation_dice").difference == 0.0
    other = _record(tmp_path, "other", ["s9,c,0.1"])
    with pytest.raises(DataError, match="no image in common"):
        paired_difference(_record(tmp_path, "a", ["s1,c,0.5"]), other)
    with pytest.raises(DataError, match="no column 'iou'"):
        paired_difference(other, other, column="iou")
