"""`python -m experiments reproduce`: the results-table rows run in sequence at one scale, each finished
record copied into `results/` (`run_folder.export_record`).

- Rows: every `experiments list` name but the demo, or those matching `--only` (fnmatch), in name order
  except that a row naming another as `run:<row>` (the S3 infection cascade) runs after it.
- Skip: a row is not run again when a finished record (run.json + summary.json) with the same
  `config_hash` exists under `--results` or `--out`; one found only under `--out` is copied into `--results`.
- Resume: a row whose latest run under `--out` has the same hash but no summary.json (interrupted) is
  continued with `run --resume`; any other row starts a new run.
- One progress line per row: `[k/N] name: ran|resumed|skipped|FAILED in S s, metric value -> record`.
  A failed row (an exception) is reported and the next row runs; Ctrl-C stops the sequence.

No TensorFlow import here: the runner is imported when a row runs.
"""

from __future__ import annotations

import copy
import dataclasses
import fnmatch
import hashlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from common.config import to_dict
from experiments.config import ExperimentConfig
from experiments.registry import get_experiment, list_experiments
from experiments.run_folder import export_record

EXCLUDED = ("demo",)
# Keys that do not change what a run computes, or that the runner fills in from the machine / other keys.
UNHASHED = (
    ("description",),
    ("scales",),
    ("training", "mixed_precision"),  # older records: now runtime.precision
    ("training", "seed"),  # older records: now runtime.seed
    ("evaluation", "threshold"),  # older records: always "val"
)
RUN_PREFIX = "run:"  # as `experiments.cross_validation.RUN_PREFIX` (that module imports TensorFlow)
_NO_DEFAULT = object()


def _field_defaults(cls: type) -> dict[str, Any]:
    """{field: default} of a dataclass, dataclass-valued defaults as mappings (required fields left out)."""
    defaults = {}
    for item in dataclasses.fields(cls):
        if item.default is not dataclasses.MISSING:
            defaults[item.name] = item.default
        elif item.default_factory is not dataclasses.MISSING:
            value = item.default_factory()
            defaults[item.name] = to_dict(value) if dataclasses.is_dataclass(value) else value
    return defaults


def _without_defaults(values: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """`values` less the keys that hold their default (recursing into the config's sections)."""
    kept = {}
    for key, value in values.items():
        default = defaults.get(key, _NO_DEFAULT)
        if isinstance(value, Mapping) and isinstance(default, Mapping) and default:
            value = _without_defaults(value, default)
            if value:
                kept[key] = value
        elif value != default:
            kept[key] = value
    return kept


def config_hash(config: ExperimentConfig | Mapping[str, Any]) -> str:
    """SHA-256 (hex) of a resolved config (an `ExperimentConfig` or its experiment.yaml mapping) as
    canonical JSON, without the `UNHASHED` keys and without values equal to the dataclass defaults: the
    same for a row's config before a run, for the experiment.yaml the run wrote, and for a record
    written before a field with a default was added to the config classes (changing a default's
    value therefore does not change the hash)."""
    values = copy.deepcopy(to_dict(config) if isinstance(config, ExperimentConfig) else dict(config))
    for *parents, leaf in UNHASHED:
        node = values
        for part in parents:
            node = node.get(part) or {}
        node.pop(leaf, None)
    values = _without_defaults(values, _field_defaults(ExperimentConfig))
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()


def record_hash(folder: Path) -> str | None:
    """A run folder's `config_hash` (run.json; older records: computed from experiment.yaml), or None."""
    run_json = folder / "run.json"
    if not run_json.is_file():
        return None
    stored = json.loads(run_json.read_text()).get("config_hash")
    if stored:
        return stored
    config = folder / "experiment.yaml"
    return config_hash(yaml.safe_load(config.read_text())) if config.is_file() else None


def finished_record(root: Path, name: str, digest: str) -> Path | None:
    """The newest finished run folder `root/<name>/<stamp>` whose config hash is `digest`, or None."""
    folders = sorted(
        folder
        for folder in (Path(root) / name).glob("*")
        if folder.is_dir() and not folder.is_symlink() and not folder.name.startswith(".")
    )
    for folder in reversed(folders):
        if (folder / "summary.json").is_file() and record_hash(folder) == digest:
            return folder
    return None


def interrupted_run(out_dir: Path, name: str, digest: str) -> bool:
    """Whether `out/<name>/latest` is an unfinished run (no summary.json) of the same config."""
    latest = Path(out_dir) / name / "latest"
    if not latest.is_dir():
        return False
    folder = latest.resolve()
    return not (folder / "summary.json").is_file() and record_hash(folder) == digest


def _dependencies(values: Any) -> set[str]:
    """Rows named as `run:<row>` anywhere in a config mapping."""
    if isinstance(values, Mapping):
        return set().union(*(_dependencies(value) for value in values.values()))
    if isinstance(values, list):
        return set().union(*(_dependencies(value) for value in values))
    if isinstance(values, str) and values.startswith(RUN_PREFIX):
        return {values.removeprefix(RUN_PREFIX)}
    return set()


def select_rows(configs: Mapping[str, ExperimentConfig], pattern: str | None = None) -> list[str]:
    """The names matching `pattern` (all when None), sorted, each after the rows it names as `run:<row>`."""
    chosen = sorted(name for name in configs if pattern is None or fnmatch.fnmatch(name, pattern))
    ordered: list[str] = []

    def place(name: str) -> None:
        if name in ordered:
            return
        for dependency in sorted(_dependencies(to_dict(configs[name]))):
            if dependency in chosen:
                place(dependency)
        ordered.append(name)

    for name in chosen:
        place(name)
    return ordered


def headline(summary: Mapping[str, Any], metrics: list[str]) -> str:
    """`metric value` of the first of `metrics` the summary holds with a value, else ''."""
    for metric in metrics:
        value = (summary.get(metric) or {}).get("value")
        if value is not None:
            return f"{metric} {value:.3f}"
    return ""


def run_experiment(*args: Any, **kwargs: Any) -> Path:
    """`experiments.runner.run_experiment`, imported (with TensorFlow) only when a row runs."""
    from experiments.runner import run_experiment as run

    return run(*args, **kwargs)


@dataclass
class RowResult:
    name: str
    status: str  # "ran", "resumed", "skipped" or "FAILED"
    seconds: float
    record: Path | None
    detail: str = ""


def reproduce_row(name: str, scale: str, data_dir: Path, out_dir: Path, results_dir: Path) -> RowResult:
    """Runs (or skips, or resumes) one row and copies its finished record into `results_dir`."""
    clock = time.perf_counter()
    digest = config_hash(get_experiment(name, scale=scale))
    record = finished_record(results_dir, name, digest)
    if record is not None:
        return RowResult(name, "skipped", time.perf_counter() - clock, record)
    finished = finished_record(out_dir, name, digest)
    status = "skipped"
    if finished is None:
        status = "resumed" if interrupted_run(out_dir, name, digest) else "ran"
        finished = run_experiment(
            name, data_dir=data_dir, out_dir=out_dir, resume=status == "resumed", scale=scale
        )
    return RowResult(name, status, time.perf_counter() - clock, export_record(finished, results_dir))


def progress_line(index: int, total: int, result: RowResult, metrics: list[str]) -> str:
    """`[k/N] name: status in S s, metric value -> record` (or `: FAILED in S s: error`)."""
    head = f"[{index}/{total}] {result.name}: {result.status} in {result.seconds:.0f} s"
    if result.record is None:
        return f"{head}: {result.detail}"
    summary = json.loads((result.record / "summary.json").read_text())
    shown = headline(summary, metrics)
    return f"{head}{', ' + shown if shown else ''} -> {result.record}"


def reproduce(
    scale: str,
    data_dir: Path,
    out_dir: Path,
    results_dir: Path,
    pattern: str | None = None,
    echo: Callable[[str], None] = print,
) -> list[RowResult]:
    """Runs the selected rows in sequence (see the module docstring); returns one result per row."""
    from experiments.tables import HEADLINES, load_published

    configs = {name: get_experiment(name, scale=scale) for name in list_experiments() if name not in EXCLUDED}
    names = select_rows(configs, pattern)
    if not names:
        raise ValueError(f"--only {pattern!r} matches no row; `python -m experiments list` shows them")
    published = load_published()
    results = []
    for index, name in enumerate(names, start=1):
        clock = time.perf_counter()
        try:
            result = reproduce_row(name, scale, data_dir, out_dir, results_dir)
        except Exception as error:  # one failed row does not stop the others; Ctrl-C does
            detail = f"{type(error).__name__}: {error}".splitlines()[0]
            result = RowResult(name, "FAILED", time.perf_counter() - clock, None, detail)
        metrics = [published[key].metric for key in configs[name].evaluation.published] + list(HEADLINES)
        echo(progress_line(index, len(names), result, metrics))
        results.append(result)
    return results
