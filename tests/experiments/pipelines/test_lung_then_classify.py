"""S4 lung-then-classify: exact variants and a tiny end-to-end run (the TFRecord re-write is tested in
tests/tfrecords/test_writer.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import yaml

from experiments.pipelines.lung_then_classify import (
    lung_masks,
    make_variants,
    train_lung_segmenter,
    write_variants,
)
from experiments.pipelines.options import VARIANTS, pipeline_options
from experiments.registry import get_experiment
from experiments.runner import apply_precision, run_experiment
from segmentation.predict import load_segmenter
from tests.experiments.pipelines.phantom_rows import TINY_CLASSIFIER
from tfrecords.manifest import load_manifest
from tfrecords.reader import read_examples

TINY = [
    "data.phantom=true",
    "model.name=plain_cnn",
    *TINY_CLASSIFIER,
    "pipeline_options.lung_segmenter={name: unet, encoder: plain, epochs: 1, weights: null, "
    "options: {encoder_kwargs: {filters: [4, 8]}}}",
]


def test_variants_are_the_image_times_the_mask_and_its_complement():
    image = (np.arange(20, dtype=np.uint8) * 13).reshape(4, 5)
    mask = np.array(
        [[0, 1, 1, 0, 0], [0, 1, 1, 1, 0], [0, 0, 1, 0, 0], [1, 0, 0, 0, 0]],
        np.uint8,
    )
    variants = make_variants(image, mask)
    assert tuple(variants) == VARIANTS
    np.testing.assert_array_equal(variants["original"], image)
    np.testing.assert_array_equal(
        variants["segmented_lung"],
        [[0, 13, 26, 0, 0], [0, 78, 91, 104, 0], [0, 0, 156, 0, 0], [195, 0, 0, 0, 0]],
    )
    np.testing.assert_array_equal(variants["without_lung"], np.where(mask == 1, 0, image))
    assert all(v.dtype == np.uint8 for v in variants.values())
    sixteen = np.full((2, 2), 40000, np.uint16)
    assert make_variants(sixteen, np.eye(2, dtype=np.uint8))["without_lung"].tolist() == [
        [0, 40000],
        [40000, 0],
    ]


def test_variants_reject_a_bad_mask():
    image = np.ones((4, 4), np.uint8)
    with pytest.raises(ValueError, match=r"lung mask has shape \(4, 3\), image has \(4, 4\)"):
        make_variants(image, np.ones((4, 3), np.uint8))
    with pytest.raises(ValueError, match="the lung mask must hold only 0 and 1"):
        make_variants(image, np.full((4, 4), 255, np.uint8))


def test_s4_row_end_to_end_and_the_cache_shared_by_the_other_rows(tmp_path):
    out = tmp_path / "runs"
    run_dir = run_experiment("s4_resnet50_segmented_lung", Path("/nonexistent"), out, TINY)
    summary = json.loads((run_dir / "summary.json").read_text())
    for key in ("accuracy", "roc_auc", "lung_dice", "lung_dice_pooled"):
        assert 0.0 <= summary[key]["value"] <= 1.0, key
    assert summary["lung_dice"]["low"] <= summary["lung_dice"]["value"] <= summary["lung_dice"]["high"]
    assert (run_dir / "variants.png").stat().st_size > 0 and (run_dir / "best.keras").is_file()
    record = json.loads((run_dir / "lung_segmenter.json").read_text())
    assert record["variant"] == "segmented_lung"
    classifier_data = yaml.safe_load((run_dir / "config.yaml").read_text())["data"]["tfrecords"]
    assert classifier_data == [record["variant_tfrecords"]] and record["variant_tfrecords"].endswith(
        "segmented_lung"
    )

    # Another row (another classifier and variant) finds the segmenter and the variants in the cache.
    cache = out / ".cache" / "chief"
    other = get_experiment("s4_vgg19bn_without_lung", TINY)
    apply_precision(other)  # as the runner does for every row
    manifest = load_manifest(json.loads((run_dir / "run.json").read_text())["manifests"][0]["directory"])
    options = pipeline_options(other).lung_segmenter
    best, metrics = train_lung_segmenter(other, manifest, cache, tf.distribute.get_strategy(), options)
    assert str(best) == record["model"]
    assert metrics["masks"]["lung"]["dice"]["per_image"]["value"] == summary["lung_dice"]["value"]
    folders = write_variants(manifest, best, cache)
    assert len(list(cache.glob("lung_segmenter-*"))) == 1 and len(list(cache.glob("lung_variants-*"))) == 1

    # The variants use the predicted masks, pixel for pixel.
    segmenter = load_segmenter(best)
    for split in ("train", "test"):
        streams = [list(read_examples(folders[name], split)) for name in VARIANTS]
        originals = [example["image"] for example in streams[0]]
        masks = lung_masks(segmenter, originals)
        assert 0 < masks.sum() < masks.size
        for original, mask, lungs, rest in zip(originals, masks, streams[1], streams[2], strict=True):
            np.testing.assert_array_equal(lungs["image"], original * mask)
            np.testing.assert_array_equal(rest["image"], original * (1 - mask))
