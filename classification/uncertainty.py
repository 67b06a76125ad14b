"""Predictive uncertainty (S1): ensembles of models and Monte-Carlo dropout, and the accuracy left
after rejecting the most uncertain cases (a coverage-accuracy curve).

Definitions (natural logarithm, so values are in nats; 0 log 0 = 0):
- probabilities of one pass: (N, K); K = 1 means binary P(positive), taken as the two classes (1 - p, p).
- samples: (T, N, K), T ensemble members or T dropout passes; p_mean = mean over T.
- predictive entropy H[p_mean] = -sum_c p_mean,c log p_mean,c: at most log 2 (binary) or log K.
- expected entropy E_t H[p_t]; mutual information (BALD) = H[p_mean] - E_t H[p_t] >= 0, the part of
  the uncertainty that comes from disagreement between members/passes.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from classification.data import ClassificationInputs
from classification.evaluate import PredictFn, Predictions, evaluate_model
from common import plots
from common.thresholds import ThresholdChoice
from common.training import nested_layers

METHODS = ("ensemble", "mc_dropout")
REJECT_FRACTIONS = tuple(round(0.05 * i, 2) for i in range(11))  # 0 %, 5 %, ..., 50 %


def _as_classes(probabilities: np.ndarray) -> np.ndarray:
    """(..., K) -> (..., K) class probabilities; K = 1 (binary P(positive)) becomes (1 - p, p)."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.shape[-1] == 1:
        return np.concatenate([1 - probabilities, probabilities], axis=-1)
    return probabilities


def _entropy(class_probabilities: np.ndarray) -> np.ndarray:
    p = np.clip(class_probabilities, 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * np.log(p), 0.0)
    return terms.sum(axis=-1)


def predictive_entropy(probabilities: np.ndarray) -> np.ndarray:
    """(N, K) mean probabilities -> (N,) entropy in nats."""
    return _entropy(_as_classes(probabilities))


def uncertainty_summary(samples: np.ndarray) -> dict[str, np.ndarray]:
    """(T, N, K) sampled probabilities -> {"probability": (N, K) mean, "entropy": (N,) H[p_mean],
    "expected_entropy": (N,), "mutual_information": (N,)}."""
    samples = np.asarray(samples, dtype=np.float64)
    mean = samples.mean(axis=0)
    entropy = predictive_entropy(mean)
    expected = _entropy(_as_classes(samples)).mean(axis=0)
    return {
        "probability": mean,
        "entropy": entropy,
        "expected_entropy": expected,
        "mutual_information": np.maximum(entropy - expected, 0.0),
    }


def ensemble_predict_fn(models: Sequence[keras.Model]) -> PredictFn:
    """images -> `uncertainty_summary` over the members' deterministic outputs (several seeds or
    several architectures trained on the same task)."""
    if len(models) < 2:
        raise ValueError(f"an ensemble needs at least 2 models, got {len(models)}")

    def predict(images: np.ndarray) -> dict[str, np.ndarray]:
        return uncertainty_summary(np.stack([np.asarray(model.predict_on_batch(images)) for model in models]))

    return predict


@contextlib.contextmanager
def _batchnorm_in_inference(model: keras.Model) -> Iterator[None]:
    """Makes every BatchNormalization layer (nested models included) non-trainable, so it uses its
    moving statistics even in a training=True call; restores the flags after."""
    layers = [layer for layer in nested_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]
    flags = [layer.trainable for layer in layers]
    for layer in layers:
        layer.trainable = False
    try:
        yield
    finally:
        for layer, flag in zip(layers, flags, strict=True):
            layer.trainable = flag


def mc_dropout_predict_fn(model: keras.Model, samples: int = 20, seed: int = 0) -> PredictFn:
    """images -> `uncertainty_summary` over `samples` forward passes with dropout active.

    Dropout runs as in training (a call with training=True); BatchNorm keeps its moving statistics. A
    backbone pinned to inference (`training=False` inside the model) keeps its own dropout off, so
    the head dropout supplies the sampling. The model needs dropout > 0 somewhere.
    """
    if samples < 2:
        raise ValueError(f"MC dropout needs at least 2 samples, got {samples}")
    if not any(isinstance(layer, keras.layers.Dropout) and layer.rate > 0 for layer in nested_layers(model)):
        raise ValueError(
            f"{model.name}: no dropout layer with rate > 0; MC dropout would give identical passes"
        )
    keras.utils.set_random_seed(seed)

    def predict(images: np.ndarray) -> dict[str, np.ndarray]:
        with _batchnorm_in_inference(model):
            passes = [keras.ops.convert_to_numpy(model(images, training=True)) for _ in range(samples)]
        return uncertainty_summary(np.stack(passes))

    return predict


def coverage_accuracy(
    correct: np.ndarray, uncertainty: np.ndarray, reject_fractions: Sequence[float] = REJECT_FRACTIONS
) -> list[dict[str, float]]:
    """Accuracy on the cases kept after rejecting the `round(f * N)` most uncertain, for each f.

    Ties in uncertainty are broken by order (stable sort). Returns rows {"reject_fraction",
    "coverage" (kept / N), "kept", "accuracy" (NaN when nothing is kept)}.
    """
    correct = np.asarray(correct, dtype=bool)
    order = np.argsort(np.asarray(uncertainty, dtype=np.float64), kind="stable")
    rows = []
    for fraction in reject_fractions:
        kept = len(correct) - int(round(fraction * len(correct)))
        accuracy = float(correct[order[:kept]].mean()) if kept else float("nan")
        rows.append(
            {
                "reject_fraction": float(fraction),
                "coverage": kept / len(correct),
                "kept": kept,
                "accuracy": accuracy,
            }
        )
    return rows


def coverage_section(
    predictions: Predictions,
    threshold: ThresholdChoice | None,
    out_dir: str | Path,
    method: str,
    measure: str = "entropy",
) -> dict[str, Any]:
    """The "uncertainty" section of metrics.json (plus coverage_accuracy.png in out_dir). Correct
    cases are the task's (binary: `p >= threshold` equals the label; multiclass: the argmax does;
    multilabel: ValueError); the entropy is at most log K nats over the K classes."""
    rows = coverage_accuracy(predictions.task.correct(predictions, threshold), predictions.extra[measure])
    num_classes = len(predictions.class_names)
    curve = ([row["coverage"] for row in rows], [row["accuracy"] for row in rows])
    plots.plot_curves(
        {f"{method} ({measure})": curve},
        Path(out_dir) / "coverage_accuracy.png",
        xlabel="coverage (fraction of cases kept)",
        ylabel="accuracy on kept cases",
        title="Accuracy after rejecting the most uncertain cases",
        limits=None,
    )
    return {
        "method": method,
        "measure": f"{measure} (nats; maximum log {num_classes} = {math.log(num_classes):.4f})",
        "mean_entropy": float(np.mean(predictions.extra["entropy"])),
        "coverage_accuracy": rows,
    }


def evaluate_uncertainty(
    models: Sequence[keras.Model],
    config: ClassificationInputs,
    out_dir: str | Path,
    method: str = "ensemble",
    samples: int = 20,
    **evaluate_options: Any,
) -> dict[str, Any]:
    """`evaluate_model` with ensemble or MC-dropout predictions; metrics.json gains an "uncertainty"
    section and predictions.csv the per-image entropy and mutual information."""
    if method not in METHODS:
        raise ValueError(f"method {method!r} is not one of {METHODS}")
    if method == "ensemble":
        predict_fn = ensemble_predict_fn(models)
    else:
        if len(models) != 1:
            raise ValueError(f"mc_dropout takes one model, got {len(models)}")
        predict_fn = mc_dropout_predict_fn(models[0], samples, seed=evaluate_options.get("seed", 0))
    return evaluate_model(
        models[0],
        config,
        out_dir,
        predict_fn=predict_fn,
        extra_sections=lambda test, threshold: {
            "uncertainty": coverage_section(test, threshold, out_dir, method)
        },
        **evaluate_options,
    )
