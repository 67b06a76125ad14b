"""S3's CT recipe on hand-made slices: which slices are kept, the crop box, CLAHE on uint8."""

from __future__ import annotations

import cv2
import keras
import numpy as np
import pytest

from data_prep import preprocess
from data_prep.ct_recipe import (
    S3_RECIPE,
    CTRecipe,
    apply_recipe,
    apply_recipe_to_volume,
    enhance,
    jittered_label_box,
    model_inputs,
    recipe_from_config,
    trim_records,
    trim_volume,
)
from data_prep.errors import DataError
from data_prep.records import Record, Volume
from segmentation.predict import Segmenter, lung_predictor
from segmentation.thresholds import ThresholdChoice
from tests.records import ct_slice
from tfrecords.spec import PreprocessSpec


def record(index: int | None, volume: str | None = "v1", size: int = 32, **fields) -> Record:
    image = np.full((size, size), 0 if index is None else index, np.uint8)
    return ct_slice(
        f"{volume}/{index}", image, f"/data/{volume}.nii.gz", volume_id=volume, slice_index=index, **fields
    )


def lungs_box_mask(size: int = 32) -> np.ndarray:
    """Lung pixels in rows 10..19 and columns 5..24."""
    mask = np.zeros((size, size), np.uint8)
    mask[10:20, 5:25] = 1
    return mask


def test_s3_recipe_defaults():
    assert (S3_RECIPE.keep_fraction, S3_RECIPE.window, S3_RECIPE.clahe_clip, S3_RECIPE.clahe_tiles) == (
        0.5,
        "lung",
        2.0,
        8,
    )
    assert S3_RECIPE.crop == "model" and S3_RECIPE.image_size == 256
    with pytest.raises(ValueError, match=r"keep_fraction must be in \(0, 1\], got 0"):
        CTRecipe(keep_fraction=0)


def test_trim_keeps_the_middle_half_in_slice_order_per_volume():
    shuffled = [7, 0, 11, 3, 5, 1, 9, 2, 8, 4, 10, 6]
    stream = [record(k) for k in shuffled] + [record(None, volume=None)] + [record(k, "v2") for k in range(4)]
    kept = list(trim_records(stream, 0.5))
    assert [(r.volume_id, r.slice_index) for r in kept] == [
        ("v1", 3),
        ("v1", 4),
        ("v1", 5),
        ("v1", 6),
        ("v1", 7),
        ("v1", 8),
        (None, None),
        ("v2", 1),
        ("v2", 2),
    ]


def test_trim_rejects_volumes_that_are_not_consecutive_and_slices_without_index():
    with pytest.raises(DataError, match=r"/data/v1.nii.gz: the slices of volume 'v1' are not consecutive"):
        list(trim_records([record(0), record(0, "v2"), record(1)]))
    with pytest.raises(DataError, match="record v1/None of a volume has no slice_index"):
        list(trim_records([record(0), record(None)]))


def test_trim_volume_keeps_world_positions():
    image = np.arange(2 * 2 * 12, dtype=np.int16).reshape(2, 2, 12)
    affine = np.diag([0.5, 0.5, 2.5, 1.0])
    affine[2, 3] = -100.0
    volume = Volume("v", image, affine, "hu", "/v.nii.gz", masks={"lung": (image % 2).astype(np.uint8)})
    trimmed = trim_volume(volume, 0.5)
    np.testing.assert_array_equal(trimmed.image, image[:, :, 3:9])
    np.testing.assert_array_equal(trimmed.masks["lung"], (image[:, :, 3:9] % 2).astype(np.uint8))
    assert trimmed.affine[2, 3] == -100.0 + 3 * 2.5  # new slice 0 sits where old slice 3 did
    np.testing.assert_array_equal(trimmed.affine[:3, :3], affine[:3, :3])


def test_enhance_windows_hu_and_applies_clahe_to_uint8():
    rng = np.random.default_rng(0)
    hu = rng.integers(-1200, 300, size=(32, 32)).astype(np.int16)
    ct = Record("s", hu, "ct", "hu", "/s.png")
    enhanced = enhance(ct, S3_RECIPE)
    expected = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(
        preprocess.window_hu(hu, preset="lung")
    )
    assert enhanced.image.dtype == np.uint8 and enhanced.intensity == "display"
    np.testing.assert_array_equal(enhanced.image, expected)
    display = Record("d", preprocess.window_hu(hu, preset="lung"), "ct", "display", "/d.png")
    custom = CTRecipe(clahe_clip=4.0, clahe_tiles=4)
    np.testing.assert_array_equal(
        enhance(display, custom).image,
        cv2.createCLAHE(clipLimit=4.0, tileGridSize=(4, 4)).apply(display.image),
    )
    np.testing.assert_array_equal(enhance(display, CTRecipe(clahe_clip=None)).image, display.image)


def test_training_records_crop_to_their_lung_label_box_then_resize():
    image = np.arange(32 * 32, dtype=np.uint32).reshape(32, 32) % 251
    lungs = {"lung": lungs_box_mask()}
    slices = [
        ct_slice(
            f"v/{k}",
            image.astype(np.uint8),
            "/v.nii.gz",
            masks=lungs,
            split="train",
            volume_id="v",
            slice_index=k,
        )
        for k in range(4)
    ]
    no_resize = CTRecipe(clahe_clip=None, image_size=None, crop_margin=4, crop_jitter=0)
    out = list(apply_recipe(slices, no_resize))
    assert [r.slice_index for r in out] == [1, 2]
    # lung rows 10..19 and columns 5..24, grown by 4: box (6, 24, 1, 29)
    np.testing.assert_array_equal(out[0].image, image[6:24, 1:29].astype(np.uint8))
    np.testing.assert_array_equal(out[0].masks["lung"], lungs_box_mask()[6:24, 1:29])
    resized = list(apply_recipe(slices, CTRecipe(clahe_clip=None, image_size=16, crop_jitter=0)))
    assert resized[0].image.shape == (16, 16) and resized[0].masks["lung"].shape == (16, 16)


def test_training_jitter_grows_the_label_box_by_a_seeded_random_0_to_jitter_pixels():
    lungs = np.pad(lungs_box_mask(), 16)  # rows 26..35, columns 21..40 of 64 x 64
    slice_record = ct_slice("v/0", np.zeros((64, 64), np.uint8), "/v", masks={"lung": lungs})
    recipe = CTRecipe(crop_margin=2, crop_jitter=5)
    boxes = {jittered_label_box(slice_record, recipe, seed) for seed in range(40)}
    exact = (26 - 2, 36 + 2, 21 - 2, 41 + 2)
    assert len(boxes) > 10
    for y0, y1, x0, x1 in boxes:
        assert exact[0] - 5 <= y0 <= exact[0] and exact[1] <= y1 <= exact[1] + 5
        assert exact[2] - 5 <= x0 <= exact[2] and exact[3] <= x1 <= exact[3] + 5
    assert jittered_label_box(slice_record, recipe, 3) == jittered_label_box(slice_record, recipe, 3)


def test_records_outside_training_never_crop_with_their_labels():
    """Rule "model" without a lung model: a test record cannot fall back on its own lung label."""
    test_record = record(0, "v", masks={"lung": lungs_box_mask()}, split="test")
    with pytest.raises(ValueError, match='crop rule "model" needs a lung model'):
        list(apply_recipe([test_record], CTRecipe(keep_fraction=1.0)))
    predicted = np.zeros((32, 32), np.uint8)
    predicted[2:6, 3:9] = 1

    def predictor(images, intensity):
        assert intensity == "display" and len(images) == 1
        return [predicted]

    recipe = CTRecipe(keep_fraction=1.0, clahe_clip=None, image_size=None, crop_margin=0)
    (out,) = apply_recipe([test_record], recipe, predictor)
    assert out.image.shape == (4, 6)  # the PREDICTED box, not the label's (10 x 20)
    np.testing.assert_array_equal(out.masks["lung"], lungs_box_mask()[2:6, 3:9])


def test_test_inputs_do_not_change_when_test_labels_are_corrupted():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (32, 32)).astype(np.uint8)

    def volume(masks):
        return [
            ct_slice(f"t/{k}", image, "/t", masks=masks, split="test", volume_id="t", slice_index=k)
            for k in range(3)
        ]

    def predictor(images, intensity):
        return [lungs_box_mask() for _ in images]

    recipe = CTRecipe(keep_fraction=1.0, image_size=16)
    clean = list(apply_recipe(volume({"lung": lungs_box_mask()}), recipe, predictor))
    noise = rng.integers(0, 2, (32, 32)).astype(np.uint8)
    corrupt = list(apply_recipe(volume({"lung": noise}), recipe, predictor))
    inputs, _ = model_inputs([image] * 3, "display", recipe, [lungs_box_mask()] * 3)
    for a, b, expected in zip(clean, corrupt, inputs, strict=True):
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.image, expected)


def threshold_segmenter(input_size: int = 16) -> Segmenter:
    """A one-layer 'lung segmenter': probability sigmoid(100 x - 50), i.e. lung where x > 0.5."""
    model = keras.Sequential([keras.Input((input_size, input_size, 1)), keras.layers.Conv2D(1, 1)])
    model.layers[0].set_weights([np.full((1, 1, 1, 1), 100.0), np.array([-50.0])])
    model = keras.Sequential([model, keras.layers.Activation("sigmoid")])
    return Segmenter(model, ("lung",), False, ThresholdChoice.fixed(0.5, 1), PreprocessSpec())


def test_lung_predictor_drives_the_crop_of_records_outside_training():
    image = np.zeros((32, 32), np.uint8)
    image[8:24, 4:20] = 255  # bright 'lung' on even pixel edges: exact through the 16-px model
    slices = [ct_slice(f"v/{k}", image, "/v.png", volume_id="v", slice_index=k) for k in range(2)]
    predict = lung_predictor(threshold_segmenter())
    expected = np.zeros((32, 32), np.uint8)
    expected[8:24, 4:20] = 1
    np.testing.assert_array_equal(predict([image], "display")[0], expected)
    recipe = CTRecipe(keep_fraction=1.0, clahe_clip=None, image_size=None, crop_margin=1)
    out = list(apply_recipe(slices, recipe, lung_predictor=predict))
    assert [r.image.shape for r in out] == [(18, 18)] * 2  # rows 7..24, columns 3..20
    assert out[0].image.min() == 0 and out[0].image[1:-1, 1:-1].min() == 255


def test_apply_recipe_to_volume_cuts_trims_and_enhances():
    hu = np.full((32, 32, 8), -600, np.int16)
    volume = Volume("vol", hu, np.eye(4), "hu", "/vol.nii.gz", masks={"lung": np.ones((32, 32, 8), np.uint8)})
    out = list(apply_recipe_to_volume(volume, CTRecipe(image_size=8, crop="none")))
    assert [r.key for r in out] == ["vol/0002", "vol/0003", "vol/0004", "vol/0005"]
    assert all(r.image.shape == (8, 8) and r.image.dtype == np.uint8 for r in out)


def test_recipe_from_config_by_name_or_changed_fields():
    assert recipe_from_config("s3") == S3_RECIPE
    changed = recipe_from_config({"keep_fraction": 0.6, "window": [-500, 1400], "image_size": 128})
    assert changed == CTRecipe(keep_fraction=0.6, window=(-500, 1400), image_size=128)
    with pytest.raises(ValueError, match="unknown CT recipe 's4'; known: s3"):
        recipe_from_config("s4")
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['clip'\]"):
        recipe_from_config({"clip": 3.0})
    assert recipe_from_config({"crop": False}).crop == "none"
    with pytest.raises(ValueError, match="crop must be one of none, threshold, model; got 'label'"):
        recipe_from_config({"crop": "label"})


def test_rgb_display_slices_become_their_luma():
    """CT slices saved in colour (the CT classification subset has some) enter the recipe as gray."""
    from data_prep.ct_recipe import to_uint8

    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    assert np.array_equal(to_uint8(np.stack([gray] * 3, axis=-1), "display", "lung", "x.jpg"), gray)
    red = np.zeros((2, 2, 3), np.uint8)
    red[..., 0] = 100
    assert (to_uint8(red, "display", "lung", "x.jpg") == 30).all()  # 0.299 x 100, rounded
    with pytest.raises(DataError, match=r"x.jpg: .*needs \(H, W\) slices, got shape \(2, 2, 4\)"):
        to_uint8(np.zeros((2, 2, 4), np.uint8), "display", "lung", "x.jpg")
