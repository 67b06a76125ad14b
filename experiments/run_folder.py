"""Run records: their JSON files, git commit, package versions and hardware (the folders themselves
are made and published by `experiments.run_start`)."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from common.atomic import atomic_path, atomic_write_json
from data_prep.errors import DataError

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = (
    "tensorflow",
    "keras",
    "numpy",
    "nibabel",
    "opencv-python-headless",
    "pandas",
    "tensorflow-datasets",
    "pyyaml",
)


def write_json(path: Path, payload: Any) -> None:
    """Writes a run record's JSON file all-or-nothing: keys sorted, values JSON lacks as strings."""
    atomic_write_json(path, payload, sort_keys=True, default=str)


def git_commit(repo: Path = REPO_ROOT) -> str:
    """The checked-out commit, with "+dirty" when the work tree has changes; "unknown" outside git."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def hardware(strategy_name: str, replicas: int) -> dict[str, Any]:
    """What the run ran on; `summary` is the short form used in tables."""
    import tensorflow as tf

    gpus = [device.name for device in tf.config.list_physical_devices("GPU")]
    cores = os.cpu_count() or 0
    summary = f"{len(gpus)} GPU" if gpus else f"{cores} CPU cores"
    return {
        "summary": f"{summary}, {strategy_name} x{replicas}",
        "cpu_cores": cores,
        "gpus": gpus,
        "machine": platform.machine(),
        "strategy": strategy_name,
        "replicas": replicas,
    }


RECORD_LEFT_OUT = ("*.keras", "*.h5", "backup", "stages", "tensorboard", ".*")


def export_record(run_dir: Path, results_dir: Path) -> Path:
    """Copies a finished run folder's record (configs, run.json, summary.json, CSVs, plots, bundles'
    JSON; no model weights, backups or TensorBoard logs: `RECORD_LEFT_OUT`) to
    `results_dir/<name>/<run folder name>/`, atomically; an existing record is never replaced."""
    run_dir = Path(run_dir).resolve()
    for required in ("run.json", "summary.json"):
        if not (run_dir / required).is_file():
            raise DataError(run_dir, f"not a finished run folder (no {required})")
    name = json.loads((run_dir / "run.json").read_text())["name"]
    target = Path(results_dir) / name / run_dir.name
    if target.exists():
        raise DataError(target, "a record of this run exists already")
    with atomic_path(target) as staging:
        shutil.copytree(run_dir, staging, ignore=shutil.ignore_patterns(*RECORD_LEFT_OUT))
    return target
