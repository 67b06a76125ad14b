"""S0 specialized streams: one binary segmenter per manifestation, gated by the recogniser.

A stream runs on a slice only when the multi-label recogniser's probability for its manifestation
reaches that manifestation's threshold (chosen on validation). The combiner merges the streams into
one label map with a stated overlap rule: a pixel takes the manifestation whose stream probability
is highest among the streams at or above their pixel threshold; ties go to the earlier manifestation
in `MANIFESTATION_ORDER`; a pixel no stream claims is background (0).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import keras
import numpy as np

from experiments.pipelines.flops import model_flops

# Label-map values follow MedSeg: 1 = GGO, 2 = consolidation, 3 = pleural effusion.
MANIFESTATION_ORDER = ("ggo", "consolidation", "effusion")


@dataclass
class StreamsOutput:
    """label_map: (N, H, W) uint8 in {0, 1, 2, 3}; ran: manifestation -> (N,) bool (stream ran);
    seconds: wall time of recogniser + streams; flops: counted FLOPs of what ran."""

    label_map: np.ndarray
    ran: dict[str, np.ndarray]
    seconds: float
    flops: int


def combine_streams(probabilities: dict[str, np.ndarray], pixel_thresholds: dict[str, float]) -> np.ndarray:
    """Merges per-manifestation probability maps (N, H, W) into one label map (N, H, W) uint8."""
    names = [name for name in MANIFESTATION_ORDER if name in probabilities]
    stacked = np.stack([probabilities[name] for name in names])  # (S, N, H, W)
    claimed = stacked >= np.array([pixel_thresholds[name] for name in names])[:, None, None, None]
    scores = np.where(claimed, stacked, -1.0)
    winner = np.argmax(scores, axis=0)  # first maximum wins ties
    values = np.array([MANIFESTATION_ORDER.index(name) + 1 for name in names], dtype=np.uint8)
    return np.where(claimed.any(axis=0), values[winner], 0).astype(np.uint8)


@dataclass
class GatedStreams:
    """recogniser: (N, H, W, C) -> (N, M) sigmoid over `manifestations`;
    streams: manifestation -> binary segmenter (N, H, W, C) -> (N, H, W, 1)."""

    recogniser: keras.Model
    streams: dict[str, keras.Model]
    manifestations: tuple[str, ...]
    gate_thresholds: dict[str, float]
    pixel_thresholds: dict[str, float] = field(default_factory=dict)
    batch_size: int = 8

    def __post_init__(self) -> None:
        self.pixel_thresholds = {name: self.pixel_thresholds.get(name, 0.5) for name in self.streams}
        self._flops = {name: model_flops(model) for name, model in self.streams.items()}
        self._recogniser_flops = model_flops(self.recogniser)

    def gates(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """manifestation -> (N,) bool: the recogniser says it is present."""
        scores = self.recogniser.predict(images, batch_size=self.batch_size, verbose=0)
        return {
            name: scores[:, self.manifestations.index(name)] >= self.gate_thresholds[name]
            for name in self.streams
        }

    def predict(self, images: np.ndarray, gated: bool = True) -> StreamsOutput:
        """Segments (N, H, W, C) images; with `gated=False` every stream runs on every slice."""
        start = time.perf_counter()
        count = len(images)
        if gated:
            ran = self.gates(images)
            flops = count * self._recogniser_flops
        else:
            ran = {name: np.ones(count, dtype=bool) for name in self.streams}
            flops = 0
        probabilities = {}
        for name, model in self.streams.items():
            maps = np.zeros(images.shape[:3], dtype=np.float32)
            selected = np.flatnonzero(ran[name])
            if selected.size:
                maps[selected] = model.predict(images[selected], batch_size=self.batch_size, verbose=0)[
                    ..., 0
                ]
            probabilities[name] = maps
            flops += int(selected.size) * self._flops[name]
        label_map = combine_streams(probabilities, self.pixel_thresholds)
        return StreamsOutput(label_map, ran, time.perf_counter() - start, flops)
