"""The shell every command line of the project runs in: flags, quiet logs and one error boundary.

Every shell (`python -m classification|segmentation|data_prep|tfrecords|experiments`) is one parser
whose sub-commands are added with `add_subcommand(commands, name, handler, ...)`, and one
`main(argv) = run_command(parser, argv)`. `run_command` parses the arguments, quiets TensorFlow's C++
log lines (unless `--verbose`), runs the chosen sub-command's `handler(args)` and turns the known
failure types into one line `error: <file>: <problem>` on stderr. Everything else is a bug and keeps
its traceback; `--debug` prints the traceback of a known failure too. Python warnings print as one
line `warning: <message>`.

Exit statuses: `EXIT_OK` (0); `EXIT_FAILED` (1: a command over many items, e.g. `reproduce`, where
some failed and each was reported); `EXIT_BAD_INPUT` (2: bad input or usage, as argparse's own).

Known failures (`user_error_message`):
- `data_prep.errors.DataError` (bad input data; names its file);
- a `ValueError` / `KeyError` / `OSError` raised explicitly (a `raise` statement) in the project's own
  code: these are the project's validation messages (config errors, unknown names, bad options);
- an `OSError` that names its file (missing, not writable, name too long, ...), from anywhere;
- YAML and JSON syntax errors, TensorFlow's corrupt-record error (`DataLossError`),
  `common.weights.PretrainedWeightsUnavailable`.

TensorFlow is never imported here: modules of failure types are looked up in `sys.modules`, so a
command that never imported TensorFlow (`list`, `--help`, argument and config errors) starts fast.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.abc
import importlib.machinery
import inspect
import linecache
import logging
import os
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

from data_prep.errors import DataError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
PROJECT_ROOT = Path(__file__).resolve().parents[1]
PROJECT_PACKAGES = ("classification", "common", "data_prep", "experiments", "segmentation", "tfrecords")
Handler = Callable[[argparse.Namespace], "int | None"]


def add_shell_flags(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Adds `--debug` and `--verbose` to `parser` and to each of its sub-commands (before or after it)."""
    parsers = [parser]
    for action in parser._actions:  # argparse keeps sub-commands in a _SubParsersAction
        if isinstance(action, argparse._SubParsersAction):
            parsers += list(dict.fromkeys(action.choices.values()))
    for index, target in enumerate(parsers):
        default = False if index == 0 else argparse.SUPPRESS  # a sub-command must not reset the flag
        target.add_argument(
            "--debug", action="store_true", default=default, help="show the traceback of an error"
        )
        target.add_argument(
            "--verbose",
            action="store_true",
            default=default,
            help="show TensorFlow's C++ log lines (quiet by default)",
        )
    return parser


def add_subcommand(
    commands: argparse._SubParsersAction, name: str, handler: Handler, **options: Any
) -> argparse.ArgumentParser:
    """Adds the sub-command `name` (`options` as for argparse's `add_parser`) that `run_command` runs as
    `handler(args)`; its return value is the exit status (None: `EXIT_OK`)."""
    parser = commands.add_parser(name, **options)
    parser.set_defaults(handler=handler)
    return parser


def call_with_flags(
    function: Callable[..., Any], args: argparse.Namespace, *leading: Any, **extra: Any
) -> Any:
    """`function(*leading, **flags, **extra)`: `flags` are the parsed arguments named like the parameters
    of `function` after the `leading` ones (a flag's `dest` is the parameter it sets); `extra` wins."""
    names = list(inspect.signature(function).parameters)[len(leading) :]
    flags = {name: getattr(args, name) for name in names if hasattr(args, name) and name not in extra}
    return function(*leading, **flags, **extra)


def run_command(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> int:
    """Parses `argv` (default: `sys.argv[1:]`), runs the chosen sub-command's handler inside the error
    boundary; returns the exit status."""
    args = add_shell_flags(parser).parse_args(None if argv is None else list(argv))
    quiet_logs(verbose=args.verbose)
    if not args.debug:
        warnings.formatwarning = _one_line_warning
    try:
        status = args.handler(args)
    except Exception as error:
        message = user_error_message(error)
        if message is None:
            raise
        if args.debug:
            traceback.print_exc()
        print(f"error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return EXIT_OK if status is None else int(status)


def _one_line_warning(message, category, filename, lineno, line=None) -> str:  # noqa: ANN001
    """`warning: <message>` on one line (the warnings module's format names the source line)."""
    return f"warning: {' '.join(str(message).split())}\n"


def user_error_message(error: BaseException) -> str | None:
    """`<file>: <problem>` (one line) for a known failure type; None for a bug."""
    message = _known_message(error)
    return None if message is None else " ".join(message.split())


def _known_message(error: BaseException) -> str | None:
    if isinstance(error, DataError):
        return str(error)
    if isinstance(error, OSError) and error.filename is not None:
        return f"{error.filename}: {error.strerror or error}"
    syntax = _syntax_error_message(error)
    if syntax is not None:
        return syntax
    if isinstance(error, ValueError | KeyError | OSError) and _raised_by_project(error.__traceback__):
        return str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    weights = sys.modules.get("common.weights")
    if weights is not None and isinstance(error, weights.PretrainedWeightsUnavailable):
        return str(error)
    return _tensorflow_message(error)


def _syntax_error_message(error: BaseException) -> str | None:
    """YAML or JSON that does not parse, with the file (or `<string>`) and the position."""
    import json

    if isinstance(error, json.JSONDecodeError):
        return f"invalid JSON ({error})"
    yaml = sys.modules.get("yaml")
    if yaml is not None and isinstance(error, yaml.YAMLError):
        mark = getattr(error, "problem_mark", None)
        where = mark.name if mark is not None else "YAML"
        return f"{where}: invalid YAML ({error})"
    return None


def _tensorflow_message(error: BaseException) -> str | None:
    """TensorFlow's corrupt-record error, when TensorFlow was imported at all (missing shards are
    found before reading: `tfrecords.reader.check_shards`)."""
    errors: ModuleType | None = sys.modules.get("tensorflow.python.framework.errors_impl")
    if errors is None:
        return None
    if isinstance(error, errors.DataLossError):
        return f"TFRecord data: {error.message} (a shard is corrupt; its manifest SHA-256 tells which)"
    return None  # other TensorFlow errors (NotFound of an op, shapes, ...) are bugs: traceback


def _raised_by_project(trace: TracebackType | None) -> bool:
    """Whether the innermost frame of `trace` is a `raise` statement in the project's own code."""
    if trace is None:
        return False
    while trace.tb_next is not None:
        trace = trace.tb_next
    filename = Path(trace.tb_frame.f_code.co_filename)
    try:
        package = filename.resolve().relative_to(PROJECT_ROOT).parts[0]
    except ValueError:
        return False
    line = linecache.getline(str(filename), trace.tb_lineno).strip()
    return package in PROJECT_PACKAGES and line.startswith("raise")


# --- quiet logs --------------------------------------------------------------------------------------

QUIET_LOGGERS = ("absl", "tensorflow", "h5py")


def quiet_logs(verbose: bool = False) -> None:
    """Quiets TensorFlow's C++ and absl log lines and OpenCV's warnings, unless `verbose`.

    TensorFlow prints its start-up lines (oneDNN, CUDA not found, CPU features) through absl before
    any log level applies, so the first `import tensorflow` runs with stderr (file descriptor 2)
    pointed at /dev/null; TF_CPP_MIN_LOG_LEVEL=3 quiets the C++ lines after it (errors reach Python
    as exceptions, which the error boundary prints).
    """
    if verbose:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # 2 still shows benign E lines (tf.data NodeDef)
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    if "cv2" in sys.modules:  # imported already: OPENCV_LOG_LEVEL is read at import
        logging_api = sys.modules["cv2"].utils.logging
        logging_api.setLogLevel(logging_api.LOG_LEVEL_ERROR)
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietImport())


@contextlib.contextmanager
def stderr_silenced() -> Iterator[None]:
    """Points file descriptor 2 at /dev/null for the block (C++ libraries write there directly)."""
    sys.stderr.flush()
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


class _QuietImport(importlib.abc.MetaPathFinder):
    """Imports `tensorflow` (once, whenever it is first needed) with stderr silenced."""

    def find_spec(self, fullname, path, target=None):  # noqa: ANN001 (importlib's signature)
        if fullname != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def _running_a_project_command() -> bool:
    """Whether this process is `python -m <one of the project's packages>`."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return spec is not None and spec.name.split(".")[0] in PROJECT_PACKAGES


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def create_module(self, spec):  # noqa: ANN001
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        module.__loader__ = module.__spec__.loader = self.loader
        with stderr_silenced():
            self.loader.exec_module(module)
            module.config.list_physical_devices("GPU")  # CUDA's "cuInit failed" line comes here


if _running_a_project_command():  # before the command's own module-level imports (TensorFlow among them)
    quiet_logs(verbose="--verbose" in sys.argv[1:])
