"""Segmentation: losses, metrics with stated definitions, validation-only thresholds, and the
train / evaluate / predict flows (`python -m segmentation`). Models live in `segmentation.models`.

Modules: `losses` (keras.ops, for `model.compile`), `metrics` (NumPy evaluation metrics and Keras
training metrics), `thresholds` (threshold sweeps on validation predictions), `train`, `evaluate`,
`predict`.
"""
