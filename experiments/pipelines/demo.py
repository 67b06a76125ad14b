"""The demo: three small rows on SYNTHETIC phantoms, trained for a few epochs each, then one table.

Parts (each a sub-run in `run_dir/<part>/`, configured by `pipeline_options.parts.<part>` overrides
of the demo config): a chest X-ray classifier (COVID vs non-COVID phantoms in the COVID-QU-Ex layout),
an infection segmenter (MedSeg-layout phantoms) and the S0 specialized streams gated by the
manifestation recogniser. Nothing is downloaded; every number is on synthetic data. The demo config
sets `runtime.deterministic`, so two runs on one machine print the same table.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from common.config import apply_overrides, from_dict, to_dict
from experiments.config import ExperimentConfig
from experiments.data import PreparedData, prepare_data
from experiments.pipelines import register_pipeline
from experiments.pipelines.options import pipeline_options
from experiments.tasks import Summary

if TYPE_CHECKING:  # the runner imports the pipelines
    from experiments.runner import RunContext

HEADLINES = (
    "accuracy",
    "roc_auc",
    "dice_per_image",
    "dice_pooled",
    "iou_per_image",
    "miou",
    "dice_gain",
    "miou_gain",
    "compute_saving",
)


def part_config(config: ExperimentConfig, part: str, overrides: list[str]) -> ExperimentConfig:
    """The demo config with one part's overrides applied (no pipeline unless the part sets one)."""
    values = apply_overrides(to_dict(config), ["pipeline=null", "pipeline_options={}", *overrides])
    values["name"] = f"{config.name}_{part}"
    return from_dict(ExperimentConfig, values)


def format_demo_table(summaries: dict[str, Summary]) -> str:
    lines = ["| part | metric | value (95% CI) |", "|---|---|---|"]
    for part, summary in summaries.items():
        for metric in HEADLINES:
            entry = summary.get(metric)
            if entry and entry["value"] is not None:
                interval = f" ({entry['low']:.3f}-{entry['high']:.3f})" if entry["low"] is not None else ""
                lines.append(f"| {part} | {metric} | {entry['value']:.3f}{interval} |")
    return "\n".join(lines)


@register_pipeline("demo")
def run(context: RunContext, prepared: PreparedData) -> Summary:
    """Runs every part (with `context.run_task`); returns their summaries merged with `<part>_`
    prefixes and prints the table."""
    summaries: dict[str, Summary] = {}
    for part, overrides in pipeline_options(context.config).parts.items():
        config = part_config(context.config, part, overrides)
        part_context = dataclasses.replace(context, config=config, run_dir=context.run_dir / part)
        part_context.run_dir.mkdir(parents=True, exist_ok=True)
        part_data = prepare_data(config.data, context.data_dir, context.cache_dir, config.runtime.seed)
        summaries[part] = context.run_task(part_context, part_data)
    print("Demo on SYNTHETIC phantoms (not patient data):\n" + format_demo_table(summaries))
    return {
        f"{part}_{metric}": entry for part, summary in summaries.items() for metric, entry in summary.items()
    }
