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

from common.atomic import staged_folder
from common.cli import add_subcommand, call_with_flags, run_command
from common.shard_checks import verify_shards
from common.startup import lean_imports

TRAIN_FLAGS = {  # flag -> (config tree key, type, help)
    "--data": ("data.tfrecords", str, "TFRecord directory (python -m tfrecords write)"),
    "--decoder": ("model.name", str, "unet, fpn, linknet, pspnet, deeplabv3plus"),
    "--encoder": ("model.encoder", str, "plain, resnet34, mobilenetv2, ..."),
    "--image-size": ("data.image_size", int, "model input size in pixels"),
    "--batch-size": ("data.batch_size", int, "batch size"),
    "--loss": ("model.loss", str, "bce, dice, bce_dice, focal, tversky, jaccard, cce, cce_dice, focal_dice"),
    "--epochs": ("training.epochs", int, "epochs"),
    "--learning-rate": ("training.learning_rate", float, "learning rate"),
    "--mixed-precision": ("runtime.precision", str, "auto (default: by the hardware), mixed_bfloat16, float32"),
    "--seed": ("runtime.seed", int, "random seed"),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m segmentation", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    train = add_subcommand(commands, "train", _train, help="train a model on a TFRecord directory")
    train.add_argument("--config", help="YAML config tree (common.config.TaskConfig: data, model, training, ...)")
    train.add_argument("--run-dir", required=True, help="run folder (resumed when it exists)")
    for flag, (key, kind, text) in TRAIN_FLAGS.items():
        train.add_argument(flag, dest=key, type=kind, help=f"{text} ({key})", metavar=flag[2:].upper())
    train.add_argument("--mask", action="append", dest="mask_names", help="mask to predict (repeatable)")
    train.add_argument(
        "--multiclass", action="store_true", default=None, help="softmax over background + masks"
    )

    evaluate = add_subcommand(
        commands, "evaluate", _evaluate, help="metrics.json, CSVs and overlays on one split"
    )
    evaluate.add_argument("model", help="a .keras model (its bundle.json beside it is read)")
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

    predict = add_subcommand(commands, "predict", _predict, help="segment PNG/JPEG images or NIfTI volumes")
    predict.add_argument("model", help="a .keras model (its bundle.json beside it is read)")
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

    volumes = add_subcommand(
        commands,
        "evaluate-volumes",
        _evaluate_volumes,
        help="3-D Dice, NSD, HD95, volumes on a folder of NIfTI volumes with masks",
    )
    volumes.add_argument("model", help="a .keras model (its bundle.json beside it is read)")
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
        command.add_argument(
            "--tta", dest="tta_flips", nargs="*", default=[], choices=["lr", "ud"], help="flip averaging"
        )
    for command in (train, evaluate):
        command.add_argument(
            "--no-verify",
            action="store_true",
            help="skip checking the shards against their manifest SHA-256s",
        )
    return parser


def _train(args: argparse.Namespace) -> None:
    from common.config import TaskConfig, from_dict, load_task_config, replaced
    from segmentation.train import train_segmenter

    config = load_task_config(args.config) if args.config else from_dict(TaskConfig, {})
    changes: dict[str, Any] = {"model.task": "segmentation"}
    changes |= {key: getattr(args, key) for key, _, _ in TRAIN_FLAGS.values() if getattr(args, key) is not None}
    if "data.tfrecords" in changes:
        changes["data.tfrecords"] = [changes["data.tfrecords"]]
    if args.mask_names:
        changes["data.mask_names"] = list(args.mask_names)
    if args.multiclass is not None:
        changes["model.multiclass"] = args.multiclass
    config = replaced(config, **changes)
    if not args.no_verify:
        print(verify_shards(config.data.tfrecords))
    best = train_segmenter(config, args.run_dir)
    print(f"best model: {best}")


def _evaluate(args: argparse.Namespace) -> None:
    from segmentation.evaluate import evaluate_segmenter
    from segmentation.predict import load_segmenter

    segmenter = load_segmenter(args.model, args.threshold)
    if not args.no_verify:
        print(verify_shards([args.data], [args.split, args.val_split]))
    spacing = tuple(args.pixel_spacing_mm) if args.pixel_spacing_mm else None
    report = call_with_flags(evaluate_segmenter, args, segmenter, pixel_spacing_mm=spacing)
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
    with lean_imports():  # TensorFlow and the model: most of a short run's time (common.startup)
        from segmentation.predict import load_segmenter, predict_path

        segmenter = load_segmenter(args.model, args.threshold, args.preprocess)
    with staged_folder(args.out_dir) as staging:  # a bad input anywhere in a folder: nothing written
        written = predict_path(
            segmenter, args.input, staging, args.batch_size, args.tta_flips, args.orientation
        )
    print(f"wrote {len(written)} file(s) to {args.out_dir}")


def _evaluate_volumes(args: argparse.Namespace) -> None:
    from segmentation.volume_eval import evaluate_volume_folder, parse_label_values

    label_values = parse_label_values(args.label_values)
    leading = (args.model, args.images, args.labels, args.out)
    summary = call_with_flags(evaluate_volume_folder, args, *leading, label_values=label_values)
    dice, nsd = summary["metrics"]["dice"], summary["metrics"]["nsd"]
    print(
        f"{summary['channel']}: 3-D Dice {dice['value']:.4f} (median {dice['median']:.4f}), "
        f"NSD@{summary['tolerance_mm']:g}mm {nsd['value']:.4f} over {summary['n_cases']} cases; wrote {args.out}"
    )


def main(argv: list[str] | None = None) -> int:
    return run_command(_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
