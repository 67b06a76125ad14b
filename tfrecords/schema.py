"""The `tf.train.Example` layout of one stored record, and its encoding on the write side.

Every example holds:
- "image": the stored pixels, one channel, 8 or 16 bit (the manifest's `image_dtype` says which), in
  the manifest's `encoding`: "png" (PNG bytes) or "raw" (the (H, W) array's bytes, row-major,
  little-endian), then "shape" holds (H, W);
- "mask/<name>": 8-bit values {0, 1} in the same encoding and shape, for each of the manifest's mask
  names (empty bytes when the record has no such mask);
- "labels": int64 indices into the manifest's `label_names` (one for single-label sets, several for
  multi-label manifestation sets, none when unlabelled);
- "key", "patient_id", "group", "modality", "source", "path", "volume_id": UTF-8 strings ("" = unknown);
- "slice_index" (-1 = unknown), "synthetic" (0/1), "original_shape" (the record's image shape before
  preprocessing): int64.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import tensorflow as tf

# 1: PNG only; 2: adds the "raw" encoding (with "shape") and the manifest's encoding / compression.
SCHEMA_VERSION = 2
ENCODINGS = ("png", "raw")
# TFRecord compression types (tf.io.TFRecordOptions); "" = none.
COMPRESSIONS = ("", "ZLIB", "GZIP")
# Fixed PNG settings, so that re-writing the same pixels gives the same bytes. zlib's run-length
# strategy gave smaller files than level 1 and decoded 1.4x faster with tf.io.decode_png (256 px CT).
PNG_PARAMS = (cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE)
STRING_FIELDS = ("key", "patient_id", "group", "modality", "source", "path", "volume_id")


def mask_feature_name(mask_name: str) -> str:
    return f"mask/{mask_name}"


def encode_png(pixels: np.ndarray) -> bytes:
    """PNG bytes of a (H, W) uint8 or uint16 array (grayscale)."""
    if pixels.ndim != 2 or pixels.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"PNG storage needs a (H, W) uint8/uint16 array, got {pixels.shape} {pixels.dtype}")
    ok, encoded = cv2.imencode(".png", pixels, list(PNG_PARAMS))
    if not ok:
        raise ValueError(f"PNG encoding failed for an array of shape {pixels.shape}")
    return encoded.tobytes()


def encode_raw(pixels: np.ndarray) -> bytes:
    """The little-endian bytes of a (H, W) uint8 or uint16 array, row-major."""
    if pixels.ndim != 2 or pixels.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"raw storage needs a (H, W) uint8/uint16 array, got {pixels.shape} {pixels.dtype}")
    return np.ascontiguousarray(pixels, dtype=pixels.dtype.newbyteorder("<")).tobytes()


def encode_pixels(pixels: np.ndarray, encoding: str) -> bytes:
    """A (H, W) uint8/uint16 array as stored in a record of `encoding` ("png" or "raw")."""
    if encoding not in ENCODINGS:
        raise ValueError(f"unknown encoding {encoding!r}; use one of {ENCODINGS}")
    return encode_png(pixels) if encoding == "png" else encode_raw(pixels)


def _bytes(value: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _ints(values: Sequence[int]) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))


def build_example(
    image: bytes,
    masks: dict[str, bytes],
    label_indices: Sequence[int],
    strings: dict[str, str],
    slice_index: int,
    synthetic: bool,
    original_shape: Sequence[int],
    shape: Sequence[int] | None = None,
) -> bytes:
    """The serialized example (deterministic bytes) of one preprocessed record.

    image: from `encode_pixels`. masks: every manifest mask name -> bytes of the same encoding, b""
    when absent. strings: a value for each of `STRING_FIELDS`. shape: the stored (H, W), required
    for (and only written with) the raw encoding.
    """
    features = {
        "image": _bytes(image),
        "labels": _ints(label_indices),
        "slice_index": _ints([slice_index]),
        "synthetic": _ints([int(synthetic)]),
        "original_shape": _ints(original_shape),
    }
    if shape is not None:
        features["shape"] = _ints(shape)
    for name, encoded in masks.items():
        features[mask_feature_name(name)] = _bytes(encoded)
    for field in STRING_FIELDS:
        features[field] = _bytes(strings[field].encode("utf-8"))
    example = tf.train.Example(features=tf.train.Features(feature=features))
    return example.SerializeToString(deterministic=True)


def feature_spec(
    mask_names: Sequence[str], encoding: str = "png"
) -> dict[str, tf.io.FixedLenFeature | tf.io.VarLenFeature]:
    """The parsing spec for `tf.io.parse_single_example` of an example with these masks."""
    spec: dict[str, tf.io.FixedLenFeature | tf.io.VarLenFeature] = {
        "image": tf.io.FixedLenFeature([], tf.string),
        "labels": tf.io.VarLenFeature(tf.int64),
        "slice_index": tf.io.FixedLenFeature([], tf.int64),
        "synthetic": tf.io.FixedLenFeature([], tf.int64),
        "original_shape": tf.io.VarLenFeature(tf.int64),
    }
    if encoding == "raw":
        spec["shape"] = tf.io.FixedLenFeature([2], tf.int64)
    for name in mask_names:
        spec[mask_feature_name(name)] = tf.io.FixedLenFeature([], tf.string)
    for field in STRING_FIELDS:
        spec[field] = tf.io.FixedLenFeature([], tf.string)
    return spec
