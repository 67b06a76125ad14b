"""`python -m experiments list | run | reproduce | table | record | report | pretrain-nodule | bench`.

Bad input (a missing file, an unknown key in a config, a corrupt volume) prints one line naming the
file and the problem, and exits with status 2 (`common.cli`; `--debug` shows the traceback, `--verbose`
TensorFlow's log lines). `list`, `--help` and argument errors do not import TensorFlow.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from common.cli import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, add_subcommand, run_command
from common.config import STRATEGIES
from data_prep.errors import DataError

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m experiments", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    add_subcommand(commands, "list", _list, help="every named experiment with its paper and row")

    run = add_subcommand(commands, "run", _run, help="run one named experiment (one results-table row)")
    run.add_argument("name", help="an experiment name from `list`, or a YAML file")
    run.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help=f"root of the datasets (default: $COVID_DATA_DIR or {DEFAULT_DATA_DIR})",
    )
    run.add_argument("--out", type=Path, default=Path("runs"), help="runs folder (default: ./runs)")
    run.add_argument("--strategy", choices=STRATEGIES, default=None, help="overrides runtime.strategy")
    run.add_argument(
        "--mixed-precision",
        nargs="?",
        const="mixed_bfloat16",
        default=None,
        help="precision policy, overriding runtime.precision (default auto: by the hardware); "
        "given alone: mixed_bfloat16",
    )
    run.add_argument(
        "--resume",
        action="store_true",
        help="continue the latest run of this experiment from its own experiment.yaml "
        "(a --set then may only extend training.epochs or training.fine_tune_epochs)",
    )
    run.add_argument(
        "--no-verify",
        action="store_true",
        help="skip checking the TFRecord shards against their manifest SHA-256s",
    )
    run.add_argument(
        "--scale",
        default="full",
        help="full (the paper's settings, default) or a variant the row declares, e.g. cpu",
    )
    run.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set training.epochs=2 (repeatable)",
    )

    reproduce = add_subcommand(
        commands,
        "reproduce",
        _reproduce,
        help="run every row but the demo in sequence (skipping those with a record) into results/",
    )
    reproduce.add_argument(
        "--scale", default="full", help="full (default) or a variant the rows declare, e.g. cpu"
    )
    reproduce.add_argument("--only", default=None, metavar="PATTERN", help="only the rows matching (fnmatch)")
    reproduce.add_argument("--data-dir", type=Path, default=None, help="datasets root (as for run)")
    reproduce.add_argument("--out", type=Path, default=Path("runs"), help="runs folder (default: ./runs)")
    reproduce.add_argument(
        "--results", type=Path, default=Path("results"), help="records folder (default: ./results)"
    )

    table = add_subcommand(
        commands, "table", _table, help="results tables from run folders beside the published numbers"
    )
    table.add_argument("--runs", type=Path, default=Path("runs"))
    table.add_argument("--format", choices=("md", "csv", "latex"), default="md")
    table.add_argument("--plot", type=Path, default=None, help="also write a comparison plot (PNG)")

    record = add_subcommand(
        commands,
        "record",
        _record,
        help="copy a finished run's record (no model weights) into results/ for committing",
    )
    record.add_argument("run_dir", type=Path, help="a run folder, e.g. runs/<name>/latest")
    record.add_argument(
        "--into", type=Path, default=Path("results"), help="records folder (default: ./results)"
    )

    compare = add_subcommand(
        commands, "compare", _compare, help="paired per-image difference of two records (B - A, bootstrap CI)"
    )
    compare.add_argument("record_a", type=Path, help="a record or run folder (with eval/per_image.csv)")
    compare.add_argument("record_b", type=Path, help="the record compared with A")
    compare.add_argument(
        "--column", default=None, help="a per_image.csv column (default: its one <mask>_dice column)"
    )

    report = add_subcommand(
        commands,
        "report",
        _report,
        help="lung and infection report of CT scans (NIfTI or DICOM), one folder each + cohort.csv",
    )
    report.add_argument(
        "scans", nargs="+", help="NIfTI files, DICOM series folders, folders of them, or glob patterns"
    )
    report.add_argument("--lung-model", type=Path, required=True)
    report.add_argument("--infection-model", type=Path, default=None)
    report.add_argument(
        "--stream-model",
        action="append",
        default=[],
        metavar="NAME=MODEL.keras",
        help="per-manifestation stream model, e.g. ggo=ggo.keras (repeatable)",
    )
    report.add_argument(
        "--orientation",
        default="display",
        choices=["display", "stored"],
        help="slices from the RAS+ volume (default) or the file's array[:, :, k] taken as display images",
    )
    report.add_argument("--out", type=Path, required=True, help="cohort folder: <scan>/ and cohort.csv")

    bench = add_subcommand(
        commands, "bench", _bench, help="one performance table: input pipeline, training, predict, streams"
    )
    bench.add_argument("--quick", action="store_true", help="small inputs and models (a smoke test, < 2 min)")
    bench.add_argument("--data-dir", type=Path, default=None, help="datasets root (as for run)")
    bench.add_argument("--out", type=Path, default=None, help="also write the markdown table to this file")

    from experiments.pipelines.pretrain_args import add_pretrain_parser

    add_pretrain_parser(commands).set_defaults(handler=_pretrain)  # its parser is the pipeline's
    return parser


def _data_dir(args: argparse.Namespace) -> Path:
    """--data-dir, else $COVID_DATA_DIR, else `DEFAULT_DATA_DIR`."""
    return args.data_dir or Path(os.environ.get("COVID_DATA_DIR", DEFAULT_DATA_DIR))


def _list(args: argparse.Namespace) -> None:
    from experiments.registry import get_experiment, list_experiments

    configs = [get_experiment(name) for name in list_experiments()]
    print("\n".join(f"{config.name:40s} {config.paper:8s} {config.row}" for config in configs))


def _run(args: argparse.Namespace) -> None:
    from experiments.run_start import check_run

    data_dir = _data_dir(args)
    check_run(args.name, args.out, data_dir, args.overrides, args.scale, args.resume)  # before TensorFlow
    from experiments.runner import run_experiment

    run_dir = run_experiment(
        args.name,
        data_dir=data_dir,
        out_dir=args.out,
        overrides=args.overrides,
        strategy=args.strategy,
        mixed_precision=args.mixed_precision,
        resume=args.resume,
        verify=not args.no_verify,
        scale=args.scale,
    )
    print(f"run folder: {run_dir}")


def _reproduce(args: argparse.Namespace) -> int:
    """Exit status 0 when every selected row has a record, `EXIT_FAILED` when any failed."""
    from experiments.reproduce import reproduce

    data_dir = _data_dir(args)
    results = reproduce(args.scale, data_dir, args.out, args.results, args.only)
    failed = [result.name for result in results if result.status == "FAILED"]
    print(f"{len(results) - len(failed)} of {len(results)} row(s) have a record in {args.results}")
    return EXIT_FAILED if failed else EXIT_OK


def _table(args: argparse.Namespace) -> None:
    from experiments.tables import build_table, format_table, plot_table

    table = build_table(args.runs)
    if table.empty:
        raise DataError(args.runs, "no complete run folders (with run.json and summary.json) found")
    print(format_table(table, args.format), end="")
    if args.plot:
        plot_table(table, args.plot)


def _compare(args: argparse.Namespace) -> None:
    from experiments.compare import paired_difference

    print(paired_difference(args.record_a, args.record_b, args.column).line())


def _record(args: argparse.Namespace) -> None:
    from experiments.run_folder import export_record

    print(f"record: {export_record(args.run_dir, args.into)}")


def _report(args: argparse.Namespace) -> int:
    """Exit status 0 when every scan was reported (or already done), `EXIT_BAD_INPUT` when any failed
    (each failure printed its `error:` line)."""
    from experiments.pipelines.report import load_models
    from experiments.pipelines.report_cohort import find_scans, run_cohort

    streams = {}
    for item in args.stream_model:
        name, separator, path = item.partition("=")
        if not separator:
            raise DataError(item, "expected NAME=MODEL.keras for --stream-model")
        streams[name] = Path(path)
    models = load_models(args.lung_model, args.infection_model, streams)
    scans = find_scans(args.scans)
    result = run_cohort(scans, args.out, models, args.orientation)
    print(
        f"{len(scans)} scan(s): {len(scans) - result.failed - result.skipped} reported, "
        f"{result.skipped} already done, {result.failed} failed; {args.out / 'cohort.csv'}"
    )
    return EXIT_BAD_INPUT if result.failed else EXIT_OK


def _bench(args: argparse.Namespace) -> int:
    from experiments.bench import bench_command

    return bench_command(_data_dir(args), args.quick, args.out)


def _pretrain(args: argparse.Namespace) -> int:
    from experiments.pipelines.nodule_transfer import pretrain_command

    return pretrain_command(args)


def main(argv: list[str] | None = None) -> int:
    return run_command(_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
