"""Summaries of a dataset as an adapter reads it: counts, masks, intensities, shapes, ids and problems.

`inspect_dataset` scans every record once (one record in memory at a time) and returns a plain,
JSON-serialisable dict; `format_summary` renders it as text for the command line.

Problems are the findings that contradict the adapter's own description of the set: duplicated or
unsorted keys, mask values other than {0, 1}, masks or labels the adapter does not declare, empty masks
where the adapter says a mask is always drawn (its `expected_nonempty`), pixel values that do not
look like the declared intensity kind, and patient ids that contradict its `patient_ids` kind.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from data_prep.adapters.base import DatasetAdapter
from data_prep.io import intensity_kind
from data_prep.records import Record

NO_SPLIT = "(none)"
UNLABELLED = "(unlabelled)"
NO_PREFIX = "(no prefix)"


@dataclass
class _MaskStats:
    """Running statistics of one mask name."""

    values: set[int] = field(default_factory=set)
    records: int = 0
    non_empty: int = 0
    non_empty_by_label: Counter[str] = field(default_factory=Counter)


@dataclass
class _Scan:
    """Running statistics over the records of one scan."""

    declared_splits: tuple[str, ...]
    counts: dict[str, Counter[str]] = field(default_factory=dict)
    masks: dict[str, _MaskStats] = field(default_factory=dict)
    declared_kinds: Counter[str] = field(default_factory=Counter)
    measured_kinds: Counter[str] = field(default_factory=Counter)
    dtypes: Counter[str] = field(default_factory=Counter)
    channels: Counter[int] = field(default_factory=Counter)
    modalities: Counter[str] = field(default_factory=Counter)
    sources: Counter[str] = field(default_factory=Counter)
    id_prefixes: Counter[str] = field(default_factory=Counter)
    patient_ids: set[str] = field(default_factory=set)
    keys: Counter[str] = field(default_factory=Counter)
    low: float = float("inf")
    high: float = float("-inf")
    heights: Counter[int] = field(default_factory=Counter)
    widths: Counter[int] = field(default_factory=Counter)
    previous_key: str | None = None
    # problem message -> [number of records, first key]
    problems: dict[str, list] = field(default_factory=dict)

    def problem(self, message: str, key: str) -> None:
        entry = self.problems.setdefault(message, [0, key])
        entry[0] += 1


def _labels_of(record: Record) -> tuple[str, ...]:
    return record.labels or (UNLABELLED,)


def _update_shape(scan: _Scan, record: Record) -> None:
    height, width = record.image.shape[:2]
    scan.heights[height] += 1
    scan.widths[width] += 1
    scan.channels[1 if record.image.ndim == 2 else record.image.shape[2]] += 1


def _update_intensity(scan: _Scan, record: Record) -> None:
    scan.low = min(scan.low, float(record.image.min()))
    scan.high = max(scan.high, float(record.image.max()))
    scan.declared_kinds[record.intensity] += 1
    scan.dtypes[str(record.image.dtype)] += 1
    measured = intensity_kind(record.image)
    scan.measured_kinds[measured] += 1
    if measured != record.intensity:
        scan.problem(f"pixel values look {measured!r}, declared {record.intensity!r}", record.key)


def _update_masks(scan: _Scan, adapter: DatasetAdapter, record: Record) -> None:
    expected = getattr(adapter, "expected_nonempty", {})
    for name, mask in record.masks.items():
        stats = scan.masks.setdefault(name, _MaskStats())
        values = set(np.unique(mask).tolist())
        stats.values |= values
        stats.records += 1
        if not values <= {0, 1}:
            scan.problem(f"mask {name!r} has values other than {{0, 1}}", record.key)
        if name not in adapter.mask_names:
            scan.problem(f"mask {name!r} is not among the adapter's mask names", record.key)
        non_empty = bool(mask.any())
        if non_empty:
            stats.non_empty += 1
            stats.non_empty_by_label.update(_labels_of(record))
        must_be_drawn = name in expected and (
            expected[name] is None or any(label in expected[name] for label in record.labels)
        )
        if must_be_drawn and not non_empty:
            scan.problem(f"mask {name!r} is empty where the set says it is always drawn", record.key)


def _update_ids(scan: _Scan, adapter: DatasetAdapter, record: Record) -> None:
    if record.patient_id is None:
        if adapter.patient_ids == "real":
            scan.problem("no patient id although the set has real ids", record.key)
        return
    if adapter.patient_ids == "none":
        scan.problem("a patient id although the set declares none", record.key)
    scan.patient_ids.add(record.patient_id)
    prefix, colon, _ = record.patient_id.partition(":")
    scan.id_prefixes[prefix if colon else NO_PREFIX] += 1


def _update(scan: _Scan, adapter: DatasetAdapter, record: Record) -> None:
    """Adds one record to the running statistics and notes its problems."""
    scan.keys[record.key] += 1
    if scan.keys[record.key] == 2:
        scan.problem("duplicated key", record.key)
    if scan.previous_key is not None and record.key < scan.previous_key:
        scan.problem("records not in sorted key order", record.key)
    scan.previous_key = record.key
    split = record.split or NO_SPLIT
    scan.counts.setdefault(split, Counter()).update(_labels_of(record))
    if adapter.label_names and not set(record.labels) <= set(adapter.label_names):
        scan.problem("a label the adapter does not declare", record.key)
    if record.split is not None and record.split not in scan.declared_splits:
        scan.problem("a split the adapter does not list", record.key)
    scan.modalities[record.modality] += 1
    if record.source is not None:
        scan.sources[record.source] += 1
    _update_shape(scan, record)
    _update_intensity(scan, record)
    _update_masks(scan, adapter, record)
    _update_ids(scan, adapter, record)


def inspect_dataset(adapter: DatasetAdapter, split: str | None = None, progress: bool = True) -> dict:
    """Scans the records of `adapter` (one split or all) and summarises them; see the module docstring.

    Returns a JSON-serialisable dict; `problems` is a list of {"problem", "records", "first_key"}.
    Raises the adapter's `DataError` when a file cannot be read.
    """
    scan = _Scan(declared_splits=adapter.splits())
    records = adapter.records(split)
    for record in tqdm(records, desc=f"inspect {adapter.name}", unit=" images", disable=not progress):
        _update(scan, adapter, record)
    total = sum(scan.keys.values())
    class_counts: Counter[str] = Counter()
    for by_label in scan.counts.values():
        class_counts.update(by_label)
    return {
        "dataset": adapter.name,
        "root": str(adapter.root),
        "records": total,
        "splits": list(scan.declared_splits),
        "counts": {s: dict(sorted(c.items())) for s, c in sorted(scan.counts.items())},
        "class_counts": dict(sorted(class_counts.items())),
        "split_counts": {s: sum(c.values()) for s, c in sorted(scan.counts.items())},
        "modalities": dict(sorted(scan.modalities.items())),
        "sources": dict(sorted(scan.sources.items())),
        "masks": {
            name: {
                "values": sorted(stats.values),
                "records": stats.records,
                "non_empty": stats.non_empty,
                "fraction_non_empty": stats.non_empty / stats.records,
                "non_empty_by_label": dict(sorted(stats.non_empty_by_label.items())),
            }
            for name, stats in sorted(scan.masks.items())
        },
        "intensity": {
            "declared": dict(sorted(scan.declared_kinds.items())),
            "measured": dict(sorted(scan.measured_kinds.items())),
            "dtypes": dict(sorted(scan.dtypes.items())),
            "min": scan.low if total else None,
            "max": scan.high if total else None,
        },
        "shapes": {
            "height": [min(scan.heights), max(scan.heights)] if total else None,
            "width": [min(scan.widths), max(scan.widths)] if total else None,
            "channels": {str(c): n for c, n in sorted(scan.channels.items())},
        },
        "orientation": getattr(adapter, "orientation", None),
        "patients": {
            "kind": adapter.patient_ids,
            "records_with_id": sum(scan.id_prefixes.values()),
            "distinct_ids": len(scan.patient_ids),
            "by_prefix": dict(sorted(scan.id_prefixes.items())),
        },
        "problems": [
            {"problem": message, "records": count, "first_key": first}
            for message, (count, first) in scan.problems.items()
        ],
    }


def _counts_table(counts: dict[str, dict[str, int]]) -> list[str]:
    """Rows `split  label=n ...  total=n` of the per-split class counts."""
    labels = sorted({label for by_label in counts.values() for label in by_label})
    rows = []
    for split, by_label in counts.items():
        cells = "  ".join(f"{label}={by_label.get(label, 0)}" for label in labels)
        rows.append(f"  {split:<8} {cells}  total={sum(by_label.values())}")
    return rows


def format_summary(summary: dict) -> str:
    """Renders an `inspect_dataset` summary as lines of text."""
    intensity, shapes, patients = summary["intensity"], summary["shapes"], summary["patients"]
    lines = [
        f"dataset {summary['dataset']} at {summary['root']}: {summary['records']} records",
        f"splits: {', '.join(summary['splits']) or 'none'}",
        "counts per split and class:",
        *_counts_table(summary["counts"]),
        f"modalities: {summary['modalities']}",
    ]
    if summary["sources"]:
        lines.append(f"sources: {summary['sources']}")
    lines.append("masks:" if summary["masks"] else "masks: none")
    for name, mask in summary["masks"].items():
        lines.append(
            f"  {name}: values {mask['values']}, non-empty in {mask['non_empty']}/{mask['records']} "
            f"({mask['fraction_non_empty']:.1%}); non-empty by label {mask['non_empty_by_label']}"
        )
    lines += [
        f"intensity: declared {intensity['declared']}, measured {intensity['measured']}, "
        f"range [{intensity['min']}, {intensity['max']}], dtypes {intensity['dtypes']}",
        f"image shapes: height {shapes['height']}, width {shapes['width']}, channels {shapes['channels']}",
        f"orientation: {summary['orientation'] or 'not known to the adapter'}",
        f"patient ids: kind {patients['kind']}, {patients['records_with_id']} records with an id, "
        f"{patients['distinct_ids']} distinct ids, by prefix {patients['by_prefix']}",
    ]
    lines.append("problems:" if summary["problems"] else "problems: none found")
    for problem in summary["problems"]:
        lines.append(f"  {problem['problem']}: {problem['records']} records (first: {problem['first_key']})")
    return "\n".join(lines)
