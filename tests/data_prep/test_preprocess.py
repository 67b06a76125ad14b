import numpy as np
import pytest

from data_prep import preprocess
from data_prep.io import to_display


def test_window_hu_lung_default_maps_window_edges_and_center():
    # lung window: center -600, width 1500 -> [-1350, 150]; 255 / 1500 = 0.17 per HU
    hu = np.array([-2000, -1350, -600, 0, 150, 3000], np.int16)
    # -600 -> 750 * 0.17 = 127.5 -> 128 (halves round up); 0 -> 1350 * 0.17 = 229.5 -> 230
    np.testing.assert_array_equal(preprocess.window_hu(hu), [0, 0, 128, 230, 255, 255])
    assert preprocess.window_hu(hu).dtype == np.uint8


def test_window_hu_preset_mediastinum():
    # center 40, width 400 -> [-160, 240]; 0 HU -> 160 * 255 / 400 = 102
    hu = np.array([[-160, 0], [40, 240]], np.int16)
    np.testing.assert_array_equal(preprocess.window_hu(hu, preset="mediastinum"), [[0, 102], [128, 255]])


def test_window_hu_rejects_unknown_preset_and_bad_width():
    with pytest.raises(ValueError, match="unknown HU window 'liver'"):
        preprocess.window_hu(np.zeros(2), preset="liver")
    with pytest.raises(ValueError, match="window width must be positive, got 0"):
        preprocess.window_hu(np.zeros(2), center=0, width=0)


def test_normalize_minmax():
    out = preprocess.normalize_minmax(np.array([[-10, 0], [10, 30]], np.int16))
    np.testing.assert_allclose(out, [[0.0, 0.25], [0.5, 1.0]])
    assert out.dtype == np.float32


def test_rescale_to_uint8():
    # (x + 10) / 40 * 255: 0 -> 63.75 -> 64, 10 -> 127.5 -> 128
    out = preprocess.rescale_to_uint8(np.array([[-10, 0], [10, 30]], np.int16))
    np.testing.assert_array_equal(out, [[0, 64], [128, 255]])
    assert out.dtype == np.uint8


def test_normalize_zscore():
    # mean 2.5, population std sqrt(1.25)
    out = preprocess.normalize_zscore(np.array([1, 2, 3, 4], np.uint8))
    np.testing.assert_allclose(out, np.array([-1.5, -0.5, 0.5, 1.5]) / np.sqrt(1.25), rtol=1e-6)
    assert out.dtype == np.float32


@pytest.mark.parametrize(
    "normalize", [preprocess.normalize_minmax, preprocess.normalize_zscore, preprocess.rescale_to_uint8]
)
def test_normalize_constant_input_gives_zeros(normalize):
    out = normalize(np.full((2, 3), 7, np.int16))
    np.testing.assert_array_equal(out, np.zeros((2, 3)))
    assert out.dtype in (np.float32, np.uint8)


def test_clahe_keeps_constant_image_and_dtype():
    # a flat image has a one-bin histogram; with the clip limit spread it maps to a known value
    for dtype in (np.uint8, np.uint16):
        out = preprocess.clahe(np.full((16, 16), 100, dtype))
        assert out.dtype == dtype and out.shape == (16, 16)
        assert len(np.unique(out)) == 1


def test_clahe_stretches_low_contrast_image():
    image = np.tile(np.array([100, 101, 102, 103], np.uint8), (64, 16))
    out = preprocess.clahe(image, clip_limit=100.0, tile_grid=(1, 1))
    # with no effective clipping, one tile is plain histogram equalisation: cdf * 255 per grey level
    np.testing.assert_array_equal(np.unique(out), [64, 128, 191, 255])


@pytest.mark.parametrize("dtype", [np.int16, np.float32])
def test_clahe_rejects_other_dtypes(dtype):
    with pytest.raises(ValueError, match=f"clahe needs a uint8 or uint16 image, got {np.dtype(dtype)}"):
        preprocess.clahe(np.zeros((8, 8), dtype))


def test_trim_slices_drops_quarter_each_end():
    assert preprocess.trim_slices(100) == slice(25, 75)
    assert preprocess.trim_slices(10) == slice(2, 8)  # 10 * 0.25 = 2.5 -> drops 2
    assert preprocess.trim_slices(10, keep_fraction=0.6) == slice(2, 8)
    assert preprocess.trim_slices(10, keep_fraction=1.0) == slice(0, 10)
    assert preprocess.trim_slices(3, keep_fraction=0.1) == slice(1, 2)  # keeps one slice
    with pytest.raises(ValueError, match="keep_fraction must be in"):
        preprocess.trim_slices(10, keep_fraction=0.0)


def test_trim_volume_along_last_axis():
    volume = np.arange(2 * 2 * 8).reshape(2, 2, 8)
    out = preprocess.trim_volume(volume)
    np.testing.assert_array_equal(out, volume[:, :, 2:6])


def test_lung_roi_box_from_mask_with_margin_and_clipping():
    mask = np.zeros((20, 30), np.uint8)
    mask[5:9, 3:12] = 1
    mask[6:15, 18:28] = 1
    assert preprocess.lung_roi_box(np.zeros((20, 30)), mask, margin=2) == (3, 17, 1, 30)
    assert preprocess.lung_roi_box(np.zeros((20, 30)), mask, margin=0) == (5, 15, 3, 28)


def test_lung_roi_box_empty_mask_gives_whole_image():
    assert preprocess.lung_roi_box(np.zeros((6, 7)), np.zeros((6, 7), np.uint8)) == (0, 6, 0, 7)


def _ct_like_slice() -> np.ndarray:
    """HU slice: air outside, a body, two lungs, and a small dark speck (noise) in the body."""
    image = np.full((64, 64), -1000, np.int16)
    image[8:56, 4:60] = 40  # body
    image[14:44, 10:28] = -850  # patient right lung (image left)
    image[16:48, 36:54] = -850  # patient left lung
    image[50, 30] = -900  # one-pixel speck, below the area threshold
    return image


def test_lung_roi_box_threshold_finds_two_lungs_ignoring_outside_air():
    image = _ct_like_slice()
    assert preprocess.lung_roi_box(image, threshold=-400, margin=0) == (14, 48, 10, 54)
    assert preprocess.lung_roi_box(image, margin=0) == (14, 48, 10, 54)  # Otsu threshold


def test_lung_roi_box_keeps_only_two_largest_components():
    image = _ct_like_slice()
    image[50:53, 30:33] = -850  # a third, smaller dark region (9 px = 0.2 %, above 0.1 %)
    box = preprocess.lung_roi_box(image, threshold=-400, margin=0, min_area_fraction=0.001)
    assert box == (14, 48, 10, 54)


def test_crop_to_box():
    image = np.arange(5 * 6 * 3).reshape(5, 6, 3)
    np.testing.assert_array_equal(preprocess.crop_to_box(image, (1, 3, 2, 5)), image[1:3, 2:5])


def test_resize_image_bilinear_and_area():
    image = np.array([[0, 100], [100, 200]], np.uint8)
    np.testing.assert_array_equal(preprocess.resize_image(image, (1, 1), method="area"), [[100]])
    # bilinear upsampling 2 -> 4: pixel-centre sampling gives 0, 25, 75, 100 along the first row
    up = preprocess.resize_image(image, (4, 4))
    np.testing.assert_array_equal(up[0], [0, 25, 75, 100])
    assert up.dtype == np.uint8
    with pytest.raises(ValueError, match="unknown resize method 'cubic'"):
        preprocess.resize_image(image, (4, 4), method="cubic")


def test_resize_mask_keeps_values():
    label_map = np.array([[0, 1], [2, 3]], np.uint8)
    up = preprocess.resize_mask(label_map, (4, 6))
    np.testing.assert_array_equal(up, np.repeat(np.repeat(label_map, 2, axis=0), 3, axis=1))
    down = preprocess.resize_mask(np.repeat(np.repeat(label_map, 4, axis=0), 4, axis=1), (2, 2))
    np.testing.assert_array_equal(down, label_map)
    assert preprocess.resize_mask(np.ones((3, 3), bool), (5, 5)).dtype == bool


def test_split_multiclass_and_merge_round_trip():
    label_map = np.array([[0, 1, 2], [3, 1, 0]], np.uint8)
    masks = preprocess.split_multiclass(label_map)
    assert sorted(masks) == ["consolidation", "effusion", "ggo"]
    np.testing.assert_array_equal(masks["ggo"], [[0, 1, 0], [0, 1, 0]])
    np.testing.assert_array_equal(masks["consolidation"], [[0, 0, 1], [0, 0, 0]])
    np.testing.assert_array_equal(masks["effusion"], [[0, 0, 0], [1, 0, 0]])
    assert masks["ggo"].dtype == np.uint8
    np.testing.assert_array_equal(preprocess.merge_to_label_map(masks), label_map)


def test_split_multiclass_rejects_unknown_values():
    with pytest.raises(ValueError, match=r"label map has values \[7\] outside \{0\} and \[1, 2, 3\]"):
        preprocess.split_multiclass(np.array([0, 1, 7]))


def test_merge_to_label_map_rejects_overlap_and_unknown_names():
    ggo = np.array([[1, 1]], np.uint8)
    consolidation = np.array([[0, 1]], np.uint8)
    with pytest.raises(ValueError, match="mask 'consolidation' overlaps 'ggo'"):
        preprocess.merge_to_label_map({"ggo": ggo, "consolidation": consolidation})
    with pytest.raises(ValueError, match=r"masks \['nodule'\] have no label value"):
        preprocess.merge_to_label_map({"nodule": ggo})


def _box_iou(a: preprocess.Box, b: preprocess.Box) -> float:
    (ya0, ya1, xa0, xa1), (yb0, yb1, xb0, xb1) = a, b
    inter = max(0, min(ya1, yb1) - max(ya0, yb0)) * max(0, min(xa1, xb1) - max(xa0, xb0))
    return inter / ((ya1 - ya0) * (xa1 - xa0) + (yb1 - yb0) * (xb1 - xb0) - inter)


@pytest.mark.shared_data
def test_lung_roi_box_threshold_agrees_with_real_lung_masks(shared_data):
    from data_prep.adapters.zenodo import ZenodoCovidCtSeg

    volume = next(ZenodoCovidCtSeg(shared_data / "ct-lung-infection-zenodo").volumes())
    assert volume.key == "CC01"
    scores = []
    for k in range(volume.image.shape[2]):
        image, lung = to_display(volume.image[:, :, k]), to_display(volume.masks["lung"][:, :, k])
        if lung.any():
            scores.append(
                _box_iou(preprocess.lung_roi_box(image, lung, 0), preprocess.lung_roi_box(image, margin=0))
            )
    # measured on CC01 (159 slices): median IoU 0.985, 93 % of slices >= 0.8
    assert len(scores) == 159
    assert np.median(scores) > 0.95 and np.mean(np.array(scores) >= 0.8) > 0.85
