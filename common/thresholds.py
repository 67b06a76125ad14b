"""Decision thresholds chosen on VALIDATION data only: one record and one rule for every task.

A `ThresholdChoice` holds one threshold per output (the unit of a binary classifier, each unit of a
multi-label classifier, each sigmoid channel of a segmenter; output k is positive where its
probability >= thresholds[k]) and where they came from. The rules, the same for classification and
segmentation:
- validation split: a split name in `VALIDATION_SPLITS` (any case). Choosing on any other split
  raises `ThresholdSplitError`, and so does applying a choice to the split it was chosen on.
  "fixed" marks a stated constant (`ThresholdChoice.fixed(0.5)`), chosen on no data.
- selection (`choose_threshold`): per output, the candidate with the highest validation value of the
  criterion; ties go to the LOWEST threshold; NaN (undefined) values are passed over; when the
  criterion is undefined at every candidate (e.g. a class missing from validation) the threshold is
  `FALLBACK_THRESHOLD` and its score NaN.
- no validation data (no predictions, no candidates): `NoValidationDataError`, one message.
- `threshold.json` (`THRESHOLD_FILE` in a run folder) is written by `ThresholdChoice.save`
  (atomically) and read by `ThresholdChoice.load`; a record with unknown fields is refused.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from common.atomic import atomic_write_json

VALIDATION_SPLITS = ("val", "valid", "validation", "tune", "dev")
FIXED = "fixed"
FALLBACK_THRESHOLD = 0.5
THRESHOLD_FILE = "threshold.json"


class ThresholdSplitError(ValueError):
    """A threshold was to be chosen on, or applied to, a split the rules forbid."""


class NoValidationDataError(ValueError):
    """There are no validation predictions to choose a threshold from."""


def is_validation_split(split: str) -> bool:
    return split.lower() in VALIDATION_SPLITS


def check_validation_split(split: str) -> str:
    """Returns `split`; raises ThresholdSplitError unless it names a validation split."""
    if not is_validation_split(split):
        raise ThresholdSplitError(
            f"thresholds are chosen on validation data only (a split named {', '.join(VALIDATION_SPLITS)}), "
            f"not on {split!r}"
        )
    return split


def check_validation_data(split: str, count: int) -> None:
    """Raises NoValidationDataError when split `split` gave no (`count` = 0) predictions."""
    if count == 0:
        raise NoValidationDataError(
            f"no validation predictions on split {split!r} to choose a threshold from"
        )


def _floats(values: Sequence[float]) -> tuple[float, ...]:
    return tuple(float(value) for value in values)


@dataclass(frozen=True)
class ThresholdChoice:
    """Thresholds, one per output, and their provenance.

    thresholds: (K,) probabilities in [0, 1]. split: the validation split they were chosen on, or
    "fixed". criterion: what was maximised ("youden", "f1", "accuracy", "dice", ...; "none" when
    fixed). average: how the criterion was averaged over the split ("pooled" counts, or a
    segmenter's "per_image" / "per_case"; "none" when fixed). validation_scores: (K,) the
    criterion's validation value at each chosen threshold (NaN: undefined; empty when fixed).
    grid / curves: the sweep when all outputs shared one grid, curves[k][i] = value of output k at
    grid[i] (empty otherwise).
    """

    thresholds: tuple[float, ...]
    split: str
    criterion: str = "none"
    average: str = "none"
    validation_scores: tuple[float, ...] = ()
    grid: tuple[float, ...] = ()
    curves: tuple[tuple[float, ...], ...] = ()

    def __post_init__(self) -> None:
        if self.split != FIXED:
            check_validation_split(self.split)
        if not self.thresholds:
            raise ValueError("a threshold choice needs at least one threshold")
        if self.validation_scores and len(self.validation_scores) != len(self.thresholds):
            raise ValueError(f"{len(self.validation_scores)} scores for {len(self.thresholds)} thresholds")

    @classmethod
    def fixed(cls, threshold: float = FALLBACK_THRESHOLD, num_outputs: int = 1) -> ThresholdChoice:
        """A stated, data-independent threshold for each of `num_outputs` outputs."""
        return cls(thresholds=(float(threshold),) * num_outputs, split=FIXED)

    def check_applicable_to(self, split: str) -> None:
        """Raises ThresholdSplitError when this choice would be applied to the split it was chosen on."""
        if self.split != FIXED and self.split.lower() == split.lower():
            raise ThresholdSplitError(
                f"the threshold was chosen on split {split!r}, the split being evaluated"
            )

    def binarize(self, probs: np.ndarray) -> np.ndarray:
        """probs (..., K) float -> bool (..., K): output k positive where probs[..., k] >= thresholds[k]."""
        probs = np.asarray(probs)
        if probs.shape[-1] != len(self.thresholds):
            raise ValueError(f"{probs.shape[-1]} channels but {len(self.thresholds)} thresholds")
        return probs >= np.asarray(self.thresholds, probs.dtype)

    def to_dict(self) -> dict[str, Any]:
        """The threshold.json record: every field, NaN scores as None."""
        return {
            "thresholds": list(self.thresholds),
            "split": self.split,
            "criterion": self.criterion,
            "average": self.average,
            "validation_scores": [None if math.isnan(v) else v for v in self.validation_scores],
            "grid": list(self.grid),
            "curves": [list(row) for row in self.curves],
        }

    def summary(self) -> dict[str, Any]:
        """`to_dict` without the sweep (grid, curves): what an evaluation report states."""
        return {key: value for key, value in self.to_dict().items() if key not in ("grid", "curves")}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ThresholdChoice:
        """The inverse of `to_dict`; ValueError for a record with unknown or missing fields."""
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown or "thresholds" not in values or "split" not in values:
            raise ValueError(f"not a threshold record (fields {sorted(values)}; expected {sorted(known)})")
        return cls(
            thresholds=_floats(values["thresholds"]),
            split=str(values["split"]),
            criterion=str(values.get("criterion", "none")),
            average=str(values.get("average", "none")),
            validation_scores=tuple(
                float("nan") if v is None else float(v) for v in values.get("validation_scores", ())
            ),
            grid=_floats(values.get("grid", ())),
            curves=tuple(_floats(row) for row in values.get("curves", ())),
        )

    def save(self, path: str | Path) -> Path:
        """Writes the choice as JSON (`to_dict`; a run folder's THRESHOLD_FILE), all-or-nothing."""
        return atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> ThresholdChoice:
        """Reads a file written by `save`."""
        return cls.from_dict(json.loads(Path(path).read_text()))


def best_candidate(candidates: np.ndarray, values: np.ndarray) -> tuple[float, float]:
    """(threshold, value): the candidate (T,) with the highest value (T,), ties to the lowest
    threshold, NaN values passed over; (FALLBACK_THRESHOLD, NaN) when every value is NaN."""
    candidates = np.asarray(candidates, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    if candidates.shape != values.shape or candidates.ndim != 1:
        raise ValueError(f"candidates {candidates.shape} and values {values.shape} must be equal 1-D shapes")
    if np.isnan(values).all():
        return FALLBACK_THRESHOLD, float("nan")
    best = np.nanmax(values)
    return float(candidates[values == best].min()), float(best)


def choose_threshold(
    candidates: Sequence[np.ndarray],
    values: Sequence[np.ndarray],
    split: str,
    criterion: str,
    average: str = "pooled",
    keep_sweep: bool = False,
) -> ThresholdChoice:
    """The choice over K outputs from their validation sweeps: candidates[k] (T_k,) thresholds and
    values[k] (T_k,) the criterion's validation value at each (`best_candidate` per output).

    keep_sweep: record the sweep (`grid`, `curves`) in the choice; every output must then share one
    grid. Raises ThresholdSplitError for a non-validation `split`, NoValidationDataError when there
    are no outputs or an output has no candidates.
    """
    check_validation_split(split)
    if len(candidates) != len(values):
        raise ValueError(f"{len(candidates)} candidate lists for {len(values)} value lists")
    check_validation_data(split, min((len(c) for c in candidates), default=0))
    picks = [best_candidate(c, v) for c, v in zip(candidates, values, strict=True)]
    sweep: dict[str, Any] = {}
    if keep_sweep:
        grid = _floats(candidates[0])
        if any(_floats(c) != grid for c in candidates):
            raise ValueError("keep_sweep needs one grid shared by every output")
        sweep = {"grid": grid, "curves": tuple(_floats(v) for v in values)}
    return ThresholdChoice(
        thresholds=tuple(threshold for threshold, _ in picks),
        split=split,
        criterion=criterion,
        average=average,
        validation_scores=tuple(value for _, value in picks),
        **sweep,
    )
