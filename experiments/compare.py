"""`python -m experiments compare A B`: a paired comparison of two records on the images both scored.

Two rows evaluated on the same test images (e.g. the S0 transfer rows, which differ only in their
initialisation) are compared per image rather than by their separate intervals: the mean of
B - A over the images both `eval/per_image.csv` files list (joined on `key`), with a percentile
bootstrap 95% CI that resamples images (`common.bootstrap`). Positive: B scored higher.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from common.bootstrap import bootstrap_ci
from data_prep.errors import DataError

PER_IMAGE = Path("eval") / "per_image.csv"


@dataclass(frozen=True)
class PairedDifference:
    """mean(B - A) of `column` over `images` paired images, its 95% CI, and each side's mean."""

    column: str
    images: int
    difference: float
    low: float
    high: float
    mean_a: float
    mean_b: float

    def line(self) -> str:
        return (
            f"{self.column}: B - A = {self.difference:+.3f} ({self.low:+.3f} to {self.high:+.3f}, paired "
            f"bootstrap 95% CI over {self.images} images); A {self.mean_a:.3f}, B {self.mean_b:.3f}"
        )


def _per_image(record: Path, column: str | None) -> pd.Series:
    """`column` of a record's per-image table by key; None: its one `<mask>_dice` column."""
    path = Path(record) / PER_IMAGE
    if not path.is_file():
        raise DataError(path, "no per-image table; expected a finished segmentation record")
    table = pd.read_csv(path)
    if column is None:
        dice = [name for name in table.columns if name.endswith("_dice")]
        if len(dice) != 1:
            raise DataError(path, f"{len(dice)} Dice columns ({', '.join(dice)}): say which with --column")
        column = dice[0]
    if column not in table.columns or "key" not in table.columns:
        raise DataError(path, f"no column {column!r} (columns: {', '.join(table.columns)})")
    return table.set_index("key")[column].rename(column)


def paired_difference(
    record_a: Path, record_b: Path, column: str | None = None, n_resamples: int = 2000, seed: int = 0
) -> PairedDifference:
    """B - A of the per-image `column` (None: the one `<mask>_dice` column) on the keys both records
    scored (rows with NaN on either side are left out); DataError when they share no image."""
    a, b = _per_image(record_a, column), _per_image(record_b, column)
    both = pd.concat([a.rename("a"), b.rename("b")], axis=1, join="inner").dropna()
    if both.empty:
        raise DataError(Path(record_b) / PER_IMAGE, f"no image in common with {Path(record_a) / PER_IMAGE}")
    delta = (both["b"] - both["a"]).to_numpy()
    value, low, high = bootstrap_ci(np.mean, delta, n_resamples=n_resamples, seed=seed)
    return PairedDifference(
        str(a.name),
        len(both),
        float(value),
        float(low),
        float(high),
        float(both["a"].mean()),
        float(both["b"].mean()),
    )
