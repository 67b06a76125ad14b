"""Stand-ins for trained segmenters and a volume whose every predicted voxel is known (report tests).

The phantom's display values encode the classes (background 5-20, lung 90-110, lesions inside the
lungs 170-190, a lesion outside the lungs 225-245); the lung model takes 70-210 (lung and the lesions
inside it), the infection model everything above 150. `display_to_hu` gives the same volume in HU.
"""

import json

import keras
import numpy as np
from keras import layers

from data_prep.preprocess import HU_WINDOWS
from experiments.pipelines.report import OUTSIDE_LUNGS_OFFSET

SHAPE = (40, 32, 6)  # canonical (X, Y, Z); display slices are (32, 40)
SPACING = (0.8, 0.8, 2.5)
VOXEL_ML = 0.8 * 0.8 * 2.5 / 1000
LPS = np.diag([-0.8, -0.8, 2.5, 1.0])  # stored voxel (i, j, k) -> patient left / posterior grows with i / j
# Hand counts of `encoded_volume`
RIGHT_LUNG, LEFT_LUNG = 14 * 20 * 4, 12 * 20 * 4  # 1120, 960 voxels
RIGHT_LESION, LEFT_LESION, OUTSIDE_LESION = 6 * 4 * 2, 2 * 4 * 1, 3 * 4 * 3  # 48, 8, 36 voxels


def encoded_volume(seed: int = 0) -> dict[str, np.ndarray]:
    """Canonical RAS+ display-value volume ("image", uint8) and its hand-made masks (bool)."""
    rng = np.random.default_rng(seed)
    masks = {
        name: np.zeros(SHAPE, bool) for name in ("right", "left", "right_lesion", "left_lesion", "outside")
    }
    masks["right"][22:36, 6:26, 1:5] = True  # RAS+: high x = the patient's right
    masks["left"][4:16, 6:26, 1:5] = True
    masks["right_lesion"][24:30, 10:14, 2:4] = True
    masks["left_lesion"][6:8, 8:12, 1:2] = True
    masks["outside"][17:20, 20:24, 2:5] = True  # between the lungs
    image = rng.integers(5, 21, SHAPE)
    image[masks["right"] | masks["left"]] = rng.integers(90, 111, SHAPE)[masks["right"] | masks["left"]]
    lesions = masks["right_lesion"] | masks["left_lesion"]
    image[lesions] = rng.integers(170, 191, SHAPE)[lesions]
    image[masks["outside"]] = rng.integers(225, 246, SHAPE)[masks["outside"]]
    return {"image": image.astype(np.uint8), **masks}


def display_to_hu(display: np.ndarray) -> np.ndarray:
    """The lung window's inverse, clipped at -1024 HU (air as scanners store it; display 55): HU that
    `window_hu(preset="lung")` maps back to (about) `display`."""
    center, width = HU_WINDOWS["lung"]
    return np.maximum(np.rint(display / 255.0 * width + center - width / 2), -1024).astype(np.int16)


def band_network(low: float, high: float, size: tuple[int, int] = (SHAPE[1], SHAPE[0])) -> keras.Model:
    """(B, H, W, 1) in [0, 1] -> about 1 where low < x < high, else about 0 (two steep sigmoids, ANDed),
    from plain layers so that it saves and loads as a `.keras` file."""
    inputs = keras.Input((*size, 1))
    edges = layers.Conv2D(2, 1, activation="sigmoid")(inputs)
    both = layers.Conv2D(1, 1)(edges)
    model = keras.Model(inputs, both)
    model.layers[1].set_weights([np.array([[[[1000.0, -1000.0]]]]), np.array([-1000 * low, 1000 * high])])
    model.layers[2].set_weights([np.ones((1, 1, 2, 1)), np.array([-1.0])])
    return model


def save_band_model(
    folder, channel: str, low: float, high: float, size: tuple[int, int] = (SHAPE[1], SHAPE[0])
):
    """A model bundle as training leaves one: `best.keras` and `config.json` (no threshold.json: 0.5)."""
    folder.mkdir(parents=True, exist_ok=True)
    band_network(low, high, size).save(folder / "best.keras")
    (folder / "config.json").write_text(json.dumps({"channel_names": [channel]}))
    return folder / "best.keras"


def expected_masks(volume: dict) -> tuple[np.ndarray, np.ndarray]:
    """Canonical (lung labels 1 left / 2 right, infection labels 1 inside / 11 outside) as the report writes."""
    lung = volume["left"] * 1 + volume["right"] * 2
    infection = (volume["right_lesion"] | volume["left_lesion"]) * 1 + volume["outside"] * (
        OUTSIDE_LUNGS_OFFSET + 1
    )
    return lung.astype(np.uint8), infection.astype(np.uint8)


def nan_volume() -> np.ndarray:
    array = encoded_volume()["image"].astype(np.float32)
    array[:6, :, 0] = np.nan  # 6 x 32 voxels
    return array
