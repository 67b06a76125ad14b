"""Prediction on PNG folders and NIfTI volumes: sizes, affines, orientation, TTA, loading a run folder."""

from __future__ import annotations

import json

import cv2
import keras
import nibabel as nib
import numpy as np
import pytest

from segmentation.models import build_segmenter
from segmentation.predict import Segmenter, load_segmenter, predict_path, predict_probs
from segmentation.thresholds import ThresholdChoice
from tests.segmentation.seg_helpers import bright_pixel_model
from tfrecords.spec import PreprocessSpec

# An LPS-like affine with oblique-free flips, anisotropic spacing and an offset: not the identity.
AFFINE = np.array(
    [[-0.7, 0.0, 0.0, 120.0], [0.0, -0.8, 0.0, 95.5], [0.0, 0.0, 2.5, -310.0], [0.0, 0.0, 0.0, 1.0]]
)


def segmenter(size: int = 32) -> Segmenter:
    return Segmenter(
        bright_pixel_model(size), ("infection",), False, ThresholdChoice.fixed(), PreprocessSpec()
    )


def asymmetric_volume(shape: tuple[int, int, int]) -> np.ndarray:
    """uint8 display values: bright (200) voxels in an L shape that differs in every slice."""
    volume = np.full(shape, 40, np.uint8)
    for k in range(shape[2]):
        volume[2 + k : 12 + k, 3:6, k] = 200
        volume[2 + k, 3:20, k] = 200
    return volume


@pytest.mark.parametrize("orientation", ["display", "stored"])
def test_nifti_prediction_keeps_shape_affine_and_voxel_order(tmp_path, orientation):
    volume = asymmetric_volume((32, 32, 3))
    nib.save(nib.Nifti1Image(volume, AFFINE), tmp_path / "scan.nii.gz")
    written = predict_path(segmenter(32), tmp_path / "scan.nii.gz", tmp_path / "out", orientation=orientation)
    assert [p.name for p in written] == ["scan_infection.nii.gz"]
    result = nib.load(written[0])
    np.testing.assert_allclose(result.affine, AFFINE)
    assert result.shape == volume.shape
    # In-plane size equals the model input, so there is no resizing: the mask is exactly the bright voxels.
    np.testing.assert_array_equal(np.asanyarray(result.dataobj), (volume > 127).astype(np.uint8))


def test_nifti_prediction_resizes_back_to_the_input_grid(tmp_path):
    volume = asymmetric_volume((40, 36, 2))
    nib.save(nib.Nifti1Image(volume, AFFINE), tmp_path / "scan.nii")
    (written,) = predict_path(segmenter(32), tmp_path / "scan.nii", tmp_path / "out")
    result = nib.load(written)
    assert result.shape == (40, 36, 2) and result.get_data_dtype() == np.uint8
    np.testing.assert_allclose(result.affine, AFFINE)
    agreement = (np.asanyarray(result.dataobj) == (volume > 127)).mean()
    assert agreement > 0.95
    with pytest.raises(ValueError, match="orientation must be one of"):
        predict_path(segmenter(32), tmp_path / "scan.nii", tmp_path / "out", orientation="sideways")


def test_display_slices_are_what_the_model_sees(tmp_path):
    """The model input of slice k is to_display of the canonical slice: a model that marks only the
    top-left input pixel marks voxel (X-1, Y-1, k) of this RAS+ volume (patient left, anterior)."""
    inputs = keras.Input((32, 32, 1))
    marker = keras.layers.Lambda(
        lambda x: keras.ops.pad(keras.ops.ones((1, 1, 1, 1)), [[0, 0], [0, 31], [0, 31], [0, 0]]) + 0 * x
    )
    probe = Segmenter(
        keras.Model(inputs, marker(inputs)), ("corner",), False, ThresholdChoice.fixed(), PreprocessSpec()
    )
    nib.save(nib.Nifti1Image(np.full((32, 32, 2), 100, np.uint8), np.eye(4)), tmp_path / "ras.nii.gz")
    (written,) = predict_path(probe, tmp_path / "ras.nii.gz", tmp_path / "out")
    mask = np.asanyarray(nib.load(written).dataobj)
    assert mask.sum() == 2 and mask[31, 31, 0] == 1 and mask[31, 31, 1] == 1


def test_png_folder_prediction(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    exact = np.full((32, 32), 40, np.uint8)
    exact[5:15, 8:20] = 200
    cv2.imwrite(str(folder / "a.png"), exact)
    cv2.imwrite(str(folder / "b (1).jpg"), np.full((48, 40), 200, np.uint8))
    written = predict_path(segmenter(32), folder, tmp_path / "out")
    assert sorted(p.name for p in written) == ["a_infection.png", "b (1)_infection.png"]
    mask_a = cv2.imread(str(tmp_path / "out" / "a_infection.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(mask_a, np.where(exact > 127, 255, 0))
    mask_b = cv2.imread(str(tmp_path / "out" / "b (1)_infection.png"), cv2.IMREAD_UNCHANGED)
    assert mask_b.shape == (48, 40) and np.all(mask_b == 255)


def test_tta_flip_averaging():
    images = np.random.default_rng(0).random((2, 32, 32, 1)).astype(np.float32)
    model = bright_pixel_model(32)  # pixel-wise, so flipping commutes with it
    plain = predict_probs(model, images)
    np.testing.assert_allclose(predict_probs(model, images, tta_flips=("lr", "ud")), plain, atol=1e-6)
    # A model that looks at the left neighbour is not flip-equivariant: TTA averages two views.
    inputs = keras.Input((32, 32, 1))
    shifted = keras.layers.Conv2D(1, (1, 2), padding="same", use_bias=False)(inputs)
    asymmetric = keras.Model(inputs, shifted)
    asymmetric.layers[1].set_weights([np.array([[[[1.0]], [[0.0]]]], np.float32)])
    expected = (
        asymmetric.predict(images, verbose=0) + np.flip(asymmetric.predict(np.flip(images, 2), verbose=0), 2)
    ) / 2
    np.testing.assert_allclose(predict_probs(asymmetric, images, tta_flips=("lr",)), expected, atol=1e-6)
    with pytest.raises(ValueError, match=r"unknown TTA flips \['diagonal'\]"):
        predict_probs(model, images, tta_flips=("diagonal",))


def test_batched_forward_is_model_predict(monkeypatch):
    """One predict_on_batch call per batch of the batch size, and exactly model.predict's numbers for a
    count that is no multiple of the batch size."""
    keras.utils.set_random_seed(0)
    model = build_segmenter("unet", "plain", (32, 32, 1), 2, encoder_kwargs={"filters": (4, 8)})
    images = np.random.default_rng(1).random((7, 32, 32, 1)).astype(np.float32)
    expected = model.predict(images, batch_size=3, verbose=0)
    sizes = []
    forward = model.predict_on_batch
    monkeypatch.setattr(model, "predict_on_batch", lambda batch: sizes.append(len(batch)) or forward(batch))
    probs = predict_probs(model, images, batch_size=3)
    assert probs.dtype == np.float32 and sizes == [3, 3, 1]
    np.testing.assert_array_equal(probs, expected)


def test_load_segmenter_reads_the_run_folder(tmp_path):
    bright_pixel_model(32).save(tmp_path / "best.keras")
    (tmp_path / "config.json").write_text(
        json.dumps({"channel_names": ["lung"], "multiclass": False, "preprocess": "clahe,resize=256"})
    )
    ThresholdChoice(thresholds=(0.3,), split="val").save(tmp_path / "threshold.json")
    loaded = load_segmenter(tmp_path / "best.keras")
    assert loaded.channel_names == ("lung",) and loaded.threshold.thresholds == (0.3,)
    assert str(loaded.preprocess) == "clahe" and loaded.input_size == (32, 32)
    (tmp_path / "threshold.json").unlink()
    assert load_segmenter(tmp_path / "best.keras").threshold.split == "fixed"
    with pytest.raises(ValueError, match="crops to the lungs"):
        load_segmenter(tmp_path / "best.keras", preprocess="lungcrop,resize=128")
