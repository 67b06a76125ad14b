"""Starting a run without debris: the config (new, or the resumed run's own), the input checks, and a
run folder that appears only once the run has started. No TensorFlow import: a bad config or a missing
dataset fails fast, before anything is written.

- New run: the config is the named row's (scale variant, then `--set`s), validated by
  `experiments.config_checks`; `check_inputs` checks the datasets, folders and files it names. The run
  writes into a hidden `out/<name>/.pending-<UTC time>-<pid>/` until `publish()` renames it to
  `out/<name>/<UTC time>` and points `latest` at it; `discard()` removes a run that never started.
- Resume: the config is the run's own `experiment.yaml`; a `--set` on resume is an error unless it
  names a field in `SAFE_ON_RESUME` (to extend a run: `training.epochs`). The changes are returned
  (`resume_changes`) for the run record.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from common.atomic import atomic_path, replace_folder
from common.config import ConfigError, apply_overrides, from_dict, to_dict
from data_prep.errors import DataError
from experiments.config import ExperimentConfig
from experiments.config_checks import check_config

SAFE_ON_RESUME = ("training.epochs", "training.fine_tune_epochs", "training.verbose")
PENDING_PREFIX = ".pending-"
CONFIG_FILE = "experiment.yaml"


@dataclass
class RunStart:
    """A run about to start. folder: where it writes now (pending, or the resumed run's folder)."""

    config: ExperimentConfig
    folder: Path
    resumed: bool = False
    resume_changes: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def pending(self) -> bool:
        return self.folder.name.startswith(PENDING_PREFIX)

    def publish(self) -> Path:
        """Renames the pending folder to its final name, points `latest` at it; returns the folder."""
        if not self.pending:
            return self.folder
        stamp = self.folder.name.removeprefix(PENDING_PREFIX).rsplit("-", 1)[0]
        for attempt in range(1000):
            final = self.folder.with_name(stamp if attempt == 0 else f"{stamp}-{attempt}")
            try:
                final.mkdir()  # claims the name; the rename then replaces the empty folder
            except FileExistsError:
                continue
            replace_folder(self.folder, final)
            break
        self.folder = final
        point_latest(final)
        return final

    def discard(self) -> None:
        """Removes a pending folder (a run that failed before it started)."""
        if self.pending:
            shutil.rmtree(self.folder, ignore_errors=True)


def point_latest(folder: Path) -> None:
    """Points `folder.parent/latest` at `folder`, atomically."""
    with atomic_path(folder.parent / "latest") as temporary:
        temporary.symlink_to(folder.name)


def check_run(
    name: str,
    out_dir: Path,
    data_dir: Path,
    overrides: list[str] = (),
    scale: str = "full",
    resume: bool = False,
) -> tuple[ExperimentConfig, Path | None, dict[str, dict[str, Any]]]:
    """(checked config, the folder to resume or None, the changes a resume makes); writes nothing."""
    from experiments.registry import config_path, get_experiment

    if resume:
        run_dir = latest_run(out_dir, name)
        config, changes = resumed_config(run_dir, list(overrides))
        source = run_dir / CONFIG_FILE
    else:
        config, run_dir, changes = get_experiment(name, list(overrides), scale), None, {}
        source = config_path(name)
    try:
        check_inputs(config, data_dir)
    except ConfigError as error:
        raise ConfigError(f"{source}: {error}") from error
    return config, run_dir, changes


def start_run(
    name: str,
    out_dir: Path,
    data_dir: Path,
    overrides: list[str] = (),
    scale: str = "full",
    resume: bool = False,
    folder: bool = True,
) -> RunStart:
    """The checked config and the folder of a new (pending) or resumed run of experiment `name`.

    folder: False on the non-chief workers of a multi-worker run, which write no run folder.
    """
    config, run_dir, changes = check_run(name, out_dir, data_dir, overrides, scale, resume)
    if run_dir is not None:
        return RunStart(config, run_dir, resumed=True, resume_changes=changes)
    if not folder:
        return RunStart(config, Path(out_dir))
    parent = Path(out_dir) / config.name
    parent.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    pending = parent / f"{PENDING_PREFIX}{stamp}-{os.getpid()}"
    pending.mkdir()
    return RunStart(config, pending)


def latest_run(out_dir: Path, name: str) -> Path:
    """The folder `out/<name>/latest` points at; DataError when there is none to resume."""
    stem = Path(name).stem if name.endswith((".yaml", ".yml")) else name
    latest = Path(out_dir) / stem / "latest"
    if not latest.exists():
        raise DataError(latest, f"no earlier run of {stem} to resume")
    folder = latest.resolve()
    if not (folder / CONFIG_FILE).is_file():
        raise DataError(folder / CONFIG_FILE, "the run to resume has no config (it never started)")
    return folder


def resumed_config(folder: Path, overrides: list[str]) -> tuple[ExperimentConfig, dict[str, dict[str, Any]]]:
    """The run's own config with the safe `overrides` applied, and {key: {"was", "now"}} of the changes."""
    path = folder / CONFIG_FILE
    try:
        values = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: cannot read YAML ({error})") from error
    before = to_dict(from_dict(ExperimentConfig, dict(values), str(path)))
    apply_overrides(values, overrides)
    config = check_config(from_dict(ExperimentConfig, values, str(path)))
    after, changes = to_dict(config), {}
    for override in overrides:
        key = override.partition("=")[0]
        *parents, leaf = key.split(".")
        was, now = _lookup(before, parents, leaf), _lookup(after, parents, leaf)
        if was == now:
            continue
        if key not in SAFE_ON_RESUME:
            raise ConfigError(
                f"--set {override!r}: a resumed run keeps its config ({path}); only "
                f"{', '.join(SAFE_ON_RESUME)} may change on --resume. Start a new run instead."
            )
        changes[key] = {"was": was, "now": now}
    return config, changes


def _lookup(values: dict[str, Any], parents: list[str], leaf: str) -> Any:
    for part in parents:
        values = values.get(part) or {}
    return values.get(leaf)


def check_inputs(config: ExperimentConfig, data_dir: Path) -> None:
    """Checks that the datasets, folders and files the config names exist (phantoms need no folder)."""
    from data_prep import phantoms
    from data_prep.adapters import dataset_names

    data = config.data
    known = dataset_names()
    for where, source in [("data", {"dataset": data.dataset, "root": data.root}), *_extra(data.extra)]:
        if source["dataset"] not in known:
            raise ConfigError(
                f"{where}.dataset: unknown dataset {source['dataset']!r}; known: {', '.join(known)}"
            )
        if data.phantom:
            if source["dataset"] not in phantoms.KINDS:
                raise ConfigError(
                    f"{where}.dataset: no synthetic phantoms for {source['dataset']!r}; "
                    f"available: {', '.join(phantoms.KINDS)}"
                )
            continue
        root = Path(source["root"])
        root = root if root.is_absolute() else Path(data_dir) / root
        if not root.is_dir():
            raise DataError(
                root, f"dataset folder of {where}.root not found (set --data-dir or {where}.root)"
            )
    if data.split == "file" and not Path(data.split_file).is_file():
        raise DataError(data.split_file, "data.split_file not found")
    weights = config.model.weights
    if weights not in (None, "imagenet", "none", "None") and not Path(weights).is_file():
        raise DataError(weights, "model.weights: no such weights file (expected imagenet, null or a file)")


def _extra(extra: list[dict[str, str]]) -> list[tuple[str, dict[str, str]]]:
    return [(f"data.extra[{index}]", source) for index, source in enumerate(extra)]
