"""Cohorts for the CT report: many scans -> one folder per scan and one `cohort.csv`.

`find_scans` turns the command line's inputs (files, DICOM series folders, cohort folders searched
recursively, glob patterns) into named scans; `run_cohort` reports each with
`experiments.pipelines.report.write_report`, skipping those already done with the same models, and
writes `cohort.csv` after every scan (atomically). A scan that fails gets an error row.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from common.atomic import atomic_write_text
from data_prep.dicom import is_dicom_series_folder
from data_prep.errors import DataError
from data_prep.io import NIFTI_SUFFIXES
from experiments.pipelines.report import SCHEMA_VERSION, ReportModels, headline, scan_name, write_report


def _scans_in_folder(folder: Path) -> list[Path]:
    """NIfTI files and DICOM series folders under `folder` (recursively; a series folder is not entered)."""
    if is_dicom_series_folder(folder):
        return [folder]
    found = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            found += _scans_in_folder(entry)
        elif entry.name.endswith(NIFTI_SUFFIXES):
            found.append(entry)
    return found


def find_scans(inputs: Sequence[str | Path]) -> dict[str, Path]:
    """Scan name -> path for the command line's inputs (files, series folders, cohort folders, globs),
    in input order; repeated names get "-2", "-3", ...; an input that holds no scan is a DataError."""
    paths: list[Path] = []
    for item in map(str, inputs):
        matches = [Path(m) for m in sorted(glob.glob(item))] if glob.has_magic(item) else [Path(item)]
        if not matches:
            raise DataError(item, "matches no file or folder")
        for match in matches:
            if match.is_dir() and not is_dicom_series_folder(match):
                found = _scans_in_folder(match)
                if not found:
                    raise DataError(match, "holds no .nii / .nii.gz file or DICOM series")
                paths += found
            else:
                paths.append(match)
    named: dict[str, Path] = {}
    for path in dict.fromkeys(paths):  # the same scan given twice is one scan
        name, copy = scan_name(path), 2
        while name in named:
            name, copy = f"{scan_name(path)}-{copy}", copy + 1
        named[name] = path
    return named


def cohort_row(name: str, summary: dict) -> dict:
    """One cohort.csv row from a report.json: volumes (mL and voxels), percentages, scores, warnings, models."""
    lungs = summary["lungs"]
    amounts = {f"lung_{side}": lungs[side]["volume"] for side in ("right", "left", "total")}
    amounts |= {f"infection_{side}": lungs[side]["infection"] for side in ("right", "left", "total")}
    amounts |= {  # a single "infection" manifestation has the same keys and values as the lines above
        f"{manifestation}_{side}": values[side]
        for manifestation, values in summary["manifestations"].items()
        for side in ("right", "left", "total")
    }
    amounts["outside_lungs_not_counted"] = summary["outside_lungs"]["infection"]
    row = {"scan": name, "source": summary["scan"]["source"], "status": "ok", "unit": summary["unit"]}
    row |= {f"{key}_ml": round(value["ml"], 3) if "ml" in value else "" for key, value in amounts.items()}
    row |= {f"{key}_voxels": value["voxels"] for key, value in amounts.items()}
    row |= {
        f"infected_percent_{side}": round(lungs[side]["infected_percent"], 3)
        for side in ("right", "left", "total")
    }
    row |= {f"severity_{side}": lungs[side]["severity_score"] for side in ("right", "left")}
    row |= {"severity_score": summary["severity"]["score"], "grade": summary["severity"]["grade"]}
    row |= {
        "synthetic": summary["scan"]["synthetic"],
        "warnings": " | ".join(summary["warnings"]),
        "error": "",
    }
    row |= {f"model_{m['role'].replace(':', '_')}_sha256": m["sha256"] for m in summary["models"]}
    return row


def _write_csv(path: Path, rows: list[dict]) -> None:
    ordered = sorted(rows, key=lambda row: row["status"] == "error")  # error rows have fewer columns
    columns = list(dict.fromkeys(key for row in ordered for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def _done(report_json: Path, source: Path, checksums: list[str], orientation: str) -> dict | None:
    """The existing report.json when it is this scan's with this schema, models and orientation, else None."""
    if not report_json.is_file():
        return None
    try:
        summary = json.loads(report_json.read_text())
    except json.JSONDecodeError:
        return None
    same = (
        summary.get("schema_version") == SCHEMA_VERSION
        and summary.get("scan", {}).get("source") == str(source.resolve())
        and summary.get("scan", {}).get("orientation") == orientation
        and [m.get("sha256") for m in summary.get("models", [])] == checksums
    )
    return summary if same else None


@dataclass(frozen=True)
class CohortResult:
    rows: list[dict]  # cohort.csv rows, in scan order
    failed: int
    skipped: int


def run_cohort(
    scans: dict[str, Path],
    out_dir: str | Path,
    models: ReportModels,
    orientation: str = "display",
    progress: bool | None = None,
) -> CohortResult:
    """Reports every scan into `out_dir/<name>/` and writes `out_dir/cohort.csv` (after each scan).

    A scan that fails gets a row with status "error" and its problem, and an `error: <file>: <problem>`
    line on stderr; the others go on. progress: a tqdm bar (None: only on a terminal).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    checksums = [record["sha256"] for record in models.records]
    rows, failed, skipped = [], 0, 0
    for name, path in tqdm(
        scans.items(), desc="CT report", unit="scan", disable=None if progress is None else not progress
    ):
        summary = _done(out_dir / name / "report.json", path, checksums, orientation)
        try:
            if summary is None:
                summary = write_report(path, out_dir / name, models, orientation)
                tqdm.write(f"{name}: {headline(summary)}")
            else:
                skipped += 1
                tqdm.write(f"{name}: already done, skipped")
            rows.append(cohort_row(name, summary))
        except Exception as error:  # one bad scan must not stop a cohort; DataError is the usual case
            failed += 1
            problem = (
                str(error) if isinstance(error, DataError) else f"{path}: {type(error).__name__}: {error}"
            )
            tqdm.write(f"error: {problem}", file=sys.stderr)
            rows.append({"scan": name, "source": str(path.resolve()), "status": "error", "error": problem})
        _write_csv(out_dir / "cohort.csv", rows)
    return CohortResult(rows, failed, skipped)
