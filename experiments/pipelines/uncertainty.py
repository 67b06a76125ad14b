"""S1: an ensemble's predictive entropy and MC dropout, and the accuracy left after rejecting the most
uncertain cases (`pipeline: uncertainty`).

`pipeline_options`: `members` (classifier registry names), `seeds` (every member is trained once per
seed) and `mc_dropout_samples` (forward passes with dropout on, default 20).

Steps (nothing is cached: the members are the experiment):
1. each member x seed is trained and evaluated alone with `train_classifier` in
   `run_dir/members/<name>-seed<seed>`;
2. the ensemble of all of them is evaluated with `classification.uncertainty.evaluate_uncertainty`
   (mean probability; uncertainty = predictive entropy of the mean, in nats) in `run_dir/ensemble`;
3. MC dropout on the first member of the first seed, the same way, in `run_dir/mc_dropout`.
The decision threshold is chosen on validation (`evaluate_model`'s criterion) and applied to test.

Summary: the ensemble's classification metrics (accuracy, roc_auc, ...) with CIs;
`accuracy_at_coverage_<P>` for P = 100, 90, ..., 50: test accuracy on the cases kept after rejecting
the round((100 - P) % x N) most uncertain (by entropy), with a 95% bootstrap CI (cases, or patients
where ids exist, resampled; the ranking is kept per resample); the same for MC dropout prefixed
`mc_dropout_`; `mean_entropy` / `mc_dropout_mean_entropy`; and `member_<name>_seed<seed>_accuracy`
/ `_roc_auc` per member (a single model against the ensemble). `coverage_accuracy.png` in `run_dir`
draws both curves.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import keras
import numpy as np
import pandas as pd

from classification.task import task_of
from classification.train import train_classifier
from classification.uncertainty import coverage_accuracy, evaluate_uncertainty
from common import plots
from common.bootstrap import bootstrap_cis, ci_entry
from common.config import TaskConfig, replaced
from experiments.data import PreparedData
from experiments.pipelines import register_pipeline
from experiments.pipelines.options import pipeline_options
from experiments.tasks import Summary, summarize_classification, task_config

if TYPE_CHECKING:  # the runner imports the pipelines
    from experiments.runner import RunContext

SUMMARY_COVERAGES = (100, 90, 80, 70, 60, 50)  # percent of test cases kept


def member_configs(
    base: TaskConfig, members: list[str], seeds: list[int], run_dir: Path
) -> list[tuple[TaskConfig, Path]]:
    """One (config, run folder) per (member, seed), in members-major order, each in its own folder."""
    return [
        (replaced(base, **{"model.name": name, "runtime.seed": seed}), run_dir / "members" / f"{name}-seed{seed}")
        for name in members
        for seed in seeds
    ]


def coverage_metrics(correct: np.ndarray, uncertainty: np.ndarray) -> dict[str, float]:
    """`accuracy_at_coverage_<P>` for each P in SUMMARY_COVERAGES (NaN when nothing is kept)."""
    fractions = [round(1 - percent / 100, 2) for percent in SUMMARY_COVERAGES]
    rows = coverage_accuracy(correct, uncertainty, fractions)
    return {
        f"accuracy_at_coverage_{percent}": row["accuracy"]
        for percent, row in zip(SUMMARY_COVERAGES, rows, strict=True)
    }


def coverage_summary(predictions_csv: Path, n_resamples: int, seed: int, prefix: str = "") -> Summary:
    """Coverage-accuracy points with bootstrap CIs from an evaluation's predictions.csv (columns
    label, predicted, entropy, patient, key)."""
    frame = pd.read_csv(predictions_csv, keep_default_na=False)
    correct = (frame["label"].astype(str) == frame["predicted"].astype(str)).to_numpy()
    entropy = frame["entropy"].to_numpy(dtype=np.float64)
    groups = np.where(
        frame["patient"].astype(str) != "", frame["patient"].astype(str), frame["key"].astype(str)
    )
    intervals = bootstrap_cis(
        coverage_metrics, correct, entropy, n_resamples=n_resamples, seed=seed, groups=groups
    )
    return {f"{prefix}{name}": ci_entry(*values) for name, values in intervals.items()}


def plot_coverage(curves: dict[str, list[dict[str, float]]], path: Path) -> Path:
    """One coverage-accuracy curve per method (rows of `coverage_accuracy`)."""
    return plots.plot_curves(
        {
            name: ([row["coverage"] for row in rows], [row["accuracy"] for row in rows])
            for name, rows in curves.items()
        },
        path,
        xlabel="coverage (fraction of test cases kept)",
        ylabel="accuracy on kept cases",
        title="Accuracy after rejecting the most uncertain cases",
        limits=None,
    )


@register_pipeline("uncertainty")
def run(context: RunContext, prepared: PreparedData) -> Summary:
    """Trains every member, evaluates the ensemble and MC dropout; returns the summary."""
    config = context.config
    options = pipeline_options(config)
    members, seeds, samples = options.members, options.seeds, options.mc_dropout_samples
    folders = [str(manifest.directory) for manifest in prepared.manifests]
    base = task_config(config, folders, context.strategy.num_replicas_in_sync)
    summary: Summary = {}
    models = []
    for member, member_dir in member_configs(base, members, seeds, context.run_dir):
        result = train_classifier(member, member_dir, context.strategy)
        member_summary = summarize_classification(result["metrics"])
        label = member_dir.name.replace("-", "_")
        for metric in ("accuracy", "roc_auc"):
            if metric in member_summary:
                summary[f"member_{label}_{metric}"] = member_summary[metric]
        models.append(keras.models.load_model(member_dir / "best.keras"))

    evaluation = base.evaluation
    options = {
        "criterion": evaluation.criterion,
        "n_resamples": evaluation.bootstrap_resamples,
        "seed": base.runtime.seed,
    }
    curves = {}
    for method, method_models, prefix in (
        ("ensemble", models, ""),
        ("mc_dropout", models[:1], "mc_dropout_"),
    ):
        out_dir = context.run_dir / method
        report = evaluate_uncertainty(
            method_models, task_of(base).inputs(base), out_dir, method=method, samples=samples, **options
        )
        method_summary = summarize_classification(report)
        if method == "ensemble":
            summary.update(method_summary)
        else:
            summary.update(
                {
                    f"{prefix}{key}": method_summary[key]
                    for key in ("accuracy", "roc_auc")
                    if key in method_summary
                }
            )
        summary[f"{prefix}mean_entropy"] = ci_entry(report["uncertainty"]["mean_entropy"])
        summary.update(
            coverage_summary(out_dir / "predictions.csv", evaluation.bootstrap_resamples, base.runtime.seed, prefix)
        )
        curves[f"{method} ({len(method_models)} model{'s' * (len(method_models) > 1)})"] = report[
            "uncertainty"
        ]["coverage_accuracy"]
    plot_coverage(curves, context.run_dir / "coverage_accuracy.png")
    return summary
