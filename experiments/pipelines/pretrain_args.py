"""The `pretrain-nodule` command line's arguments (no TensorFlow import: `--help` stays fast).

The command itself is `experiments.pipelines.nodule_transfer.pretrain_command`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

# dataset -> (root, masks, write-time preprocessing: LIDC slices are pipeline-normalised floats, about
# -0.33 to 4.93; the MSD patches are floats in [0, 1]).
PRETRAIN_DATASETS = {
    "lidc": ("nodule-lidc", ["nodule"], "range=-0.5:5"),
    "msd_patches": ("tumour-msd-patches", ["tumour"], "range=0:1"),
}
DEFAULT_EXPERIMENT = "s0_deeplabv3plus_nodule_transfer_ggo"


def add_pretrain_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Adds `pretrain-nodule` to the `python -m experiments` command line."""
    parser = subparsers.add_parser(
        "pretrain-nodule", help="pretrain the S0 DeepLabv3+ on nodule (or tumour) masks; writes a .keras file"
    )
    parser.add_argument("--dataset", choices=(*PRETRAIN_DATASETS, "phantom"), default="lidc")
    parser.add_argument("--root", default=None, help="dataset folder, relative to --data-dir unless absolute")
    parser.add_argument("--out", type=Path, required=True, help="checkpoint to write (CKPT.keras)")
    parser.add_argument("--epochs", type=int, default=None, help="overrides pipeline_options.pretrain.epochs")
    parser.add_argument(
        "--config",
        default=DEFAULT_EXPERIMENT,
        help=f"experiment giving model and input (default {DEFAULT_EXPERIMENT})",
    )
    parser.add_argument("--data-dir", type=Path, default=None, help="root of the datasets ($COVID_DATA_DIR)")
    parser.add_argument(
        "--cache-dir", type=Path, default=None, help="TFRecords cache (default: beside --out)"
    )
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="config override"
    )
    return parser
