"""Synthetic phantoms: small CT volumes and chest X-rays with known masks, written in the layouts of the
published datasets so the real adapters read them. The default data of the project's demos and tests.

Everything here is SYNTHETIC: every dataset root gets a `SYNTHETIC.txt` marker, a README.md that says
"SYNTHETIC PHANTOM" and a `phantom_truth.json` with the known answers (lesion volumes in mL, labels);
file names start with "phantom" where the layout leaves names free. Generation is deterministic in
`seed`: the same arguments write byte-identical files.

CT phantoms are built slice by slice in display orientation (anterior at the top, the patient's right on
the image's left; slice 0 = inferior) and returned in canonical RAS+ voxel order (X, Y, Z) with a
diagonal affine. Tissue HU (`HU`): air -1000, lung -850, fat -100, soft tissue 30, vessels 40, bone 400,
and the lesions: ground-glass opacity -450 (blurred edges), consolidation 20, pleural effusion 10 (a
posterior crescent at the lung bases, outside the lung mask), nodules 50; Gaussian noise of 12 HU.
"""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from common.atomic import atomic_path
from data_prep.errors import DataError
from data_prep.io import from_display, to_display, write_nifti
from data_prep.preprocess import window_hu

KINDS = ("zenodo", "medseg", "covid_qu_ex", "lidc", "image_folder")
MARKER_FILE = "SYNTHETIC.txt"
TRUTH_FILE = "phantom_truth.json"
XRAY_CLASSES = ("COVID-19", "Non-COVID", "Normal")
FIELD_OF_VIEW_MM = 360.0  # in-plane extent of a CT phantom of any size
CRANIOCAUDAL_MM = 300.0  # extent covered by a CT phantom's slices
DEFAULT_SIZES = {"zenodo": 128, "medseg": 128, "covid_qu_ex": 256, "lidc": 128, "image_folder": 128}

HU = {
    "air": -1000,
    "lung": -850,
    "fat": -100,
    "soft_tissue": 30,
    "vessel": 40,
    "bone": 400,
    "ggo": -450,
    "consolidation": 20,
    "effusion": 10,
    "nodule": 50,
}
NOISE_HU = 12.0
LABEL_VALUES = {"ggo": 1, "consolidation": 2, "effusion": 3}  # MedSeg label-map values
LEFT_LUNG, RIGHT_LUNG = 1, 2  # Zenodo 3757476 lung-mask values
# Lung ellipses (centre column, centre row, half width, half height), normalised to the image size;
# the patient's right lung is on the image's left, the left lung is smaller (heart).
LUNG_GEOMETRY = {"right": (0.30, 0.50, 0.15, 0.24), "left": (0.70, 0.51, 0.14, 0.22)}


@dataclass(frozen=True)
class CTPhantom:
    """One synthetic CT volume in canonical RAS+ voxel order (X, Y, Z).

    hu: int16 Hounsfield units. lung: uint8, 1 = left lung, 2 = right lung (effusion excluded).
    labels: uint8; COVID phantoms: 0 background, 1 GGO, 2 consolidation, 3 pleural effusion; nodule
    phantoms: k = the k-th nodule. affine: (4, 4) voxel -> RAS+ mm. truth: JSON-ready known answers.
    """

    hu: np.ndarray
    lung: np.ndarray
    labels: np.ndarray
    affine: np.ndarray
    spacing_mm: tuple[float, float, float]
    truth: dict


@dataclass(frozen=True)
class XrayPhantom:
    """One synthetic frontal chest X-ray: image (H, W) uint8, lung and infection masks (H, W) uint8 {0, 1}."""

    image: np.ndarray
    lung: np.ndarray
    infection: np.ndarray
    label: str
    truth: dict


# ---------------------------------------------------------------------------------------------------
# CT volumes


def _rng(seed: int, *stream: int) -> np.random.Generator:
    """An independent generator per (seed, kind, case), so one case does not depend on the others."""
    return np.random.default_rng([seed, *stream])


def _ellipse(u: np.ndarray, v: np.ndarray, cu: float, cv: float, a, b) -> np.ndarray:
    """bool: inside the ellipse with centre (cu, cv) and half axes (a, b) on normalised grids u, v."""
    return ((u - cu) / a) ** 2 + ((v - cv) / b) ** 2 <= 1.0


def _blur_slices(volume: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian blur of each (H, W) slice of a (Z, H, W) float32 volume."""
    return np.stack([cv2.GaussianBlur(plane, (0, 0), sigma_px) for plane in volume])


def _to_ras(volume: np.ndarray) -> np.ndarray:
    """(Z, rows, cols) display-orientation slices -> (X, Y, Z) canonical RAS+."""
    return from_display(np.moveaxis(volume, 0, -1))


def _spacing(size: int, slices: int) -> tuple[float, float, float]:
    in_plane = FIELD_OF_VIEW_MM / size
    return (in_plane, in_plane, CRANIOCAUDAL_MM / slices)


def _mm_scale(spacing: tuple[float, float, float]) -> np.ndarray:
    """Voxel size along the display axes (slice, row, column) in mm."""
    return np.array([spacing[2], spacing[1], spacing[0]], np.float32)


def _grids(size: int, slices: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normalised grids broadcasting to (Z, H, W): w = slice (0 inferior .. 1), v = row, u = column."""
    centres = (np.arange(size, dtype=np.float32) + 0.5) / size
    w = ((np.arange(slices, dtype=np.float32) + 0.5) / slices)[:, None, None]
    return w, centres[None, :, None], centres[None, None, :]


def _thorax(size: int, slices: int, effusion: dict[str, float]) -> dict[str, np.ndarray]:
    """(Z, H, W) bool regions of the chest: body, fat, spine, right_lung, left_lung, effusion.

    The lungs taper towards the apex. For each side in `effusion` ("left" / "right" -> thickness as a
    fraction of the image width), a posterior crescent at the base, twice that thick at its deepest
    point, is taken from the lung cavity as effusion.
    """
    w, v, u = _grids(size, slices)
    full = np.ones((slices, 1, 1), bool)
    body = _ellipse(u, v, 0.5, 0.52, 0.45, 0.36) & full
    regions = {
        "body": body,
        "fat": body & ~_ellipse(u, v, 0.5, 0.52, 0.42, 0.33),
        "spine": _ellipse(u, v, 0.5, 0.80, 0.05, 0.05) & full,
        "effusion": np.zeros_like(body),
    }
    taper = np.sqrt(np.clip(1.0 - ((w - 0.35) / 0.68) ** 2, 0.0, 1.0))
    for side, (cu, cv, a, b) in LUNG_GEOMETRY.items():
        cavity = _ellipse(u, v, cu, cv, a * taper, b * taper)
        if side in effusion:
            thickness = effusion[side] * np.clip(1.0 - w / 0.4, 0.0, 1.0)
            # same upper edge, lower edge raised by 2 * thickness
            lung_part = _ellipse(u, v, cu, cv - thickness, a * taper, np.maximum(b * taper - thickness, 1e-3))
            crescent = cavity & ~lung_part & (v > cv)
            regions["effusion"] |= crescent
            cavity &= ~crescent
        regions[f"{side}_lung"] = cavity
    return regions


def _window(shape: tuple[int, ...], low: np.ndarray, high: np.ndarray) -> tuple[slice, ...]:
    """The index box [floor(low), ceil(high)] clipped to `shape`."""
    return tuple(
        slice(max(int(np.floor(lo)), 0), min(int(np.ceil(hi)) + 1, n))
        for lo, hi, n in zip(low, high, shape, strict=True)
    )


def _local_coordinates(box: tuple[slice, ...], scale: np.ndarray) -> np.ndarray:
    """(z, r, c, 3) voxel coordinates of a box, multiplied by `scale` (mm)."""
    z, r, c = np.meshgrid(*(np.arange(s.start, s.stop) for s in box), indexing="ij")
    return np.stack([z, r, c], axis=-1).astype(np.float32) * scale


def _tube(
    shape: tuple[int, ...], start: np.ndarray, end: np.ndarray, radius_mm: float, scale: np.ndarray
) -> np.ndarray:
    """(Z, H, W) bool: voxels within `radius_mm` of the segment start-end (voxel coordinates)."""
    margin = radius_mm / scale
    box = _window(shape, np.minimum(start, end) - margin, np.maximum(start, end) + margin)
    offset = _local_coordinates(box, scale) - start * scale
    direction = (end - start) * scale
    t = np.clip(offset @ direction / max(float(direction @ direction), 1e-6), 0.0, 1.0)
    tube = np.zeros(shape, bool)
    tube[box] = np.sum((offset - t[..., None] * direction) ** 2, axis=-1) <= radius_mm**2
    return tube


def _ellipsoid(
    shape: tuple[int, ...], centre: np.ndarray, radii_mm: np.ndarray, scale: np.ndarray
) -> np.ndarray:
    """(Z, H, W) bool: the ellipsoid around a voxel `centre` (slice, row, column) with half axes in mm."""
    box = _window(shape, centre - radii_mm / scale, centre + radii_mm / scale)
    offset = _local_coordinates(box, scale) - centre * scale
    ellipsoid = np.zeros(shape, bool)
    ellipsoid[box] = np.sum((offset / radii_mm) ** 2, axis=-1) <= 1.0
    return ellipsoid


def _vessels(lungs: np.ndarray, scale: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(Z, H, W) bool: 6 tubes per lung (radius 1-2.5 mm) from the hilum to random lung points."""
    slices, size, _ = lungs.shape
    points = np.argwhere(lungs)
    vessels = np.zeros_like(lungs)
    for hilum_column in (0.38 * size, 0.62 * size):
        hilum = np.array([slices * 0.45, size * 0.5, hilum_column], np.float32)
        side = points[(points[:, 2] < size / 2) == (hilum_column < size / 2)]
        for end in side[rng.choice(len(side), size=6)]:
            vessels |= _tube(lungs.shape, hilum, end.astype(np.float32), rng.uniform(1.0, 2.5), scale)
    return vessels & lungs


def _random_ellipsoids(
    inside: np.ndarray,
    count: int,
    radius_mm: tuple[float, float],
    scale: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """(Z, H, W) bool: `count` ellipsoids centred on random voxels of `inside`, clipped to it."""
    points = np.argwhere(inside)
    region = np.zeros_like(inside)
    for centre in points[rng.choice(len(points), size=count)]:
        region |= _ellipsoid(inside.shape, centre.astype(np.float32), rng.uniform(*radius_mm, size=3), scale)
    return region & inside


def _volume_ml(mask: np.ndarray, spacing: tuple[float, float, float]) -> float:
    return round(float(mask.sum()) * spacing[0] * spacing[1] * spacing[2] / 1000.0, 4)


def _anatomy_hu(regions: dict[str, np.ndarray], lungs: np.ndarray) -> np.ndarray:
    """(Z, H, W) float32 HU of air, body, fat, spine and lung parenchyma."""
    hu = np.full(lungs.shape, HU["air"], np.float32)
    for name in ("body", "fat", "spine"):
        hu[regions[name]] = HU["soft_tissue" if name == "body" else "bone" if name == "spine" else name]
    hu[lungs] = HU["lung"]
    return hu


def _finish_hu(hu: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Slight blur (partial volume) and noise; (Z, H, W) float32 -> (X, Y, Z) RAS+ int16."""
    noisy = _blur_slices(hu, 0.6) + rng.normal(0.0, NOISE_HU, hu.shape).astype(np.float32)
    return _to_ras(np.clip(np.rint(noisy), -1024, 3071).astype(np.int16))


def _lung_labels(regions: dict[str, np.ndarray]) -> np.ndarray:
    """(Z, H, W) uint8: 1 = left lung, 2 = right lung."""
    lung = np.zeros(regions["left_lung"].shape, np.uint8)
    lung[regions["left_lung"]] = LEFT_LUNG
    lung[regions["right_lung"]] = RIGHT_LUNG
    return lung


def ct_volume(seed: int = 0, size: int = 128, slices: int = 32, case: int = 0) -> CTPhantom:
    """A COVID-19 chest CT phantom: 1-3 GGOs, 0-2 consolidations (in the lower two thirds of the lungs)
    and, on each side with probability 1/2, a pleural effusion.

    size: in-plane pixels (covering 360 mm); slices: axial slices (covering 300 mm).
    truth["lesion_ml"] holds each manifestation's volume counted from the returned label map.
    """
    rng = _rng(seed, 1, case)
    spacing = _spacing(size, slices)
    scale = _mm_scale(spacing)
    effusion = {side: rng.uniform(0.015, 0.04) for side in LUNG_GEOMETRY if rng.random() < 0.5}
    regions = _thorax(size, slices, effusion)
    lungs = regions["right_lung"] | regions["left_lung"]
    vessels = _vessels(lungs, scale, rng)
    lower_lungs = lungs & (_grids(size, slices)[0] < 2 / 3)
    ggo = _random_ellipsoids(lower_lungs, int(rng.integers(1, 4)), (10.0, 25.0), scale, rng) & lungs
    consolidation = _random_ellipsoids(lower_lungs, int(rng.integers(0, 3)), (6.0, 15.0), scale, rng)

    hu = _anatomy_hu(regions, lungs)
    # GGO: a hazy rise of the parenchyma with blurred edges that leaves the vessels visible
    hu += _blur_slices(ggo.astype(np.float32), 1.5) * lungs * (HU["ggo"] - HU["lung"])
    hu[vessels] = np.maximum(hu[vessels], HU["vessel"])
    hu[consolidation] = HU["consolidation"]
    hu[regions["effusion"]] = HU["effusion"]

    labels = np.zeros(lungs.shape, np.uint8)
    labels[ggo] = LABEL_VALUES["ggo"]
    labels[consolidation] = LABEL_VALUES["consolidation"]
    labels[regions["effusion"]] = LABEL_VALUES["effusion"]
    lung = _lung_labels(regions)
    truth = {
        "shape_xyz": [size, size, slices],
        "spacing_mm": list(spacing),
        "lesion_ml": {name: _volume_ml(labels == value, spacing) for name, value in LABEL_VALUES.items()},
        "infection_ml": _volume_ml(ggo | consolidation, spacing),
        "lung_ml": {
            "left": _volume_ml(lung == LEFT_LUNG, spacing),
            "right": _volume_ml(lung == RIGHT_LUNG, spacing),
        },
    }
    return CTPhantom(
        _finish_hu(hu, rng), _to_ras(lung), _to_ras(labels), np.diag([*spacing, 1.0]), spacing, truth
    )


def nodule_volume(seed: int = 0, size: int = 128, slices: int = 32, case: int = 0) -> CTPhantom:
    """A chest CT phantom without COVID-19 lesions, with 1-2 solid nodules (spheres of 5-12 mm radius,
    50 HU) in the lungs; labels: k = the k-th nodule. truth["nodules"]: centre (X, Y, Z voxel),
    radius in mm and volume in mL of each."""
    rng = _rng(seed, 4, case)
    spacing = _spacing(size, slices)
    scale = _mm_scale(spacing)
    regions = _thorax(size, slices, {})
    lungs = regions["right_lung"] | regions["left_lung"]
    hu = _anatomy_hu(regions, lungs)
    hu[_vessels(lungs, scale, rng)] = HU["vessel"]
    labels = np.zeros(lungs.shape, np.uint8)
    nodules = []
    points = np.argwhere(lungs)
    for number, centre in enumerate(points[rng.choice(len(points), size=int(rng.integers(1, 3)))], start=1):
        radius = float(rng.uniform(5.0, 12.0))
        sphere = _ellipsoid(lungs.shape, centre.astype(np.float32), np.full(3, radius), scale) & lungs
        sphere &= labels == 0
        labels[sphere] = number
        hu[sphere] = HU["nodule"]
        z, row, column = (int(i) for i in centre)
        nodules.append(
            {
                "centre_xyz": [size - 1 - column, size - 1 - row, z],
                "radius_mm": round(radius, 3),
                "ml": _volume_ml(sphere, spacing),
            }
        )
    truth = {"shape_xyz": [size, size, slices], "spacing_mm": list(spacing), "nodules": nodules}
    lung = _lung_labels(regions)
    return CTPhantom(
        _finish_hu(hu, rng), _to_ras(lung), _to_ras(labels), np.diag([*spacing, 1.0]), spacing, truth
    )


# ---------------------------------------------------------------------------------------------------
# Chest X-rays


def chest_xray(seed: int = 0, label: str = "COVID-19", size: int = 256, case: int = 0) -> XrayPhantom:
    """A frontal chest X-ray phantom in display convention (lungs dark, bone and soft tissue bright).

    "COVID-19": 2-5 patchy opacities in the peripheral lower lung zones of both lungs, infection mask =
    where they are dense; "Non-COVID": one dense unilateral upper-zone (lobar) opacity, infection mask
    empty (as in COVID-QU-Ex, where only COVID-19 images are annotated); "Normal": clear lungs.
    """
    if label not in XRAY_CLASSES:
        raise ValueError(f"unknown X-ray class {label!r}; expected one of {XRAY_CLASSES}")
    rng = _rng(seed, 3, XRAY_CLASSES.index(label), case)
    centres = (np.arange(size, dtype=np.float32) + 0.5) / size
    v, u = np.meshgrid(centres, centres, indexing="ij")
    body = _ellipse(u, v, 0.5, 0.62, 0.47, 0.58)
    heart = _ellipse(u, v, 0.55, 0.64, 0.13, 0.15)
    lung = np.zeros_like(body)
    for cu, cv, a, b in LUNG_GEOMETRY.values():
        lung |= _ellipse(u, v, cu, cv - 0.02, a * 1.05, b * 1.2) & ~heart
    image = np.where(body, 150.0, 12.0).astype(np.float32)
    image[lung] = 55.0 + 30.0 * v[lung]  # denser towards the diaphragm
    image += 28.0 * ((np.sin(2 * np.pi * 11.0 * (v + 0.35 * (u - 0.5) ** 2)) > 0.6) & body)  # ribs
    image += 40.0 * ((np.abs(u - 0.5) < 0.035) & body)  # spine
    image[heart] = np.maximum(image[heart], 175.0)

    opacity = np.zeros((size, size), np.float32)
    blobs = []
    if label == "COVID-19":
        for _ in range(int(rng.integers(2, 6))):
            side = ("right", "left")[int(rng.integers(0, 2))]
            cu, cv, a, b = LUNG_GEOMETRY[side]
            lateral = -1.0 if side == "right" else 1.0
            blob = (
                cu + lateral * a * rng.uniform(0.4, 0.8),
                cv + b * rng.uniform(0.0, 0.7),
                rng.uniform(0.03, 0.06),
            )
            opacity += np.exp(-((u - blob[0]) ** 2 + (v - blob[1]) ** 2) / (2 * blob[2] ** 2))
            blobs.append(
                {"centre_uv": [round(float(x), 4) for x in blob[:2]], "sigma": round(float(blob[2]), 4)}
            )
        opacity = np.clip(opacity, 0.0, 1.0) * lung
    elif label == "Non-COVID":
        side = ("right", "left")[int(rng.integers(0, 2))]
        cu, cv, a, b = LUNG_GEOMETRY[side]
        lobe = _ellipse(u, v, cu, cv - 0.5 * b, a * 0.9, b * 0.45) & lung
        opacity = cv2.GaussianBlur(lobe.astype(np.float32), (0, 0), size / 128.0)
        blobs.append({"lobe": f"{side} upper"})
    image += 75.0 * opacity
    infection = (opacity > 0.4) & lung if label == "COVID-19" else np.zeros_like(lung)
    image = cv2.GaussianBlur(image, (0, 0), size / 256.0) + rng.normal(0.0, 4.0, image.shape).astype(
        np.float32
    )
    truth = {
        "label": label,
        "lung_px": int(lung.sum()),
        "infection_px": int(infection.sum()),
        "opacities": blobs,
    }
    return XrayPhantom(
        np.clip(np.rint(image), 0, 255).astype(np.uint8),
        lung.astype(np.uint8),
        infection.astype(np.uint8),
        label,
        truth,
    )


# ---------------------------------------------------------------------------------------------------
# Writers in the published layouts


def _write_png(path: Path, image: np.ndarray) -> None:
    """PNG via cv2.imencode (paths with spaces and parentheses are fine)."""
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise RuntimeError(f"cv2 could not encode {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encoded.tobytes())


def _write_npz(path: Path, **arrays: np.ndarray) -> None:
    """A compressed .npz with fixed zip timestamps, so equal arrays give equal bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for key, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.asanyarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, buffer.getvalue())


def _write_volume(path: Path, array: np.ndarray, affine: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_nifti(path, array, affine)


def _mask_png(mask: np.ndarray) -> np.ndarray:
    return (mask > 0).astype(np.uint8) * 255


def write_zenodo(root: Path, seed: int, n_cases: int, size: int, slices: int, progress: bool = False) -> dict:
    """Zenodo 3757476 layout: `COVID-19-CT-Seg_20cases/phantom_<k>.nii.gz` (int16 HU) and masks of the
    same name in `Lung_Mask/` (1 left, 2 right), `Infection_Mask/` (GGO + consolidation) and
    `Lung_and_Infection_Mask/` (1, 2 lungs, 3 infection). No effusion label (the set has none)."""
    truth = {}
    for case in tqdm(range(n_cases), desc="zenodo phantoms", disable=not progress):
        name = f"phantom_{case + 1:03d}"
        phantom = ct_volume(seed, size, slices, case)
        infection = ((phantom.labels == 1) | (phantom.labels == 2)).astype(np.uint8)
        combined = np.where(infection > 0, 3, phantom.lung).astype(np.uint8)
        for folder, array in (
            ("COVID-19-CT-Seg_20cases", phantom.hu),
            ("Lung_Mask", phantom.lung),
            ("Infection_Mask", infection),
            ("Lung_and_Infection_Mask", combined),
        ):
            _write_volume(root / folder / f"{name}.nii.gz", array, phantom.affine)
        truth[name] = phantom.truth
    return truth


def _lesion_slices(phantom: CTPhantom, count: int) -> list[int]:
    """Up to `count` slice indices (axis 2) with lesions, evenly spread over the lesion slices."""
    with_lesions = np.flatnonzero(phantom.labels.any(axis=(0, 1)))
    if len(with_lesions) == 0:
        return []
    picks = np.linspace(0, len(with_lesions) - 1, num=min(count, len(with_lesions))).round().astype(int)
    return sorted({int(with_lesions[i]) for i in picks})


def write_medseg(root: Path, seed: int, n_cases: int, size: int, slices: int, progress: bool = False) -> dict:
    """MedSeg "COVID-19 CT segmentation" layout: whole volumes `rp_im/<k>.nii.gz`, `rp_msk/<k>.nii.gz`
    (1 GGO, 2 consolidation, 3 effusion), `rp_lung_msk/<k>.nii.gz` (1 = lung) for n phantoms;
    `tr_im.nii.gz` / `tr_mask.nii.gz`: up to 4 lesion slices of each of n more phantoms stacked on
    axis 2; `val_im.nii.gz`: up to n unlabelled lesion slices of one more phantom."""
    truth: dict = {"rp": {}, "tr_slices": [], "val_slices": []}
    stacks: dict[str, list[np.ndarray]] = {"tr_im": [], "tr_mask": [], "val_im": []}
    for case in tqdm(range(2 * n_cases + 1), desc="medseg phantoms", disable=not progress):
        phantom = ct_volume(seed, size, slices, 1000 + case)
        if case < n_cases:
            name = str(case + 1)
            lung = (phantom.lung > 0).astype(np.uint8)
            for folder, array in (("rp_im", phantom.hu), ("rp_msk", phantom.labels), ("rp_lung_msk", lung)):
                _write_volume(root / folder / f"{name}.nii.gz", array, phantom.affine)
            truth["rp"][name] = phantom.truth
        elif case < 2 * n_cases:
            for k in _lesion_slices(phantom, 4):
                stacks["tr_im"].append(phantom.hu[:, :, k])
                stacks["tr_mask"].append(phantom.labels[:, :, k])
                truth["tr_slices"].append({"phantom": case, "slice": k})
        else:
            for k in _lesion_slices(phantom, n_cases):
                stacks["val_im"].append(phantom.hu[:, :, k])
                truth["val_slices"].append({"phantom": case, "slice": k})
    affine = np.diag([*_spacing(size, slices)[:2], 1.0, 1.0])  # stacked unrelated slices: no z spacing
    for name, stack in stacks.items():
        _write_volume(root / f"{name}.nii.gz", np.stack(stack, axis=-1), affine)
    return truth


XRAY_SPLITS = {"Train": 2, "Val": 1, "Test": 1}  # split folder -> images per class per `n_cases`


def write_covid_qu_ex(root: Path, seed: int, n_cases: int, size: int, progress: bool = False) -> dict:
    """COVID-QU-Ex layout: `Infection Segmentation Data/<Train|Val|Test>/<class>/{images,lung masks,
    infection masks}/phantom_<class>_<k>.png` ({0, 255} masks); Train 2n, Val n, Test n per class."""
    truth = {}
    jobs = [
        (split, label, k)
        for split, per in XRAY_SPLITS.items()
        for label in XRAY_CLASSES
        for k in range(per * n_cases)
    ]
    for number, (split, label, k) in enumerate(tqdm(jobs, desc="covid_qu_ex phantoms", disable=not progress)):
        phantom = chest_xray(seed, label, size, case=number)
        folder = root / "Infection Segmentation Data" / split / label
        name = f"phantom_{label.lower().replace('-', '')}_{k + 1:03d}.png"
        _write_png(folder / "images" / name, phantom.image)
        _write_png(folder / "lung masks" / name, _mask_png(phantom.lung))
        _write_png(folder / "infection masks" / name, _mask_png(phantom.infection))
        truth[f"{split}/{label}/{name}"] = phantom.truth
    return truth


def write_image_folder(
    root: Path, seed: int, n_cases: int, size: int, slices: int, progress: bool = False
) -> dict:
    """CT classification layout (one folder per class, as the shared CT set): `COVID/` holds lung-window
    PNG slices with lesions and `NonCOVID/` slices without, from 2n phantom volumes (even cases give
    COVID slices, odd cases lesion-free ones); `files.csv` gives each phantom volume as the patient."""
    truth, rows = {}, ["file,label,source_group,ucsd_patient_id"]
    for case in tqdm(range(2 * n_cases), desc="image_folder phantoms", disable=not progress):
        phantom = ct_volume(seed, size, slices, 2000 + case)
        covid = case % 2 == 0
        label = "COVID" if covid else "NonCOVID"
        lesion_slices = set(np.flatnonzero(phantom.labels.any(axis=(0, 1))).tolist())
        lung_slices = np.flatnonzero(phantom.lung.any(axis=(0, 1)))
        chosen = [k for k in lung_slices if (k in lesion_slices) == covid][:4]
        for k in chosen:
            name = f"phantom_{case + 1:03d}_{k:03d}.png"
            image = window_hu(to_display(phantom.hu[:, :, k]), preset="lung")
            _write_png(root / label / name, image)
            rows.append(f"{label}/{name},{label},phantom,{case + 1}")
        truth[f"case_{case + 1:03d}"] = {"label": label, "slices": [int(k) for k in chosen]}
    (root / "files.csv").write_text("\n".join(rows) + "\n")
    return truth


def _lidc_slice_image(hu_slice: np.ndarray, lung_slice: np.ndarray) -> np.ndarray:
    """The LIDC-IDRI-Preprocessing look: (HU + 850) / 300 inside the lungs (parenchyma ~0, vessels and
    nodules ~3), 0 outside; float32."""
    return np.where(lung_slice > 0, (hu_slice.astype(np.float32) + 850.0) / 300.0, 0.0).astype(np.float32)


def write_lidc(root: Path, seed: int, n_cases: int, size: int, slices: int, progress: bool = False) -> dict:
    """LIDC-IDRI-Preprocessing layout (as in the shared subset): per patient `LIDC-IDRI-9<nnn>` (9xxx: no
    real LIDC id), `Image/<patient>/<id>_NI<nodule>_slice<s>.npz` (key "image", float32),
    `Mask/<patient>/<id>_MA<nodule>_slice<s>.png` ({0, 255}) for every slice through a nodule, and
    `meta_info_subset.csv`."""
    truth, meta = (
        {},
        ["patient_id,nodule_no,slice_no,original_image,mask_image,malignancy,is_cancer,is_clean"],
    )
    for case in tqdm(range(n_cases), desc="lidc phantoms", disable=not progress):
        pid = f"{9001 + case:04d}"
        folder = f"LIDC-IDRI-{pid}"
        phantom = nodule_volume(seed, size, 4 * slices, case)  # thin slices, as in LIDC
        malignancy = [int(m) for m in _rng(seed, 5, case).integers(1, 6, size=len(phantom.truth["nodules"]))]
        for nodule, rating in enumerate(malignancy):
            nodule_mask = phantom.labels == nodule + 1
            cancer = "True" if rating > 3 else "Ambiguous" if rating == 3 else "False"
            for number, k in enumerate(np.flatnonzero(nodule_mask.any(axis=(0, 1)))):
                stem = f"{pid}_NI{nodule:03d}_slice{number:03d}"
                mask_stem = stem.replace("_NI", "_MA")
                image = _lidc_slice_image(to_display(phantom.hu[:, :, k]), to_display(phantom.lung[:, :, k]))
                _write_npz(root / "Image" / folder / f"{stem}.npz", image=image)
                _write_png(
                    root / "Mask" / folder / f"{mask_stem}.png", _mask_png(to_display(nodule_mask[:, :, k]))
                )
                meta.append(
                    f"{pid},{nodule},{number:03d},{folder}/{stem},{folder}/{mask_stem},{rating},{cancer},False"
                )
            phantom.truth["nodules"][nodule]["malignancy"] = rating
        truth[folder] = phantom.truth
    (root / "meta_info_subset.csv").write_text("\n".join(meta) + "\n")
    return truth


# ---------------------------------------------------------------------------------------------------
# generate


def _readme(kind: str, seed: int, n_cases: int, size: int, slices: int) -> str:
    return (
        f"# SYNTHETIC PHANTOM: {kind}\n\n"
        "Generated by `data_prep.phantoms` (`python -m data_prep phantom`). These are SYNTHETIC images, not\n"
        "patient data: simple geometric chests with known masks, laid out like the published dataset so the\n"
        "real adapter reads them. Do not use them to claim anything about real scans.\n\n"
        f"seed={seed} cases={n_cases} size={size} slices={slices}\n\n"
        f"`{TRUTH_FILE}` holds the known answers (lesion volumes in mL, labels, nodule sizes).\n"
    )


def _write_kind(
    kind: str, root: Path, seed: int, n_cases: int, size: int, slices: int, progress: bool
) -> dict:
    """Runs the writer of one kind into `root`; returns its truth record."""
    if kind == "covid_qu_ex":
        return write_covid_qu_ex(root, seed, n_cases, size, progress)
    writer = {
        "zenodo": write_zenodo,
        "medseg": write_medseg,
        "lidc": write_lidc,
        "image_folder": write_image_folder,
    }[kind]
    return writer(root, seed, n_cases, size, slices, progress)


def generate(
    out_dir: str | Path,
    kinds: Sequence[str] = KINDS,
    n_cases: int = 2,
    seed: int = 0,
    size: int | None = None,
    slices: int = 32,
    overwrite: bool = False,
    progress: bool = False,
) -> dict[str, Path]:
    """Writes one dataset root per kind, `out_dir/<kind>/`, in that dataset's published layout.

    n_cases: CT volumes (zenodo; medseg rp volumes, with as many more for tr_im slices), LIDC patients,
    and X-rays per class (Train 2n, Val n, Test n). size: in-plane pixels (None: 128 for CT, 256 for
    X-rays). Each root is written in a temporary folder and renamed into place; an existing root is a
    DataError unless `overwrite`. Returns kind -> root.
    """
    unknown = [kind for kind in kinds if kind not in KINDS]
    if unknown:
        raise ValueError(f"unknown phantom kinds {unknown}; known: {', '.join(KINDS)}")
    if n_cases < 1 or slices < 4 or (size is not None and size < 32):
        raise ValueError(f"need n_cases >= 1, slices >= 4 and size >= 32; got {n_cases}, {slices}, {size}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    roots = {}
    for kind in kinds:
        root = out_dir / kind
        if root.exists() and not overwrite:
            raise DataError(root, "already exists; remove it or pass overwrite (--force)")
        kind_size = size or DEFAULT_SIZES[kind]
        with atomic_path(root) as temporary:
            temporary.mkdir()
            truth = _write_kind(kind, temporary, seed, n_cases, kind_size, slices, progress)
            (temporary / MARKER_FILE).write_text(
                f"SYNTHETIC PHANTOM generated by data_prep.phantoms (seed={seed})\n"
            )
            (temporary / "README.md").write_text(_readme(kind, seed, n_cases, kind_size, slices))
            record = {
                "synthetic": True,
                "kind": kind,
                "seed": seed,
                "n_cases": n_cases,
                "size": kind_size,
                "slices": slices,
                "hu": HU,
                "cases": truth,
            }
            (temporary / TRUTH_FILE).write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
            if root.exists():
                shutil.rmtree(root)  # os.replace does not replace a folder
        roots[kind] = root
    return roots


def is_synthetic(root: str | Path) -> bool:
    """True when a dataset root carries the phantom marker file (adapters set `Record.synthetic` from it)."""
    return (Path(root) / MARKER_FILE).is_file()
