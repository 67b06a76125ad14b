"""`python -m experiments bench [--quick] [--data-dir DIR] [--out FILE.md]`: one performance table.

Sections (every timed figure is the median of several runs; each ratio compares figures measured in
the same run, and the training precisions alternate run by run so that load changes hit both):
- input pipeline (`tfrecords.bench`): tf.data from the files, the seed notebooks' cv2 loop, the
  TFRecord first pass (no cache) with PNG, raw and raw+ZLIB pixels, the cached TFRecord pass, and
  the disk size per 1,000 slices of each storage;
- training images/s of the main models (random inputs, `train_on_batch` after two warm-up steps) in
  float32 and in the precision "auto" picks here (`common.mixed_precision`);
- `python -m segmentation predict` wall time on a 100-slice 256 x 256 SYNTHETIC phantom volume, a
  fresh process each run (start-up and model loading included), with an untrained U-Net of the
  README's CPU-scale size (128 px input, filters 16-256): the work, not the masks, is the point;
- the gated-streams compute saving (S0): counted FLOPs (`experiments.pipelines.flops`) of the
  recogniser on every slice plus each manifestation's stream on the slices that show it (an ideal
  gate: the ground-truth presence), over whole SYNTHETIC phantom volumes (lesion-free slices
  included) and over MedSeg's 48 test slices (Inf-Net's split, all of them chosen for lesions).
`--quick` runs every section on small inputs and models in well under 2 minutes (a smoke test; its
figures say nothing). The output is markdown, with the hardware and the load average (the machine
may be shared) at start and end.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import nibabel as nib
import numpy as np

from classification.models import build_classifier
from common.atomic import atomic_write_text
from common.mixed_precision import choose_precision, cpu_flags, precision_policy
from data_prep.adapters import open_dataset
from data_prep.phantoms import LABEL_VALUES, ct_volume
from experiments.pipelines.flops import model_flops
from experiments.pipelines.streams import compute_saving
from segmentation.models import build_segmenter
from tfrecords.bench import PipelineResult, measure_pipeline, pipeline_source

MEDSEG = "ct-infection-medseg"
STREAMS = ("ggo", "consolidation")  # the manifestations of the shared MedSeg copy (it has no effusion)


@dataclass(frozen=True)
class Scale:
    """Sizes of one bench run (full, or quick)."""

    repeats: int  # timed passes of each input-pipeline variant
    image_size: int
    phantom_cases: int | None  # None: the real CT subset when present
    train_repeats: int  # timed runs of each model and precision
    predict_slices: int
    predict_size: int
    predict_filters: tuple[int, ...]
    predict_runs: int
    phantom_volumes: int


CPU_UNET = (16, 32, 64, 128, 256)  # the README's CPU-scale U-Net (1.9 M parameters)
FULL = Scale(5, 256, None, 3, 100, 128, CPU_UNET, 3, 8)
QUICK = Scale(2, 64, 6, 2, 12, 64, (4, 8), 1, 2)


@dataclass(frozen=True)
class Model:
    """A training-throughput row: name, builder (called under the precision policy), batch size, and
    the training steps of one timed run."""

    name: str
    build: Callable[[], keras.Model]
    batch_size: int
    steps: int


def _models(quick: bool) -> list[Model]:
    if quick:
        return [
            Model("U-Net (plain, filters 4-16), 64 px", lambda: _unet(64, (4, 8, 16)), 4, 1),
            Model(
                "plain CNN, 64 px",
                lambda: build_classifier("plain_cnn", (64, 64, 1), 1, filters=(8, 16)),
                4,
                1,
            ),
        ]
    return [
        Model("U-Net (plain, filters 16-256), 128 px", lambda: _unet(128, CPU_UNET), 8, 4),
        Model("U-Net (plain, filters 16-256), 256 px", lambda: _unet(256, CPU_UNET), 8, 2),
        Model(
            "DeepLabv3+ on Xception-65 (OS 16), 256 px",
            lambda: build_segmenter("deeplabv3plus", "xception65", (256, 256, 1), 1, output_stride=16),
            4,
            1,
        ),
        Model("InceptionV3, 299 px", lambda: build_classifier("inceptionv3", (299, 299, 3), 1), 8, 1),
    ]


def _unet(size: int, filters: tuple[int, ...] | None) -> keras.Model:
    options = {} if filters is None else {"encoder_kwargs": {"filters": filters}}
    return build_segmenter("unet", "plain", (size, size, 1), 1, **options)


@dataclass(frozen=True)
class Row:
    """One table row: section, what, the runs' values (one value for counts), unit."""

    section: str
    what: str
    values: Sequence[float]
    unit: str

    @property
    def median(self) -> float:
        return statistics.median(self.values)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware_line() -> str:
    """CPU, cores, GPUs, library versions, the auto precision and why."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    choice = choose_precision("auto")
    bf16 = sorted(flag for flag in cpu_flags() if "bf16" in flag or flag.startswith("amx"))
    return (
        f"{_cpu_model()}, {os.cpu_count()} CPU cores (bf16/AMX flags: {', '.join(bf16) or 'none'}), "
        f"{len(gpus)} GPU(s); Python {platform.python_version()}, TensorFlow {tf.__version__}, "
        f"Keras {keras.__version__}; precision auto = {choice.policy} ({choice.reason})"
    )


def pipeline_rows(result: PipelineResult) -> tuple[list[Row], str]:
    """Rows of the pipeline and disk-size sections, and the note that says what was read."""
    rows = [Row("input pipeline", name, timing.rates, "images/s") for name, timing in result.timings.items()]
    rows += [
        Row("disk per 1,000 slices", f"TFRecord {name}", [size / 1e6], "MB")
        for name, size in result.bytes_per_1000.items()
    ]
    teardowns = [t for timing in result.timings.values() for t in timing.teardowns]
    note = (
        f"input pipeline and disk: {result.images} training images of {result.source}, stored and read at "
        f"{result.size} x {result.size} px, batch 32, one warm-up pass then the variants in turn; "
        f"tf.data iterator teardown (timed apart) median {statistics.median(teardowns):.3f} s, "
        f"max {max(teardowns):.3f} s"
    )
    return rows, note


def train_rates(model: Model, policies: Sequence[str], repeats: int) -> dict[str, list[float]]:
    """policy -> images/s of `repeats` timed runs of `model.steps` steps, the policies taking turns."""
    rng = np.random.default_rng(0)
    built = {}
    for policy in policies:
        with precision_policy(policy):
            network = model.build()
            network.compile(optimizer="adam", loss="binary_crossentropy")
        inputs = rng.random((model.batch_size, *network.input_shape[1:]), dtype=np.float32)
        targets = rng.integers(0, 2, (model.batch_size, *network.output_shape[1:])).astype(np.float32)
        for _ in range(2):  # tracing, then the first real step
            network.train_on_batch(inputs, targets)
        built[policy] = (network, inputs, targets)
    rates: dict[str, list[float]] = {policy: [] for policy in policies}
    for _ in range(repeats):
        for policy, (network, inputs, targets) in built.items():
            start = time.perf_counter()
            for _ in range(model.steps):
                network.train_on_batch(inputs, targets)
            rates[policy].append(model.steps * model.batch_size / (time.perf_counter() - start))
    keras.backend.clear_session()
    return rates


def _progress(part: str, started: float) -> None:
    """One line on stderr when a part is done (the table goes to stdout)."""
    print(f"bench: {part} done at {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)


def training_rows(quick: bool, scale: Scale, started: float) -> list[Row]:
    auto = choose_precision("auto").policy
    policies = ["float32"] if auto == "float32" else ["float32", auto]
    rows = []
    for model in _models(quick):
        rates = train_rates(model, policies, scale.train_repeats)
        rows += [Row("training", f"{model.name}, {policy}", rates[policy], "images/s") for policy in policies]
        if len(policies) == 2:
            ratios = [a / f for a, f in zip(rates[auto], rates["float32"], strict=True)]
            rows.append(Row("training", f"{model.name}, {auto} / float32", ratios, "x"))
        _progress(f"training {model.name}", started)
    return rows


# what `python -m segmentation predict` imports, as it imports it
STARTUP_COMMAND = "from common.startup import lean_imports\nwith lean_imports(): import segmentation.predict"
STARTUP_WHAT = "start-up alone: `python -c` importing `segmentation.predict` in `common.startup.lean_imports`"


def _timed(command: list[str]) -> tuple[float, str | None]:
    """(wall seconds, None) of a finished command, or (seconds, its last stderr line) when it failed."""
    start = time.perf_counter()
    finished = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if finished.returncode == 0:
        return seconds, None
    return seconds, (finished.stderr.strip().splitlines() or [f"exit status {finished.returncode}"])[-1]


def predict_seconds(work: Path, scale: Scale) -> tuple[dict[str, list[float]], str | None]:
    """({"predict": wall seconds of each `python -m segmentation predict` run on a SYNTHETIC phantom
    volume, "start-up": of `python -c STARTUP_COMMAND` in the same rounds}, the last stderr line of a
    failed run, which ends the runs)."""
    phantom = ct_volume(seed=0, size=scale.image_size, slices=scale.predict_slices)
    volume = work / "volume.nii.gz"
    nib.save(nib.Nifti1Image(phantom.hu, phantom.affine), volume)
    model_path = work / "model" / "best.keras"
    model_path.parent.mkdir()
    _unet(scale.predict_size, scale.predict_filters).save(model_path)
    keras.backend.clear_session()
    seconds: dict[str, list[float]] = {"predict": [], "start-up": []}
    for run in range(scale.predict_runs):
        predict = [
            sys.executable,
            "-m",
            "segmentation",
            "predict",
            str(model_path),
            str(volume),
            str(work / f"out{run}"),
        ]
        for name, command in (("predict", predict), ("start-up", [sys.executable, "-c", STARTUP_COMMAND])):
            elapsed, error = _timed(command)
            if error is not None:
                return seconds, error
            seconds[name].append(elapsed)
    return seconds, None


def gated_saving(presence: dict[str, np.ndarray], stream_flops: int, recogniser_flops: int) -> float:
    """`streams.compute_saving` of an ideal gate: the recogniser on every slice plus each stream on the
    slices whose (N,) `presence` is True, against every stream on every slice."""
    gated = recogniser_flops + sum(present.astype(np.int64) for present in presence.values()) * stream_flops
    return compute_saving(gated, np.full(len(gated), len(presence) * stream_flops))


def phantom_presence(volumes: int, size: int) -> dict[str, np.ndarray]:
    """manifestation -> (slices,) bool over `volumes` whole SYNTHETIC phantom volumes (axial slices)."""
    labels = [ct_volume(seed=0, size=size, slices=32, case=case).labels for case in range(volumes)]
    return {
        name: np.concatenate([(volume == LABEL_VALUES[name]).any(axis=(0, 1)) for volume in labels])
        for name in STREAMS
    }


def medseg_presence(data: Path) -> dict[str, np.ndarray] | None:
    """manifestation -> (48,) bool over MedSeg's test slices (Inf-Net's split), None when absent."""
    if not (data / MEDSEG).is_dir():
        return None
    records = list(open_dataset("medseg", data / MEDSEG).records("test"))
    return {name: np.array([bool(record.masks[name].any()) for record in records]) for name in STREAMS}


def streams_rows(data: Path, quick: bool, scale: Scale) -> tuple[list[Row], str]:
    size = scale.image_size
    if quick:
        stream = _unet(size, (4, 8))
        recogniser = build_classifier("plain_cnn", (size, size, 1), 2, output="multilabel", filters=(8,))
        names = f"U-Net streams, a plain-CNN recogniser, {size} px"
    else:
        stream = build_segmenter("deeplabv3plus", "xception65", (size, size, 1), 1, output_stride=16)
        recogniser = build_classifier("mobilenetv2", (size, size, 1), 2, output="multilabel")
        names = f"DeepLabv3+ Xception-65 (OS 16) streams, a MobileNetV2 recogniser, {size} px"
    stream_flops, recogniser_flops = model_flops(stream), model_flops(recogniser)
    keras.backend.clear_session()
    volumes = phantom_presence(scale.phantom_volumes, min(size, 128))
    sets = {f"{scale.phantom_volumes} whole SYNTHETIC phantom volumes": volumes}
    medseg = medseg_presence(data)
    if medseg is not None:
        sets["MedSeg test slices (Inf-Net split)"] = medseg
    rows = []
    for name, presence in sets.items():
        count = len(next(iter(presence.values())))
        free = int(np.sum(~np.logical_or.reduce(list(presence.values()))))
        what = f"{name}: {count} slices, {free} without {' or '.join(STREAMS)}"
        rows.append(
            Row("gated streams", what, [100 * gated_saving(presence, stream_flops, recogniser_flops)], "%")
        )
    note = (
        f"gated streams: compute saving = 1 - gated / ungated counted FLOPs, streams {', '.join(STREAMS)} "
        f"({names}; {stream_flops / 1e9:.1f} GFLOPs per stream and slice, recogniser {recogniser_flops / 1e9:.2f}), "
        "ideal gate (a stream runs where its manifestation is in the ground truth)"
    )
    return rows, note


def _format(value: float, unit: str) -> str:
    if unit == "x":
        return f"{value:.2f}"
    if unit in ("%", "s", "MB"):
        return f"{value:.1f}"
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def markdown(header: str, rows: list[Row], notes: list[str]) -> str:
    lines = [
        header,
        "",
        "| section | measure | median | min - max | unit | runs |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        low, high = (_format(bound(row.values), row.unit) for bound in (min, max))
        spread = "" if len(row.values) == 1 else f"{low} - {high}"
        median = _format(row.median, row.unit)
        lines.append(f"| {row.section} | {row.what} | {median} | {spread} | {row.unit} | {len(row.values)} |")
    return "\n".join([*lines, "", *(f"- {note}" for note in notes)]) + "\n"


def _find(rows: list[Row], what: str) -> Row:
    return next(row for row in rows if row.what == what)


def goal_lines(rows: list[Row], predict: list[float]) -> list[str]:
    """The goals of issue 13 as measured: raw first pass vs files and vs PNG; predict wall time."""
    raw = _find(rows, "TFRecord raw, first pass").values
    files = _find(rows, "tf.data from the image files").values
    png = _find(rows, "TFRecord PNG, first pass").values
    vs_files = statistics.median(r / f for r, f in zip(raw, files, strict=True))
    vs_png = statistics.median(r / p for r, p in zip(raw, png, strict=True))

    def verdict(ok: bool) -> str:
        return "holds" if ok else "MISSED"

    lines = [
        f"goal: TFRecord raw first pass = {vs_files:.1f} x tf.data from the files (goal >= 3: "
        f"{verdict(vs_files >= 3)}) and {vs_png:.1f} x the PNG first pass (goal >= 5: {verdict(vs_png >= 5)}); "
        "medians of per-pass ratios.",
    ]
    if predict:
        seconds = statistics.median(predict)
        lines.append(
            f"goal: segmentation predict {seconds:.1f} s wall (goal < 10 s: {verdict(seconds < 10)})."
        )
    return lines


def run_bench(data: Path, quick: bool = False) -> str:
    """Runs every section; returns the markdown report."""
    scale = QUICK if quick else FULL
    started = time.perf_counter()
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="experiments-bench-") as work_dir:
        work = Path(work_dir)
        source = pipeline_source(data, work, scale.phantom_cases)
        rows, pipeline_note = pipeline_rows(
            measure_pipeline(source, work, scale.image_size, scale.repeats, batch_size=32)
        )
        _progress("input pipeline", started)
        rows += training_rows(quick, scale, started)
        (work / "predict").mkdir()
        timings, predict_error = predict_seconds(work / "predict", scale)
        predict = timings["predict"]
        what = f"{scale.predict_slices}-slice {scale.image_size} x {scale.image_size} volume"
        if predict:
            rows.append(Row("segmentation predict", what, predict, "s"))
        if timings["start-up"]:
            rows.append(Row("segmentation predict", STARTUP_WHAT, timings["start-up"], "s"))
        _progress("segmentation predict", started)
        stream_rows, streams_note = streams_rows(data, quick, scale)
        rows += stream_rows
        _progress("gated streams", started)
    load_end = os.getloadavg()
    header = (
        f"`python -m experiments bench{' --quick' if quick else ''}`: {hardware_line()}. "
        f"Load average (1/5/15 min) at start {load_start[0]:.1f}/{load_start[1]:.1f}/{load_start[2]:.1f}, "
        f"at end {load_end[0]:.1f}/{load_end[1]:.1f}/{load_end[2]:.1f}; {time.perf_counter() - started:.0f} s in all."
    )
    notes = [
        pipeline_note,
        "training: random inputs, `train_on_batch` (binary cross-entropy, Adam), two warm-up steps, then "
        "runs of a few steps (U-Net 4 at 128 px and 2 at 256 px, else 1), float32 and the auto precision "
        "in turn; the ratio is per run",
        f"segmentation predict: `python -m segmentation predict` in a fresh process (start-up and model loading "
        f"included) on a SYNTHETIC phantom volume (HU), untrained U-Net with a {scale.predict_size} px input "
        f"(filters {scale.predict_filters[0]}-{scale.predict_filters[-1]})",
        streams_note,
        *goal_lines(rows, predict),
        *([] if predict_error is None else [f"FAILED: segmentation predict: {predict_error}"]),
    ]
    return markdown(header, rows, notes)


def bench_command(data: Path, quick: bool, out: Path | None) -> int:
    """Prints the report; with `out`, also writes it there (atomically)."""
    report = run_bench(data, quick)
    print(report, end="")
    if out is not None:
        atomic_write_text(out, report)
    return 0
