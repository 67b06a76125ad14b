"""Command line: `python -m classification train|evaluate|predict|uncertainty ...`.

    python -m classification train --config CFG.yaml --run-dir RUN_DIR [--set training.epochs=3 ...]
    python -m classification evaluate --run RUN_DIR [--model M.keras] [--out DIR]
    python -m classification predict MODEL INPUT OUT.csv [--preprocess SPEC]
    python -m classification uncertainty --run RUN_DIR --method ensemble --models A.keras B.keras
    python -m classification uncertainty --run RUN_DIR --method mc_dropout --samples 20

Bad input (a DataError, a bad config or option) prints one line `error: ...` and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.cli import add_subcommand, run_command

if TYPE_CHECKING:
    from classification.data import ClassificationInputs


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m classification",
        description="Train, evaluate and apply COVID-19 CT / X-ray classifiers.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    train = add_subcommand(
        commands, "train", _train, help="train (or resume) a classifier, then evaluate it on test"
    )
    train.add_argument("--config", required=True, help="YAML config tree (see classification.train)")
    train.add_argument("--run-dir", required=True, help="run folder (resumed when it exists)")
    train.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. training.epochs=3"
    )
    train.add_argument("--no-evaluate", action="store_true", help="skip the test evaluation")

    evaluate = add_subcommand(
        commands, "evaluate", _evaluate, help="threshold on validation, metrics with CIs on test"
    )
    evaluate.add_argument("--run", required=True, help="run folder (with config.yaml)")
    evaluate.add_argument("--model", help="model file (default RUN/best.keras)")
    evaluate.add_argument("--out", help="output folder (default RUN/eval)")
    evaluate.add_argument("--criterion", default=None, help="youden | f1 | accuracy (default: the config's)")
    evaluate.add_argument("--n-resamples", type=int, default=None, help="bootstrap resamples")
    for command in (train, evaluate):
        command.add_argument(
            "--no-verify",
            action="store_true",
            help="skip checking the shards against their manifest SHA-256s",
        )

    predict = add_subcommand(
        commands, "predict", _predict, help="classify a folder of images or a NIfTI volume"
    )
    predict.add_argument(
        "model", help=".keras model (in a run folder: its preprocessing and threshold are used)"
    )
    predict.add_argument("input", help="folder of images, or a .nii / .nii.gz volume")
    predict.add_argument("out_csv", help="output CSV")
    predict.add_argument("--preprocess", default=None, metavar="SPEC", help='e.g. "window=lung,clahe"')
    predict.add_argument(
        "--modality", default="ct", choices=("ct", "xray"), help="modality of image-folder input"
    )

    uncertainty = add_subcommand(
        commands, "uncertainty", _uncertainty, help="ensemble or MC-dropout entropy and coverage-accuracy"
    )
    uncertainty.add_argument("--run", required=True, help="run folder whose data config is used")
    uncertainty.add_argument("--method", choices=("ensemble", "mc_dropout"), default="mc_dropout")
    uncertainty.add_argument("--models", nargs="+", help="ensemble members (default RUN/best.keras)")
    uncertainty.add_argument("--samples", type=int, default=20, help="MC-dropout passes")
    uncertainty.add_argument("--out", help="output folder (default RUN/uncertainty_<method>)")
    uncertainty.add_argument("--n-resamples", type=int, default=None, help="bootstrap resamples")
    return parser


def _train(args: argparse.Namespace) -> None:
    from classification.task import task_of
    from classification.train import train_classifier
    from common.config import load_task_config
    from common.shard_checks import verify_shards

    config = load_task_config(args.config, args.set)
    if not args.no_verify:
        print(verify_shards(task_of(config).inputs(config).manifests))
    result = train_classifier(config, args.run_dir, evaluate=not args.no_evaluate)
    _print_headline(result["metrics"])


def _predict(args: argparse.Namespace) -> None:
    from classification.predict import predict

    frame = predict(args.model, args.input, args.out_csv, args.preprocess, args.modality)
    print(f"wrote {args.out_csv}: {len(frame)} predictions")


def _evaluate(args: argparse.Namespace) -> None:
    from classification.evaluate import evaluate_model
    from common.model_files import load_model_file, require_output_rank
    from common.shard_checks import verify_shards

    run, inputs, options = _run_options(args)
    if not args.no_verify:
        print(verify_shards(inputs.manifests))
    model = load_model_file(args.model or run / "best.keras")
    require_output_rank(model, 2, args.model or run / "best.keras")
    _print_headline(evaluate_model(model, inputs, args.out or run / "eval", **options))


def _uncertainty(args: argparse.Namespace) -> None:
    from classification.uncertainty import evaluate_uncertainty
    from common.model_files import load_model_file

    run, inputs, options = _run_options(args)
    models = [load_model_file(path) for path in (args.models or [run / "best.keras"])]
    out = args.out or run / f"uncertainty_{args.method}"
    _print_headline(evaluate_uncertainty(models, inputs, out, args.method, args.samples, **options))


def _run_options(args: argparse.Namespace) -> tuple[Path, ClassificationInputs, dict[str, Any]]:
    """(run folder, its inputs, the evaluation options from its config tree and the flags)."""
    from classification.task import task_of
    from common.config import load_task_config
    from common.task import CONFIG_FILE

    run = Path(args.run)
    config = load_task_config(run / CONFIG_FILE)
    options = {
        "n_resamples": args.n_resamples or config.evaluation.bootstrap_resamples,
        "seed": config.runtime.seed,
        "criterion": getattr(args, "criterion", None) or config.evaluation.criterion,
        "run_dir": run,
    }
    return run, task_of(config).inputs(config), options


def _print_headline(report: dict[str, Any]) -> None:
    """Prints a short summary of a report's overall metrics."""
    overall = report["overall"]
    if "macro" in overall:
        overall = {f"macro_{k}": {"value": v} for k, v in overall["macro"].items()}
    shown = {k: v["value"] for k, v in overall.items() if isinstance(v, dict) and "value" in v}
    print(json.dumps({"split": report["split"], "n": report["n"], **shown}, indent=1))


def main(argv: list[str] | None = None) -> int:
    return run_command(_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
