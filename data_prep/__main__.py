"""Command line of `data_prep`:

    python -m data_prep list
    python -m data_prep inspect DATASET PATH [--split S]
    python -m data_prep split DATASET PATH OUT.csv [--val 0.15 --test 0.15 | --folds K] [--seed 0]
    python -m data_prep phantom OUT_DIR [--seed 0] [--cases 2] [--size N] [--slices 32] [--kinds ...] [--force]

Bad input (a `DataError`, including `LeakageError`) prints one line `error: <path>: <problem>` on stderr
and exits with status 2; outputs are written atomically, so nothing is left half-written.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from tqdm import tqdm

from common.cli import add_subcommand, call_with_flags, run_command
from data_prep import phantoms, splits
from data_prep.adapters import dataset_names, open_dataset
from data_prep.adapters.base import DatasetAdapter
from data_prep.inspect import format_summary, inspect_dataset


def _open(name: str, path: str) -> DatasetAdapter:
    if name not in dataset_names():
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(dataset_names())}")
    return open_dataset(name, path)


def _list(args: argparse.Namespace) -> None:
    for name in dataset_names():
        print(name)


def _inspect(args: argparse.Namespace) -> None:
    print(format_summary(inspect_dataset(_open(args.dataset, args.path), split=args.split)))


def _split_rows(adapter: DatasetAdapter) -> list[splits.SplitRow]:
    """(key, group id, label, id kind) of every record. The group is the patient id, else the volume
    id (kind "inferred": slices of one scan stay together); multi-label records join labels with "+"."""
    patient_kind = "inferred" if adapter.patient_ids == "inferred" else "patient"
    return [
        (
            record.key,
            record.patient_id or record.volume_id,
            "+".join(record.labels) or "none",
            patient_kind if record.patient_id else "inferred",
        )
        for record in tqdm(adapter.records(), desc=f"read {adapter.name}", unit=" images")
    ]


def _split(args: argparse.Namespace) -> None:
    adapter = _open(args.dataset, args.path)
    rows = _split_rows(adapter)
    if args.folds:
        test = 0.0 if args.test is None else args.test
        table = splits.kfold_split(rows, folds=args.folds, test=test, seed=args.seed)
    else:
        test = 0.15 if args.test is None else args.test
        table = splits.patient_split(rows, val=args.val, test=test, seed=args.seed)
    splits.save_split(table, args.out)
    by = ["split", "fold"] if "fold" in table.columns else ["split"]
    counts = table.groupby([*by, "label"]).size().unstack(fill_value=0)
    kinds = table["group_kind"].value_counts().to_dict()
    print(f"wrote {len(table)} rows to {args.out} (rows by group kind: {kinds})")
    print(counts.to_string())


def _phantom(args: argparse.Namespace) -> None:
    roots = call_with_flags(phantoms.generate, args, progress=True)
    for kind, root in roots.items():
        print(f"SYNTHETIC PHANTOM {kind}: {root}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m data_prep", description="Dataset tools.")
    commands = parser.add_subparsers(dest="command", required=True)

    add_subcommand(commands, "list", _list, help="the dataset names adapters exist for")

    inspect = add_subcommand(
        commands, "inspect", _inspect, help="summarise a dataset: counts, masks, intensities, ids"
    )
    inspect.add_argument("dataset", help="dataset name (see `list`)")
    inspect.add_argument("path", help="the dataset's root folder")
    inspect.add_argument("--split", default=None, help="one publisher split (default: all)")

    split = add_subcommand(
        commands, "split", _split, help="patient-wise stratified train/val/test or k-fold split CSV"
    )
    split.add_argument("dataset", help="dataset name (see `list`)")
    split.add_argument("path", help="the dataset's root folder")
    split.add_argument("out", help="output CSV (key, patient_id, label, group_kind, split[, fold])")
    split.add_argument("--val", type=float, default=0.15, help="validation fraction of patients")
    split.add_argument(
        "--test",
        type=float,
        default=None,
        help="held-out test fraction of patients (default 0.15; 0 with --folds)",
    )
    split.add_argument("--folds", type=int, default=0, help="k-fold assignment instead of a val split")
    split.add_argument("--seed", type=int, default=0)

    phantom = add_subcommand(
        commands, "phantom", _phantom, help="write SYNTHETIC phantom datasets in the published layouts"
    )
    phantom.add_argument("out_dir", help="folder that receives one dataset root per kind")
    phantom.add_argument("--seed", type=int, default=0)
    phantom.add_argument(
        "--cases",
        dest="n_cases",
        metavar="CASES",
        type=int,
        default=2,
        help="CT volumes / LIDC patients / X-rays per class",
    )
    phantom.add_argument("--size", type=int, default=None, help="in-plane pixels (default 128 CT, 256 X-ray)")
    phantom.add_argument("--slices", type=int, default=32, help="axial slices per CT volume")
    phantom.add_argument("--kinds", nargs="+", default=list(phantoms.KINDS), choices=phantoms.KINDS)
    phantom.add_argument(
        "--force", dest="overwrite", action="store_true", help="replace existing phantom roots"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
