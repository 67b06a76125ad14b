"""The one error type for bad input data."""

from __future__ import annotations

from pathlib import Path


class DataError(Exception):
    """Bad input: names the offending file or folder and the problem, on one line.

    The command lines print `str(error)` and exit with status 2.
    """

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem.replace("\n", " ")
        super().__init__(f"{self.path}: {self.problem}")
