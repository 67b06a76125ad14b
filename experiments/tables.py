"""Results tables: our numbers from run folders beside the published ones, with the protocol differences.

A run folder (written by `experiments.runner`) holds `run.json` (config name, paper, data scale,
split type, hardware, initialisation, the published keys it is compared with), `experiment.yaml` (the
resolved config) and `summary.json` ({metric: {"value", "low", "high"}}, 95% bootstrap CI where
available: `common.bootstrap.ci_entry`, the one interval shape of every report; the table's
`ci_low` / `ci_high` columns are its low / high).

Every table line names how our run differs from the published one: split unit, data scale, image size
and initialisation (beside the row's full-scale config, the paper's settings) and the two metric
definitions; an entry whose definition is ours, not the paper's, says so and quotes the paper. A
comparison without our value says why (`why_missing`) instead of a bare n/a.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from common.atomic import atomic_path

PUBLISHED_PATH = Path(__file__).with_name("published.yaml")
# summary.json keys shown as a run's headline (also as `<part>_<metric>`), in this order
UNPUBLISHED = "the seed publishes no number for this row"
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
    "published_dataset",
    "our_image_size",
    "full_image_size",
    "our_init",
    "full_init",
    "our_model",
    "full_model",
    "our_dataset",
    "full_dataset",
    "our_definition",
    "published_definition",
    "why_missing",
    "hardware",
    "run",
]
# What our summary.json keys mean (segmentation keys first where a name means two things).
SEGMENTATION_DEFINITIONS = {
    "dice_per_image": "Dice per test slice at the validation threshold, mean (1 where both masks are empty)",
    "iou_per_image": "IoU per test slice at the validation threshold, mean (1 where both masks are empty)",
    "dice_per_case": "3-D Dice per held-out volume, mean over cases",
    "precision": "pixel precision pooled over the test slices",
    "recall": "pixel recall pooled over the test slices",
    "dice_infnet_mean": "Inf-Net's view: per-slice Dice at 256 thresholds of min-max scaled probabilities, mean",
    "dice_ggo": "GGO Dice per test slice, mean",
    "dice_consolidation": "consolidation Dice per test slice, mean",
    "dice_gain": "per-slice Dice of the gated streams minus that of one multi-class model, same test slices",
    "miou_gain": "mIoU (pooled, background excluded) of the gated streams minus that of one multi-class model",
    "compute_saving": "1 - FLOPs of the recogniser-gated streams / FLOPs of every stream on every test slice",
}
CLASSIFICATION_DEFINITIONS = {
    "accuracy": "test accuracy at the validation-chosen threshold",
    "precision": "test precision at the validation-chosen threshold",
    "recall": "test recall at the validation-chosen threshold",
    "f1": "test F1 at the validation-chosen threshold",
    "roc_auc": "test ROC-AUC",
}


@dataclass(frozen=True)
class PublishedNumber:
    key: str
    paper: str
    metric: str
    value: float | None  # None: the seed publishes no number for the row
    dataset: str
    split: str
    definition: str
    source: str
    paper_says: str = ""  # the paper's own wording where `definition` is ours, not the paper's
    why_missing: str = ""  # why no run of ours reports `metric`, where that is known


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
    """The newest complete run folder of each config under `runs_dir` (folders with summary.json).
    Folders whose name starts with "_" (e.g. `results/_float32/`, side-by-side checks of a row under
    other settings) are not table rows."""
    newest: dict[str, tuple[str, Path]] = {}
    for summary in sorted(runs_dir.glob("**/summary.json")):
        folder = summary.parent
        if any(part.startswith("_") for part in folder.relative_to(runs_dir).parts):
            continue
        if folder.is_symlink() or not (folder / "run.json").is_file():
            continue
        run = json.loads((folder / "run.json").read_text())
        stamp = run.get("started", folder.name)
        if run["name"] not in newest or stamp > newest[run["name"]][0]:
            newest[run["name"]] = (stamp, folder)
    return [folder for _, folder in sorted(newest.values(), key=lambda item: str(item[1]))]


def _full_scale_config(name: str) -> dict[str, Any] | None:
    """The row's config at full scale (the paper's settings) as a mapping; None for an unknown row."""
    from common.config import to_dict
    from experiments.registry import get_experiment

    try:
        return to_dict(get_experiment(name))
    except KeyError:
        return None


def model_name(config: Mapping[str, Any]) -> str:
    """`name` or `decoder/encoder` of a config mapping's model ('' when there is none)."""
    model = config.get("model") or {}
    return "/".join(str(part) for part in (model.get("name"), model.get("encoder")) if part)


def dataset_name(config: Mapping[str, Any]) -> str:
    """`dataset root` of a config mapping's data ('' when there is none)."""
    data = config.get("data") or {}
    return " ".join(str(part) for part in (data.get("dataset"), data.get("root")) if part)


def our_definition(metric: str, config: Mapping[str, Any]) -> str:
    """What a summary.json key means for a row of this config's task ('' when not listed)."""
    tables = (SEGMENTATION_DEFINITIONS, CLASSIFICATION_DEFINITIONS)
    if (config.get("model") or {}).get("task") != "segmentation":
        tables = tables[::-1]
    return next((table[metric] for table in tables if metric in table), "")


def why_missing(number: PublishedNumber, summary: Mapping[str, Any]) -> str:
    """Why a run has no value to compare with `number`."""
    if number.why_missing:
        return number.why_missing
    if number.metric in summary:
        return f"{number.metric} is undefined on this test split (null in summary.json)"
    return f"this run's summary.json has no {number.metric}"


def _unpublished(summary: Mapping[str, Any]) -> PublishedNumber:
    """The stand-in for a row whose seed publishes no number to compare: its first `HEADLINES` metric."""
    metric = next((name for name in HEADLINES if name in summary), next(iter(summary), "none"))
    return PublishedNumber(
        key="", paper="", metric=metric, value=None, dataset="-", split="-", definition=UNPUBLISHED, source=""
    )


def build_table(runs_dir: Path, published: dict[str, PublishedNumber] | None = None) -> pd.DataFrame:
    """One row per (run, compared metric): ours with CI, published, difference, and the protocol of
    both (split, data, image size and initialisation beside the full-scale row, metric definitions).
    A run whose row compares with no published number gets one line: its headline metric, beside
    "none published"."""
    published = published if published is not None else load_published()
    rows = []
    for folder in find_runs(runs_dir):
        run = json.loads((folder / "run.json").read_text())
        summary = json.loads((folder / "summary.json").read_text())
        config_file = folder / "experiment.yaml"
        config = yaml.safe_load(config_file.read_text()) if config_file.is_file() else {}
        full = _full_scale_config(run["name"]) or {}
        for key in run.get("published", []) or [None]:
            number = published[key] if key is not None else _unpublished(summary)
            ours = summary.get(number.metric, {})
            value = ours.get("value")
            rows.append(
                {
                    "paper": (number.paper or run["paper"]) if run["paper"] == "ours" else run["paper"],
                    "row": run["name"],
                    "metric": f"{number.metric} vs {key}" if key else number.metric,
                    "ours": value,
                    "ci_low": ours.get("low"),
                    "ci_high": ours.get("high"),
                    "published": number.value,
                    "difference": None if value is None or number.value is None else value - number.value,
                    "published_split": number.split,
                    "our_split": run.get("split_type", ""),
                    "data_scale": run.get("data_scale", ""),
                    "published_dataset": number.dataset,
                    "our_image_size": (config.get("data") or {}).get("image_size"),
                    "full_image_size": (full.get("data") or {}).get("image_size"),
                    "our_init": run.get("initialisation") or (initialisation(config) if config else ""),
                    "full_init": initialisation(full) if full else "",
                    "our_model": model_name(config),
                    "full_model": model_name(full),
                    "our_dataset": dataset_name(config),
                    "full_dataset": dataset_name(full),
                    "our_definition": our_definition(number.metric, config or full)
                    or ("see summary.json" if number.metric in summary else "none"),
                    "published_definition": number.definition
                    + (f" (the paper: {number.paper_says})" if number.paper_says else ""),
                    "why_missing": "" if value is not None else why_missing(number, summary),
                    "hardware": run.get("hardware", {}).get("summary", ""),
                    "run": str(folder),
                }
            )
    return pd.DataFrame(rows, columns=COLUMNS)


def _init_text(init: str) -> str:
    return {"": "?", "random": "not pretrained"}.get(init, f"pretrained: {init}")


def _pixels(size: float | None) -> str:
    return "?" if size is None or pd.isna(size) else f"{int(size)} px"


def protocol(line: Mapping[str, Any]) -> str:
    """One table line's protocol, ours / published: split, data (and the dataset, where it differs from
    the row's full-scale config), then image size and initialisation (and the model, where it differs)
    beside the full-scale config, and the two metric definitions."""
    model, dataset = [], ""
    if line["our_model"] and line["full_model"] and line["our_model"] != line["full_model"]:
        model = [f"model: {line['our_model']} (full-scale row {line['full_model']})"]
    if line["our_dataset"] and line["full_dataset"] and line["our_dataset"] != line["full_dataset"]:
        dataset = f" of {line['our_dataset']} (full-scale row {line['full_dataset']})"
    return "; ".join(
        [
            f"split: {line['our_split'] or '?'} / {line['published_split']}",
            f"data: {line['data_scale'] or '?'}{dataset} / {line['published_dataset']}",
            f"size: {_pixels(line['our_image_size'])} (full-scale row {_pixels(line['full_image_size'])})",
            f"init: {_init_text(line['our_init'])} (full-scale row {_init_text(line['full_init'])})",
            *model,
            f"metric: {line['our_definition']} / {line['published_definition']}",
        ]
    )


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or pd.isna(value) else f"{value:.3f}"


def _ours(value: float | None, low: float | None, high: float | None, missing: str) -> str:
    """`value (low-high)`, `value`, or `n/a: why` when there is no value."""
    if value is None or pd.isna(value):
        return f"n/a: {missing}"
    if low is None or pd.isna(low):
        return _fmt(value)
    return f"{_fmt(value)} ({_fmt(low)}-{_fmt(high)})"


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
                _ours(v, lo, hi, why)
                for v, lo, hi, why in zip(
                    table["ours"], table["ci_low"], table["ci_high"], table["why_missing"], strict=True
                )
            ],
            "published": ["none published" if pd.isna(v) else _fmt(v) for v in table["published"]],
            "difference": [
                "-" if pd.isna(number) else _fmt(value)
                for value, number in zip(table["difference"], table["published"], strict=True)
            ],
            "protocol (ours / published)": [protocol(line) for line in table.to_dict("records")],
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
    with atomic_path(path, suffix=".png") as temporary:
        figure.savefig(temporary, dpi=120)
    plt.close(figure)
