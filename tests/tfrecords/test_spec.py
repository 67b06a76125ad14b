from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from data_prep.errors import DataError
from tests.tfrecords.conftest import make_record
from tfrecords.spec import PreprocessSpec, to_grayscale


def test_parse_gives_canonical_text() -> None:
    spec = PreprocessSpec.parse(" window=lung, clahe=3:4 ,lungcrop=2,resize=64x48")
    assert str(spec) == "window=lung,clahe=3:4,lungcrop=2,resize=64x48"
    assert str(PreprocessSpec.parse("window=-600:1500,resize=32")) == "window=-600:1500,resize=32x32"
    assert str(PreprocessSpec.parse("", image_size=16)) == "resize=16x16"
    assert str(PreprocessSpec.parse("resize=16", image_size=16)) == "resize=16x16"
    assert PreprocessSpec.parse("hu16").stored_dtype == "uint16"
    assert PreprocessSpec.parse("minmax").stored_dtype == "uint8"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "blur",
            "unknown preprocess step 'blur'; known: window, hu16, range, minmax, clahe, lungcrop, resize",
        ),
        (
            "window=wide",
            "preprocess step 'window=wide': give window=NAME (lung, mediastinum, soft_tissue, bone)"
            " or window=CENTER:WIDTH",
        ),
        ("range=1", "preprocess step 'range=1': expected 2 number(s)"),
        ("resize=0", "preprocess step 'resize=0': sizes must be positive whole numbers"),
        ("hu16=2", "unknown preprocess step 'hu16=2'"),
    ],
)
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        PreprocessSpec.parse(text)
    assert str(caught.value).startswith(message)


def test_image_size_must_agree_with_resize() -> None:
    with pytest.raises(ValueError, match=r"--image-size 32 contradicts the spec's resize=16x16"):
        PreprocessSpec.parse("resize=16", image_size=32)


def test_window_and_range_values() -> None:
    hu = np.array([[-1350, -600, 150]], np.int16)
    record = make_record(0, "p", "normal", image=hu, intensity="hu", masks={})
    image, _ = PreprocessSpec.parse("window=lung").apply(record)
    np.testing.assert_array_equal(image, [[0, 128, 255]])  # -600 is the centre: 127.5 rounds up
    normalized = np.array([[0.0, 0.5, 2.0, -1.0]], np.float32)
    record = make_record(0, "p", "normal", image=normalized, intensity="normalized", masks={})
    np.testing.assert_array_equal(PreprocessSpec.parse("range=0:1").apply(record)[0], [[0, 128, 255, 0]])
    np.testing.assert_array_equal(PreprocessSpec.parse("minmax").apply(record)[0], [[85, 128, 255, 0]])


def test_lungcrop_finds_the_box_from_the_image_and_never_from_the_lung_label() -> None:
    body = np.full((10, 14), 200, np.uint8)
    body[3:7, 2:5] = 20  # two dark "lungs" inside the body: rows 3..7, columns 2..10
    body[3:8, 8:11] = 20
    record = make_record(0, "p", "covid", image=body)
    image, masks = PreprocessSpec.parse("lungcrop=1").apply(record)
    np.testing.assert_array_equal(image, body[2:9, 1:12])
    np.testing.assert_array_equal(masks["infection"], record.masks["infection"][2:9, 1:12])
    wrong_label = dict(record.masks, lung=np.ones_like(record.masks["lung"]))  # a label that would frame it all
    relabelled = dataclasses.replace(record, masks=wrong_label)
    np.testing.assert_array_equal(PreprocessSpec.parse("lungcrop=1").apply(relabelled)[0], image)


def test_colour_becomes_grayscale() -> None:
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[..., 0] = 100  # pure red 100 -> luma 0.299 * 100 = 29.9
    np.testing.assert_array_equal(to_grayscale(rgb), np.full((2, 2), 30, np.uint8))


def test_failing_step_names_the_record() -> None:
    record = make_record(
        0, "p", "normal", image=np.zeros((4, 4), np.float32), intensity="normalized", masks={}
    )
    with pytest.raises(DataError) as caught:
        PreprocessSpec.parse("clahe").apply(record)
    assert str(caught.value).startswith("/raw/normal/img00.png: preprocess step clahe: clahe needs a uint8")
