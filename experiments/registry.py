"""Named experiments: one YAML file per results-table row under `experiments/configs/`."""

from __future__ import annotations

from pathlib import Path

from experiments.config import ExperimentConfig, load_config

CONFIG_DIR = Path(__file__).with_name("configs")


def list_experiments() -> list[str]:
    """The row names: every YAML file under configs/ but the bases ("_" names, see `experiments.config`)."""
    return sorted(path.stem for path in CONFIG_DIR.glob("*.yaml") if not path.name.startswith("_"))


def config_path(name: str) -> Path:
    """The YAML file of a named experiment; a path to a YAML file is accepted as well."""
    if name.endswith((".yaml", ".yml")) and Path(name).is_file():
        return Path(name)
    path = CONFIG_DIR / f"{name}.yaml"
    if not path.is_file():
        raise KeyError(
            f"unknown experiment {name!r}; `python -m experiments list` shows the {len(list_experiments())} known ones"
        )
    return path


def get_experiment(name: str, overrides: list[str] = (), scale: str = "full") -> ExperimentConfig:
    """The named row's config with its `scale` variant ("full": the paper's settings; "cpu": the
    CPU-scale variant its YAML declares) and then `overrides` applied."""
    return load_config(config_path(name), overrides, scale)
