"""Patient-wise, label-stratified train/val/test splits and k-fold assignments, and their CSV files.

A split table is a pandas DataFrame with one row per record:
- key: the record key (unique).
- patient_id: the grouping id, or None where the record has none.
- label: the record's class label as one string (multi-label records joined with "+").
- group_kind: what a row was grouped by: "patient" (publisher's patient id), "inferred" (an id
  inferred by the adapter, e.g. a volume block) or "image" (no id: the image is its own group).
- split: "train", "val" or "test".
- fold: (k-fold tables only) 0..k-1 for cross-validation rows, -1 for the held-out test rows.

Every group (patient) lands in exactly one split and one fold. Groups are stratified by their
majority label (ties broken by the alphabetically first label). Everything is deterministic in `seed`.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from common.atomic import atomic_path
from data_prep.errors import DataError

SPLITS = ("train", "val", "test")
GROUP_KINDS = ("patient", "inferred", "image")
REQUIRED_COLUMNS = ("key", "patient_id", "label", "split")
# (key, patient_id, label) or (key, patient_id, label, id kind: "patient" / "inferred")
SplitRow = tuple[str, str | None, str] | tuple[str, str | None, str, str]


class LeakageError(DataError):
    """Patients that occur in more than one split (or fold) of a split table."""

    def __init__(
        self,
        patient_splits: dict[str, list[str]],
        path: str | Path = "split table",
        subject: str = "patients",
    ) -> None:
        self.patient_ids = sorted(patient_splits)
        listed = ", ".join(f"{pid} ({', '.join(patient_splits[pid])})" for pid in self.patient_ids)
        super().__init__(path, f"{subject} in more than one split: {listed}")


def _grouped_table(rows: Iterable[SplitRow], id_kind: str = "patient") -> pd.DataFrame:
    """Rows -> a table sorted by key with a `group` column (patient id, or the key where the patient
    id is missing) and `group_kind`. Warns when some rows have no id.

    id_kind: "patient" or "inferred", the kind recorded for rows that have an id and give no kind.
    """
    table = pd.DataFrame(
        [(*row, id_kind) if len(row) == 3 else row for row in rows],
        columns=["key", "patient_id", "label", "id_kind"],
        dtype=object,
    )
    if table.empty:
        raise ValueError("no records to split")
    bad_kinds = sorted(set(table["id_kind"]) - {"patient", "inferred"})
    if bad_kinds:
        raise ValueError(f"id kinds must be 'patient' or 'inferred', got {bad_kinds}")
    duplicated = table["key"][table["key"].duplicated()].tolist()
    if duplicated:
        raise ValueError(f"duplicated keys: {', '.join(map(str, duplicated[:5]))}")
    table = table.sort_values("key", kind="stable").reset_index(drop=True)
    table["patient_id"] = table["patient_id"].map(lambda pid: None if pid in (None, "") else str(pid))
    table["label"] = table["label"].astype(str)
    has_id = table["patient_id"].notna()
    table["group_kind"] = np.where(has_id, table.pop("id_kind"), "image")
    table["group"] = np.where(has_id, "id:" + table["patient_id"].fillna(""), "key:" + table["key"])
    missing = int((~has_id).sum())
    if missing:
        warnings.warn(
            f"{missing} of {len(table)} records have no patient id; they are split image by image "
            "(group_kind=image), so images of one patient may land in different splits",
            stacklevel=3,
        )
    return table


def _stratified_order(table: pd.DataFrame, seed: int) -> list[str]:
    """The groups ordered by majority label, shuffled by `seed` within each label (from sorted order)."""
    majority = {
        group: sorted(Counter(labels).items(), key=lambda item: (-item[1], item[0]))[0][0]
        for group, labels in table.groupby("group", sort=True)["label"]
    }
    rng = np.random.default_rng(seed)
    order = []
    for label in sorted(set(majority.values())):
        groups = sorted(group for group, group_label in majority.items() if group_label == label)
        order += [groups[i] for i in rng.permutation(len(groups))]
    return order


def _counts(n: int, fractions: list[float]) -> list[int]:
    """Splits n items into len(fractions) parts by largest remainder (ties to the earlier part)."""
    exact = [n * fraction for fraction in fractions]
    counts = [int(np.floor(value)) for value in exact]
    order = sorted(range(len(exact)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    return counts


def _deal(n: int, fractions: dict[str, float]) -> list[str]:
    """Part names for n items in stratified order: the totals are the largest-remainder counts of n,
    and each item goes to the part furthest below its share so far, so every label spreads over the
    parts in proportion (ties to the earlier part)."""
    names = list(fractions)
    targets = dict(zip(names, _counts(n, list(fractions.values())), strict=True))
    assigned = dict.fromkeys(names, 0)
    parts = []
    for position in range(1, n + 1):
        open_parts = [name for name in names if assigned[name] < targets[name]]
        name = max(open_parts, key=lambda m: (fractions[m] * position - assigned[m], -names.index(m)))
        assigned[name] += 1
        parts.append(name)
    return parts


def patient_split(
    rows: Iterable[SplitRow], val: float = 0.15, test: float = 0.15, seed: int = 0, id_kind: str = "patient"
) -> pd.DataFrame:
    """Patient-wise train/val/test split, stratified by each patient's majority label.

    The test and val parts get round(val or test fraction x number of patients) patients (largest
    remainder), dealt so that each label is spread over the parts in proportion. Rows without a patient
    id are split image by image (with a warning). Returns the split table (see the module docstring).
    """
    if val < 0 or test < 0 or val + test >= 1:
        raise ValueError(f"val and test fractions must be >= 0 and sum to < 1, got {val} and {test}")
    table = _grouped_table(rows, id_kind)
    order = _stratified_order(table, seed)
    parts = _deal(len(order), {"test": test, "val": val, "train": 1.0 - val - test})
    table["split"] = table["group"].map(dict(zip(order, parts, strict=True)))
    return table.drop(columns="group")


POLICY_COLUMNS = ("key", "patient_id", "label", "publisher", "kind")
TABLE_COLUMNS = ("key", "patient_id", "label", "group_kind", "split")


def _fresh_split(rows: pd.DataFrame, val: float, test: float, seed: int) -> pd.DataFrame:
    grouped = rows[["key", "patient_id", "label", "kind"]].itertuples(index=False)
    return patient_split(grouped, val=val, test=test, seed=seed)[list(TABLE_COLUMNS)]


def _as_published(rows: pd.DataFrame, split: pd.Series) -> pd.DataFrame:
    """`rows` (in their order) with the given splits; group_kind "image" where a row has no id."""
    has_id = rows["patient_id"].notna() & (rows["patient_id"] != "")
    table = rows.assign(group_kind=rows["kind"].where(has_id, "image"), split=split)
    return table[list(TABLE_COLUMNS)].reset_index(drop=True)


def policy_split(
    rows: pd.DataFrame,
    mode: str,
    val: float,
    test: float,
    seed: int,
    complete: bool,
    where: str | Path = "records",
) -> tuple[pd.DataFrame, str]:
    """The one split policy: (split table with columns `TABLE_COLUMNS`, how it was made).

    rows: one per record with `POLICY_COLUMNS`: key, patient_id (the group id, or None), label,
    publisher (the publisher's split, or None) and kind ("patient" or "inferred": what the id is).
    mode "patient": a fresh `patient_split` (val, test, seed) of all rows -> "patient-wise".
    mode "publisher": the rows' own splits -> "publisher"; a fresh patient-wise split when no row
    has one (or, with `complete`, when "train" is the only one). With `complete`, a publisher split
    without val gets one carved patient-wise (fraction `val`) from train: train + test -> "publisher
    test as test, val carved from train"; train + val -> val becomes test, "publisher val as test,
    val carved from train". Raises DataError naming `where` when only some rows have a publisher
    split, or (with `complete`) when the splits are not train plus val or test.
    """
    if mode not in ("patient", "publisher"):
        raise ValueError(f"split mode must be patient or publisher; got {mode!r}")
    present = set(rows["publisher"].dropna())
    if mode == "patient" or not present or (complete and present == {"train"}):
        return _fresh_split(rows, val, test, seed), "patient-wise"
    if rows["publisher"].isna().any():
        raise DataError(where, "some records have a publisher split and some do not; give a split file")
    if not complete or set(SPLITS) <= present:
        return _as_published(rows, rows["publisher"]), "publisher"
    if "train" not in present or not ({"val", "test"} & present):
        raise DataError(where, f"publisher splits {sorted(present)} need train plus val or test")
    test_name = "test" if "test" in present else "val"
    held_out = rows[rows["publisher"] == test_name]
    train_val = _fresh_split(rows[rows["publisher"] == "train"], val, 0.0, seed)
    table = pd.concat([train_val, _as_published(held_out, "test")], ignore_index=True)
    return table, f"publisher {test_name} as test, val carved from train"


def kfold_split(
    rows: Iterable[SplitRow], folds: int = 5, test: float = 0.0, seed: int = 0, id_kind: str = "patient"
) -> pd.DataFrame:
    """Patient-wise k-fold assignment, stratified by each patient's majority label.

    A `test` fraction of the patients is held out first (split "test", fold -1, dealt as in
    `patient_split`); the rest get split "train" and fold 0..folds-1, dealt round-robin in stratified
    order so folds stay balanced. Use `fold_subsets` to get one fold's train and validation rows.
    """
    if folds < 2:
        raise ValueError(f"folds must be >= 2, got {folds}")
    if not 0 <= test < 1:
        raise ValueError(f"test fraction must be in [0, 1), got {test}")
    table = _grouped_table(rows, id_kind)
    order = _stratified_order(table, seed)
    parts = _deal(len(order), {"test": test, "train": 1.0 - test})
    cross_validation = [group for group, part in zip(order, parts, strict=True) if part == "train"]
    fold_of_group = dict.fromkeys(order, -1) | {group: i % folds for i, group in enumerate(cross_validation)}
    table["fold"] = table["group"].map(fold_of_group).astype(int)
    table["split"] = np.where(table["fold"] < 0, "test", "train")
    return table.drop(columns="group")[["key", "patient_id", "label", "group_kind", "split", "fold"]]


def fold_subsets(table: pd.DataFrame, fold: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train rows, validation rows) of one fold of a `kfold_split` table; test rows are in neither."""
    if "fold" not in table.columns:
        raise ValueError("the split table has no fold column; make it with kfold_split")
    known = sorted(set(table["fold"]) - {-1})
    if fold not in known:
        raise ValueError(f"fold {fold} is not in the table; folds: {known}")
    in_cv = table["fold"] >= 0
    return table[in_cv & (table["fold"] != fold)], table[table["fold"] == fold]


def check_no_leakage(
    table: pd.DataFrame, path: str | Path = "split table", subject: str = "patients"
) -> None:
    """Raises LeakageError naming every patient id found in more than one split (or fold); `subject`
    names the ids in the message."""
    with_id = table[table["patient_id"].notna() & (table["patient_id"] != "")]
    columns = ["split", "fold"] if "fold" in table.columns else ["split"]
    places = with_id[columns].astype(str).agg("/".join, axis=1)
    leaked = {
        str(pid): sorted(set(place))
        for pid, place in places.groupby(with_id["patient_id"], sort=True)
        if place.nunique() > 1
    }
    if leaked:
        raise LeakageError(leaked, path, subject)


def check_record_ids(table: pd.DataFrame, record_ids: Sequence[str | None], path: str | Path) -> None:
    """Leakage check of a split file by the records' own patient ids, not the file's.

    table: a split table (column split, optional fold) whose rows are aligned with `record_ids`, the
    id each record carries (None or "" where it has none). A file may group records its own way, but
    it must not separate a patient the records name: per-slice ids in the file would otherwise put
    one real patient in two splits unseen. Raises LeakageError naming those ids.
    """
    if len(record_ids) != len(table):
        raise ValueError(f"{len(record_ids)} record ids for a split table of {len(table)} rows")
    columns = ["split", "fold"] if "fold" in table.columns else ["split"]
    own = table[columns].reset_index(drop=True).assign(patient_id=list(record_ids))
    check_no_leakage(own, path, subject="patients (by the records' own ids)")


def save_split(table: pd.DataFrame, path: str | Path) -> None:
    """Writes the split table as CSV (columns key, patient_id, label, group_kind, split[, fold]);
    missing patient ids are written as empty cells. Atomic: a temporary file then a rename."""
    path = Path(path)
    if not path.parent.is_dir():
        raise DataError(path.parent, "output folder does not exist")
    columns = [*REQUIRED_COLUMNS[:3], "group_kind", "split"] + (["fold"] if "fold" in table.columns else [])
    with atomic_path(path) as temporary:
        table[columns].to_csv(temporary, index=False)


def load_split(path: str | Path) -> pd.DataFrame:
    """Reads a split CSV written by `save_split`, checks its columns, values and keys, and re-checks
    leakage. Raises DataError (LeakageError for leakage) naming the file."""
    path = Path(path)
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise DataError(path, f"not a readable split CSV ({type(error).__name__}: {error})") from error
    missing = [column for column in REQUIRED_COLUMNS if column not in table.columns]
    if missing:
        raise DataError(path, f"missing columns {', '.join(missing)}; expected {', '.join(REQUIRED_COLUMNS)}")
    bad_splits = sorted(set(table["split"]) - set(SPLITS))
    if bad_splits:
        raise DataError(path, f"unknown split values {bad_splits}; expected {list(SPLITS)}")
    duplicated = table["key"][table["key"].duplicated()].tolist()
    if duplicated:
        raise DataError(path, f"duplicated keys: {', '.join(duplicated[:5])}")
    table["patient_id"] = table["patient_id"].where(table["patient_id"] != "", None)
    if "group_kind" not in table.columns:
        table["group_kind"] = np.where(table["patient_id"].notna(), "patient", "image")
    bad_kinds = sorted(set(table["group_kind"]) - set(GROUP_KINDS))
    if bad_kinds:
        raise DataError(path, f"unknown group_kind values {bad_kinds}; expected {list(GROUP_KINDS)}")
    if "fold" in table.columns:
        try:
            table["fold"] = table["fold"].astype(int)
        except ValueError as error:
            raise DataError(path, f"fold column is not integer ({error})") from error
    check_no_leakage(table, path)
    return table
