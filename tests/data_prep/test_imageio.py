"""Tests for data_prep.imageio: format sniffing, grayscale/colour/16-bit reading, masks, bad files."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from data_prep.errors import DataError
from data_prep.imageio import (
    list_image_files,
    read_binary_mask,
    read_display_image,
    read_image,
    read_palette_mask,
    sniff_format,
)

GRAY = np.arange(16 * 16, dtype=np.uint8).reshape(16, 16)


def _encoded(image: np.ndarray, ext: str) -> bytes:
    ok, data = cv2.imencode(ext, image)
    assert ok
    return data.tobytes()


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_sniff_format_reads_magic_bytes():
    assert sniff_format(_encoded(GRAY, ".png")) == "png"
    assert sniff_format(_encoded(GRAY, ".jpg")) == "jpeg"
    assert sniff_format(_encoded(GRAY, ".tiff")) == "tiff"
    assert sniff_format(_encoded(GRAY, ".bmp")) == "bmp"
    assert sniff_format(b"hello world") is None


def test_grayscale_png_named_jpg_in_odd_path(tmp_path):
    path = _write(tmp_path / "a folder (1)" / "Covid (61)%3.jpg", _encoded(GRAY, ".png"))
    image = read_image(path)
    assert image.dtype == np.uint8
    np.testing.assert_array_equal(image, GRAY)


def test_tiff_named_jpg_and_jpeg_named_png(tmp_path):
    tiff = read_image(_write(tmp_path / "scan.jpg", _encoded(GRAY, ".tiff")))
    np.testing.assert_array_equal(tiff, GRAY)
    flat = np.full((16, 16), 100, np.uint8)
    jpeg = read_image(_write(tmp_path / "scan.png", _encoded(flat, ".jpg")))
    assert jpeg.shape == (16, 16)
    np.testing.assert_array_equal(jpeg, flat)  # a flat image survives JPEG exactly


def test_sixteen_bit_png_keeps_uint16(tmp_path):
    deep = (GRAY.astype(np.uint16) * 257).reshape(16, 16)
    image = read_image(_write(tmp_path / "deep.png", _encoded(deep, ".png")))
    assert image.dtype == np.uint16
    np.testing.assert_array_equal(image, deep)


def test_rgb_with_near_equal_channels_is_grayscale(tmp_path):
    bgr = np.stack([GRAY, GRAY, GRAY], axis=2).astype(np.int16)
    bgr[0, 0] = (40, 50, 45)  # channels within 10 grey levels
    image = read_image(_write(tmp_path / "grey.png", _encoded(bgr.astype(np.uint8), ".png")))
    assert image.shape == (16, 16)
    np.testing.assert_array_equal(image[1:], GRAY[1:])
    assert image[0, 0] == round(0.299 * 45 + 0.587 * 50 + 0.114 * 40)  # BT.601 luma of RGB (45, 50, 40)


def test_real_colour_is_rgb_and_alpha_is_dropped(tmp_path):
    bgra = np.zeros((16, 16, 4), np.uint8)
    bgra[..., 3] = 255
    bgra[0, 0] = (0, 0, 255, 255)  # pure red in BGR(A)
    image = read_image(_write(tmp_path / "arrow.png", _encoded(bgra, ".png")))
    assert image.shape == (16, 16, 3)
    np.testing.assert_array_equal(image[0, 0], [255, 0, 0])
    np.testing.assert_array_equal(image[1, 1], [0, 0, 0])


def test_display_image_rescales_sixteen_bit(tmp_path):
    deep = np.array([[1000, 2000], [3000, 1000]], np.uint16)
    image = read_display_image(_write(tmp_path / "deep.png", _encoded(deep, ".png")))
    assert image.dtype == np.uint8
    np.testing.assert_array_equal(image, [[0, 128], [255, 0]])


def test_non_image_file_raises_one_line(tmp_path):
    path = _write(tmp_path / "notes.png", b"hello world, not an image")
    with pytest.raises(DataError) as caught:
        read_image(path)
    assert str(caught.value) == f"{path}: not a readable image (unknown format, starts with b'hello wo')"


def test_truncated_png_raises(tmp_path):
    data = _encoded(GRAY, ".png")
    path = _write(tmp_path / "cut.png", data[: len(data) // 2])
    with pytest.raises(DataError) as caught:
        read_image(path)
    assert str(caught.value) == f"{path}: not a readable image (png is truncated: no end marker)"


def test_corrupt_png_with_end_marker_raises(tmp_path):
    data = _encoded(GRAY, ".png")
    path = _write(tmp_path / "holed.png", data[:40] + data[-12:])
    with pytest.raises(DataError) as caught:
        read_image(path)
    assert str(caught.value) == f"{path}: not a readable image (png data could not be decoded)"


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_bytes_after_the_end_marker_are_accepted(tmp_path, ext):
    flat = np.full((16, 16), 77, np.uint8)
    path = _write(tmp_path / f"trailer{ext}", _encoded(flat, ext) + b"camera trailer " * 100)
    np.testing.assert_array_equal(read_image(path), flat)


def test_missing_file_raises(tmp_path):
    with pytest.raises(DataError) as caught:
        read_image(tmp_path / "absent.png")
    assert str(caught.value) == f"{tmp_path / 'absent.png'}: not a readable image (No such file or directory)"


@pytest.mark.parametrize("scale", [255, 1])
def test_binary_mask_accepts_0_255_and_0_1(tmp_path, scale):
    mask = np.zeros((16, 16), np.uint8)
    mask[2:5, 3:7] = scale
    read = read_binary_mask(_write(tmp_path / "m.png", _encoded(mask, ".png")))
    assert read.dtype == np.uint8
    assert read.sum() == 12
    np.testing.assert_array_equal(read[2:5, 3:7], 1)


def test_binary_mask_rejects_other_values(tmp_path):
    mask = np.zeros((16, 16), np.uint8)
    mask[0, :3] = (128, 255, 7)
    path = _write(tmp_path / "m.png", _encoded(mask, ".png"))
    with pytest.raises(DataError) as caught:
        read_binary_mask(path)
    assert (
        str(caught.value)
        == f"{path}: unexpected mask values [0, 7, 128, 255]; expected {{0, 255}} or {{0, 1}}"
    )


def _palette_png(path: Path, indices: np.ndarray) -> Path:
    image = Image.fromarray(indices, mode="L").convert("P")
    image.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 9))
    image.save(path)
    return path


def test_palette_mask_returns_indices(tmp_path):
    indices = np.array([[0, 1], [2, 1]], np.uint8)
    np.testing.assert_array_equal(read_palette_mask(_palette_png(tmp_path / "p.png", indices)), indices)
    levels = tmp_path / "l.png"
    Image.fromarray(indices, mode="L").save(levels)
    np.testing.assert_array_equal(read_palette_mask(levels, allowed=(0, 1, 2)), indices)


def test_palette_mask_rejects_values_outside_allowed(tmp_path):
    path = _palette_png(tmp_path / "p.png", np.array([[0, 1], [3, 1]], np.uint8))
    with pytest.raises(DataError) as caught:
        read_palette_mask(path, allowed={0, 1, 2})
    assert str(caught.value) == f"{path}: unexpected mask values [3]; expected [0, 1, 2]"


def test_list_image_files_skips_hidden_and_rejects_empty(tmp_path):
    folder = tmp_path / "images"
    _write(folder / "b (2).png", b"x")
    _write(folder / "a (10).png", b"x")
    _write(folder / ".DS_Store", b"x")
    assert [p.name for p in list_image_files(folder)] == ["a (10).png", "b (2).png"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError) as caught:
        list_image_files(empty)
    assert str(caught.value) == f"{empty}: empty folder; expected image files"
