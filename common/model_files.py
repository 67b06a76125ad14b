"""Loading `.keras` model files with one-line errors, and checking that a model fits the command.

`load_model_file` turns Keras' several failure types for a file that is missing, not a model, or a
model of unknown classes into `DataError(path, problem)`. `require_output_rank` tells a classifier
(output (N, K)) from a segmenter (output (N, H, W, K)) before any output is written.
"""

from __future__ import annotations

from pathlib import Path

import keras

from data_prep.errors import DataError

OUTPUT_KINDS = {2: "a classifier (output: batch x classes)", 4: "a segmenter (output: batch x H x W x masks)"}


def load_model_file(path: str | Path, compile: bool = True) -> keras.Model:
    """The model saved in `path` (a `.keras` file); raises `DataError` when it cannot be loaded."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "no such model file")
    try:
        return keras.saving.load_model(path, compile=compile)
    except Exception as error:  # Keras raises ValueError, TypeError, OSError, zipfile errors, ...
        problem = " ".join(str(error).split())[:300]
        raise DataError(path, f"not a usable Keras model file ({type(error).__name__}: {problem})") from error


def require_output_rank(model: keras.Model, rank: int, path: str | Path) -> None:
    """Raises `DataError` naming `path` unless the model's output has `rank` dimensions (2 or 4)."""
    shape = model.output_shape
    if isinstance(shape, list):  # several outputs: the first decides
        shape = shape[0]
    if len(shape) != rank:
        found = OUTPUT_KINDS.get(len(shape), f"a model with output shape {tuple(shape)}")
        raise DataError(path, f"this is {found}; the command needs {OUTPUT_KINDS[rank]}")
