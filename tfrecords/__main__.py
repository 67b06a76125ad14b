"""Command line: `python -m tfrecords write DATASET RAW_DIR OUT_DIR [options]`
(`--preprocess SPEC --split CSV --shards N --image-size N --encoding auto|png|raw --compression none|zlib|gzip`).

Bad input prints one line `error: <path>: <problem>` and exits with status 2; nothing is left behind.
"""

from __future__ import annotations

import argparse
import sys

from common.cli import add_subcommand, call_with_flags, run_command
from data_prep.adapters import dataset_names
from tfrecords.schema import ENCODINGS
from tfrecords.spec import __doc__ as SPEC_HELP
from tfrecords.writer import DEFAULT_SHARDS, write_dataset


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tfrecords", description="Sharded TFRecords with a manifest."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    write = add_subcommand(
        commands,
        "write",
        _write,
        help="preprocess a dataset once and write it as sharded TFRecords",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=SPEC_HELP,
    )
    write.add_argument("dataset", help=f"adapter name: {', '.join(dataset_names())}")
    write.add_argument("raw_dir", help="the dataset's root folder, as its publishers distribute it")
    write.add_argument("out_dir", help="output folder (replaced atomically if it holds an earlier output)")
    write.add_argument("--preprocess", default="", metavar="SPEC", help='e.g. "window=lung,clahe,resize=256"')
    write.add_argument("--split", dest="split_file", metavar="CSV", help="split table from data_prep.splits")
    write.add_argument("--shards", type=int, default=DEFAULT_SHARDS, help="shards per split (default 8)")
    write.add_argument("--image-size", type=int, metavar="N", help="resize to N x N (same as resize=N)")
    write.add_argument(
        "--encoding",
        choices=("auto", *ENCODINGS),
        default="auto",
        help="pixels as PNG or raw arrays (default auto: raw when every image is resized to one size)",
    )
    write.add_argument(
        "--compression", choices=("none", "zlib", "gzip"), default="none", help="shard file compression"
    )
    write.add_argument("--seed", type=int, default=0, help="seed of the patient-wise split when one is made")
    return parser


def _write(args: argparse.Namespace) -> None:
    manifest = call_with_flags(write_dataset, args)
    counts = ", ".join(f"{name} {info.count}" for name, info in manifest.splits.items())
    print(f"wrote {args.out_dir}: {counts} records ({manifest.split_source} split)")


def main(argv: list[str] | None = None) -> int:
    return run_command(_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
