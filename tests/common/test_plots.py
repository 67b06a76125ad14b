import numpy as np

from common import plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path, folder):
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []


def test_every_plot_writes_a_png_and_leaves_no_temporary_file(tmp_path):
    curve = ([0.0, 0.5, 1.0], [0.0, 0.8, 1.0])
    written = [
        plots.plot_roc({"model (AUC 0.90)": curve}, tmp_path / "roc.png"),
        plots.plot_pr({"model": curve}, tmp_path / "pr.png"),
        plots.plot_threshold_curve(
            [0.1, 0.5, 0.9], {"dice": [0.2, 0.7, 0.4]}, tmp_path / "t.png", chosen=0.5
        ),
        plots.plot_confusion_matrix(np.array([[5, 1], [2, 7]]), ["neg", "pos"], tmp_path / "cm.png"),
        plots.plot_training_curves(
            {"epoch": [0, 1], "loss": [1.0, 0.5], "val_loss": [1.1, 0.7], "learning_rate": [1e-3, 1e-3]},
            tmp_path / "sub" / "curves.png",
        ),
    ]
    for path in written:
        assert_png(path, path.parent)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cm.png", "pr.png", "roc.png", "sub", "t.png"]
