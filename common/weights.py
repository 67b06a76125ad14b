"""Pretrained-weight resolution for `keras.applications` backbones, with an offline-friendly failure."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras


class PretrainedWeightsUnavailable(RuntimeError):
    """`weights="imagenet"` was asked for, but the file is neither cached nor downloadable."""


def build_application(
    constructor: Callable[..., keras.Model], weights: str | Path | None, **kwargs: Any
) -> keras.Model:
    """Builds a `keras.applications` model with `weights` = "imagenet", None or a local file path.

    A local file must have been saved from the same constructor with the same `include_top` (Keras
    loads it by layer order). A failed ImageNet download becomes `PretrainedWeightsUnavailable`,
    which names the remedies; it fails within about a second when offline.
    """
    if weights is None or str(weights).lower() == "none":
        return constructor(weights=None, **kwargs)
    if str(weights) == "imagenet":
        try:
            return constructor(weights="imagenet", **kwargs)
        except Exception as error:  # Keras raises a bare Exception on a failed URL fetch
            if "URL fetch failure" not in str(error):
                raise
            raise PretrainedWeightsUnavailable(
                f"{constructor.__name__}: ImageNet weights could not be downloaded ({error}). "
                "Remedies: pass a local weights file (weights=/path/to/file.h5), put the Keras weights "
                "file in ~/.keras/models/, or use weights=None."
            ) from error
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights file not found (expected 'imagenet', None or a file path)")
    return constructor(weights=str(path), **kwargs)
