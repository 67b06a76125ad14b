"""S0 specialized streams: one binary segmenter per manifestation, gated by the recogniser.

A stream runs on a slice only when the multi-label recogniser's probability for its manifestation
reaches that manifestation's threshold (chosen on validation). The combiner merges the streams into
one label map with a stated overlap rule: a pixel takes the manifestation whose stream probability
is highest among the streams at or above their pixel threshold; ties go to the earlier manifestation
in `MANIFESTATION_ORDER`; a pixel no stream claims is background (0).

`run` is the row `s0_streams`. Of the manifestations listed in `data.mask_names` it keeps those the
TRAINING split shows (`choose_manifestations`: a mask stored on every training record, and at least one
training slice with the recogniser's `min_pixels` of it, i.e. one positive recogniser label; the
others are dropped with the reason in `streams.json`). On the kept ones it trains one binary segmenter
per manifestation, one multi-class model over the same masks (the baseline) and the multi-label
recogniser (`pipeline_options.recogniser`: name, epochs, learning_rate, weights, options, min_pixels)
whose per-class gate thresholds are chosen on validation; `data.steps_per_epoch` (optional) sets
the segmenters' batches per epoch. On the test split it runs the gated and the
ungated streams on the same images and writes `streams.json` and `per_image.csv`: wall time and
counted FLOPs of both, and Dice / mIoU of the gated streams against the single model (see DEFINITIONS).
The MedSeg test slices nearly all show a manifestation, so the gate is also run on a second set with
lesion-free slices (`pipeline_options.gate_set`, default the CT classification subset, COVID and
NonCOVID slices; phantoms in its layout with data.phantom): per class the fraction of slices each
stream ran on and the compute saving, and `gate_set_per_image.csv`.
"""

from __future__ import annotations

import dataclasses
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
import pandas as pd

from classification.recogniser import recogniser_data, train_recogniser
from common.atomic import atomic_write_bytes
from common.bootstrap import bootstrap_cis, ci_entry
from experiments.config import ExperimentConfig
from experiments.data import PHANTOM_KINDS, PreparedData, dataset_root, prepare_source
from experiments.pipelines import register_pipeline
from experiments.pipelines.flops import model_flops
from experiments.pipelines.options import GateSetOptions, pipeline_options
from experiments.run_folder import write_json
from experiments.tasks import Summary, task_config
from segmentation import metrics
from segmentation.evaluate import SplitPredictions, predict_split
from segmentation.predict import Segmenter, load_segmenter, predict_probs
from segmentation.train import train_segmenter
from tfrecords.manifest import load_manifest
from tfrecords.read_config import ReadConfig
from tfrecords.reader import make_dataset

if TYPE_CHECKING:  # the runner imports the pipelines
    from experiments.runner import RunContext

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
    streams: manifestation -> binary segmenter (N, H, W, C) -> (N, H, W, 1);
    stream_flops / recogniser_flops: counted FLOPs per image (set from the models)."""

    recogniser: keras.Model
    streams: dict[str, keras.Model]
    manifestations: tuple[str, ...]
    gate_thresholds: dict[str, float]
    pixel_thresholds: dict[str, float] = field(default_factory=dict)
    batch_size: int = 8
    stream_flops: dict[str, int] = field(init=False)
    recogniser_flops: int = field(init=False)

    def __post_init__(self) -> None:
        self.pixel_thresholds = {name: self.pixel_thresholds.get(name, 0.5) for name in self.streams}
        self.stream_flops = {name: model_flops(model) for name, model in self.streams.items()}
        self.recogniser_flops = model_flops(self.recogniser)

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
            flops = count * self.recogniser_flops
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
            flops += int(selected.size) * self.stream_flops[name]
        label_map = combine_streams(probabilities, self.pixel_thresholds)
        return StreamsOutput(label_map, ran, time.perf_counter() - start, flops)

    def gated_flops_per_image(self, ran: dict[str, np.ndarray]) -> np.ndarray:
        """(N,) int64 counted FLOPs per image of a gated run: the recogniser + the streams that `ran`."""
        return self.recogniser_flops + sum(
            ran[name].astype(np.int64) * flops for name, flops in self.stream_flops.items()
        )

    @property
    def ungated_flops_per_image(self) -> int:
        """Counted FLOPs per image of every stream (no recogniser)."""
        return sum(self.stream_flops.values())


def compute_saving(gated_flops: np.ndarray, ungated_flops: np.ndarray) -> float:
    """1 - sum(gated) / sum(ungated) of (N,) FLOPs per image."""
    return 1.0 - float(np.sum(gated_flops)) / float(np.sum(ungated_flops))


DEFINITIONS = {
    "dice_<m>": "per-image Dice of manifestation m (label value m), mean over test images; 1 where "
    "prediction and truth are both empty (segmentation.metrics)",
    "dice": "mean of dice_<m> over the manifestations",
    "miou": "IoU of each manifestation from counts pooled over the test split, mean over the "
    "manifestations; background EXCLUDED",
    "dice_gain / miou_gain": "gated streams minus the single multi-class model, on the same test images",
    "flops": "counted FLOPs (experiments.pipelines.flops) of what ran over the whole test split; gated = "
    "recogniser on every image + each stream on the images its gate passed; ungated = every stream on every image",
    "compute_saving": "1 - gated_flops / ungated_flops (the recogniser's cost counted in the gated run)",
    "compute_saving_mixed": "compute_saving on every slice of the gate set (pipeline_options.gate_set, "
    "default the CT classification subset: COVID and NonCOVID slices): gated = recogniser on every slice + "
    "each stream on the slices its gate passed; ungated = every stream on every slice; no labels are inputs",
    "compute_saving_lesion_free": "compute_saving on the gate set's lesion-free class (gate_set.lesion_free_class, "
    "NonCOVID); where no gate fires on them it is 1 - recogniser / streams FLOPs, the most gating can save",
    "compute_saving_<class>": "compute_saving on the gate set's slices of another class (e.g. covid)",
    "ran_fraction_<m>_<class>": "fraction of the gate set's slices of a class on which stream m ran",
    "n_gate_set_<class>": "slices of a class in the gate set (every split of its TFRecords)",
    "time_ratio": "gated_seconds / ungated_seconds: wall time of GatedStreams.predict, after one warm-up pass each",
    "truth": "label map of the test masks, the first listed manifestation winning where masks overlap",
    "ci": "95% percentile bootstrap over test cases (patient ids where the data has them, else images), "
    "streams and single model resampled together (paired)",
}


@dataclass(frozen=True)
class ManifestationChoice:
    """kept: the manifestations the row segments and gates, in `data.mask_names` order;
    dropped: manifestation -> why (from the training split only)."""

    kept: tuple[str, ...]
    dropped: dict[str, str]


def _drop_reason(pixels: np.ndarray, min_pixels: int) -> str | None:
    """Why a manifestation with (N,) foreground pixels per training slice cannot be trained, or None."""
    if not pixels.any():
        return "no training pixel"
    if pixels.max() < min_pixels:
        return f"no training slice with >= {min_pixels} pixels (the recogniser's min_pixels; largest {pixels.max()})"
    return None


def training_mask_pixels(
    data: str | Path, names: tuple[str, ...], split: str = "train", batch_size: int = 32
) -> np.ndarray:
    """(N, M) int64 foreground pixels of each of the M `names` masks per record of the training
    `split`, as stored."""
    read = ReadConfig(split, task="segmentation", batch_size=batch_size, mask_names=names, deterministic=True)
    counts = [masks.sum(axis=(1, 2)) for _, masks in make_dataset(data, read).as_numpy_iterator()]
    return np.concatenate(counts).astype(np.int64)


def choose_manifestations(
    data: str | Path, names: tuple[str, ...], min_pixels: int, split: str = "train"
) -> ManifestationChoice:
    """The manifestations of `names` the training `split` of TFRecord folder `data` shows: a mask
    stored on every training record with >= `min_pixels` pixels on at least one (so the recogniser,
    whose labels need as many, sees a positive); raises ValueError when none is left."""
    info = load_manifest(data).split(split)
    dropped = {
        name: f"mask stored for {info.mask_counts.get(name, 0)} of {info.count} training records"
        for name in names
        if info.mask_counts.get(name, 0) != info.count
    }
    stored = tuple(name for name in names if name not in dropped)
    if stored:
        pixels = training_mask_pixels(data, stored, split)
        reasons = {name: _drop_reason(pixels[:, k], min_pixels) for k, name in enumerate(stored)}
        dropped |= {name: reason for name, reason in reasons.items() if reason is not None}
    kept = tuple(name for name in names if name not in dropped)
    if not kept:
        raise ValueError(f"s0 streams: no manifestation of {list(names)} to train on: {dropped}")
    return ManifestationChoice(kept, {name: dropped[name] for name in names if name in dropped})


def _check_manifestations(config: ExperimentConfig) -> tuple[str, ...]:
    names = tuple(config.data.mask_names)
    unknown = [name for name in names if name not in MANIFESTATION_ORDER]
    if not names or unknown:
        raise ValueError(
            f"s0 streams: data.mask_names {list(names)} must be manifestations of {MANIFESTATION_ORDER}"
        )
    return names


def _label_values(manifestations: tuple[str, ...]) -> np.ndarray:
    """Class index (0 background, k + 1 for manifestation k) -> MedSeg label value, (M + 1,) uint8."""
    return np.array([0, *(MANIFESTATION_ORDER.index(name) + 1 for name in manifestations)], np.uint8)


def truth_label_map(masks: np.ndarray, manifestations: tuple[str, ...]) -> np.ndarray:
    """(N, H, W, M) binary masks -> (N, H, W) MedSeg label values; the first set mask wins overlaps."""
    background = np.full((*masks.shape[:-1], 1), 0.5)
    index = np.argmax(np.concatenate([background, masks], axis=-1), axis=-1)
    return _label_values(manifestations)[index]


def manifestation_counts(labels: np.ndarray, truth: np.ndarray, manifestations: tuple[str, ...]):
    """Confusion counts (N, M) per image and manifestation of two (N, H, W) label maps."""
    values = _label_values(manifestations)[1:]
    return metrics.confusion_counts(labels[..., None] == values, truth[..., None] == values)


def _scores(counts: tuple[np.ndarray, ...], manifestations: tuple[str, ...], prefix: str) -> dict[str, float]:
    """dice_<m>_<prefix>, dice_<prefix>, miou_<prefix> from (tp, fp, fn, tn) arrays (N, M)."""
    counts = metrics.Counts(*counts)
    dice = metrics.per_channel_score(counts, "dice", "per_image")
    iou = metrics.per_channel_score(counts, "iou", "pooled")
    scores = {f"dice_{name}_{prefix}": float(dice[k]) for k, name in enumerate(manifestations)}
    scores[f"dice_{prefix}"] = float(np.mean(dice))
    scores[f"miou_{prefix}"] = float(np.mean(iou))
    return scores


def comparison_metrics(manifestations: tuple[str, ...]):
    """metrics_fn(*streams counts, *single counts, gated_flops, ungated_flops) -> named metrics, for
    `common.bootstrap.bootstrap_cis` (each argument has one row per image)."""

    def metrics_fn(*arrays: np.ndarray) -> dict[str, float]:
        streams = _scores(arrays[0:4], manifestations, "streams")
        single = _scores(arrays[4:8], manifestations, "single")
        gated_flops, ungated_flops = arrays[8], arrays[9]
        return {
            **streams,
            **single,
            "dice_gain": streams["dice_streams"] - single["dice_single"],
            "miou_gain": streams["miou_streams"] - single["miou_single"],
            "compute_saving": compute_saving(gated_flops, ungated_flops),
        }

    return metrics_fn


def _train_streams(context: RunContext, data: str, manifestations: tuple[str, ...]) -> dict[str, Segmenter]:
    """One binary segmenter per manifestation, each with its pixel threshold chosen on validation."""
    config, replicas = context.config, context.strategy.num_replicas_in_sync
    streams = {}
    for name in manifestations:
        run = task_config(config, [data], replicas, **{"data.mask_names": [name], "model.multiclass": False})
        streams[name] = load_segmenter(
            train_segmenter(run, context.run_dir / "streams" / name, context.strategy)
        )
    return streams


def _train_single(context: RunContext, data: str, manifestations: tuple[str, ...]) -> Segmenter:
    """The baseline: one multi-class (softmax) model over background + every manifestation."""
    run = task_config(
        context.config,
        [data],
        context.strategy.num_replicas_in_sync,
        **{"data.mask_names": list(manifestations), "model.multiclass": True},
    )
    return load_segmenter(train_segmenter(run, context.run_dir / "single", context.strategy))


def _train_recogniser(
    context: RunContext, data: str, manifestations: tuple[str, ...]
) -> tuple[keras.Model, dict]:
    """The multi-label recogniser on mask-derived labels; returns it and its test report, whose
    per-class thresholds were chosen on validation."""
    config = context.config
    options = pipeline_options(config).recogniser
    run = task_config(
        config,
        [data],
        context.strategy.num_replicas_in_sync,
        **{
            "model.name": options.name,
            "model.weights": options.weights,
            "model.options": dict(options.options),
            "training.epochs": options.epochs or config.training.epochs,
            "training.learning_rate": options.learning_rate or config.training.learning_rate,
        },
        **recogniser_data(manifestations, options.min_pixels),
    )
    result = train_recogniser(run, context.run_dir / "recogniser", context.strategy)
    model = keras.saving.load_model(Path(result["run_dir"]) / "best.keras", compile=False)
    return model, result["metrics"]


def _trained_pipeline(
    context: RunContext, data: str, manifestations: tuple[str, ...]
) -> tuple[GatedStreams, Segmenter, dict]:
    """(the gated streams, the single multi-class model, the recogniser's test report), all trained
    on `data`; gate and pixel thresholds chosen on validation."""
    streams = _train_streams(context, data, manifestations)
    single = _train_single(context, data, manifestations)
    recogniser, recogniser_report = _train_recogniser(context, data, manifestations)
    gate_thresholds = {
        name: float(threshold)
        for name, threshold in zip(manifestations, recogniser_report["threshold"]["thresholds"], strict=True)
    }
    pipeline = GatedStreams(
        recogniser,
        {name: segmenter.model for name, segmenter in streams.items()},
        manifestations,
        gate_thresholds,
        {name: float(segmenter.threshold.thresholds[0]) for name, segmenter in streams.items()},
        batch_size=context.config.data.batch_size,
    )
    return pipeline, single, recogniser_report


def _timed_predict(pipeline: GatedStreams, images: np.ndarray, gated: bool) -> StreamsOutput:
    """The second of two identical runs (the first traces and warms up the models)."""
    pipeline.predict(images, gated=gated)
    return pipeline.predict(images, gated=gated)


@dataclass
class SplitViews:
    """The test split through each view: `test` (keys, case ids, the single model's probabilities),
    truth and single_labels (N, H, W) MedSeg label values, the single model's wall seconds and FLOPs
    per image, and the gated and ungated streams' outputs."""

    test: SplitPredictions
    truth: np.ndarray
    single_labels: np.ndarray
    single_seconds: float
    single_flops: int
    gated: StreamsOutput
    ungated: StreamsOutput


def predict_test(
    pipeline: GatedStreams, single: Segmenter, data: str, channels: int, batch_size: int
) -> SplitViews:
    """Runs the single model and the gated and ungated streams on the test split of `data`, timed."""
    manifestations = pipeline.manifestations
    test = predict_split(single.model, data, "test", manifestations, batch_size)
    images = np.repeat(test.images[..., None], channels, axis=-1)
    start = time.perf_counter()
    predict_probs(single.model, images, batch_size)
    single_seconds = time.perf_counter() - start
    return SplitViews(
        test=test,
        truth=truth_label_map(test.masks, manifestations),
        single_labels=_label_values(manifestations)[np.argmax(test.probs, axis=-1)],
        single_seconds=single_seconds,
        single_flops=model_flops(single.model),
        gated=_timed_predict(pipeline, images, gated=True),
        ungated=_timed_predict(pipeline, images, gated=False),
    )


def _parts(counts: metrics.Counts) -> tuple[np.ndarray, ...]:
    """(tp, fp, fn, tn), each (N, M)."""
    return counts.tp, counts.fp, counts.fn, counts.tn


def _per_image_table(
    test: SplitPredictions,
    gated: StreamsOutput,
    truth: np.ndarray,
    counts: dict[str, metrics.Counts],
    gated_flops: np.ndarray,
    manifestations: tuple[str, ...],
) -> pd.DataFrame:
    """One row per test image: key, case, gated FLOPs, and per manifestation whether its stream ran,
    its truth pixels and its Dice in each view (streams, single, ungated)."""
    table = pd.DataFrame({"key": test.keys, "case_id": test.case_ids, "gated_flops": gated_flops})
    values = _label_values(manifestations)
    for k, name in enumerate(manifestations):
        table[f"ran_{name}"] = gated.ran[name]
        table[f"truth_px_{name}"] = (truth == values[k + 1]).sum(axis=(1, 2))
        for view, view_counts in counts.items():
            table[f"dice_{name}_{view}"] = metrics.dice_from_counts(view_counts)[:, k]
    return table


def summarise(
    outputs: SplitViews, pipeline: GatedStreams, n_resamples: int, seed: int
) -> tuple[Summary, pd.DataFrame]:
    """(the row's summary: scores with case-bootstrap CIs, the ungated scores and the timing, see
    DEFINITIONS; the per-image table)."""
    manifestations = pipeline.manifestations
    count = len(outputs.truth)
    gated_per_image = pipeline.gated_flops_per_image(outputs.gated.ran)
    ungated_per_image = np.full(count, pipeline.ungated_flops_per_image)
    counts = {
        view: manifestation_counts(labels, outputs.truth, manifestations)
        for view, labels in (
            ("streams", outputs.gated.label_map),
            ("single", outputs.single_labels),
            ("ungated", outputs.ungated.label_map),
        )
    }
    intervals = bootstrap_cis(
        comparison_metrics(manifestations),
        *_parts(counts["streams"]),
        *_parts(counts["single"]),
        gated_per_image,
        ungated_per_image,
        n_resamples=n_resamples,
        seed=seed,
        groups=outputs.test.case_ids,
    )
    summary: Summary = {name: ci_entry(*values) for name, values in intervals.items()}
    ungated_scores = _scores(_parts(counts["ungated"]), manifestations, "ungated")
    gated, ungated = outputs.gated, outputs.ungated
    timing = {
        "gated_seconds": gated.seconds,
        "ungated_seconds": ungated.seconds,
        "time_ratio": gated.seconds / ungated.seconds,
        "single_seconds": outputs.single_seconds,
        "gated_flops": gated.flops,
        "ungated_flops": ungated.flops,
        "single_flops": outputs.single_flops * count,
        "recogniser_flops_per_image": pipeline.recogniser_flops,
        "stream_runs": int(sum(int(ran.sum()) for ran in gated.ran.values())),
        "stream_runs_possible": count * len(manifestations),
    }
    summary.update({name: ci_entry(value) for name, value in {**ungated_scores, **timing}.items()})
    per_image = _per_image_table(outputs.test, gated, outputs.truth, counts, gated_per_image, manifestations)
    return summary, per_image


@dataclass(frozen=True)
class GateSet:
    """The second gate set: `source` (dataset and root as configured), its TFRecord folder `directory`
    and `lesion_free_class`; or, with `directory` None, `skipped`: why it is not measured."""

    source: dict[str, str]
    directory: Path | None = None
    lesion_free_class: str = ""
    skipped: str | None = None


def prepare_gate_set(context: RunContext, options: GateSetOptions | None) -> GateSet:
    """Writes (or reuses) the gate set's TFRecords: every record, at the row's image size, stored with
    `options.preprocess` (None: the row's data.preprocess), without the row's CT recipe; all its
    splits are read. With data.phantom, phantoms in the set's layout (skipped where there are none)."""
    if options is None:
        return GateSet({}, skipped="pipeline_options.gate_set is null")
    config = context.config
    source = {"dataset": options.dataset, "root": options.root}
    if config.data.phantom and options.dataset not in PHANTOM_KINDS:
        return GateSet(source, skipped=f"data.phantom: no phantoms for dataset {options.dataset!r}")
    seed = config.runtime.seed
    root = dataset_root(
        options.dataset, options.root, context.data_dir, context.cache_dir, config.data.phantom, seed
    )
    preprocess = config.data.preprocess if options.preprocess is None else options.preprocess
    data = dataclasses.replace(
        config.data,
        **source,
        extra=[],
        split="patient",
        split_file=None,
        folds=None,
        recipe=None,
        preprocess=preprocess,
    )
    manifest, _ = prepare_source(options.dataset, root, data, context.cache_dir, seed)
    if options.lesion_free_class not in manifest.label_names:
        raise ValueError(
            f"pipeline_options.gate_set.lesion_free_class {options.lesion_free_class!r} is not a class of "
            f"{root}: {list(manifest.label_names)}"
        )
    return GateSet(source, manifest.directory, options.lesion_free_class)


@dataclass
class GateSetViews:
    """The gate over the gate set: keys and labels (N,) str (the class is reported, never an input),
    ran: manifestation -> (N,) bool (its gate passed)."""

    keys: np.ndarray
    labels: np.ndarray
    ran: dict[str, np.ndarray]


def gate_set_views(pipeline: GatedStreams, directory: Path) -> GateSetViews:
    """Runs the recogniser gate over every split of the TFRecord folder `directory`, read as the test
    split is (bilinear resize to the recogniser's input size, gray repeated to its channels)."""
    height, width, channels = pipeline.recogniser.input_shape[1:]
    manifest = load_manifest(directory)
    keys, labels, ran = [], [], {name: [] for name in pipeline.streams}
    for split in sorted(name for name, info in manifest.splits.items() if info.count):
        read = ReadConfig(
            split,
            task="classification",
            batch_size=pipeline.batch_size,
            image_size=(height, width),
            channels=channels,
            deterministic=True,
            with_meta=True,
        )
        for images, classes, meta in make_dataset(manifest, read).as_numpy_iterator():
            keys += [key.decode() for key in meta["key"]]
            labels += [manifest.label_names[index] for index in classes]
            for name, passed in pipeline.gates(images).items():
                ran[name].append(passed)
    return GateSetViews(
        np.asarray(keys), np.asarray(labels), {name: np.concatenate(parts) for name, parts in ran.items()}
    )


def _class_tag(label: str) -> str:
    """A class name as a summary-key part: "NonCOVID" -> "noncovid"."""
    return re.sub(r"[^0-9a-z]+", "_", label.lower()).strip("_")


def summarise_gate_set(
    views: GateSetViews, pipeline: GatedStreams, lesion_free_class: str
) -> tuple[Summary, pd.DataFrame]:
    """(compute_saving_mixed, compute_saving_lesion_free, compute_saving_<class> of the other classes,
    ran_fraction_<m>_<class> and n_gate_set_<class>, see DEFINITIONS; one row per slice: key, label,
    ran_<m>, gated_flops)."""
    gated = pipeline.gated_flops_per_image(views.ran)
    ungated = np.full(len(gated), pipeline.ungated_flops_per_image)
    values = {"compute_saving_mixed": compute_saving(gated, ungated)}
    for label in sorted(set(views.labels.tolist())):
        rows, tag = views.labels == label, _class_tag(label)
        saving = "compute_saving_lesion_free" if label == lesion_free_class else f"compute_saving_{tag}"
        values[saving] = compute_saving(gated[rows], ungated[rows])
        values[f"n_gate_set_{tag}"] = int(rows.sum())
        values |= {f"ran_fraction_{name}_{tag}": float(ran[rows].mean()) for name, ran in views.ran.items()}
    table = pd.DataFrame({"key": views.keys, "label": views.labels})
    for name, ran in views.ran.items():
        table[f"ran_{name}"] = ran
    table["gated_flops"] = gated
    return {name: ci_entry(value) for name, value in values.items()}, table


def write_outputs(
    run_dir: Path,
    pipeline: GatedStreams,
    recogniser_report: dict[str, Any],
    summary: Summary,
    per_image: pd.DataFrame,
    choice: ManifestationChoice,
    gate_set: GateSet,
    gate_set_per_image: pd.DataFrame | None = None,
) -> None:
    """Writes `per_image.csv`, `gate_set_per_image.csv` (where the gate set was measured) and
    `streams.json` (the manifestations kept and dropped, thresholds, FLOPs, the recogniser's test
    metrics, the gate set, the summary, DEFINITIONS and the per-image rows) into `run_dir`."""
    atomic_write_bytes(run_dir / "per_image.csv", per_image.to_csv(index=False).encode())
    gate_set_record: dict[str, Any] = {**gate_set.source, "skipped": gate_set.skipped}
    if gate_set_per_image is not None:
        atomic_write_bytes(
            run_dir / "gate_set_per_image.csv", gate_set_per_image.to_csv(index=False).encode()
        )
        gate_set_record |= {
            "tfrecords": str(gate_set.directory),
            "lesion_free_class": gate_set.lesion_free_class,
            "n_images": len(gate_set_per_image),
        }
    write_json(
        run_dir / "streams.json",
        {
            "manifestations": list(pipeline.manifestations),
            "manifestations_dropped": choice.dropped,
            "manifestation_rule": "kept: a mask stored on every training record and at least one training "
            "slice with the recogniser's min_pixels of it (decided on the training split only)",
            "n_test_images": len(per_image),
            "n_test_cases": int(per_image["case_id"].nunique()),
            "gate_thresholds": pipeline.gate_thresholds,
            "gate_threshold_source": "recogniser per-class thresholds chosen on the validation split",
            "pixel_thresholds": pipeline.pixel_thresholds,
            "stream_flops_per_image": pipeline.stream_flops,
            "recogniser": _recogniser_section(recogniser_report),
            "gate_set": gate_set_record,
            "summary": summary,
            "definitions": DEFINITIONS,
            "per_image": per_image.to_dict(orient="records"),
        },
    )


@register_pipeline("streams")
def run(context: RunContext, prepared: PreparedData) -> Summary:
    """The `s0_streams` row (see the module docstring): chooses the manifestations from the training
    split, trains, predicts the test split, gates the gate set, summarises, and writes streams.json,
    per_image.csv and gate_set_per_image.csv; returns the summary."""
    config, options = context.config, pipeline_options(context.config)
    data = str(prepared.manifests[0].directory)
    choice = choose_manifestations(
        data, _check_manifestations(config), options.recogniser.min_pixels, config.data.splits["train"]
    )
    gate_set = prepare_gate_set(context, options.gate_set)
    pipeline, single, recogniser_report = _trained_pipeline(context, data, choice.kept)
    outputs = predict_test(pipeline, single, data, config.data.channels, config.data.batch_size)
    summary, per_image = summarise(
        outputs, pipeline, config.evaluation.bootstrap_resamples, config.runtime.seed
    )
    gate_set_per_image = None
    if gate_set.directory is not None:
        views = gate_set_views(pipeline, gate_set.directory)
        gate_set_summary, gate_set_per_image = summarise_gate_set(views, pipeline, gate_set.lesion_free_class)
        summary.update(gate_set_summary)
    write_outputs(
        context.run_dir, pipeline, recogniser_report, summary, per_image, choice, gate_set, gate_set_per_image
    )
    return summary


def _recogniser_section(report: dict[str, Any]) -> dict[str, Any]:
    """The recogniser's test metrics and thresholds, as its evaluation reported them."""
    return {"threshold": report["threshold"], "overall": report["overall"]}
