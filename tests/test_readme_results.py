"""The README's results section is exactly `python -m experiments table --runs results` (md)."""

from pathlib import Path

import pytest

from experiments.tables import build_table, find_runs, format_table

REPO = Path(__file__).resolve().parents[1]
START, END = "<!-- results:start -->", "<!-- results:end -->"


def readme_results() -> str:
    """The README text between the two results markers, stripped."""
    text = (REPO / "README.md").read_text()
    assert text.count(START) == 1 and text.count(END) == 1, f"README.md needs one {START} and one {END}"
    return text.split(START, 1)[1].split(END, 1)[0].strip()


def test_readme_results_section_is_the_table_generated_from_results():
    results = REPO / "results"
    if not (results.is_dir() and find_runs(results)):
        pytest.skip("results/ holds no records yet (python -m experiments reproduce --scale cpu)")
    assert readme_results() == format_table(build_table(results), "md").strip(), (
        "README results section differs from `python -m experiments table --runs results`; paste its output "
        f"between {START} and {END}"
    )


def test_readme_marks_one_results_section_under_results():
    text = (REPO / "README.md").read_text()
    assert readme_results()
    assert text.index("\n## Results\n") < text.index(START) < text.index(END)
