"""Shared test fixtures.

Real-data tests find the shared subsets through $COVID_DATA_DIR (default: ../shared/data beside the
repository) and skip with the reason when they are absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def shared_data_dir() -> Path:
    return Path(os.environ.get("COVID_DATA_DIR", REPO_ROOT.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The root of the real data subsets; skips the test when it is missing."""
    root = shared_data_dir()
    if not (root / "README.md").is_file():
        pytest.skip(f"real data subsets not found at {root} (set COVID_DATA_DIR)")
    return root
