"""`python -m experiments record RUN`: a run's record without its weights, copied once into results/."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from data_prep.errors import DataError
from experiments.__main__ import main
from experiments.run_folder import export_record


def finished_run(root: Path) -> Path:
    run = root / "runs" / "row" / "20260101T000000Z"
    for name, text in {
        "run.json": json.dumps({"name": "row"}),
        "summary.json": "{}",
        "experiment.yaml": "name: row\n",
        "best.keras": "weights",
        "fold-0/best.keras": "weights",
        "fold-0/bundle.json": "{}",
        "fold-0/eval/cases.csv": "case,dice\nA,0.5\n",
        "fold-0/backup/train/latest.weights.h5": "state",
        "fold-0/stages/train.weights.h5": "state",
    }.items():
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_text(text)
    return run


def test_the_record_keeps_everything_but_weights_and_backups(tmp_path):
    record = export_record(finished_run(tmp_path), tmp_path / "results")
    assert record == tmp_path / "results" / "row" / "20260101T000000Z"
    files = sorted(str(p.relative_to(record)) for p in record.rglob("*") if p.is_file())
    assert files == [
        "experiment.yaml",
        "fold-0/bundle.json",
        "fold-0/eval/cases.csv",
        "run.json",
        "summary.json",
    ]
    with pytest.raises(DataError, match="a record of this run exists already"):
        export_record(finished_run(tmp_path), tmp_path / "results")


def test_an_unfinished_run_is_one_error_line(tmp_path, capsys):
    run = finished_run(tmp_path)
    (run / "summary.json").unlink()
    assert main(["record", str(run), "--into", str(tmp_path / "results")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {run}: not a finished run folder (no summary.json)"
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").rglob("*.json"))
