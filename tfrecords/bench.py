"""Input-pipeline benchmark: `python -m tfrecords.bench [--data DIR] [--sizes 299 256] [--repeats 5]`.

Reads the same images four ways and prints images/s (median and min over `--repeats` timed passes,
after one warm-up pass) as a markdown table:
(a) this package's TFRecords (written once, resized at write time) with `cache=True`, and the same
    without the cache (every pass decodes the stored PNGs);
(b) tf.data straight from the image files: read, decode, resize, batch;
(c) the seed notebooks' plain Python loop: `cv2.imread` + `cv2.resize` into a list, then
    `np.array(float32) / 255`;
(d) decode only: `tf.io.decode_image` of the files' bytes, already in memory, at their stored size.
A pass is timed from iterator creation to its last batch; destroying the iterator (where tf.data's
autotuner can stall, see RUNTIME.md) is timed separately and reported as teardown.
Data: the ct-covid-classification subset ("train" split of a patient-wise split), or synthetic X-ray
phantoms when it is absent.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import tensorflow as tf

from data_prep.phantoms import generate
from tfrecords.reader import make_dataset, read_examples
from tfrecords.writer import write_dataset

DEFAULT_DATA = Path(os.environ.get("COVID_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))
REAL_SET = ("image_folder", "ct-covid-classification")
PHANTOM_CASES = 60  # X-rays per class (x 4 over the splits): 720 phantom images


@dataclass(frozen=True)
class Timing:
    """Images per second of each timed pass, and the iterator teardown times in seconds."""

    rates: list[float]
    teardowns: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.rates)

    @property
    def minimum(self) -> float:
        return min(self.rates)


def _time_dataset(dataset: tf.data.Dataset, images: int, repeats: int) -> Timing:
    """One warm-up pass, then `repeats` timed passes over a finite dataset."""
    rates, teardowns = [], []
    for repeat in range(repeats + 1):
        start = time.perf_counter()
        iterator = iter(dataset)
        for _ in iterator:
            pass
        elapsed = time.perf_counter() - start
        start = time.perf_counter()
        del iterator
        if repeat:
            teardowns.append(time.perf_counter() - start)
            rates.append(images / elapsed)
    return Timing(rates, teardowns)


def _time_loop(load: Callable[[], np.ndarray], images: int, repeats: int) -> Timing:
    rates = []
    for repeat in range(repeats + 1):
        start = time.perf_counter()
        load()
        if repeat:
            rates.append(images / (time.perf_counter() - start))
    return Timing(rates, [])


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


def _decode_only(encoded: list[bytes]) -> tf.data.Dataset:
    data = tf.data.Dataset.from_tensor_slices(tf.constant(encoded))
    decode = lambda data: tf.io.decode_image(data, channels=1, expand_animations=False)  # noqa: E731
    return data.map(decode, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def _source(data: Path, work: Path) -> tuple[str, Path, str]:
    """(adapter name, dataset root, description) of the benchmark images."""
    adapter, folder = REAL_SET
    if (data / folder).is_dir():
        return adapter, data / folder, f"{folder} (real CT JPEGs, <= 320 px)"
    root = generate(work / "phantoms", kinds=["covid_qu_ex"], n_cases=PHANTOM_CASES)["covid_qu_ex"]
    return "covid_qu_ex", root, "synthetic X-ray phantoms (PNG, 256 px)"


def _measure(
    out: Path, split: str, paths: list[str], size: int, batch_size: int, repeats: int
) -> dict[str, Timing]:
    """Every variant on the same images: the TFRecords in `out` and their source files `paths`."""
    count = len(paths)
    encoded = [Path(path).read_bytes() for path in paths]
    cached = make_dataset(out, split, "classification", batch_size, cache=True)
    return {
        "(a) TFRecord, cache": _time_dataset(cached, count, repeats),
        "(a) TFRecord, no cache": _time_dataset(
            make_dataset(out, split, "classification", batch_size), count, repeats
        ),
        "(b) tf.data from files": _time_dataset(_files_dataset(paths, size, batch_size), count, repeats),
        "(c) cv2 loop (notebooks)": _time_loop(lambda: _notebook_loop(paths, size), count, repeats),
        "(d) decode only, stored size": _time_dataset(_decode_only(encoded), count, repeats),
    }


def run(data: Path, sizes: list[int], repeats: int, batch_size: int) -> str:
    """Runs every variant at every size; returns the markdown report."""
    rows: dict[str, dict[int, Timing]] = {}
    notes = []
    with tempfile.TemporaryDirectory(prefix="tfrecords-bench-") as work_dir:
        work = Path(work_dir)
        adapter, root, description = _source(data, work)
        for size in sizes:
            start = time.perf_counter()
            out = work / f"records-{size}"
            write_dataset(adapter, root, out, image_size=size)
            split = "train"
            paths = [example["path"] for example in read_examples(out, split)]
            notes.append(f"write at {size} px: {time.perf_counter() - start:.1f} s for all splits")
            count = len(paths)
            for name, timing in _measure(out, split, paths, size, batch_size, repeats).items():
                rows.setdefault(name, {})[size] = timing
    header = " | ".join(f"{size} px median | {size} px min" for size in sizes)
    lines = [
        f"Images: {count} ({description}), batch {batch_size}, {repeats} timed passes after 1 warm-up, "
        f"{os.cpu_count()} CPU cores (1-minute load average at the end: {os.getloadavg()[0]:.1f}), "
        f"TensorFlow {tf.__version__}.",
        "",
        f"| variant (images/s) | {header} | teardown median (s) |",
        "|---|" + "---|" * (2 * len(sizes)) + "---|",
    ]
    for name, by_size in rows.items():
        cells = " | ".join(f"{by_size[size].median:,.0f} | {by_size[size].minimum:,.0f}" for size in sizes)
        teardowns = [t for timing in by_size.values() for t in timing.teardowns]
        teardown = f"{statistics.median(teardowns):.3f}" if teardowns else "-"
        lines.append(f"| {name} | {cells} | {teardown} |")
    lines.append("")
    for size in sizes:
        cached = rows["(a) TFRecord, cache"][size].median
        loop = rows["(c) cv2 loop (notebooks)"][size].median
        decode = rows["(d) decode only, stored size"][size].median
        lines.append(
            f"- {size} px: (a) cached = {cached / loop:.1f} x (c) (goal >= 3) "
            f"and {100 * cached / decode:.0f} % of (d) (goal >= 80 %)"
        )
    lines.extend(f"- {note}" for note in notes)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tfrecords.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder")
    parser.add_argument("--sizes", type=int, nargs="+", default=[299, 256], help="image sizes in pixels")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes per variant")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)
    print(run(args.data, args.sizes, args.repeats, args.batch_size))


if __name__ == "__main__":
    main()
