"""Classification predict replays the training data's CT recipe (label-free threshold crop) exactly."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from classification.predict import stored_image
from data_prep import phantoms
from data_prep.ct_recipe import CTRecipe, apply_recipe, model_inputs
from data_prep.io import volume_records
from data_prep.records import Volume
from tfrecords.spec import PreprocessSpec


def test_predict_input_equals_the_stored_test_record_of_a_threshold_crop_recipe():
    phantom = phantoms.ct_volume(seed=1, size=64, slices=8)
    volume = Volume("p", phantom.hu, np.eye(4), "hu", "/p.nii.gz", masks={"lung": phantom.lung})
    records = [dataclasses.replace(r, split="test") for r in volume_records(volume, ())]
    recipe = CTRecipe(keep_fraction=1.0, crop="threshold", image_size=32)
    stored = list(apply_recipe(records, recipe))
    for record, written in zip(records, stored, strict=True):
        replayed = stored_image(record, PreprocessSpec(), recipe)
        np.testing.assert_array_equal(replayed, written.image)
    assert all(written.image.shape == (32, 32) for written in stored)
    _, boxes = model_inputs([r.image for r in records], "hu", recipe)
    assert all(box != (0, 64, 0, 64) for box in boxes)  # cut to the (label-free) lung box
    with pytest.raises(ValueError, match='lung-model crop \\(rule "model"\\) are not supported'):
        stored_image(records[0], PreprocessSpec(), CTRecipe(crop="model"))
