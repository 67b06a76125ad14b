"""Experiment configs: one YAML file per results-table row, loaded strictly into the config tree.

An `ExperimentConfig` is the `common.config.TaskConfig` tree plus the row's name, paper, label,
pipeline and scale variants. A row file may start from another with `base: NAME` (a file in the same
folder, `.yaml` optional): mappings merge key by key, any other value replaces the base's. Files whose
name starts with "_" are bases only, not rows. In `row`, `description` and a scale's `reason`,
`{model.name}` and `{name}` stand for the merged row's values, so a family's base can say what
differs. Unknown keys are errors that name the key and the allowed ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.config import (
    ConfigError,
    TaskConfig,
    apply_overrides,
    from_dict,
    load_yaml,
)


@dataclass
class ExperimentConfig(TaskConfig):
    """One results-table row. `paper` is the seed id (S0..S4, or "ours"), `row` its label there.

    scales: named variants, {name: {"reason": why these settings, "set": [KEY=VALUE overrides]}};
    `scale` is the variant applied ("full", the paper's settings, needs none).
    """

    name: str = ""
    paper: str = ""
    row: str = ""
    description: str = ""
    pipeline: str | None = None  # a registered composed pipeline (`experiments.pipelines`), if any
    pipeline_options: dict[str, Any] = field(default_factory=dict)
    scales: dict[str, Any] = field(default_factory=dict)
    scale: str = "full"



def merged(base: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    """`row` over `base`: mappings merge key by key, any other value (lists too) replaces the base's."""
    out = dict(base)
    for key, value in row.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def read_row(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A row file's mapping with its `base:` chain merged in (a cycle is a ConfigError)."""
    values = load_yaml(path)
    base = values.pop("base", None)
    if base is None:
        return values
    base_path = path.with_name(base if str(base).endswith((".yaml", ".yml")) else f"{base}.yaml")
    if not base_path.is_file():
        raise ConfigError(f"{path}: base {base!r}: no such file {base_path}")
    if base_path.resolve() in seen:
        raise ConfigError(f"{path}: base {base!r} inherits from itself")
    return merged(read_row(base_path, (*seen, path.resolve())), values)


def _filled(values: dict[str, Any]) -> dict[str, Any]:
    """Substitutes `{name}` and `{model.name}` in `row`, `description` and every scale's `reason`."""
    names = {"name": values.get("name", ""), "model.name": (values.get("model") or {}).get("name", "")}

    def fill(text: Any) -> Any:
        if not isinstance(text, str):
            return text
        for key, value in names.items():
            text = text.replace("{" + key + "}", str(value))
        return text

    for key in ("row", "description"):
        if key in values:
            values[key] = fill(values[key])
    for variant in (values.get("scales") or {}).values():
        if isinstance(variant, dict) and "reason" in variant:
            variant["reason"] = fill(variant["reason"])
    return values


def apply_scale(values: dict[str, Any], scale: str, where: str) -> dict[str, Any]:
    """Applies the overrides of the named scale variant of a config mapping (none for "full")."""
    values["scale"] = scale
    if scale == "full":
        return values
    variants = values.get("scales") or {}
    if scale not in variants:
        known = ", ".join(["full", *variants])
        raise ConfigError(f"{where}: no scale {scale!r}; this row has: {known}")
    variant = variants[scale]
    if not isinstance(variant, dict) or not isinstance(variant.get("set"), list) or not variant.get("reason"):
        raise ConfigError(f"{where}: scales.{scale} needs `reason` (text) and `set` (a list of KEY=VALUE)")
    return apply_overrides(values, [str(item) for item in variant["set"]])


def load_config(path: str | Path, overrides: list[str] = (), scale: str = "full") -> ExperimentConfig:
    """Reads one YAML config, applies its `scale` variant, then the overrides, and validates it
    against the dataclasses."""
    path = Path(path)
    values = read_row(path)
    values.setdefault("name", path.stem)
    _filled(values)
    apply_scale(values, scale, str(path))
    apply_overrides(values, list(overrides))
    from experiments.config_checks import check_config  # it imports this module

    try:
        return check_config(from_dict(ExperimentConfig, values))
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from error
