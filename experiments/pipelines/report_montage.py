"""The CT report's montage: axial slices a radiologist can read.

Slices are shown in display orientation (`data_prep.io.to_display`: the patient's right on the image's
left, anterior up); the edge letters come from the canonical affine, so an oblique scan shows e.g. "AL".
Slices: up to half of the tiles are those with the most counted infection, the rest evenly spaced
over the slices with lung.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from data_prep.io import NiftiScan, to_display
from data_prep.preprocess import window_hu

OBLIQUE_LETTER_MIN = 0.25  # a direction component at least this large adds its letter (e.g. "AL")
MONTAGE_TILES, MONTAGE_COLUMNS = 8, 4


def _letters(direction: np.ndarray) -> str:
    unit = direction / np.linalg.norm(direction)
    order = np.argsort(-np.abs(unit), kind="stable")
    return "".join(
        ("RAS"[a] if unit[a] > 0 else "LPI"[a]) for a in order if abs(unit[a]) >= OBLIQUE_LETTER_MIN
    )


def orientation_letters(affine: np.ndarray) -> dict[str, str]:
    """Patient directions at the edges of a display-orientation axial slice (`data_prep.io.to_display`) of a
    canonical volume with voxel-to-RAS+ `affine`: keys top, bottom, left, right; e.g. "A", or "AL" oblique."""
    up, rightwards = affine[:3, 1], -affine[:3, 0]  # display rows run against y, columns against x
    return {
        "top": _letters(up),
        "bottom": _letters(-up),
        "left": _letters(-rightwards),
        "right": _letters(rightwards),
    }


def montage_slices(
    counted_per_slice: np.ndarray, lung_per_slice: np.ndarray, count: int = MONTAGE_TILES
) -> list:
    """[(k, why)] sorted by k: up to count // 2 slices with the most counted infection (at least
    len / (2 count) apart), the rest evenly spaced over the slices with lung (all slices if none)."""
    gap = max(1, len(counted_per_slice) // (2 * count))
    burden = []
    for k in np.argsort(-counted_per_slice, kind="stable"):
        if counted_per_slice[k] == 0 or len(burden) == count // 2:
            break
        if all(abs(int(k) - other) >= gap for other in burden):
            burden.append(int(k))
    span = np.flatnonzero(lung_per_slice)
    span = span if span.size else np.arange(len(lung_per_slice))
    even = np.unique(np.linspace(span[0], span[-1], num=count - len(burden)).round().astype(int))
    chosen = {k: "most infection" for k in burden} | {
        int(k): "evenly spaced" for k in even if k not in burden
    }
    return sorted(chosen.items())


def to_display_uint8(array: np.ndarray, kind: str) -> np.ndarray:
    """A checked ("hu" or "display") volume -> uint8 display values for montages (HU: lung window)."""
    return window_hu(array, preset="lung") if kind == "hu" else np.clip(array, 0, 255).astype(np.uint8)


def montage(scan: NiftiScan, kind: str, lung: np.ndarray, infection: np.ndarray, title: str) -> Figure:
    """Axial slices of a canonical scan ("hu" or "display" values) with lung contours (bool `lung`),
    counted infection (red) and predictions outside the lungs (orange) of the label map `infection`."""
    image = to_display_uint8(scan.array, kind)
    counted = (infection > 0) & lung
    outside = (infection > 0) & ~lung
    picks = montage_slices(counted.sum(axis=(0, 1)), lung.sum(axis=(0, 1)))
    rows = -(-len(picks) // MONTAGE_COLUMNS)
    figure = Figure(figsize=(3.2 * MONTAGE_COLUMNS, 3.4 * rows + 0.9), facecolor="black")
    letters = orientation_letters(scan.affine)
    aspect = scan.spacing_mm[1] / scan.spacing_mm[0]  # display rows follow y, columns x
    for tile, (k, why) in enumerate(picks):
        axes = figure.add_subplot(rows, MONTAGE_COLUMNS, tile + 1)
        axes.imshow(
            to_display(image[:, :, k]), cmap="gray", vmin=0, vmax=255, aspect=aspect, interpolation="nearest"
        )
        for mask, colour in ((counted, (0.9, 0.1, 0.1, 0.55)), (outside, (1.0, 0.6, 0.0, 0.55))):
            overlay = np.zeros((*to_display(mask[:, :, k]).shape, 4))
            overlay[to_display(mask[:, :, k])] = colour
            axes.imshow(overlay, aspect=aspect, interpolation="nearest")
        if lung[:, :, k].any():
            axes.contour(to_display(lung[:, :, k]).astype(float), levels=[0.5], colors="lime", linewidths=0.8)
        for edge, (x, y) in {
            "top": (0.5, 0.97),
            "bottom": (0.5, 0.03),
            "left": (0.03, 0.5),
            "right": (0.97, 0.5),
        }.items():
            axes.text(
                x,
                y,
                letters[edge],
                transform=axes.transAxes,
                color="yellow",
                fontsize=10,
                weight="bold",
                ha="center",
                va="center",
            )
        axes.set_title(f"slice {k} ({why})", color="white", fontsize=9)
        axes.set_axis_off()
    figure.suptitle(title, color="white", fontsize=10)
    figure.legend(
        handles=[
            Line2D([], [], color="lime", label="lung (predicted)"),
            Patch(color=(0.9, 0.1, 0.1), label="infection inside the lungs (counted)"),
            Patch(color=(1.0, 0.6, 0.0), label="predicted outside the lungs (not counted)"),
        ],
        loc="lower center",
        ncol=3,
        frameon=False,
        labelcolor="white",
        fontsize=9,
    )
    figure.subplots_adjust(
        left=0.01,
        right=0.99,
        top=1 - 0.75 / figure.get_figheight(),
        bottom=0.45 / figure.get_figheight(),
        wspace=0.04,
        hspace=0.12,
    )
    return figure
