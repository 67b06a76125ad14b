"""Command line: `python -m segmentation train|evaluate|predict ...`.

    python -m segmentation train --config run.yaml [--data DIR] [--run-dir DIR] [--epochs N] ...
    python -m segmentation evaluate RUN/best.keras DATA_DIR OUT_DIR [--split test] [--val-split val]
    python -m segmentation predict RUN/best.keras INPUT OUT_DIR [--tta lr]
    python -m segmentation evaluate-volumes RUN/best.keras --images DIR --labels DIR --out OUT [--channel lung]

Bad input (a DataError, an invalid option or config) prints one line `error: ...` and exits with status 2
(`common.cli`). `predict` on a folder writes every output into a staging folder and moves them into
OUT_DIR only when every input succeeded, so a bad input leaves OUT_DIR as it was. `train` and
`evaluate` check the shards against their manifest SHA-256s first (`--no-verify` skips it).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from common.cli import run_command
from common.shard_checks import verify_shards
from common.atomic import staged_folder

TRAIN_FLAGS = {  # flag -> (config key, type, help)
    "--data": ("data", str, "TFRecord directory (python -m tfrecords write)"),
    "--run-dir": ("run_dir", str, "run folder (resumed when it exists)"),
    "--decoder": ("decoder", str, "unet, fpn, linknet, pspnet, deeplabv3plus"),
    "--encoder": ("encoder", str, "plain, resnet34, mobilenetv2, ..."),
    "--image-size": ("image_size", int, "model input size in pixels"),
    "--batch-size": ("batch_size", int, "batch size"),
    "--loss": ("loss", str, "bce, dice, bce_dice, focal, tversky, jaccard, cce, cce_dice, focal_dice"),
}
TRAINING_FLAGS = {
    "--epochs": ("epochs", int, "epochs"),
    "--learning-rate": ("learning_rate", float, "learning rate"),
    "--mixed-precision": ("mixed_precision", str, "mixed_bfloat16 (fast on recent CPUs), mixed_float16"),
    "--seed": ("seed", int, "random seed"),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m segmentation", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a model on a TFRecord directory")
    train.add_argument("--config", help="YAML or JSON config (segmentation.train.SegmentationConfig)")
    for flag, (key, kind, text) in {**TRAIN_FLAGS, **TRAINING_FLAGS}.items():
        train.add_argument(flag, dest=key, type=kind, help=text)
    train.add_argument("--mask", action="append", dest="mask_names", help="mask to predict (repeatable)")
    train.add_argument(
        "--multiclass", action="store_true", default=None, help="softmax over background + masks"
    )

    evaluate = commands.add_parser("evaluate", help="metrics.json, CSVs and overlays on one split")
    evaluate.add_argument("model", help="a .keras model (its run folder's config.json is read)")
    evaluate.add_argument("data", help="TFRecord directory")
    evaluate.add_argument("out_dir", help="output folder")
    evaluate.add_argument("--split", default="test", help="split to evaluate (default test)")
    evaluate.add_argument(
        "--val-split", default="val", help="validation split for the threshold (default val)"
    )
    evaluate.add_argument("--threshold", help="threshold.json chosen on validation (default: the run's)")
    evaluate.add_argument(
        "--nsd-tolerance", type=float, default=2.0, help="surface Dice tolerance (pixels, or mm)"
    )
    evaluate.add_argument(
        "--pixel-spacing-mm",
        type=float,
        nargs=2,
        metavar=("ROW", "COLUMN"),
        help="pixel size in mm at the model input size; HD95 and NSD are then in mm",
    )

    predict = commands.add_parser("predict", help="segment PNG/JPEG images or NIfTI volumes")
    predict.add_argument("model", help="a .keras model (its run folder's config.json is read)")
    predict.add_argument("input", help="an image, a NIfTI file, or a folder of them")
    predict.add_argument("out_dir", help="output folder")
    predict.add_argument("--threshold", help="threshold.json (default: the run's, else 0.5)")
    predict.add_argument("--preprocess", help="preprocessing spec (default: the training data's)")
    predict.add_argument(
        "--orientation",
        default="display",
        choices=["display", "stored"],
        help="NIfTI slices: display orientation of the RAS+ volume (default) or the file's array[:, :, k]",
    )

    volumes = commands.add_parser(
        "evaluate-volumes", help="3-D Dice, NSD, HD95, volumes on a folder of NIfTI volumes with masks"
    )
    volumes.add_argument("model", help="a .keras model (its run folder's config.json is read)")
    volumes.add_argument("--images", required=True, help="folder of NIfTI images")
    volumes.add_argument("--labels", required=True, help="folder of NIfTI masks (paired by stem or case id)")
    volumes.add_argument("--out", required=True, help="output folder")
    volumes.add_argument("--channel", help="model output to score (default: its only one)")
    volumes.add_argument("--label-values", help="label values counted as truth, e.g. 1,2 (default: > 0)")
    volumes.add_argument("--tolerance-mm", type=float, help="NSD tolerance (default: lung 1, else 3)")
    volumes.add_argument("--orientation", default="display", choices=["display", "stored"])
    volumes.add_argument("--batch-size", type=int, default=8)
    volumes.add_argument("--worst", type=int, default=4, help="cases in worst_cases.png (default 4)")

    for command in (evaluate, predict):
        command.add_argument("--batch-size", type=int, default=8)
        command.add_argument("--tta", nargs="*", default=[], choices=["lr", "ud"], help="flip averaging")
    for command in (train, evaluate):
        command.add_argument(
            "--no-verify",
            action="store_true",
            help="skip checking the shards against their manifest SHA-256s",
        )
    return parser


def _train(args: argparse.Namespace) -> None:
    from segmentation.train import SegmentationConfig, load_config, train_segmenter

    keys = [key for key, _, _ in TRAIN_FLAGS.values()] + ["mask_names", "multiclass"]
    overrides: dict[str, Any] = {key: getattr(args, key) for key in keys if getattr(args, key) is not None}
    training = {
        key: getattr(args, key) for key, _, _ in TRAINING_FLAGS.values() if getattr(args, key) is not None
    }
    config = load_config(args.config, overrides) if args.config else SegmentationConfig.from_dict(overrides)
    for key, value in training.items():
        setattr(config.training, key, value)
    if not args.no_verify:
        print(verify_shards([config.data]))
    best = train_segmenter(config)
    print(f"best model: {best}")


def _evaluate(args: argparse.Namespace) -> None:
    from segmentation.evaluate import evaluate_segmenter
    from segmentation.predict import load_segmenter

    segmenter = load_segmenter(args.model, args.threshold)
    if not args.no_verify:
        print(verify_shards([args.data], [args.split, args.val_split]))
    report = evaluate_segmenter(
        segmenter,
        args.data,
        args.out_dir,
        split=args.split,
        val_split=args.val_split,
        batch_size=args.batch_size,
        tta_flips=args.tta,
        nsd_tolerance=args.nsd_tolerance,
        pixel_spacing_mm=tuple(args.pixel_spacing_mm) if args.pixel_spacing_mm else None,
    )
    for name, values in report["masks"].items():
        dice = values["dice"]
        print(
            f"{name}: Dice per image {dice['per_image']['value']:.4f}, pooled {dice['pooled']['value']:.4f}, "
            f"per case {dice['per_case']['value']:.4f} ({report['n_images']} images, {report['n_cases']} cases)"
        )
    multiclass = report["decision"].startswith("argmax")
    decision = "classes by argmax" if multiclass else f"threshold from {report['threshold']['split']}"
    print(f"wrote {args.out_dir}/metrics.json ({decision})")


def _predict(args: argparse.Namespace) -> None:
    from segmentation.predict import load_segmenter, predict_path

    segmenter = load_segmenter(args.model, args.threshold, args.preprocess)
    with staged_folder(args.out_dir) as staging:  # a bad input anywhere in a folder: nothing written
        written = predict_path(segmenter, args.input, staging, args.batch_size, args.tta, args.orientation)
    print(f"wrote {len(written)} file(s) to {args.out_dir}")


def _evaluate_volumes(args: argparse.Namespace) -> None:
    from segmentation.volume_eval import evaluate_volume_folder, parse_label_values

    summary = evaluate_volume_folder(
        args.model,
        args.images,
        args.labels,
        args.out,
        channel=args.channel,
        label_values=parse_label_values(args.label_values),
        tolerance_mm=args.tolerance_mm,
        orientation=args.orientation,
        batch_size=args.batch_size,
        worst=args.worst,
    )
    dice, nsd = summary["metrics"]["dice"], summary["metrics"]["nsd"]
    print(
        f"{summary['channel']}: 3-D Dice {dice['value']:.4f} (median {dice['median']:.4f}), "
        f"NSD@{summary['tolerance_mm']:g}mm {nsd['value']:.4f} over {summary['n_cases']} cases; wrote {args.out}"
    )


def main(argv: list[str] | None = None) -> int:
    commands = {
        "train": _train,
        "evaluate": _evaluate,
        "predict": _predict,
        "evaluate-volumes": _evaluate_volumes,
    }
    return run_command(_parser(), lambda args: commands[args.command](args), argv)


if __name__ == "__main__":
    sys.exit(main())
