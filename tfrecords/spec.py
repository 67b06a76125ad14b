"""The declarative preprocessing spec applied once at write time, e.g. "window=lung,clahe,resize=256".

Steps run in the order written, on one record's image (converted to grayscale first) and masks:

| step | effect |
|---|---|
| `window=NAME` or `window=CENTER:WIDTH` | HU -> uint8 display values (`data_prep.preprocess.window_hu`; NAME in HU_WINDOWS) |
| `hu16` | HU -> uint16 as HU + 32768 (lossless 16-bit storage; the manifest records the offset) |
| `range=LOW:HIGH` | "normalized" float values, [LOW, HIGH] -> uint8 0-255, saturating |
| `minmax` | per-image min-max -> uint8 0-255 |
| `clahe`, `clahe=CLIP` or `clahe=CLIP:TILES` | CLAHE (default clip 2.0, 8 x 8 tiles) on uint8/uint16 |
| `lungcrop` or `lungcrop=MARGIN` | crop image and masks to the lung box found label-free (the image's dark inner regions, never its lung mask) |
| `resize=N` or `resize=HxW` | bilinear for the image, nearest for the masks, to N x N or H x W pixels |

The stored image must end as uint8 or uint16: HU images get `window=lung` first unless the spec has
its own intensity step (`window`, `hu16`, `range`, `minmax`); "normalized" ones need `range` or
`minmax`; 0-255 "display" images need none.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from data_prep import preprocess
from data_prep.errors import DataError
from data_prep.records import Record

HU16_OFFSET = 32768
Masks = dict[str, np.ndarray]


@dataclass(frozen=True)
class Step:
    """One parsed step: its name and numeric or text arguments."""

    name: str
    args: tuple[float | str, ...] = ()

    def __str__(self) -> str:
        if not self.args:
            return self.name
        separator = "x" if self.name == "resize" else ":"
        return f"{self.name}={separator.join(_format_arg(arg) for arg in self.args)}"


def _format_arg(arg: float | str) -> str:
    return f"{arg:g}" if isinstance(arg, float) else str(arg)


def _numbers(text: str, separator: str, counts: tuple[int, ...], step: str) -> tuple[float, ...]:
    parts = text.split(separator) if text else []
    if len(parts) not in counts:
        raise ValueError(f"preprocess step {step!r}: expected {' or '.join(map(str, counts))} number(s)")
    try:
        return tuple(float(part) for part in parts)
    except ValueError as error:
        raise ValueError(f"preprocess step {step!r}: {error}") from None


def _parse_step(text: str) -> Step:
    name, _, value = text.strip().partition("=")
    if name == "window":
        if value in preprocess.HU_WINDOWS:
            return Step(name, (value,))
        if not value or ":" not in value:
            known = ", ".join(preprocess.HU_WINDOWS)
            raise ValueError(f"preprocess step {text!r}: give window=NAME ({known}) or window=CENTER:WIDTH")
        return Step(name, _numbers(value, ":", (2,), text))
    if name == "range":
        return Step(name, _numbers(value, ":", (2,), text))
    if name in ("hu16", "minmax") and not value:
        return Step(name)
    if name == "clahe":
        return Step(name, _numbers(value, ":", (0, 1, 2), text))
    if name == "lungcrop":
        return Step(name, _numbers(value, ":", (0, 1), text))
    if name == "resize":
        sizes = _numbers(value, "x", (1, 2), text)
        if any(size < 1 or size != int(size) for size in sizes):
            raise ValueError(f"preprocess step {text!r}: sizes must be positive whole numbers")
        return Step(name, sizes * (3 - len(sizes)) if len(sizes) == 1 else sizes)
    raise ValueError(
        f"unknown preprocess step {text!r}; known: window, hu16, range, minmax, clahe, lungcrop, resize"
    )


def _window(image: np.ndarray, masks: Masks, *args: float | str) -> tuple[np.ndarray, Masks]:
    if isinstance(args[0], str):
        return preprocess.window_hu(image, preset=args[0]), masks
    return preprocess.window_hu(image, float(args[0]), float(args[1])), masks


def _hu16(image: np.ndarray, masks: Masks) -> tuple[np.ndarray, Masks]:
    shifted = np.asarray(image, np.int64) + HU16_OFFSET
    return np.clip(shifted, 0, np.iinfo(np.uint16).max).astype(np.uint16), masks


def _range(image: np.ndarray, masks: Masks, low: float, high: float) -> tuple[np.ndarray, Masks]:
    if high <= low:
        raise ValueError(f"preprocess step range={low:g}:{high:g}: HIGH must exceed LOW")
    return preprocess.window_hu(image, (low + high) / 2.0, high - low), masks


def _minmax(image: np.ndarray, masks: Masks) -> tuple[np.ndarray, Masks]:
    return np.floor(preprocess.normalize_minmax(image) * 255.0 + 0.5).astype(np.uint8), masks


def _clahe(image: np.ndarray, masks: Masks, clip: float = 2.0, tiles: float = 8) -> tuple[np.ndarray, Masks]:
    return preprocess.clahe(image, clip, (int(tiles), int(tiles))), masks


def _lungcrop(image: np.ndarray, masks: Masks, margin: float = 4) -> tuple[np.ndarray, Masks]:
    """Label-free: the box of the dark inner regions of the image itself (`preprocess.lung_roi_box`
    without a mask), for every split alike, so no lung label frames a validation or test input."""
    box = preprocess.lung_roi_box(image, None, margin=int(margin))
    return preprocess.crop_to_box(image, box), {
        name: preprocess.crop_to_box(mask, box) for name, mask in masks.items()
    }


def _resize(image: np.ndarray, masks: Masks, height: float, width: float) -> tuple[np.ndarray, Masks]:
    size = (int(height), int(width))
    return preprocess.resize_image(image, size), {
        name: preprocess.resize_mask(mask, size) for name, mask in masks.items()
    }


_APPLY: dict[str, Callable[..., tuple[np.ndarray, Masks]]] = {
    "window": _window,
    "hu16": _hu16,
    "range": _range,
    "minmax": _minmax,
    "clahe": _clahe,
    "lungcrop": _lungcrop,
    "resize": _resize,
}


def to_grayscale(image: np.ndarray) -> np.ndarray:
    """(H, W) unchanged; (H, W, 3) RGB -> (H, W) luma (ITU-R 601, cv2), keeping the dtype."""
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 3:
        if image.dtype in (np.uint8, np.uint16, np.float32):
            return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        return cv2.cvtColor(image.astype(np.float32), cv2.COLOR_RGB2GRAY).astype(image.dtype)
    raise ValueError(f"expected a (H, W) or (H, W, 3) image, got shape {image.shape}")


INTENSITY_STEPS = ("window", "hu16", "range", "minmax")
DEFAULT_HU_STEP = _parse_step("window=lung")


@dataclass(frozen=True)
class PreprocessSpec:
    """A parsed spec; `str(spec)` gives it back in canonical form."""

    steps: tuple[Step, ...] = ()

    @classmethod
    def parse(cls, text: str | None, image_size: int | None = None) -> PreprocessSpec:
        """Parses "step,step=value,..."; `image_size` adds resize=N unless the spec already resizes to N."""
        steps = tuple(_parse_step(part) for part in (text or "").split(",") if part.strip())
        resizes = [step for step in steps if step.name == "resize"]
        if image_size is not None:
            wanted = Step("resize", (float(image_size), float(image_size)))
            if resizes and resizes[-1] != wanted:
                raise ValueError(f"--image-size {image_size} contradicts the spec's {resizes[-1]}")
            if not resizes:
                steps += (wanted,)
        return cls(steps)

    def __str__(self) -> str:
        return ",".join(str(step) for step in self.steps)

    @property
    def stored_dtype(self) -> str:
        """ "uint16" when the spec stores HU losslessly (hu16), else "uint8"."""
        return "uint16" if any(step.name == "hu16" for step in self.steps) else "uint8"

    @property
    def output_size(self) -> tuple[int, int] | None:
        """(H, W) of every stored image when the spec ends its geometry with a resize, else None."""
        geometric = [step for step in self.steps if step.name in ("resize", "lungcrop")]
        if not geometric or geometric[-1].name != "resize":
            return None
        height, width = geometric[-1].args
        return int(height), int(width)

    def steps_for(self, intensity: str) -> tuple[Step, ...]:
        """The steps applied to a record of `intensity`: HU images get the lung window first
        (`DEFAULT_HU_STEP`) when the spec has no intensity step of its own."""
        if intensity != "hu" or any(step.name in INTENSITY_STEPS for step in self.steps):
            return self.steps
        return (DEFAULT_HU_STEP, *self.steps)

    def apply(self, record: Record) -> tuple[np.ndarray, Masks]:
        """The record's stored image ((H, W) uint8 or uint16) and masks ((H, W) uint8 {0, 1}).

        Raises DataError naming the record's file when the result is not storable or a step fails.
        """
        image, masks = to_grayscale(record.image), dict(record.masks)
        for step in self.steps_for(record.intensity):
            try:
                image, masks = _APPLY[step.name](image, masks, *step.args)
            except ValueError as error:
                raise DataError(record.path, f"preprocess step {step}: {error}") from error
        if image.dtype != np.dtype(self.stored_dtype):
            needs = {"hu": "window=... or hu16", "normalized": "range=LOW:HIGH or minmax"}
            hint = needs.get(record.intensity, "no intensity step (or hu16 for HU data only)")
            raise DataError(
                record.path,
                f"{record.intensity} image ends as {image.dtype} after preprocess {str(self)!r}; "
                f"expected {self.stored_dtype}: use {hint}",
            )
        return image, masks
