"""Applying a trained classifier to one's own scans: `python -m classification predict MODEL INPUT OUT.csv`.

INPUT is a folder of images (PNG/JPEG/... read with `data_prep.imageio.read_image`, found by their
content) or one NIfTI volume (`.nii`/`.nii.gz`; every axial slice in display orientation). A folder is
searched recursively, so a class-folder layout (`COVID/`, `NonCOVID/`) works as it is; the sub-folder
of each image is written in the `folder` column. Files that are neither images nor NIfTI volumes
(`mapping.csv`, `Thumbs.db`, `notes.txt`) are skipped with one warning naming them; a file that looks
like an image but does not decode is an error. Each image goes through the
same write-time preprocessing as the training data (`tfrecords.spec.PreprocessSpec`, e.g.
"window=lung,clahe"), is resized bilinearly to the model's input size, scaled to [0, 1] (uint8 / 255,
uint16 / 65535) and repeated to 3 channels when the model takes 3.

When MODEL has its `bundle.json` beside it (every trained run folder does, `common.bundle`), the
preprocessing spec, the CT recipe (its label-free input chain, `data_prep.ct_recipe`), the class names
and the decision threshold (chosen on validation) come from it; otherwise pass `preprocess` yourself and
the threshold is 0.5. The columns of probabilities and decisions are the task's
(`classification.task`); a model without a bundle counts as binary with one output unit and as
multi-label with several.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pandas as pd

import classification.models  # noqa: F401  (registers the models' custom layers for loading)
from classification.task import CLASSIFICATION_TASKS, ClassificationTask
from common.atomic import atomic_write_text
from common.bundle import read_bundle
from common.model_files import load_model_file, require_output_rank
from common.model_input import model_input
from common.thresholds import ThresholdChoice
from data_prep import imageio
from data_prep.ct_recipe import CTRecipe, model_inputs, recipe_from_config
from data_prep.errors import DataError
from data_prep.io import intensity_kind, read_nifti, to_display
from data_prep.records import Record
from tfrecords.spec import PreprocessSpec

NIFTI_SUFFIXES = (".nii", ".nii.gz")


@dataclass(frozen=True)
class RunInfo:
    """What a run folder says about its model: preprocessing, task name (None without a bundle),
    output names and thresholds (one per output unit for binary and multilabel, chosen on
    validation; 0.5 without a run)."""

    preprocess: str = ""
    task: str | None = None
    output_names: tuple[str, ...] = ()
    negative_name: str = "negative"
    thresholds: tuple[float, ...] = ()
    threshold_source: str = "fixed 0.5"
    recipe: dict | None = None  # the CT recipe of the training data (`data_prep.ct_recipe`), replayed


def run_info(model_path: str | Path) -> RunInfo:
    """What the classifier's `bundle.json` (`common.bundle`) beside `model_path` says; defaults (no
    preprocessing, fixed 0.5) for a model file without one."""
    bundle = read_bundle(model_path, "classifier")
    if bundle is None:
        return RunInfo()
    info = RunInfo(
        bundle["preprocess"],
        bundle["task"],
        tuple(bundle["output_names"]),
        bundle["negative_name"],
        recipe=bundle["recipe"],
    )
    if bundle["threshold"] is None:  # argmax decisions
        return info
    choice = ThresholdChoice.from_dict(bundle["threshold"])
    return dataclasses.replace(
        info, thresholds=tuple(choice.thresholds), threshold_source=f"{choice.criterion} on {choice.split}"
    )


def model_task(info: RunInfo, units: int) -> ClassificationTask:
    """The bundle's task; without one, binary for one output unit and multi-label for several."""
    if info.task is not None:
        return CLASSIFICATION_TASKS[info.task]
    return CLASSIFICATION_TASKS["binary" if units == 1 else "multilabel"]


def _volume_slices(path: Path, key: str) -> Iterator[Record]:
    """The axial slices of a NIfTI volume in display orientation, keyed `<key>#<k>`."""
    volume = read_nifti(path).array
    kind = intensity_kind(volume)
    for index in range(volume.shape[2]):
        yield Record(
            key=f"{key}#{index}",
            image=to_display(volume[:, :, index]),
            modality="ct",
            intensity=kind,
            path=str(path),
            slice_index=index,
        )


def input_files(folder: str | Path) -> list[Path]:
    """The image and NIfTI files under `folder` (recursively, sorted by relative path, hidden files and
    folders left out); warns once naming the other files, which are skipped."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, "missing image folder")
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    kept, skipped = [], []
    for file in files:
        is_input = file.name.endswith(NIFTI_SUFFIXES) or imageio.sniff_format(_head(file)) is not None
        (kept if is_input else skipped).append(file)
    if skipped:
        names = ", ".join(str(p.relative_to(folder)) for p in skipped[:10])
        more = f" and {len(skipped) - 10} more" if len(skipped) > 10 else ""
        warnings.warn(
            f"{folder}: skipped {len(skipped)} file(s) that are not images: {names}{more}", stacklevel=2
        )
    if not kept:
        raise DataError(folder, "no image or NIfTI files in this folder or its sub-folders")
    return kept


def _head(path: Path) -> bytes:
    with path.open("rb") as stream:
        return stream.read(16)


def input_images(path: str | Path, modality: str = "ct") -> Iterator[Record]:
    """Records of a NIfTI volume's axial slices, or of every image (and volume slice) under a folder;
    keys are paths relative to the folder."""
    path = Path(path)
    if path.is_file() and path.name.endswith(NIFTI_SUFFIXES):
        yield from _volume_slices(path, path.name)
        return
    for file in input_files(path):
        key = file.relative_to(path).as_posix()
        if file.name.endswith(NIFTI_SUFFIXES):
            yield from _volume_slices(file, key)
            continue
        image = imageio.read_image(file)
        kind = "display" if image.dtype == np.uint8 else intensity_kind(image)
        yield Record(key=key, image=image, modality=modality, intensity=kind, path=str(file))


def stored_image(record: Record, spec: PreprocessSpec, recipe: CTRecipe | None) -> np.ndarray:
    """A record as its training data was stored: through the CT recipe's label-free input chain
    (`data_prep.ct_recipe.model_inputs`; crop rules "none" and "threshold") when the run has one,
    else through the write-time preprocessing spec."""
    if recipe is None:
        return spec.apply(record)[0]
    if recipe.crop == "model":
        raise ValueError('classifiers with a lung-model crop (rule "model") are not supported by predict')
    (stored,), _ = model_inputs([record.image], record.intensity, recipe, None, record.path)
    return stored


def predict_files(
    model: keras.Model,
    records: Iterator[Record],
    spec: PreprocessSpec,
    batch_size: int = 32,
    recipe: CTRecipe | None = None,
) -> tuple[list[Record], np.ndarray]:
    """(records, probabilities (N, K)) for every record, in order."""
    _, height, width, channels = model.input_shape
    kept, batch, outputs = [], [], []
    for record in records:
        stored = stored_image(record, spec, recipe)
        kept.append(record)
        batch.append(model_input(stored, (height, width), channels))
        if len(batch) == batch_size:
            outputs.append(np.asarray(model.predict_on_batch(np.stack(batch))))
            batch = []
    if batch:
        outputs.append(np.asarray(model.predict_on_batch(np.stack(batch))))
    if not kept:
        raise ValueError("no images to predict")
    return kept, np.concatenate(outputs).astype(np.float64)


def predict(
    model_path: str | Path,
    input_path: str | Path,
    out_csv: str | Path,
    preprocess: str | None = None,
    modality: str = "ct",
) -> pd.DataFrame:
    """Writes OUT.csv (all-or-nothing) with columns file, folder (its sub-folder of INPUT, "" at the
    top; for class folders the true class), slice (-1 for 2D images), the task's probability
    column(s) and prediction(s): binary "predicted" at the threshold, multiclass the argmax,
    multilabel one 0/1 column per class at its threshold (thresholded tasks add "threshold" and
    "threshold_source"); returns the table."""
    info = run_info(model_path)
    spec = PreprocessSpec.parse(info.preprocess if preprocess is None else preprocess)
    model = load_model_file(model_path)
    require_output_rank(model, 2, model_path)
    recipe = (
        None
        if info.recipe is None
        else recipe_from_config({k: v for k, v in info.recipe.items() if k != "lung_model"})
    )
    records, probabilities = predict_files(model, input_images(input_path, modality), spec, recipe=recipe)
    frame = pd.DataFrame(
        {
            "file": [r.path for r in records],
            "folder": [Path(r.key.split("#")[0]).parent.as_posix().removeprefix(".") for r in records],
            "slice": [-1 if r.slice_index is None else r.slice_index for r in records],
        }
    )
    units = probabilities.shape[1]
    task = model_task(info, units)
    names = list(info.output_names) or task.unnamed_outputs(units)
    thresholds = info.thresholds or (0.5,) * units
    for name, values in task.prediction_columns(probabilities, names, thresholds, info.negative_name).items():
        frame[name] = values
    if task.uses_threshold:
        frame["threshold"] = ";".join(f"{t:.6g}" for t in thresholds)
        frame["threshold_source"] = info.threshold_source
    atomic_write_text(out_csv, frame.to_csv(index=False))
    return frame
