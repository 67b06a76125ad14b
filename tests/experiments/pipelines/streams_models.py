"""Hand-made Keras models for the S0 streams tests: recognisers with known gates and constant streams."""

from __future__ import annotations

import keras
from keras import layers


def top_left_pixel_recogniser(size: int = 8) -> keras.Model:
    """A recogniser whose output is the image's top-left pixel value per channel (hand-made gates)."""
    inputs = keras.Input((size, size, 3))
    outputs = layers.Lambda(lambda x: x[:, 0, 0, :])(inputs)
    return keras.Model(inputs, outputs)


def silent_recogniser(size: int = 8, manifestations: int = 2) -> keras.Model:
    """A recogniser that scores 0 for every manifestation on every image (its gate fires on nothing)."""
    inputs = keras.Input((size, size, 3))
    x = layers.GlobalAveragePooling2D()(inputs)
    outputs = layers.Dense(manifestations, kernel_initializer="zeros", bias_initializer="zeros")(x)
    return keras.Model(inputs, outputs)


def stream(value: float, size: int = 8) -> keras.Model:
    """A binary 'segmenter' that outputs `value` at every pixel."""
    inputs = keras.Input((size, size, 3))
    x = layers.Conv2D(1, 1, kernel_initializer="zeros", bias_initializer=keras.initializers.Constant(value))(
        inputs
    )
    return keras.Model(inputs, layers.Activation("linear")(x))
