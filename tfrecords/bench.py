"""Input-pipeline measurements, run by `python -m experiments bench` (the one benchmark command).

On the same images (the "train" split) at one size, images/s of:
- "tf.data from the image files": read, decode, resize, batch;
- "cv2 loop (seed notebooks)": `cv2.imread` + `cv2.resize` into a list, then `np.array(float32) / 255`;
- "TFRecord <storage>, first pass": this package's records (resized at write time) read by
  `make_dataset` without a cache, so every pass parses and decodes, as the first epoch over a set
  too big for the cache does; storages PNG, raw, raw+ZLIB (`STORAGES`);
- "TFRecord raw, cached": `cache=True`, the passes after the first.
Each figure is over `repeats` timed passes after one warm-up pass, the variants taking turns. A
pass is timed from iterator creation to its last batch; the iterator teardown (where tf.data's
autotuner can stall, see RUNTIME.md) is timed apart. Disk size: shard bytes per 1,000 records.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import tensorflow as tf

from data_prep.phantoms import generate
from tfrecords.read_config import ReadConfig
from tfrecords.reader import make_dataset, read_examples
from tfrecords.writer import write_dataset

REAL_SET = ("image_folder", "ct-covid-classification")
# Storage name -> (encoding, compression) of `write_dataset`.
STORAGES = {"PNG": ("png", ""), "raw": ("raw", ""), "raw+ZLIB": ("raw", "ZLIB"), "raw+GZIP": ("raw", "GZIP")}
TIMED_STORAGES = ("PNG", "raw", "raw+ZLIB")
SPLIT = "train"


@dataclass(frozen=True)
class Timing:
    """Images per second of each timed pass, and the iterator teardown times in seconds."""

    rates: list[float]
    teardowns: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.rates)


@dataclass(frozen=True)
class PipelineResult:
    """timings: variant -> Timing; bytes_per_1000: storage -> shard bytes per 1,000 records."""

    source: str
    images: int
    size: int
    timings: dict[str, Timing]
    bytes_per_1000: dict[str, float]


def _dataset_pass(dataset: tf.data.Dataset) -> tuple[float, float]:
    """(seconds from iterator creation to the last batch, seconds to destroy the iterator)."""
    start = time.perf_counter()
    iterator = iter(dataset)
    for _ in iterator:
        pass
    elapsed = time.perf_counter() - start
    start = time.perf_counter()
    del iterator
    return elapsed, time.perf_counter() - start


def _loop_pass(load: Callable[[], np.ndarray]) -> tuple[float, None]:
    start = time.perf_counter()
    load()
    return time.perf_counter() - start, None


def _time_round_robin(
    passes: dict[str, Callable[[], tuple[float, float | None]]], images: int, repeats: int
) -> dict[str, Timing]:
    """One warm-up pass of each variant, then `repeats` rounds that time every variant once (so that
    a change in machine load hits all variants alike)."""
    for run in passes.values():
        run()
    rates: dict[str, list[float]] = {name: [] for name in passes}
    teardowns: dict[str, list[float]] = {name: [] for name in passes}
    for _ in range(repeats):
        for name, run in passes.items():
            elapsed, teardown = run()
            rates[name].append(images / elapsed)
            if teardown is not None:
                teardowns[name].append(teardown)
    return {name: Timing(rates[name], teardowns[name]) for name in passes}


def _notebook_loop(paths: list[str], size: int) -> np.ndarray:
    """The seed notebooks' loader: BGR imread, resize, list, then a float32 array scaled to [0, 1]."""
    images = [cv2.resize(cv2.imread(path), (size, size)) for path in paths]
    return np.array(images, dtype=np.float32) / 255.0


def _files_dataset(paths: list[str], size: int, batch_size: int) -> tf.data.Dataset:
    def load(path: tf.Tensor) -> tf.Tensor:
        image = tf.io.decode_image(tf.io.read_file(path), channels=1, expand_animations=False)
        return tf.image.resize(tf.cast(image, tf.float32) / 255.0, (size, size))

    files = tf.data.Dataset.from_tensor_slices(paths)
    return files.map(load, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size).prefetch(tf.data.AUTOTUNE)


def pipeline_source(data: Path, work: Path, phantom_cases: int | None = None) -> tuple[str, Path, str]:
    """(adapter, root, description): the real CT classification subset under `data`, else (or when
    `phantom_cases` is given) SYNTHETIC CT phantom slices of 2 x `phantom_cases` volumes (4 each)."""
    adapter, folder = REAL_SET
    if phantom_cases is None and (data / folder).is_dir():
        return adapter, data / folder, f"{folder} (real CT JPEGs, <= 320 px)"
    cases = phantom_cases or 60
    root = generate(work / "phantoms", kinds=["image_folder"], n_cases=cases)["image_folder"]
    return "image_folder", root, "SYNTHETIC CT phantom slices (PNG, 128 px)"


def measure_pipeline(
    source: tuple[str, Path, str], work: Path, size: int, repeats: int, batch_size: int
) -> PipelineResult:
    """Writes the source once per storage at `size` px and times every variant on its "train" split."""
    adapter, root, description = source
    outs = {}
    for name, (encoding, compression) in STORAGES.items():
        outs[name] = work / f"records-{size}-{name}"
        write_dataset(adapter, root, outs[name], image_size=size, encoding=encoding, compression=compression)
    paths = [example["path"] for example in read_examples(outs["raw"], SPLIT)]
    count = len(paths)
    datasets = {"tf.data from the image files": _files_dataset(paths, size, batch_size)}
    for name in TIMED_STORAGES:
        datasets[f"TFRecord {name}, first pass"] = make_dataset(
            outs[name], ReadConfig(SPLIT, "classification", batch_size)
        )
    datasets["TFRecord raw, cached"] = make_dataset(
        outs["raw"], ReadConfig(SPLIT, "classification", batch_size, cache=True)
    )
    passes = {name: functools.partial(_dataset_pass, dataset) for name, dataset in datasets.items()}
    passes["cv2 loop (seed notebooks)"] = functools.partial(_loop_pass, lambda: _notebook_loop(paths, size))
    timings = _time_round_robin(passes, count, repeats)
    sizes = {}
    for name, out in outs.items():
        shards = [path.stat().st_size for path in out.glob(f"{SPLIT}-*.tfrecord")]
        sizes[name] = 1000 * sum(shards) / count
    return PipelineResult(description, count, size, timings, sizes)
