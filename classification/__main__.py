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
from typing import Any


from common.cli import run_command


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m classification",
        description="Train, evaluate and apply COVID-19 CT / X-ray classifiers.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train (or resume) a classifier, then evaluate it on test")
    train.add_argument("--config", required=True, help="YAML config tree (see classification.train)")
    train.add_argument("--run-dir", required=True, help="run folder (resumed when it exists)")
    train.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. training.epochs=3"
    )
    train.add_argument("--no-evaluate", action="store_true", help="skip the test evaluation")

    evaluate = commands.add_parser("evaluate", help="threshold on validation, metrics with CIs on test")
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

    predict = commands.add_parser("predict", help="classify a folder of images or a NIfTI volume")
    predict.add_argument(
        "model", help=".keras model (in a run folder: its preprocessing and threshold are used)"
    )
    predict.add_argument("input", help="folder of images, or a .nii / .nii.gz volume")
    predict.add_argument("out_csv", help="output CSV")
    predict.add_argument("--preprocess", default=None, metavar="SPEC", help='e.g. "window=lung,clahe"')
    predict.add_argument(
        "--modality", default="ct", choices=("ct", "xray"), help="modality of image-folder input"
    )

    uncertainty = commands.add_parser(
        "uncertainty", help="ensemble or MC-dropout entropy and coverage-accuracy"
    )
    uncertainty.add_argument("--run", required=True, help="run folder whose data config is used")
    uncertainty.add_argument("--method", choices=("ensemble", "mc_dropout"), default="mc_dropout")
    uncertainty.add_argument("--models", nargs="+", help="ensemble members (default RUN/best.keras)")
    uncertainty.add_argument("--samples", type=int, default=20, help="MC-dropout passes")
    uncertainty.add_argument("--out", help="output folder (default RUN/uncertainty_<method>)")
    uncertainty.add_argument("--n-resamples", type=int, default=None, help="bootstrap resamples")
    return parser


def _run(args: argparse.Namespace) -> dict[str, Any] | None:
    from classification.data import ClassificationInputs
    from classification.train import train_classifier
    from common.config import load_task_config
    from common.model_files import load_model_file, require_output_rank
    from common.shard_checks import verify_shards
    from common.task import CONFIG_FILE

    if args.command == "train":
        config = load_task_config(args.config, args.set)
        if not args.no_verify:
            print(verify_shards(ClassificationInputs(config).manifests))
        result = train_classifier(config, args.run_dir, evaluate=not args.no_evaluate)
        return result["metrics"]
    if args.command == "predict":
        from classification.predict import predict

        frame = predict(args.model, args.input, args.out_csv, args.preprocess, args.modality)
        print(f"wrote {args.out_csv}: {len(frame)} predictions")
        return None
    run = Path(args.run)
    config = load_task_config(run / CONFIG_FILE)
    inputs = ClassificationInputs(config)
    options = {
        "n_resamples": args.n_resamples or config.evaluation.bootstrap_resamples,
        "seed": config.runtime.seed,
        "criterion": getattr(args, "criterion", None) or config.evaluation.criterion,
        "run_dir": run,
    }
    if args.command == "evaluate":
        from classification.evaluate import evaluate_model

        if not args.no_verify:
            print(verify_shards(inputs.manifests))
        model = load_model_file(args.model or run / "best.keras")
        require_output_rank(model, 2, args.model or run / "best.keras")
        return evaluate_model(model, inputs, args.out or run / "eval", **options)
    from classification.uncertainty import evaluate_uncertainty

    models = [load_model_file(path) for path in (args.models or [run / "best.keras"])]
    out = args.out or run / f"uncertainty_{args.method}"
    return evaluate_uncertainty(models, inputs, out, args.method, args.samples, **options)


def _headline(report: dict[str, Any]) -> str:
    """A short summary of a report's overall metrics for the terminal."""
    overall = report["overall"]
    if "macro" in overall:
        overall = {f"macro_{k}": {"value": v} for k, v in overall["macro"].items()}
    shown = {k: v["value"] for k, v in overall.items() if isinstance(v, dict) and "value" in v}
    return json.dumps({"split": report["split"], "n": report["n"], **shown}, indent=1)


def _command(args: argparse.Namespace) -> None:
    report = _run(args)
    if report is not None:
        print(_headline(report))


def main(argv: list[str] | None = None) -> int:
    return run_command(_parser(), _command, argv)


if __name__ == "__main__":
    sys.exit(main())
