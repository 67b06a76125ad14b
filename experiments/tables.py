"""Results tables: our numbers from run folders beside the published ones.

A run folder (written by `experiments.runner`) holds `run.json` (config name, paper, data scale,
split type, hardware, the published keys it is compared with) and `summary.json`
({metric: {"value", "low", "high"}}, 95% bootstrap CI where available).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

PUBLISHED_PATH = Path(__file__).with_name("published.yaml")
# summary.json keys shown as a run's headline (also as `<part>_<metric>`), in this order
HEADLINES = ("accuracy", "roc_auc", "dice_per_image", "dice_infnet_mean", "miou", "compute_saving")
COLUMNS = [
    "paper",
    "row",
    "metric",
    "ours",
    "ci_low",
    "ci_high",
    "published",
    "difference",
    "published_split",
    "our_split",
    "data_scale",
    "hardware",
    "run",
]


@dataclass(frozen=True)
class PublishedNumber:
    key: str
    paper: str
    metric: str
    value: float
    dataset: str
    split: str
    definition: str
    source: str


def initialisation(config: Mapping[str, Any]) -> str:
    """How a row's model starts, from its resolved config mapping (experiment.yaml): "random", "nodule"
    (S0's nodule pretraining, `pipeline_options.init`), "imagenet" or the weights file named."""
    if config.get("pipeline") == "nodule_transfer":
        init = (config.get("pipeline_options") or {}).get("init", "nodule")
        return "random" if init == "scratch" else str(init)
    weights = (config.get("model") or {}).get("weights")
    return "random" if weights is None or str(weights).lower() == "none" else str(weights)


def load_published(path: Path = PUBLISHED_PATH) -> dict[str, PublishedNumber]:
    """All published numbers by key."""
    numbers = {}
    for paper, section in yaml.safe_load(path.read_text()).items():
        for entry in section["entries"]:
            entry = {"source": section["source"], **entry}
            numbers[entry["key"]] = PublishedNumber(paper=paper, **entry)
    return numbers


def find_runs(runs_dir: Path) -> list[Path]:
    """The newest complete run folder of each config under `runs_dir` (folders with summary.json)."""
    newest: dict[str, tuple[str, Path]] = {}
    for summary in sorted(runs_dir.glob("**/summary.json")):
        folder = summary.parent
        if folder.is_symlink() or not (folder / "run.json").is_file():
            continue
        run = json.loads((folder / "run.json").read_text())
        stamp = run.get("started", folder.name)
        if run["name"] not in newest or stamp > newest[run["name"]][0]:
            newest[run["name"]] = (stamp, folder)
    return [folder for _, folder in sorted(newest.values(), key=lambda item: str(item[1]))]


def build_table(runs_dir: Path, published: dict[str, PublishedNumber] | None = None) -> pd.DataFrame:
    """One row per (run, compared metric): ours with CI, published, difference, scale and split."""
    published = published if published is not None else load_published()
    rows = []
    for folder in find_runs(runs_dir):
        run = json.loads((folder / "run.json").read_text())
        summary = json.loads((folder / "summary.json").read_text())
        for key in run.get("published", []):
            number = published[key]
            ours = summary.get(number.metric, {})
            value = ours.get("value")
            rows.append(
                {
                    "paper": number.paper if run["paper"] == "ours" else run["paper"],
                    "row": run["name"],
                    "metric": f"{number.metric} vs {key}",
                    "ours": value,
                    "ci_low": ours.get("low"),
                    "ci_high": ours.get("high"),
                    "published": number.value,
                    "difference": None if value is None else value - number.value,
                    "published_split": number.split,
                    "our_split": run.get("split_type", ""),
                    "data_scale": run.get("data_scale", ""),
                    "hardware": run.get("hardware", {}).get("summary", ""),
                    "run": str(folder),
                }
            )
    return pd.DataFrame(rows, columns=COLUMNS)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or pd.isna(value) else f"{value:.3f}"


def _markdown(frame: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def _latex(frame: pd.DataFrame) -> str:
    def escape(cell: object) -> str:
        return str(cell).replace("_", r"\_").replace("%", r"\%").replace("&", r"\&")

    lines = [
        r"\begin{tabular}{" + "l" * len(frame.columns) + "}",
        r"\hline",
        " & ".join(escape(c) for c in frame.columns) + r" \\",
        r"\hline",
    ]
    lines += [" & ".join(escape(cell) for cell in row) + r" \\" for row in frame.itertuples(index=False)]
    return "\n".join([*lines, r"\hline", r"\end{tabular}"])


def format_table(table: pd.DataFrame, fmt: str = "md") -> str:
    """One table per paper, in Markdown, CSV or LaTeX."""
    if fmt == "csv":
        return table.to_csv(index=False)
    shown = pd.DataFrame(
        {
            "row": table["row"],
            "metric": table["metric"],
            "ours (95% CI)": [
                f"{_fmt(v)} ({_fmt(lo)}-{_fmt(hi)})" if lo is not None and not pd.isna(lo) else _fmt(v)
                for v, lo, hi in zip(table["ours"], table["ci_low"], table["ci_high"], strict=True)
            ],
            "published": [_fmt(v) for v in table["published"]],
            "difference": [_fmt(v) for v in table["difference"]],
            "split (ours / published)": [
                f"{a} / {b}" for a, b in zip(table["our_split"], table["published_split"], strict=True)
            ],
            "data": table["data_scale"],
            "hardware": table["hardware"],
        }
    )
    parts = []
    for paper in sorted(table["paper"].unique()):
        section = shown[table["paper"] == paper]
        if fmt == "latex":
            parts.append(f"% {paper}\n" + _latex(section))
        else:
            parts.append(f"### {paper}\n\n" + _markdown(section))
    return "\n\n".join(parts) + "\n"


def plot_table(table: pd.DataFrame, path: Path) -> None:
    """Bar chart of ours (with CI) against published, one bar pair per compared metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [
        f"{row}\n{metric.split(' vs ')[0]}" for row, metric in zip(table["row"], table["metric"], strict=True)
    ]
    positions = range(len(table))
    ours = table["ours"].fillna(0.0).to_numpy(float)
    errors = [
        ours - table["ci_low"].fillna(table["ours"]).fillna(0.0).to_numpy(float),
        table["ci_high"].fillna(table["ours"]).fillna(0.0).to_numpy(float) - ours,
    ]
    figure, axis = plt.subplots(figsize=(max(6, 0.9 * len(table)), 4))
    axis.bar([p - 0.2 for p in positions], ours, width=0.4, yerr=errors, label="ours (95% CI)")
    axis.bar([p + 0.2 for p in positions], table["published"], width=0.4, label="published")
    axis.set_xticks(list(positions), labels, rotation=60, ha="right", fontsize=7)
    axis.set_ylim(0, 1.05)
    axis.legend()
    figure.tight_layout()
    handle, temporary = tempfile.mkstemp(suffix=".png", dir=path.parent)
    os.close(handle)
    figure.savefig(temporary, dpi=120)
    plt.close(figure)
    os.replace(temporary, path)
