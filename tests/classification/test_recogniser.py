import numpy as np
import pytest

from classification.data import load_split
from classification.recogniser import recogniser_config, slice_manifestations, train_recogniser
from common.training import TrainingConfig
from tests.classification.tiny_data import classification_inputs, manifestation_records, write_tiny
from tfrecords.reader import read_examples


def test_slice_manifestations_counts_pixels():
    mask = np.zeros((4, 4), np.uint8)
    mask[0, :3] = 1
    masks = {"ggo": mask, "consolidation": np.ones((4, 4), np.uint8)}
    assert slice_manifestations(masks, min_pixels=3) == ("ggo", "consolidation")
    assert slice_manifestations(masks, min_pixels=4) == ("consolidation",)
    assert slice_manifestations({}, min_pixels=1) == ()


def test_labels_come_from_masks_with_the_pixel_minimum(tmp_path):
    folder = write_tiny(tmp_path, "slices", manifestation_records())
    config = classification_inputs(
        folder,
        "multilabel",
        label_names=["ggo", "consolidation", "effusion"],
        mask_label_min_pixels=10,
        image_size=8,
        channels=1,
        batch_size=4,
    )
    images, targets, metas = [], [], []
    for image, target, meta in load_split(config, "test", with_meta=True).as_numpy_iterator():
        images.append(image)
        targets.append(target)
        metas.extend(meta["key"])
    targets = np.concatenate(targets)
    assert np.concatenate(images).shape[1:] == (8, 8, 1)
    expected = {
        example["key"]: [
            name in slice_manifestations(example["masks"], min_pixels=10) for name in config.class_names
        ]
        for example in read_examples(folder, "test")
    }
    np.testing.assert_array_equal(targets, [expected[key.decode()] for key in metas])
    by_key = {key.decode(): target.tolist() for key, target in zip(metas, targets, strict=True)}
    # Test slices: ggo of 12, 5, 0 and 20 pixels by index % 4; consolidation when index % 3 == 0.
    assert by_key == {
        "slice008": [1, 0, 0],
        "slice009": [0, 1, 0],
        "slice018": [0, 1, 0],
        "slice019": [1, 0, 0],
        "slice028": [1, 0, 0],
        "slice029": [0, 0, 0],
        "slice038": [0, 0, 0],
        "slice039": [1, 1, 0],
    }
    assert not targets[:, 2].any()


def test_mask_labels_need_the_masks_and_multilabel(tmp_path):
    folder = write_tiny(tmp_path, "slices", manifestation_records(10))
    with pytest.raises(ValueError, match=r"no mask\(s\) \['nodule'\] for mask-derived labels"):
        classification_inputs(folder, "multilabel", label_names=["ggo", "nodule"], mask_label_min_pixels=5)
    with pytest.raises(
        ValueError, match="mask_label_min_pixels derives multi-label targets; set task: multilabel"
    ):
        classification_inputs(folder, "binary", label_names=["ggo", "x"], mask_label_min_pixels=5)


def test_recogniser_trains_with_per_class_validation_thresholds(tmp_path):
    folder = write_tiny(tmp_path, "slices", manifestation_records())
    config = recogniser_config(
        folder,
        training=TrainingConfig(epochs=2, learning_rate=0.01, verbose=0, tensorboard=False),
        image_size=16,
        channels=1,
        batch_size=8,
    )
    config.model.options = {"filters": [4, 8]}
    config.evaluation.bootstrap_resamples = 20
    config.runtime.deterministic, config.runtime.precision = True, "float32"
    report = train_recogniser(config, tmp_path / "run")["metrics"]
    assert report["threshold"]["split"] == "val" and len(report["threshold"]["thresholds"]) == 3
    assert list(report["overall"]["per_class"]) == ["ggo", "consolidation", "effusion"]
    assert report["overall"]["per_class"]["effusion"]["roc_auc"]["value"] is None  # never present
    per_class, macro = report["overall"]["per_class"], report["overall"]["macro"]
    for metric in ("accuracy", "sensitivity"):
        expected = np.mean(
            [
                per_class[name][metric]["value"]
                for name in ("ggo", "consolidation", "effusion")
                if per_class[name][metric]["value"] is not None
            ]
        )
        assert macro[metric]["value"] == pytest.approx(expected)
        assert macro[metric]["low"] <= macro[metric]["value"] <= macro[metric]["high"]
