"""`python -m experiments bench`: the compute-saving arithmetic, and a `--quick` smoke run (no timing
assertions: speed goals are benchmark output)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from experiments.bench import STARTUP_WHAT, bench_command, gated_saving


def test_gated_saving_counts_the_recogniser_on_every_slice_and_each_stream_where_it_runs():
    presence = {
        "ggo": np.array([True, False, False, False]),
        "consolidation": np.array([True, True, False, False]),
    }
    # gated: 4 recogniser calls of 10 + 3 stream calls of 100 = 340; ungated: 2 streams x 4 slices x 100
    assert gated_saving(presence, stream_flops=100, recogniser_flops=10) == pytest.approx(1 - 340 / 800)
    everywhere = {name: np.ones(4, bool) for name in presence}
    assert gated_saving(everywhere, stream_flops=100, recogniser_flops=10) == pytest.approx(-40 / 800)


def _row(report: str, section: str, measure: str) -> list[str]:
    for line in report.splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if cells[:2] == [section, measure]:
            return cells
    raise AssertionError(f"no row {section!r} / {measure!r} in:\n{report}")


def test_quick_bench_prints_every_section_and_writes_the_same_report(tmp_path: Path, capsys) -> None:
    out = tmp_path / "bench.md"
    assert bench_command(tmp_path / "no-data", quick=True, out=out) == 0
    report = capsys.readouterr().out
    assert out.read_text() == report
    assert report.startswith("`python -m experiments bench --quick`: ")
    assert "precision auto = " in report and "Load average (1/5/15 min) at start " in report
    for measure in (
        "tf.data from the image files",
        "cv2 loop (seed notebooks)",
        "TFRecord PNG, first pass",
        "TFRecord raw, first pass",
        "TFRecord raw+ZLIB, first pass",
        "TFRecord raw, cached",
    ):
        assert _row(report, "input pipeline", measure)[4:] == ["images/s", "2"]
    # 64 x 64 uint8 pixels are 4,096 raw bytes per slice, plus the record's strings and framing
    raw_mb = float(_row(report, "disk per 1,000 slices", "TFRecord raw")[2])
    assert 4.096 < raw_mb < 5.0
    assert float(_row(report, "disk per 1,000 slices", "TFRecord raw+ZLIB")[2]) < raw_mb
    assert _row(report, "training", "U-Net (plain, filters 4-16), 64 px, float32")[5] == "2"
    assert _row(report, "segmentation predict", "12-slice 64 x 64 volume")[4] == "s"
    assert _row(report, "segmentation predict", STARTUP_WHAT)[5] == "1"
    saving = _row(
        report,
        "gated streams",
        "2 whole SYNTHETIC phantom volumes: 64 slices, 40 without ggo or consolidation",
    )
    assert 0 < float(saving[2]) < 100
    assert "goal: TFRecord raw first pass = " in report and "goal: segmentation predict " in report
    assert "FAILED" not in report
