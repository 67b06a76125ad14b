"""Percentile bootstrap confidence intervals, resampling items or whole groups (patients, cases),
and the one shape every report writes an interval in: `ci_entry` -> {"value", "low", "high"}."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np


def ci_entry(value: Any, low: Any = None, high: Any = None) -> dict[str, float | None]:
    """{"value", "low", "high"} as Python floats: a point value and its 95% interval (None where there
    is none). NaN (undefined) becomes None, so the entry is valid JSON (null)."""
    return {"value": _finite_or_none(value), "low": _finite_or_none(low), "high": _finite_or_none(high)}


def _finite_or_none(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def bootstrap_ci(
    metric_fn: Callable[..., float],
    *arrays: np.ndarray | Sequence,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    groups: np.ndarray | Sequence | None = None,
) -> tuple[float, float, float]:
    """Returns (point, low, high): metric_fn(*arrays) and its percentile bootstrap interval.

    arrays: equal-length arrays along axis 0 (e.g. labels, probabilities); every resample draws
    n items with replacement and calls metric_fn on the same rows of every array. groups: one id
    per item; when given, whole groups are drawn with replacement (as many as there are groups), so
    items of one patient stay together. Resamples where metric_fn returns NaN (e.g. an AUC on one
    class only) are left out; when fewer than half of them are valid, low and high are NaN.
    """
    intervals = bootstrap_cis(
        lambda *rows: {"value": metric_fn(*rows)},
        *arrays,
        n_resamples=n_resamples,
        confidence=confidence,
        seed=seed,
        groups=groups,
    )
    return intervals["value"]


def bootstrap_cis(
    metrics_fn: Callable[..., Mapping[str, float]],
    *arrays: np.ndarray | Sequence,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    groups: np.ndarray | Sequence | None = None,
) -> dict[str, tuple[float, float, float]]:
    """Like `bootstrap_ci` for a function returning several named metrics, resampled together:
    returns name -> (point, low, high), one resampling loop for all of them."""
    arrays = tuple(np.asarray(array) for array in arrays)
    if not arrays:
        raise ValueError("bootstrap_ci needs at least one array")
    length = len(arrays[0])
    if any(len(array) != length for array in arrays):
        raise ValueError(f"arrays differ in length: {[len(array) for array in arrays]}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    points = {name: float(value) for name, value in metrics_fn(*arrays).items()}
    if length == 0:
        return {name: (point, float("nan"), float("nan")) for name, point in points.items()}
    rng = np.random.default_rng(seed)
    members = _group_members(groups, length) if groups is not None else None
    units = length if members is None else len(members)
    values = np.empty((n_resamples, len(points)), dtype=np.float64)
    for i in range(n_resamples):
        drawn = rng.integers(0, units, size=units)
        rows = drawn if members is None else np.concatenate([members[g] for g in drawn])
        resampled = metrics_fn(*(array[rows] for array in arrays))
        values[i] = [resampled[name] for name in points]
    tail = 100 * (1 - confidence) / 2
    intervals = {}
    for column, (name, point) in enumerate(points.items()):
        valid = values[np.isfinite(values[:, column]), column]
        if len(valid) < n_resamples / 2:
            intervals[name] = (point, float("nan"), float("nan"))
        else:
            low, high = np.percentile(valid, [tail, 100 - tail])
            intervals[name] = (point, float(low), float(high))
    return intervals


def _group_members(groups: np.ndarray | Sequence, length: int) -> list[np.ndarray]:
    """The row indices of each group, in order of first appearance."""
    groups = np.asarray(groups)
    if len(groups) != length:
        raise ValueError(f"groups has {len(groups)} entries, the arrays have {length}")
    _, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
    order = np.argsort(first)
    return [np.flatnonzero(inverse == g) for g in order]
