"""`common.cli`: one error boundary for the five command lines, quiet TensorFlow logs, fast start."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import pytest

from common.cli import add_subcommand, call_with_flags, run_command, user_error_message
from common.config import ConfigError, apply_overrides
from data_prep.errors import DataError
from tests.conftest import REPO_ROOT


def _parser(handler) -> argparse.ArgumentParser:
    """A shell with one sub-command, `go`, that runs `handler`."""
    parser = argparse.ArgumentParser(prog="tool")
    add_subcommand(parser.add_subparsers(dest="command", required=True), "go", handler)
    return parser


def _fails_with(error: Exception):
    def handler(args: argparse.Namespace) -> None:
        raise error

    return handler


def test_a_data_error_is_one_line_and_status_2(capsys):
    assert run_command(_parser(_fails_with(DataError("/x/scan.nii.gz", "has NaN\nvalues"))), ["go"]) == 2
    assert capsys.readouterr().err == "error: /x/scan.nii.gz: has NaN values\n"


def test_debug_shows_the_traceback_after_or_before_the_sub_command(capsys):
    for argv in (["go", "--debug"], ["--debug", "go"]):
        assert run_command(_parser(_fails_with(DataError("f", "bad"))), argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("Traceback (most recent call last):") and err.endswith("error: f: bad\n")


def test_a_validation_error_raised_by_project_code_is_a_message(capsys):
    def handler(args):
        apply_overrides({}, ["data.image_size=[1"])  # broken YAML in a --set value

    assert run_command(_parser(handler), ["go"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --set 'data.image_size=[1': not valid YAML") and err.count("\n") == 1


def test_os_errors_name_their_file(tmp_path, capsys):
    too_long = tmp_path / ("x" * 300) / "out.csv"

    def handler(args):
        too_long.parent.mkdir(parents=True)

    assert run_command(_parser(handler), ["go"]) == 2
    assert capsys.readouterr().err == f"error: {too_long.parent}: File name too long\n"


def test_warnings_print_as_one_line():
    import warnings

    shown = []

    def handler(args):
        shown.append(warnings.formatwarning("skipped 2\nfiles", UserWarning, "x.py", 3))

    assert run_command(_parser(handler), ["go"]) == 0
    assert shown == ["warning: skipped 2 files\n"]


def test_the_sub_command_handler_picks_the_exit_status():
    assert run_command(_parser(lambda args: None), ["go"]) == 0
    assert run_command(_parser(lambda args: 1), ["go"]) == 1


def test_call_with_flags_passes_the_flags_named_like_the_parameters():
    def write(source, out_dir, shards=8, seed=0, progress=False):
        return source, out_dir, shards, seed, progress

    args = argparse.Namespace(out_dir="o", shards=2, seed=5, command="write", debug=False)
    assert call_with_flags(write, args, "s") == ("s", "o", 2, 5, False)
    assert call_with_flags(write, args, "s", seed=1, progress=True) == ("s", "o", 2, 1, True)


def test_permission_and_tensorflow_data_errors_are_messages():
    import tensorflow as tf

    denied = PermissionError(13, "Permission denied", "/runs/out.csv")
    assert user_error_message(denied) == "/runs/out.csv: Permission denied"
    corrupt = tf.errors.DataLossError(None, None, "corrupted record at 4271")
    assert user_error_message(corrupt) == (
        "TFRecord data: corrupted record at 4271 (a shard is corrupt; its manifest SHA-256 tells which)"
    )


def test_a_bug_keeps_its_traceback():
    def handler(args):
        return int("not a number")  # a ValueError raised by a builtin, not by a `raise` of ours

    with pytest.raises(ValueError, match="invalid literal"):
        run_command(_parser(handler), ["go"])
    assert user_error_message(ZeroDivisionError("x")) is None
    assert user_error_message(ConfigError("c.yaml: data.image_size: must be > 0")) is None  # not raised


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run(
        [sys.executable, *args], cwd=REPO_ROOT, capture_output=True, text=True, env=env, timeout=300
    )


def test_list_help_and_config_errors_do_not_import_tensorflow():
    code = (
        "import sys\n"
        "from experiments.__main__ import main\n"
        "assert main(['list']) == 0\n"
        "assert main(['run', 'demo', '--set', 'data.image_size=0']) == 2\n"
        "for argv in (['--help'], ['run', '--help'], ['nonsense']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print('tensorflow imported:', 'tensorflow' in sys.modules)\n"
    )
    result = _run("-c", code)
    assert "tensorflow imported: False" in result.stdout, result.stderr
    assert "data.image_size: must be at least 8, got 0" in result.stderr


def test_tensorflow_log_lines_are_quiet_unless_verbose(tmp_path):
    """A command that imports TensorFlow prints only its own error line; --verbose shows TF's lines."""
    not_a_model = tmp_path / "model.keras"
    not_a_model.write_text("not a zip file")
    argv = ["-m", "segmentation", "predict", str(not_a_model), str(tmp_path), str(tmp_path / "out")]
    quiet = _run(*argv)
    assert quiet.returncode == 2
    assert quiet.stderr.startswith(f"error: {not_a_model}: not a usable Keras model file")
    assert quiet.stderr.count("\n") == 1, quiet.stderr
    assert not (tmp_path / "out").exists()
    verbose = _run(*argv, "--verbose")
    assert verbose.returncode == 2 and verbose.stderr.count("\n") > 1  # oneDNN / CPU feature lines


def test_opencv_warnings_do_not_precede_the_error_line(tmp_path):
    """A truncated PNG: OpenCV's own "[ WARN:0@...] PNG input buffer is incomplete" line is quiet."""
    root = tmp_path / "ct"
    for folder in ("COVID", "NonCOVID"):
        (root / folder).mkdir(parents=True)
    import cv2
    import numpy as np

    ok, encoded = cv2.imencode(".png", np.arange(64 * 64, dtype=np.uint8).reshape(64, 64))
    png = encoded.tobytes()
    (root / "COVID" / "a.png").write_bytes(png[: len(png) // 2])
    (root / "NonCOVID" / "b.png").write_bytes(png)
    result = _run("-m", "data_prep", "inspect", "image_folder", str(root))
    assert result.returncode == 2, result.stderr
    assert "WARN" not in result.stderr, result.stderr  # (the progress bar shares stderr)
    assert (
        result.stderr.splitlines()[-1]
        == f"error: {root / 'COVID' / 'a.png'}: not a readable image (png is truncated: no end marker)"
    )
