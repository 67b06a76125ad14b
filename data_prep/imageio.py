"""Readers for 2D image files (PNG, JPEG, TIFF, BMP) and their mask files.

Real downloads mix formats behind their extensions (PNGs named `.jpg`, JPEGs named `.png`, TIFFs named
`.jpg`), so the format is sniffed from the file's first bytes, never from its name. Files are read as
bytes and decoded with `cv2.imdecode`, which handles any characters in the path.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from data_prep.errors import DataError

# Format name -> the byte signatures a file of that format starts with.
_SIGNATURES: dict[str, tuple[bytes, ...]] = {
    "png": (b"\x89PNG\r\n\x1a\n",),
    "jpeg": (b"\xff\xd8\xff",),
    "tiff": (b"II*\x00", b"MM\x00*"),
    "bmp": (b"BM",),
}
# Formats whose last bytes (bar trailing padding) hold an end marker: a file that fails to decode
# without one was cut short. Decoding decides; the marker only words the message.
_END_MARKERS: dict[str, bytes] = {"png": b"IEND", "jpeg": b"\xff\xd9"}
_END_MARKER_WINDOW = 64  # bytes searched at the end of the file for the end marker
# RGB images whose channels differ by at most this many grey levels everywhere are grayscale
# (the same rule the shared CT subset used when it saved images as mode L or RGB).
GRAY_TOLERANCE = 12


def list_image_files(folder: str | Path) -> list[Path]:
    """The files of an image folder, sorted by name; hidden files (".DS_Store") are skipped.

    Raises `DataError` when the folder is missing or holds no files. Sub-folders are not listed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, "missing image folder")
    files = sorted(
        (p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")), key=lambda p: p.name
    )
    if not files:
        raise DataError(folder, "empty folder; expected image files")
    return files


def sniff_format(data: bytes) -> str | None:
    """The image format ("png", "jpeg", "tiff", "bmp") of a file's bytes, or None if unknown."""
    for name, signatures in _SIGNATURES.items():
        if data.startswith(signatures):
            return name
    return None


def _decode(path: Path) -> np.ndarray:
    """Decodes an image file as stored: (H, W) or (H, W, C) BGR(A), uint8 or uint16."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DataError(path, f"not a readable image ({error.strerror})") from error
    kind = sniff_format(data)
    if kind is None:
        raise DataError(path, f"not a readable image (unknown format, starts with {data[:8]!r})")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        marker = _END_MARKERS.get(kind)
        if marker is not None and marker not in data.rstrip(b"\x00")[-_END_MARKER_WINDOW:]:
            raise DataError(path, f"not a readable image ({kind} is truncated: no end marker)")
        raise DataError(path, f"not a readable image ({kind} data could not be decoded)")
    if image.dtype not in (np.uint8, np.uint16):
        raise DataError(path, f"not a readable image (pixel type {image.dtype}; expected 8 or 16 bit)")
    return image


def read_image(path: str | Path) -> np.ndarray:
    """Reads an image file as grayscale (H, W) or colour (H, W, 3) RGB.

    Returns uint8, or uint16 for 16-bit files. Colour images whose channels agree within
    `GRAY_TOLERANCE` grey levels at every pixel are returned as grayscale; an alpha channel is dropped.
    Raises `DataError` for a file that is not a decodable image.
    """
    path = Path(path)
    image = _decode(path)
    if image.ndim == 2:
        return image
    if image.shape[2] == 1:
        return image[:, :, 0]
    rgb = cv2.cvtColor(image[:, :, :3], cv2.COLOR_BGR2RGB)
    channels = rgb.astype(np.int32)
    spread = channels.max(axis=2) - channels.min(axis=2)
    if int(spread.max()) <= GRAY_TOLERANCE:
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    return rgb


def read_display_image(path: str | Path) -> np.ndarray:
    """Reads an image for a "display"-intensity record: (H, W) or (H, W, 3) uint8.

    8-bit files are returned as stored. 16-bit files are rescaled linearly from their own
    [min, max] to [0, 255] (a constant image becomes all 0), rounding to the nearest level.
    """
    image = read_image(path)
    if image.dtype == np.uint8:
        return image
    low, high = float(image.min()), float(image.max())
    scale = 255.0 / (high - low) if high > low else 0.0
    return np.rint((image.astype(np.float64) - low) * scale).astype(np.uint8)


def _value_list(values: np.ndarray) -> str:
    """The sorted distinct values of an array, as a short list for messages."""
    distinct = np.unique(values)
    shown = ", ".join(str(int(v)) for v in distinct[:8])
    return f"[{shown}{', ...' if distinct.size > 8 else ''}]"


def read_binary_mask(path: str | Path) -> np.ndarray:
    """Reads a binary mask stored as {0, 255} or {0, 1}; returns (H, W) uint8 in {0, 1}."""
    path = Path(path)
    mask = read_image(path)
    if mask.ndim != 2:
        raise DataError(path, f"mask has colour channels, shape {mask.shape}; expected a grayscale mask")
    values = set(np.unique(mask).tolist())
    if values <= {0, 255}:
        return (mask == 255).astype(np.uint8)
    if values <= {0, 1}:
        return mask.astype(np.uint8)
    raise DataError(path, f"unexpected mask values {_value_list(mask)}; expected {{0, 255}} or {{0, 1}}")


def read_palette_mask(path: str | Path, allowed: Iterable[int] | None = None) -> np.ndarray:
    """Reads a label mask: palette indices of a mode-P image, or the values of a mode-L image.

    Returns (H, W) uint8. With `allowed`, any other value raises `DataError`.
    """
    path = Path(path)
    try:
        with Image.open(path) as opened:
            if opened.mode not in ("P", "L"):
                raise DataError(path, f"label mask has mode {opened.mode}; expected P (palette) or L")
            mask = np.asarray(opened)
    except (OSError, SyntaxError) as error:
        raise DataError(path, f"not a readable image ({error})") from error
    if allowed is not None:
        unexpected = np.setdiff1d(np.unique(mask), np.asarray(sorted(allowed)))
        if unexpected.size:
            raise DataError(
                path, f"unexpected mask values {_value_list(unexpected)}; expected {sorted(allowed)}"
            )
    return mask.astype(np.uint8)
