"""The classification head every registered backbone gets, and the output types it supports."""

from __future__ import annotations

import keras
from keras import layers

# output type -> final activation. "binary": 1 sigmoid unit (probability of the positive class);
# "multiclass": K softmax units; "multilabel": K independent sigmoid units.
OUTPUT_ACTIVATIONS = {"binary": "sigmoid", "multiclass": "softmax", "multilabel": "sigmoid"}


def check_output(output: str, num_outputs: int) -> None:
    """Raises ValueError for an unknown output type or a unit count it cannot have."""
    if output not in OUTPUT_ACTIVATIONS:
        raise ValueError(f"unknown output {output!r}; known: {', '.join(OUTPUT_ACTIVATIONS)}")
    if output == "binary" and num_outputs != 1:
        raise ValueError(
            f"output='binary' has 1 sigmoid unit; got num_outputs={num_outputs} (use 'multiclass')"
        )
    if output == "multiclass" and num_outputs < 2:
        raise ValueError(f"output='multiclass' needs num_outputs >= 2; got {num_outputs}")
    if num_outputs < 1:
        raise ValueError(f"num_outputs must be >= 1; got {num_outputs}")


def classification_head(
    features: keras.KerasTensor, num_outputs: int, output: str, dropout: float, head_units: int | None
) -> keras.KerasTensor:
    """(B, h, w, F) features -> (B, num_outputs) float32 probabilities.

    Global average pooling -> dropout ("head_dropout") -> optional Dense(head_units, ReLU) ("head_dense")
    -> Dense(num_outputs) ("logits") -> activation in float32 ("probabilities"), so the output stays
    float32 under mixed precision.
    """
    check_output(output, num_outputs)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(features)
    x = layers.Dropout(dropout, name="head_dropout")(x)
    if head_units:
        x = layers.Dense(head_units, activation="relu", name="head_dense")(x)
    x = layers.Dense(num_outputs, name="logits")(x)
    return layers.Activation(OUTPUT_ACTIVATIONS[output], dtype="float32", name="probabilities")(x)
